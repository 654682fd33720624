"""Pure S4D and S5 layers: parameter initialisation and forward maps over plain dicts of arrays.

S4D: Gu, Gupta, Goel, Ré, "On the Parameterization and Initialization of Diagonal State Space
Models" (NeurIPS 2022): per channel h a diagonal SSM, y = K_h * u_h + D_h u_h with the Vandermonde
kernel of `ssm_kernel`, evaluated by FFT (convolution mode) or step by step (recurrent mode).

S5: Smith, Warrington, Linderman, "Simplified State Space Layers for Sequence Modeling" (ICLR 2023):
one MIMO diagonal SSM over all H channels, x_k = Lambda_bar x_{k-1} + B_bar u_k, y_k = 2 Re(C x_k) + D u_k,
run with a parallel scan; Lambda from block-diagonal HiPPO-LegS (Sec. 4.3).

S4-PTD / S5-PTD: Yu et al., "Robustifying State-space Models for Long Sequences via Approximate
Diagonalization" (ICLR 2024), Sec. 4: Lambda, V from `ptd` of HiPPO-LegS, B~ = V^{-1} B, C~ = C V.

Complex parameters are stored as real pairs (a trailing axis of 2) so that every optax optimizer
treats them correctly. A real spectrum closed under conjugation keeps one mode per pair, and real
modes get weight 1/2 in B, so that y = 2 Re(C x) is exact (`conjugate_half`).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.nn.ssm.hippo import S4D_INITS, hippo_legs, nplr_legs, s4d_init
from jaxdl.nn.ssm.kernels import (
    bidirectional_kernel,
    discretize,
    fft_conv,
    linear_recurrence,
    ssm_kernel,
)
from jaxdl.nn.ssm.ptd import conjugate_half, ptd

__all__ = [
    "to_complex",
    "to_pair",
    "s4d_modes",
    "s5_block_modes",
    "s4d_init_params",
    "s4d_apply",
    "s4d_step",
    "s5_init_params",
    "s5_apply",
    "s5_step",
]

S4D_LAYER_INITS = (*S4D_INITS, "ptd")
S5_INITS = ("legs", "ptd")


def to_pair(z):
    """Complex array (...) -> real array (..., 2) of real and imaginary parts.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.nn.ssm.functional import to_pair
      >>> print(to_pair(jnp.array([1.0 + 2.0j])))
      [[1. 2.]]
    """
    return jnp.stack([jnp.real(z), jnp.imag(z)], axis=-1)


def to_complex(pair):
    """Real array (..., 2) -> complex array (...).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.nn.ssm.functional import to_complex
      >>> print(to_complex(jnp.array([[1.0, 2.0]])))
      [1.+2.j]
    """
    return jax.lax.complex(pair[..., 0], pair[..., 1])


def _ptd_modes(N: int, ptd_kwargs: dict | None):
    Lambda, V, V_inv, _ = ptd(hippo_legs(N)[0], **(ptd_kwargs or {}))
    return conjugate_half(Lambda, V, V_inv)


@functools.lru_cache(maxsize=32)
def s4d_modes(init: str, state_size: int, ptd_items: tuple = ()):
    """Host-side S4D modes: (Lambda (M,), B (M,), C_basis (N, M) or None).

    For "ptd", Lambda, V come from `ptd(hippo_legs(state_size))` halved by `conjugate_half`,
    B = weight * V^{-1} B_HiPPO and C = c V for a random real c (S4-PTD, PTD paper Sec. 4).
    Otherwise `s4d_init` and C is complex normal.

    Example:
      >>> from jaxdl.nn.ssm.functional import s4d_modes
      >>> Lambda, B, C_basis = s4d_modes("lin", 4)  # S4D-Lin: Lambda_n = -1/2 + i pi n, B = 1
      >>> Lambda, B, C_basis
      (array([-0.5+0.j        , -0.5+3.14159265j]), array([1.+0.j, 1.+0.j]), None)
    """
    if init not in S4D_LAYER_INITS:
        raise ValueError(f"init must be one of {S4D_LAYER_INITS}, got {init!r}")
    if init != "ptd":
        Lambda, B = s4d_init(init, state_size)
        return Lambda, B, None
    Lambda, V, V_inv, weight = _ptd_modes(state_size, dict(ptd_items))
    _, B_hippo = hippo_legs(state_size)
    return Lambda, weight * (V_inv @ B_hippo), V


@functools.lru_cache(maxsize=32)
def s5_block_modes(init: str, block_size: int, ptd_items: tuple = ()):
    """Host-side S5 modes of one block: (Lambda (m,), V (b, m), V_inv (m, b) weighted).

    "legs": eigendecomposition of the normal part of HiPPO-LegS (S5 paper Sec. 4.3, V unitary);
    "ptd": `ptd` of HiPPO-LegS (S5-PTD). Both halved exactly by `conjugate_half`, with the weight
    1/2 of real modes folded into V_inv.

    Example:
      >>> import numpy as np
      >>> from jaxdl.nn.ssm.functional import s5_block_modes
      >>> from jaxdl.nn.ssm.hippo import hippo_legs
      >>> Lambda, V, V_inv = s5_block_modes("legs", 4)  # 4 states kept as 2 conjugate-pair modes
      >>> Lambda.real.round(6).tolist(), V.shape, V_inv.shape
      ([-0.5, -0.5], (4, 2), (2, 4))
      >>> A, _ = hippo_legs(4)
      >>> P = np.sqrt(np.arange(4) + 0.5)
      >>> bool(np.allclose(2 * (V @ np.diag(Lambda) @ V_inv).real, A + np.outer(P, P)))  # normal part of A
      True
    """
    if init not in S5_INITS:
        raise ValueError(f"init must be one of {S5_INITS}, got {init!r}")
    if init == "legs":
        Lambda, _, _, V = nplr_legs(block_size)
        Lambda, V, V_inv, weight = conjugate_half(Lambda, V, V.conj().T)
    else:
        Lambda, V, V_inv, weight = _ptd_modes(block_size, dict(ptd_items))
    return Lambda, V, weight[:, None] * V_inv


def _check_common(features, state_size, dt_min, dt_max):
    if not isinstance(features, int) or features < 1:
        raise ValueError(f"features must be a positive integer, got {features!r}")
    if not isinstance(state_size, int) or state_size < 1:
        raise ValueError(f"state_size must be a positive integer, got {state_size!r}")
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")


def _log_uniform(key, shape, dt_min, dt_max, dtype):
    return jax.random.uniform(key, shape, dtype, math.log(dt_min), math.log(dt_max))


def s4d_init_params(
    key,
    features: int,
    state_size: int = 64,
    *,
    init: str = "legs",
    dt_min: float = 1e-3,
    dt_max: float = 1e-1,
    bidirectional: bool = False,
    ptd_kwargs: dict | None = None,
    dtype=jnp.float32,
) -> dict:
    """Initial S4D parameters (S4D paper, Sec. 4; S4-PTD for ``init="ptd"``).

    Args:
      key: PRNG key.
      features: H, number of channels.
      state_size: N, real state size per channel (N/2 complex modes; PTD keeps real modes too).
      init: "legs", "lin", "inv", "real" or "ptd".
      dt_min, dt_max: log Delta ~ U[log dt_min, log dt_max] per channel.
      bidirectional: two output vectors C per channel (forward and backward kernel).
      ptd_kwargs: keyword arguments for `ptd` (e.g. weight, steps, seed).
      dtype: real parameter dtype.

    Returns:
      dict with log_neg_real (H, M), imag (H, M), B (H, M, 2), C (dirs, H, M, 2), D (H,), log_step (H,).

    >>> params = s4d_init_params(jax.random.key(0), 3, 8, init="lin")
    >>> {k: v.shape for k, v in params.items()}["C"]
    (1, 3, 4, 2)
    """
    _check_common(features, state_size, dt_min, dt_max)
    if init != "ptd" and state_size % 2:
        raise ValueError(f"state_size must be even for init={init!r}, got {state_size}")
    ptd_items = tuple(sorted((ptd_kwargs or {}).items()))
    Lambda, B, C_basis = s4d_modes(init, state_size, ptd_items)
    M, dirs = len(Lambda), 2 if bidirectional else 1
    k_c, k_d, k_dt = jax.random.split(key, 3)
    if C_basis is None:
        C = to_pair(jax.random.normal(k_c, (dirs, features, M), jnp.complex64)) * math.sqrt(0.5)
    else:
        c = jax.random.normal(k_c, (dirs, features, state_size), dtype)
        C = to_pair(c @ jnp.asarray(C_basis, jnp.complex64))
    Lambda_real = np.minimum(Lambda.real, -1e-4)
    tile = lambda x: jnp.tile(jnp.asarray(x, dtype), (features,) + (1,) * np.ndim(x))
    return {
        "log_neg_real": tile(np.log(-Lambda_real)),
        "imag": tile(Lambda.imag),
        "B": tile(np.stack([B.real, B.imag], axis=-1)),
        "C": C.astype(dtype),
        "D": jax.random.normal(k_d, (features,), dtype),
        "log_step": _log_uniform(k_dt, (features,), dt_min, dt_max, dtype),
    }


def _s4d_complex(params):
    Lambda = jax.lax.complex(-jnp.exp(params["log_neg_real"]), params["imag"])
    return Lambda, to_complex(params["B"]), to_complex(params["C"])


def _check_input(u, features, name="u"):
    if u.ndim < 2 or u.shape[-1] != features:
        raise ValueError(f"{name} must have shape (..., length, {features}), got {u.shape}")


def s4d_apply(params: dict, u, *, method: str = "zoh", chunk_size: int | None = None):
    """S4D in convolution mode: y = K * u + D u, kernel by Vandermonde product, convolution by FFT.

    Bidirectional parameters (C with 2 directions) add the anti-causal kernel of the second C.

    Args:
      params: from `s4d_init_params`.
      u: (..., L, H) input.
      method: "zoh" or "bilinear" discretisation.
      chunk_size: see `ssm_kernel`.

    Returns:
      (..., L, H) output.

    >>> params = s4d_init_params(jax.random.key(0), 2, 4)
    >>> s4d_apply(params, jnp.ones((5, 7, 2))).shape
    (5, 7, 2)
    """
    u = jnp.asarray(u)
    H = params["D"].shape[0]
    _check_input(u, H)
    Lambda, B, C = _s4d_complex(params)
    K = ssm_kernel(Lambda, B, C, params["log_step"], u.shape[-2], method=method, chunk_size=chunk_size)
    if K.shape[0] == 2:
        K = bidirectional_kernel(K[0], K[1])
    else:
        K = K[0]
    return fft_conv(u, K.astype(u.dtype)) + params["D"] * u


def s4d_step(params: dict, state, u_t, *, method: str = "zoh"):
    """One S4D recurrent step: x <- Lambda_bar x + B_bar u_t, y_t = 2 Re(C x) + D u_t.

    Gives the same outputs as `s4d_apply` token by token (causal models only).

    Args:
      params: causal S4D parameters.
      state: (..., H, M) complex state, zeros to start.
      u_t: (..., H) input at one position.
      method: "zoh" or "bilinear".

    Returns:
      (y_t (..., H), new state).

    >>> params = s4d_init_params(jax.random.key(0), 2, 4)
    >>> y, state = s4d_step(params, jnp.zeros((2, 2), jnp.complex64), jnp.ones(2))
    >>> y.shape, state.shape
    ((2,), (2, 2))
    """
    if params["C"].shape[0] != 1:
        raise ValueError("recurrent steps need a causal layer; this one is bidirectional")
    Lambda, B, C = _s4d_complex(params)
    Lambda_bar, B_bar = discretize(Lambda, B, params["log_step"][:, None], method)
    state = Lambda_bar * state + B_bar * u_t[..., None]
    y = 2.0 * jnp.sum(C[0] * state, axis=-1).real + params["D"] * u_t
    return y.astype(u_t.dtype), state


def s5_init_params(
    key,
    features: int,
    state_size: int = 64,
    blocks: int = 4,
    *,
    init: str = "legs",
    dt_min: float = 1e-3,
    dt_max: float = 1e-1,
    bidirectional: bool = False,
    ptd_kwargs: dict | None = None,
    dtype=jnp.float32,
) -> dict:
    """Initial S5 parameters (S5 paper, Sec. 4.3; S5-PTD for ``init="ptd"``).

    Lambda is the block-diagonal spectrum of `blocks` copies of a HiPPO-LegS block of size
    state_size / blocks; B~ = V^{-1} B and C~ = C V with lecun-normal B (P, H) and C (H, P).

    Args:
      key: PRNG key.
      features: H.
      state_size: P, the real state size.
      blocks: J, number of HiPPO blocks; state_size must be divisible by it.
      init: "legs" or "ptd".
      dt_min, dt_max: log Delta ~ U[log dt_min, log dt_max] per mode.
      bidirectional: a second C for the backward scan.
      ptd_kwargs: keyword arguments for `ptd`.
      dtype: real parameter dtype.

    Returns:
      dict with Lambda_re (M,), Lambda_im (M,), B (M, H, 2), C (dirs, H, M, 2), D (H,), log_step (M,).

    >>> params = s5_init_params(jax.random.key(0), 3, 8, 2)
    >>> params["B"].shape
    (4, 3, 2)
    """
    _check_common(features, state_size, dt_min, dt_max)
    if not isinstance(blocks, int) or blocks < 1 or state_size % blocks:
        raise ValueError(f"blocks must be a positive divisor of state_size={state_size}, got {blocks!r}")
    block = state_size // blocks
    ptd_items = tuple(sorted((ptd_kwargs or {}).items()))
    Lambda, V, V_inv = s5_block_modes(init, block, ptd_items)
    m, dirs = len(Lambda), 2 if bidirectional else 1
    k_b, k_c, k_d, k_dt = jax.random.split(key, 4)
    B = jax.random.normal(k_b, (blocks, block, features), dtype) / math.sqrt(features)
    C = jax.random.normal(k_c, (dirs, features, blocks, block), dtype) / math.sqrt(state_size)
    B_tilde = jnp.einsum("mb,jbh->jmh", jnp.asarray(V_inv, jnp.complex64), B).reshape(blocks * m, features)
    C_tilde = jnp.einsum("dhjb,bm->dhjm", C, jnp.asarray(V, jnp.complex64)).reshape(
        dirs, features, blocks * m
    )
    Lambda = np.tile(Lambda, blocks)
    return {
        "Lambda_re": jnp.asarray(Lambda.real, dtype),
        "Lambda_im": jnp.asarray(Lambda.imag, dtype),
        "B": to_pair(B_tilde).astype(dtype),
        "C": to_pair(C_tilde).astype(dtype),
        "D": jax.random.normal(k_d, (features,), dtype),
        "log_step": _log_uniform(k_dt, (blocks * m,), dt_min, dt_max, dtype),
    }


def _s5_complex(params):
    # clip_eigs of the S5 code: keep Re Lambda <= -1e-4 so the recurrence stays stable.
    Lambda = jax.lax.complex(jnp.minimum(params["Lambda_re"], -1e-4), params["Lambda_im"])
    return Lambda, to_complex(params["B"]), to_complex(params["C"])


def _s5_sequence(params, u, log_scale, method):
    Lambda, B, C = _s5_complex(params)
    Bu = u.astype(B.dtype) @ B.T  # (L, M)
    log_step = params["log_step"] if log_scale is None else params["log_step"] + log_scale[:, None]
    Lambda_bar, factor = discretize(Lambda, 1.0, log_step, method)
    Bu_bar = factor * Bu
    y = 2.0 * (linear_recurrence(Lambda_bar, Bu_bar) @ C[0].T).real
    if C.shape[0] == 2:
        y = y + 2.0 * (linear_recurrence(Lambda_bar, Bu_bar, reverse=True) @ C[1].T).real
    return y.astype(u.dtype) + params["D"] * u


def s5_apply(params: dict, u, *, step_scale=None, method: str = "zoh"):
    """S5 over whole sequences with a parallel scan (S5 paper, Sec. 3.2 and eq. (6)).

    Args:
      params: from `s5_init_params`.
      u: (..., L, H) input.
      step_scale: optional positive factor on Delta: a scalar (e.g. a changed sampling rate) or an
        array broadcastable to u.shape[:-1] (one Delta per token, for irregular sampling).
      method: "zoh" or "bilinear".

    Returns:
      (..., L, H) output.

    >>> params = s5_init_params(jax.random.key(0), 2, 8, 2, bidirectional=True)
    >>> s5_apply(params, jnp.ones((5, 7, 2))).shape
    (5, 7, 2)
    """
    u = jnp.asarray(u)
    _check_input(u, params["D"].shape[0])
    if step_scale is None:
        fn = lambda seq: _s5_sequence(params, seq, None, method)
        args = (u.reshape(-1, *u.shape[-2:]),)
    else:
        log_scale = jnp.broadcast_to(jnp.log(jnp.asarray(step_scale, u.dtype)), u.shape[:-1])
        fn = lambda seq, ls: _s5_sequence(params, seq, ls, method)
        args = (u.reshape(-1, *u.shape[-2:]), log_scale.reshape(-1, u.shape[-2]))
    return jax.vmap(fn)(*args).reshape(u.shape)


def s5_step(params: dict, state, u_t, *, step_scale=None, method: str = "zoh"):
    """One S5 recurrent step: x <- Lambda_bar x + B_bar u_t, y_t = 2 Re(C x) + D u_t.

    Args:
      params: causal S5 parameters.
      state: (..., M) complex state, zeros to start.
      u_t: (..., H) input at one position.
      step_scale: optional factor on Delta for this token, broadcastable to u_t.shape[:-1].
      method: "zoh" or "bilinear".

    Returns:
      (y_t (..., H), new state).

    >>> params = s5_init_params(jax.random.key(0), 2, 8, 2)
    >>> y, state = s5_step(params, jnp.zeros(4, jnp.complex64), jnp.ones(2))
    >>> y.shape, state.shape
    ((2,), (4,))
    """
    if params["C"].shape[0] != 1:
        raise ValueError("recurrent steps need a causal layer; this one is bidirectional")
    Lambda, B, C = _s5_complex(params)
    log_step = params["log_step"]
    if step_scale is not None:
        log_step = log_step + jnp.log(jnp.asarray(step_scale, u_t.dtype))[..., None]
    Lambda_bar, factor = discretize(Lambda, 1.0, log_step, method)
    state = Lambda_bar * state + factor * (u_t.astype(B.dtype) @ B.T)
    y = 2.0 * (state @ C[0].T).real
    return y.astype(u_t.dtype) + params["D"] * u_t, state
