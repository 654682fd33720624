"""Pure S4D and S5 layers: one validated config per layer, parameter initialisation and forward maps over
plain dicts of arrays.

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
modes get weight 1/2 in B, so that y = 2 Re(C x) is exact (`conjugate_half`). The host-side (NumPy)
modes live in `jaxdl.nn.ssm.modes`.

`S4DConfig` and `S5Config` hold and validate every hyperparameter of a layer; the NNX layers
(`jaxdl.nn.ssm.layers`) and the Linen layers (`jaxdl.nn.ssm.linen`) both build one and call its methods,
so the two shells cannot disagree on a default or a check.

Dtypes: parameters are stored in `param_dtype`; the FFT, the scan and the kernel run in at least float32
(complex64), whatever the input; the output has `dtype`, or the input's floating dtype (float32 for
integer input). Complex inputs are refused.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify
from jax.typing import ArrayLike, DTypeLike

from jaxdl.nn._checks import _check_float_dtype, _check_size
from jaxdl.nn.ssm.kernels import bidirectional_kernel, discretize, fft_conv, linear_recurrence, ssm_kernel
from jaxdl.nn.ssm.modes import S4D_LAYER_INITS, S5_INITS, s4d_modes, s5_block_modes
from jaxdl.nn.ssm.ptd import ptd

__all__ = [
    "S4DConfig",
    "S5Config",
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

Params = dict[str, jax.Array]
_METHODS = ("zoh", "bilinear")
_PTD_KEYS = tuple(name for name in inspect.signature(ptd).parameters if name != "A")


def to_pair(z: ArrayLike) -> jax.Array:
    """Complex array (...) -> real array (..., 2) of real and imaginary parts.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.nn.ssm.functional import to_pair
      >>> print(to_pair(jnp.array([1.0 + 2.0j])))
      [[1. 2.]]
    """
    return jnp.stack([jnp.real(z), jnp.imag(z)], axis=-1)


def to_complex(pair: ArrayLike) -> jax.Array:
    """Real array (..., 2) -> complex array (...).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.nn.ssm.functional import to_complex
      >>> print(to_complex(jnp.array([[1.0, 2.0]])))
      [1.+2.j]
    """
    pair = jnp.asarray(pair)
    return jax.lax.complex(pair[..., 0], pair[..., 1])


# ----------------------------------------------------------------------------------------------- checks


def _positive_int(name: str, value: Any) -> int:
    try:
        return _check_size(name, value)
    except ValueError:
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a bool, got {value!r}")


def _check_common(config: Any) -> None:
    """Validate the hyperparameters S4D and S5 share; normalises NumPy integers and dtypes in place."""
    set_ = lambda name, value: object.__setattr__(config, name, value)
    set_("features", _positive_int("features", config.features))
    set_("state_size", _positive_int("state_size", config.state_size))
    dt_min, dt_max = config.dt_min, config.dt_max
    real = lambda v: isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
    if not (real(dt_min) and real(dt_max)) or not (0 < dt_min <= dt_max < math.inf):
        raise ValueError(f"need finite 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    if config.method not in _METHODS:
        raise ValueError(f"method must be 'zoh' or 'bilinear', got {config.method!r}")
    _check_bool("bidirectional", config.bidirectional)
    if config.ptd_kwargs is not None:
        if not isinstance(config.ptd_kwargs, Mapping):
            raise TypeError(
                f"ptd_kwargs must be a dict of `ptd` arguments or None, got {config.ptd_kwargs!r}"
            )
        unknown = sorted(set(config.ptd_kwargs) - set(_PTD_KEYS))
        if unknown:
            raise TypeError(f"ptd_kwargs has unknown keys {unknown}; `ptd` accepts {list(_PTD_KEYS)}")
    set_("dtype", _check_float_dtype("dtype", config.dtype, optional=True))
    set_("param_dtype", _check_float_dtype("param_dtype", config.param_dtype))


def _ptd_items(ptd_kwargs: Mapping | None) -> tuple:
    return tuple(sorted((ptd_kwargs or {}).items()))


def _compute_dtype(param_dtype: DTypeLike, dtype: DTypeLike | None) -> Any:
    """Real dtype of the FFT / scan: at least float32, float64 when parameters or `dtype` are float64."""
    return jnp.promote_types(jnp.promote_types(param_dtype, jnp.float32), dtype or jnp.float32)


def _complex_dtype(real_dtype: DTypeLike) -> Any:
    return jnp.complex128 if jnp.dtype(real_dtype) == jnp.float64 else jnp.complex64


def _io_dtypes(u: jax.Array, name: str, dtype: DTypeLike | None, param_dtype: DTypeLike) -> tuple[Any, Any]:
    """(output dtype, real compute dtype) for input u; refuses complex input."""
    if not (jnp.issubdtype(u.dtype, jnp.floating) or jnp.issubdtype(u.dtype, jnp.integer) or u.dtype == bool):
        raise TypeError(f"{name} must be a real (floating-point or integer) array, got dtype {u.dtype}")
    if dtype is not None:
        out = jnp.dtype(dtype)
    elif jnp.issubdtype(u.dtype, jnp.floating):
        out = u.dtype
    else:
        out = jnp.dtype(jnp.float32)
    return out, _compute_dtype(param_dtype, out)


def _check_sequence(u: jax.Array, features: int, name: str = "u") -> None:
    if u.ndim < 2 or u.shape[-1] != features:
        raise ValueError(f"{name} must have shape (..., length, {features}), got {u.shape}")
    if u.shape[-2] < 1:
        raise ValueError(f"{name} must hold at least one position (length >= 1), got shape {u.shape}")


def _check_chunk_size(chunk_size: Any) -> int | None:
    return None if chunk_size is None else _positive_int("chunk_size", chunk_size)


def _check_finite(u: jax.Array, name: str = "u") -> None:
    """checkify check that u is finite, naming the first non-finite index (row-major: earliest position)."""
    bad = ~jnp.isfinite(u)
    first = jnp.unravel_index(jnp.argmax(bad.reshape(-1)), u.shape)
    index = "(" + ", ".join(["{}"] * u.ndim) + ")"
    checkify.check(
        ~jnp.any(bad),
        f"{name} holds a non-finite value; the first is at index {index} of {name}.shape = {u.shape}. In "
        "convolution mode it reaches every output of its sequence, also the earlier ones (the FFT mixes "
        "positions); the recurrent `step` stays causal.",
        *first,
    )


# ------------------------------------------------------------------------------------------------- S4D


def _s4d_complex(params: Mapping[str, jax.Array], real_dtype: DTypeLike):
    cast = lambda name: jnp.asarray(params[name]).astype(real_dtype)
    Lambda = jax.lax.complex(-jnp.exp(cast("log_neg_real")), cast("imag"))
    return Lambda, to_complex(cast("B")), to_complex(cast("C"))


def _log_uniform(key, shape, dt_min, dt_max, dtype):
    return jax.random.uniform(key, shape, dtype, math.log(dt_min), math.log(dt_max))


class _Config:
    """What `S4DConfig` and `S5Config` share: a hash over the items of ptd_kwargs, and the zero cache."""

    ptd_kwargs: Mapping[str, Any] | None
    param_dtype: DTypeLike
    dtype: DTypeLike | None

    def __hash__(self) -> int:  # ptd_kwargs is a dict; hash its items so NNX can key compiled graphs on it
        fields = tuple(value for name, value in vars(self).items() if name != "ptd_kwargs")
        return hash((fields, _ptd_items(self.ptd_kwargs)))

    @property
    def cache_dtype(self) -> Any:
        """Complex dtype of the recurrent state: complex128 if the computation runs in float64, else complex64."""
        return _complex_dtype(_compute_dtype(self.param_dtype, self.dtype))

    def _zeros(self, batch_size: int, shape: tuple[int, ...]) -> jax.Array:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 0:
            raise ValueError(f"batch_size must be a non-negative integer, got {batch_size!r}")
        return jnp.zeros((int(batch_size), *shape), self.cache_dtype)


@dataclasses.dataclass(frozen=True)
class S4DConfig(_Config):
    """Every hyperparameter of an S4D / S4-PTD layer, validated once (S4D paper, Sec. 4; PTD paper, Sec. 4).

    The NNX `S4D` and the Linen `S4D` both hold one and call its methods. Refuses (at construction): a
    non-positive or non-integer `features` / `state_size` / `chunk_size`, an odd `state_size` unless
    ``init="ptd"``, `dt_min`/`dt_max` outside finite 0 < dt_min <= dt_max, an unknown `init` or `method`,
    `ptd_kwargs` keys that `ptd` does not take, and non-floating `dtype` / `param_dtype`.

    Args:
      features: H, channels in and out.
      state_size: N (N/2 complex modes; "ptd" adds its real modes).
      init: "legs", "lin", "inv", "real" or "ptd".
      dt_min, dt_max: log Delta ~ U[log dt_min, log dt_max] per channel.
      bidirectional: add an anti-causal kernel (second C); no recurrent steps then.
      method: "zoh" or "bilinear" discretisation.
      chunk_size: Vandermonde chunk length (memory knob, see `ssm_kernel`); None picks one.
      ptd_kwargs: keyword arguments for `ptd` when init="ptd".
      dtype: output dtype (None: the input's floating dtype); the FFT runs in at least float32.
      param_dtype: parameter dtype.
      debug: check the input for non-finite values (`checkify`; see `s4d_apply`).

    >>> config = S4DConfig(3, 8, init="lin")
    >>> params = config.init_params(jax.random.key(0))
    >>> config.apply(params, jnp.ones((2, 5, 3))).shape, config.init_cache(params, 2).dtype
    ((2, 5, 3), dtype('complex64'))
    """

    features: int
    state_size: int = 64
    init: str = "legs"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    bidirectional: bool = False
    method: str = "zoh"
    chunk_size: int | None = None
    ptd_kwargs: Mapping[str, Any] | None = None
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32
    debug: bool = False

    def __post_init__(self) -> None:
        _check_common(self)
        if self.init not in S4D_LAYER_INITS:
            raise ValueError(f"init must be one of {S4D_LAYER_INITS}, got {self.init!r}")
        if self.init != "ptd" and self.state_size % 2:
            raise ValueError(f"state_size must be even for init={self.init!r}, got {self.state_size}")
        object.__setattr__(self, "chunk_size", _check_chunk_size(self.chunk_size))
        _check_bool("debug", self.debug)

    def init_params(self, key: jax.Array) -> Params:
        """The initial parameter dict (see `s4d_init_params`)."""
        modes = s4d_modes(self.init, self.state_size, _ptd_items(self.ptd_kwargs))
        real_dtype = _compute_dtype(self.param_dtype, None)
        Lambda, B, C_basis = modes
        M, dirs, H = len(Lambda), 2 if self.bidirectional else 1, self.features
        k_c, k_d, k_dt = jax.random.split(key, 3)
        complex_dtype = _complex_dtype(real_dtype)
        if C_basis is None:
            C = to_pair(jax.random.normal(k_c, (dirs, H, M), complex_dtype)) * math.sqrt(0.5)
        else:
            c = jax.random.normal(k_c, (dirs, H, self.state_size), real_dtype)
            C = to_pair(c @ jnp.asarray(C_basis, complex_dtype))
        Lambda_real = np.minimum(Lambda.real, -1e-4)
        dtype = self.param_dtype
        tile = lambda x: jnp.tile(jnp.asarray(x, real_dtype), (H,) + (1,) * np.ndim(x)).astype(dtype)
        return {
            "log_neg_real": tile(np.log(-Lambda_real)),
            "imag": tile(Lambda.imag),
            "B": tile(np.stack([B.real, B.imag], axis=-1)),
            "C": C.astype(dtype),
            "D": jax.random.normal(k_d, (H,), real_dtype).astype(dtype),
            "log_step": _log_uniform(k_dt, (H,), self.dt_min, self.dt_max, real_dtype).astype(dtype),
        }

    def apply(self, params: Mapping[str, jax.Array], u: ArrayLike) -> jax.Array:
        """Convolution mode, u (..., L, H) -> (..., L, H) (see `s4d_apply`)."""
        return s4d_apply(
            params, u, method=self.method, chunk_size=self.chunk_size, dtype=self.dtype, debug=self.debug
        )

    def init_cache(self, params: Mapping[str, jax.Array], batch_size: int) -> jax.Array:
        """Zero recurrent state (batch_size, H, M) in `cache_dtype`."""
        return self._zeros(batch_size, jnp.shape(params["imag"]))

    def step(
        self, params: Mapping[str, jax.Array], cache: jax.Array, u_t: ArrayLike
    ) -> tuple[jax.Array, jax.Array]:
        """One token, u_t (..., H) -> (y_t (..., H), new cache) (see `s4d_step`)."""
        return s4d_step(params, cache, u_t, method=self.method, dtype=self.dtype)


def s4d_init_params(
    key: jax.Array,
    features: int,
    state_size: int = 64,
    *,
    init: str = "legs",
    dt_min: float = 1e-3,
    dt_max: float = 1e-1,
    bidirectional: bool = False,
    ptd_kwargs: Mapping[str, Any] | None = None,
    param_dtype: DTypeLike = jnp.float32,
) -> Params:
    """Initial S4D parameters (S4D paper, Sec. 4; S4-PTD for ``init="ptd"``).

    Args:
      key: PRNG key.
      features: H, number of channels.
      state_size: N, real state size per channel (N/2 complex modes; PTD keeps real modes too).
      init: "legs", "lin", "inv", "real" or "ptd".
      dt_min, dt_max: log Delta ~ U[log dt_min, log dt_max] per channel.
      bidirectional: two output vectors C per channel (forward and backward kernel).
      ptd_kwargs: keyword arguments for `ptd` (e.g. weight, steps, seed).
      param_dtype: real parameter dtype.

    Returns:
      dict with log_neg_real (H, M), imag (H, M), B (H, M, 2), C (dirs, H, M, 2), D (H,), log_step (H,).

    Refuses the arguments `S4DConfig` refuses.

    >>> params = s4d_init_params(jax.random.key(0), 3, 8, init="lin")
    >>> {k: v.shape for k, v in params.items()}["C"]
    (1, 3, 4, 2)
    """
    config = S4DConfig(
        features,
        state_size,
        init=init,
        dt_min=dt_min,
        dt_max=dt_max,
        bidirectional=bidirectional,
        ptd_kwargs=ptd_kwargs,
        param_dtype=param_dtype,
    )
    return config.init_params(key)


def s4d_apply(
    params: Mapping[str, jax.Array],
    u: ArrayLike,
    *,
    method: str = "zoh",
    chunk_size: int | None = None,
    dtype: DTypeLike | None = None,
    debug: bool = False,
) -> jax.Array:
    """S4D in convolution mode: y = K * u + D u, kernel by Vandermonde product, convolution by FFT.

    Bidirectional parameters (C with 2 directions) add the anti-causal kernel of the second C. The kernel and
    the FFT run in at least float32 whatever the input; compiles once per shapes, dtypes and options,
    also when called eagerly (debug=True runs eagerly).

    Non-finite inputs: the FFT mixes all positions, so a NaN or inf at position t makes every output of that
    sequence and channel non-finite, also at positions before t (the recurrent `s4d_step` stays causal), and
    the FFT's rounding error is relative to the largest |u| of the sequence (a spike of 1e6 moves earlier
    outputs by about 1e6 * 1e-7 in float32). ``debug=True`` adds a `checkify` check that reports the index of
    the first non-finite input: it raises eagerly, and under `jax.jit` the function must be wrapped in
    ``jax.experimental.checkify.checkify``.

    Args:
      params: from `s4d_init_params`.
      u: (..., L, H) real input (integer input is read as float32).
      method: "zoh" or "bilinear" discretisation.
      chunk_size: see `ssm_kernel` (a positive integer, or None).
      dtype: output dtype; default: u's floating dtype (float32 for integer u).
      debug: check u for non-finite values (see above).

    Returns:
      (..., L, H) output.

    Refuses: complex u (TypeError), u not of shape (..., L >= 1, H) (ValueError), a bad `method` or
    `chunk_size` (ValueError).

    >>> params = s4d_init_params(jax.random.key(0), 2, 4)
    >>> s4d_apply(params, jnp.ones((5, 7, 2))).shape
    (5, 7, 2)
    >>> s4d_apply(params, jnp.ones((5, 7, 2), jnp.bfloat16)).dtype  # FFT in float32, bfloat16 out
    dtype(bfloat16)
    """
    u = jnp.asarray(u)
    H = params["D"].shape[0]
    _check_sequence(u, H)
    chunk_size = _check_chunk_size(chunk_size)
    out_dtype, real_dtype = _io_dtypes(u, "u", dtype, params["D"].dtype)
    if debug:  # eager, so that the check can raise without `checkify.checkify`
        _check_finite(u)
        return _s4d_apply(dict(params), u, method, chunk_size, out_dtype, real_dtype)
    return _s4d_apply_jit(dict(params), u, method, chunk_size, out_dtype, real_dtype)


def _s4d_apply(params, u, method, chunk_size, out_dtype, real_dtype):
    u = u.astype(real_dtype)
    Lambda, B, C = _s4d_complex(params, real_dtype)
    log_step = params["log_step"].astype(real_dtype)
    K = ssm_kernel(Lambda, B, C, log_step, u.shape[-2], method=method, chunk_size=chunk_size)
    K = bidirectional_kernel(K[0], K[1]) if K.shape[0] == 2 else K[0]
    y = fft_conv(u, K) + params["D"].astype(real_dtype) * u
    return y.astype(out_dtype)


# One compiled program per (shapes, dtypes, options) for eager callers; inlined under the caller's jit.
_s4d_apply_jit = jax.jit(_s4d_apply, static_argnums=(2, 3, 4, 5))


def _check_causal(params: Mapping[str, jax.Array]) -> None:
    if params["C"].shape[0] != 1:
        raise ValueError("recurrent steps need a causal layer; this one is bidirectional")


def _check_state(state: jax.Array, expected: tuple[int, ...], u_t_shape: tuple[int, ...]) -> None:
    if not jnp.issubdtype(state.dtype, jnp.complexfloating):
        raise TypeError(f"state must be a complex array (from init_cache), got dtype {state.dtype}")
    if state.shape != expected:
        raise ValueError(f"state must have shape {expected} for u_t of shape {u_t_shape}, got {state.shape}")


def _check_token(u_t: jax.Array, features: int) -> None:
    if u_t.ndim < 1 or u_t.shape[-1] != features:
        raise ValueError(f"u_t must have shape (..., {features}), got {u_t.shape}")


def s4d_step(
    params: Mapping[str, jax.Array],
    state: jax.Array,
    u_t: ArrayLike,
    *,
    method: str = "zoh",
    dtype: DTypeLike | None = None,
) -> tuple[jax.Array, jax.Array]:
    """One S4D recurrent step: x <- Lambda_bar x + B_bar u_t, y_t = 2 Re(C x) + D u_t.

    Gives the same outputs as `s4d_apply` token by token (causal models only), and is causal for non-finite
    values too.

    Args:
      params: causal S4D parameters.
      state: (..., H, M) complex state, zeros to start (`S4DConfig.init_cache`); keeps its dtype.
      u_t: (..., H) real input at one position.
      method: "zoh" or "bilinear".
      dtype: output dtype; default: u_t's floating dtype (float32 for integer u_t).

    Returns:
      (y_t (..., H), new state).

    Refuses: bidirectional parameters, complex u_t or a real state (TypeError), u_t not (..., H) or a state
    whose shape is not u_t.shape[:-1] + (H, M) (ValueError).

    >>> params = s4d_init_params(jax.random.key(0), 2, 4)
    >>> y, state = s4d_step(params, jnp.zeros((2, 2), jnp.complex64), jnp.ones(2))
    >>> y.shape, state.shape
    ((2,), (2, 2))
    """
    _check_causal(params)
    u_t, state = jnp.asarray(u_t), jnp.asarray(state)
    H, M = params["imag"].shape
    _check_token(u_t, H)
    _check_state(state, (*u_t.shape[:-1], H, M), u_t.shape)
    out_dtype, real_dtype = _io_dtypes(u_t, "u_t", dtype, params["D"].dtype)
    u = u_t.astype(real_dtype)
    Lambda, B, C = _s4d_complex(params, real_dtype)
    Lambda_bar, B_bar = discretize(Lambda, B, params["log_step"].astype(real_dtype)[:, None], method)
    new_state = Lambda_bar * state.astype(Lambda_bar.dtype) + B_bar * u[..., None]
    y = 2.0 * jnp.sum(C[0] * new_state, axis=-1).real + params["D"].astype(real_dtype) * u
    return y.astype(out_dtype), new_state.astype(state.dtype)


# -------------------------------------------------------------------------------------------------- S5


@dataclasses.dataclass(frozen=True)
class S5Config(_Config):
    """Every hyperparameter of an S5 / S5-PTD layer, validated once (S5 paper, Sec. 4.3; PTD paper, Sec. 4).

    The NNX `S5` and the Linen `S5` both hold one and call its methods. Refuses (at construction) what
    `S4DConfig` refuses, an unknown `init`, and `blocks` that does not divide `state_size`.

    Args:
      features: H, channels in and out.
      state_size: P, real state size.
      blocks: J, HiPPO blocks (block size P / J; 16-32 suits PTD).
      init: "legs" or "ptd".
      dt_min, dt_max: range of the log-uniform initial step per mode.
      bidirectional: add a backward scan with its own C.
      method: "zoh" or "bilinear".
      ptd_kwargs: keyword arguments for `ptd` when init="ptd".
      dtype: output dtype (None: the input's floating dtype); the scan runs in at least complex64.
      param_dtype: parameter dtype.

    >>> config = S5Config(3, 8, 2)
    >>> params = config.init_params(jax.random.key(0))
    >>> config.apply(params, jnp.ones((2, 5, 3))).shape, config.init_cache(params, 2).shape
    ((2, 5, 3), (2, 4))
    """

    features: int
    state_size: int = 64
    blocks: int = 4
    init: str = "legs"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    bidirectional: bool = False
    method: str = "zoh"
    ptd_kwargs: Mapping[str, Any] | None = None
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    def __post_init__(self) -> None:
        _check_common(self)
        if self.init not in S5_INITS:
            raise ValueError(f"init must be one of {S5_INITS}, got {self.init!r}")
        blocks = self.blocks
        if isinstance(blocks, bool) or not isinstance(blocks, int | np.integer) or blocks < 1:
            raise ValueError(
                f"blocks must be a positive divisor of state_size={self.state_size}, got {blocks!r}"
            )
        if self.state_size % blocks:
            raise ValueError(
                f"blocks must be a positive divisor of state_size={self.state_size}, got {blocks!r}"
            )
        object.__setattr__(self, "blocks", int(blocks))

    def init_params(self, key: jax.Array) -> Params:
        """The initial parameter dict (see `s5_init_params`)."""
        blocks, H, P = self.blocks, self.features, self.state_size
        block = P // blocks
        Lambda, V, V_inv = s5_block_modes(self.init, block, _ptd_items(self.ptd_kwargs))
        m, dirs = len(Lambda), 2 if self.bidirectional else 1
        real_dtype = _compute_dtype(self.param_dtype, None)
        complex_dtype = _complex_dtype(real_dtype)
        k_b, k_c, k_d, k_dt = jax.random.split(key, 4)
        B = jax.random.normal(k_b, (blocks, block, H), real_dtype) / math.sqrt(H)
        C = jax.random.normal(k_c, (dirs, H, blocks, block), real_dtype) / math.sqrt(P)
        B_tilde = jnp.einsum("mb,jbh->jmh", jnp.asarray(V_inv, complex_dtype), B).reshape(blocks * m, H)
        C_tilde = jnp.einsum("dhjb,bm->dhjm", C, jnp.asarray(V, complex_dtype)).reshape(dirs, H, blocks * m)
        Lambda = np.tile(Lambda, blocks)
        dtype = self.param_dtype
        return {
            "Lambda_re": jnp.asarray(Lambda.real, real_dtype).astype(dtype),
            "Lambda_im": jnp.asarray(Lambda.imag, real_dtype).astype(dtype),
            "B": to_pair(B_tilde).astype(dtype),
            "C": to_pair(C_tilde).astype(dtype),
            "D": jax.random.normal(k_d, (H,), real_dtype).astype(dtype),
            "log_step": _log_uniform(k_dt, (blocks * m,), self.dt_min, self.dt_max, real_dtype).astype(dtype),
        }

    def apply(
        self, params: Mapping[str, jax.Array], u: ArrayLike, step_scale: ArrayLike | None = None
    ) -> jax.Array:
        """Whole sequences, u (..., L, H) -> (..., L, H) (see `s5_apply`)."""
        return s5_apply(params, u, step_scale=step_scale, method=self.method, dtype=self.dtype)

    def init_cache(self, params: Mapping[str, jax.Array], batch_size: int) -> jax.Array:
        """Zero recurrent state (batch_size, M) in `cache_dtype`."""
        return self._zeros(batch_size, jnp.shape(params["Lambda_re"]))

    def step(
        self,
        params: Mapping[str, jax.Array],
        cache: jax.Array,
        u_t: ArrayLike,
        step_scale: ArrayLike | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """One token, u_t (..., H) -> (y_t (..., H), new cache) (see `s5_step`)."""
        return s5_step(params, cache, u_t, step_scale=step_scale, method=self.method, dtype=self.dtype)


def s5_init_params(
    key: jax.Array,
    features: int,
    state_size: int = 64,
    blocks: int = 4,
    *,
    init: str = "legs",
    dt_min: float = 1e-3,
    dt_max: float = 1e-1,
    bidirectional: bool = False,
    ptd_kwargs: Mapping[str, Any] | None = None,
    param_dtype: DTypeLike = jnp.float32,
) -> Params:
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
      param_dtype: real parameter dtype.

    Returns:
      dict with Lambda_re (M,), Lambda_im (M,), B (M, H, 2), C (dirs, H, M, 2), D (H,), log_step (M,).

    Refuses the arguments `S5Config` refuses.

    >>> params = s5_init_params(jax.random.key(0), 3, 8, 2)
    >>> params["B"].shape
    (4, 3, 2)
    """
    config = S5Config(
        features,
        state_size,
        blocks,
        init=init,
        dt_min=dt_min,
        dt_max=dt_max,
        bidirectional=bidirectional,
        ptd_kwargs=ptd_kwargs,
        param_dtype=param_dtype,
    )
    return config.init_params(key)


def _s5_complex(params: Mapping[str, jax.Array], real_dtype: DTypeLike):
    cast = lambda name: jnp.asarray(params[name]).astype(real_dtype)
    # clip_eigs of the S5 code: keep Re Lambda <= -1e-4 so the recurrence stays stable.
    Lambda = jax.lax.complex(jnp.minimum(cast("Lambda_re"), -1e-4), cast("Lambda_im"))
    return Lambda, to_complex(cast("B")), to_complex(cast("C"))


def _s5_sequence(params, u, log_scale, method, real_dtype):
    Lambda, B, C = _s5_complex(params, real_dtype)
    Bu = u.astype(B.dtype) @ B.T  # (L, M)
    log_step = params["log_step"].astype(real_dtype)
    if log_scale is not None:
        log_step = log_step + log_scale[:, None]
    Lambda_bar, factor = discretize(Lambda, 1.0, log_step, method)
    Bu_bar = factor * Bu
    y = 2.0 * (linear_recurrence(Lambda_bar, Bu_bar) @ C[0].T).real
    if C.shape[0] == 2:
        y = y + 2.0 * (linear_recurrence(Lambda_bar, Bu_bar, reverse=True) @ C[1].T).real
    return y + params["D"].astype(real_dtype) * u


def _log_step_scale(step_scale: ArrayLike, shape: tuple[int, ...], real_dtype: DTypeLike) -> jax.Array:
    step_scale = jnp.asarray(step_scale)
    try:
        ok = np.broadcast_shapes(step_scale.shape, shape) == tuple(shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"step_scale must be a scalar or broadcastable to {tuple(shape)} (the input's shape without the "
            f"feature axis), got shape {step_scale.shape}"
        )
    return jnp.broadcast_to(jnp.log(step_scale.astype(real_dtype)), shape)


def s5_apply(
    params: Mapping[str, jax.Array],
    u: ArrayLike,
    *,
    step_scale: ArrayLike | None = None,
    method: str = "zoh",
    dtype: DTypeLike | None = None,
) -> jax.Array:
    """S5 over whole sequences with a parallel scan (S5 paper, Sec. 3.2 and eq. (6)).

    The scan runs in at least complex64 whatever the input; compiles once per shapes, dtypes and options,
    also when called eagerly.

    Args:
      params: from `s5_init_params`.
      u: (..., L, H) real input (integer input is read as float32).
      step_scale: optional positive factor on Delta: a scalar (e.g. a changed sampling rate) or an
        array broadcastable to u.shape[:-1] (one Delta per token, for irregular sampling).
      method: "zoh" or "bilinear".
      dtype: output dtype; default: u's floating dtype (float32 for integer u).

    Returns:
      (..., L, H) output.

    Refuses: complex u (TypeError), u not of shape (..., L >= 1, H), a step_scale not broadcastable to
    u.shape[:-1] (ValueError).

    >>> params = s5_init_params(jax.random.key(0), 2, 8, 2, bidirectional=True)
    >>> s5_apply(params, jnp.ones((5, 7, 2))).shape
    (5, 7, 2)
    """
    u = jnp.asarray(u)
    _check_sequence(u, params["D"].shape[0])
    out_dtype, real_dtype = _io_dtypes(u, "u", dtype, params["D"].dtype)
    log_scale = None if step_scale is None else _log_step_scale(step_scale, u.shape[:-1], real_dtype)
    return _s5_apply_jit(dict(params), u, log_scale, method, out_dtype, real_dtype)


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _s5_apply_jit(params, u, log_scale, method, out_dtype, real_dtype):
    # One compiled program per (shapes, dtypes, options) for eager callers; inlined under the caller's jit.
    u = u.astype(real_dtype)
    sequences = u.reshape(-1, *u.shape[-2:])
    if log_scale is None:
        y = jax.vmap(lambda seq: _s5_sequence(params, seq, None, method, real_dtype))(sequences)
    else:
        log_scale = log_scale.reshape(-1, u.shape[-2])
        y = jax.vmap(lambda seq, ls: _s5_sequence(params, seq, ls, method, real_dtype))(sequences, log_scale)
    return y.reshape(u.shape).astype(out_dtype)


def s5_step(
    params: Mapping[str, jax.Array],
    state: jax.Array,
    u_t: ArrayLike,
    *,
    step_scale: ArrayLike | None = None,
    method: str = "zoh",
    dtype: DTypeLike | None = None,
) -> tuple[jax.Array, jax.Array]:
    """One S5 recurrent step: x <- Lambda_bar x + B_bar u_t, y_t = 2 Re(C x) + D u_t.

    Args:
      params: causal S5 parameters.
      state: (..., M) complex state, zeros to start (`S5Config.init_cache`); keeps its dtype.
      u_t: (..., H) real input at one position.
      step_scale: optional factor on Delta for this token, broadcastable to u_t.shape[:-1].
      method: "zoh" or "bilinear".
      dtype: output dtype; default: u_t's floating dtype (float32 for integer u_t).

    Returns:
      (y_t (..., H), new state).

    Refuses: bidirectional parameters, complex u_t or a real state (TypeError), u_t not (..., H), a state
    whose shape is not u_t.shape[:-1] + (M,), a step_scale not broadcastable to u_t.shape[:-1] (ValueError).

    >>> params = s5_init_params(jax.random.key(0), 2, 8, 2)
    >>> y, state = s5_step(params, jnp.zeros(4, jnp.complex64), jnp.ones(2))
    >>> y.shape, state.shape
    ((2,), (4,))
    """
    _check_causal(params)
    u_t, state = jnp.asarray(u_t), jnp.asarray(state)
    H, M = params["D"].shape[0], params["Lambda_re"].shape[0]
    _check_token(u_t, H)
    _check_state(state, (*u_t.shape[:-1], M), u_t.shape)
    out_dtype, real_dtype = _io_dtypes(u_t, "u_t", dtype, params["D"].dtype)
    u = u_t.astype(real_dtype)
    Lambda, B, C = _s5_complex(params, real_dtype)
    log_step = params["log_step"].astype(real_dtype)
    if step_scale is not None:
        log_step = log_step + _log_step_scale(step_scale, u_t.shape[:-1], real_dtype)[..., None]
    Lambda_bar, factor = discretize(Lambda, 1.0, log_step, method)
    new_state = Lambda_bar * state.astype(Lambda_bar.dtype) + factor * (u.astype(B.dtype) @ B.T)
    y = 2.0 * (new_state @ C[0].T).real + params["D"].astype(real_dtype) * u
    return y.astype(out_dtype), new_state.astype(state.dtype)
