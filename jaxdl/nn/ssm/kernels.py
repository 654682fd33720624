"""Discretisation, the diagonal SSM convolution kernel, FFT convolution, the parallel scan and the
transfer function of a linear state-space model.

x'(t) = A x(t) + B u(t),  y(t) = C x(t) with diagonal A = diag(Lambda):

- Zero-order hold:  Lambda_bar = exp(Delta Lambda),  B_bar = (Lambda_bar - 1) / Lambda * B.
- Bilinear:         Lambda_bar = (1 + Delta Lambda/2) / (1 - Delta Lambda/2),  B_bar = Delta / (1 - Delta Lambda/2) * B.
- Convolution kernel (S4D paper, Gu et al. 2022, eq. (5)/(6), a Vandermonde product):
  K_l = 2 Re sum_n C_n B_bar_n Lambda_bar_n^l, so y = K * u (causal convolution, done by FFT).
- Recurrence (S5 paper, Smith et al. 2023, Sec. 3.2 and App. H): x_k = Lambda_bar x_{k-1} + B_bar u_k, run
  with `jax.lax.associative_scan` on (a_i, b_i) . (a_j, b_j) = (a_j a_i, a_j b_i + b_j).
- Transfer function (PTD paper, Yu et al. 2024, Sec. 3): G(i omega) = C (i omega I - A)^{-1} B.

All state-space quantities are complex here; the layers store them as real pairs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = [
    "discretize",
    "ssm_kernel",
    "bidirectional_kernel",
    "fft_conv",
    "linear_recurrence",
    "transfer_function",
]

_METHODS = ("zoh", "bilinear")


def _check_method(method: str) -> None:
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")


def discretize(Lambda, B, log_step, method: str = "zoh"):
    """Discretise a diagonal continuous-time SSM with step Delta = exp(log_step).

    Args:
      Lambda: (..., N) complex diagonal of A.
      B: (..., N) or (..., N, H) complex input matrix (a trailing input axis is allowed).
      log_step: log Delta, broadcastable to Lambda.
      method: "zoh" (zero-order hold) or "bilinear".

    Returns:
      (Lambda_bar, B_bar) with the shapes of Lambda and B.

    >>> Lambda_bar, B_bar = discretize(jnp.array([-1.0 + 0j]), jnp.array([1.0 + 0j]), jnp.log(0.1))
    >>> print(f"{Lambda_bar[0].real:.4f} {B_bar[0].real:.4f}")
    0.9048 0.0952
    """
    _check_method(method)
    Lambda = jnp.asarray(Lambda)
    step = jnp.exp(jnp.asarray(log_step)).astype(Lambda.real.dtype)
    z = step * Lambda
    if method == "zoh":
        Lambda_bar = jnp.exp(z)
        factor = (Lambda_bar - 1.0) / Lambda
    else:
        Lambda_bar = (1.0 + z / 2) / (1.0 - z / 2)
        factor = step / (1.0 - z / 2)
    B = jnp.asarray(B)
    if B.ndim > factor.ndim:
        factor = factor[..., None]
    return Lambda_bar, factor * B


def _log_lambda_bar(Lambda, log_step, method):
    step = jnp.exp(jnp.asarray(log_step)).astype(Lambda.real.dtype)
    if method == "zoh":
        return step * Lambda
    return jnp.log((1.0 + step * Lambda / 2) / (1.0 - step * Lambda / 2))


def ssm_kernel(Lambda, B, C, log_step, L: int, *, method: str = "zoh", chunk_size: int | None = None):
    """The convolution kernel K_l = 2 Re sum_n C_n B_bar_n Lambda_bar_n^l of a diagonal SSM (S4D eq. (6)).

    The Vandermonde matrix Lambda_bar_n^l is built chunk by chunk of positions under
    `jax.checkpoint`, so memory stays O(H (N + L) + H N chunk_size) instead of O(H N L), also when
    differentiating.

    Args:
      Lambda: (H, N) complex diagonal of A per channel.
      B: (H, N) complex input vector per channel.
      C: (..., H, N) complex output vectors (a leading axis holds e.g. the two directions).
      log_step: (H,) log Delta per channel.
      L: kernel length.
      method: "zoh" or "bilinear".
      chunk_size: positions per chunk (a positive integer); default keeps H N chunk_size near 2^24.

    Returns:
      (..., H, L) real kernel.

    >>> K = ssm_kernel(jnp.full((1, 1), -1.0 + 0j), jnp.ones((1, 1)), jnp.full((1, 1), 0.5), jnp.zeros(1), 3)
    >>> print([f"{k:.4f}" for k in K[0]])
    ['0.6321', '0.2325', '0.0855']
    """
    _check_method(method)
    if not isinstance(L, int) or L < 1:
        raise ValueError(f"L must be a positive integer, got {L!r}")
    Lambda, B, C = jnp.asarray(Lambda), jnp.asarray(B), jnp.asarray(C)
    if Lambda.ndim != 2 or B.shape != Lambda.shape or C.shape[-2:] != Lambda.shape:
        raise ValueError(
            f"expected Lambda and B of shape (H, N) and C of shape (..., H, N), got {Lambda.shape}, "
            f"{B.shape}, {C.shape}"
        )
    H, N = Lambda.shape
    log_step = jnp.asarray(log_step)
    if log_step.shape != (H,):
        raise ValueError(f"log_step must have shape (H,) = {(H,)}, got {log_step.shape}")
    log_step = log_step[:, None]
    if chunk_size is None:
        chunk_size = max(16, 2**24 // max(H * N, 1))
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    chunk_size = min(chunk_size, L)
    num_chunks = -(-L // chunk_size)
    _, B_bar = discretize(Lambda, B, log_step, method)
    weights = C * B_bar  # (..., H, N)
    log_bar = _log_lambda_bar(Lambda, log_step, method)  # (H, N)

    @jax.checkpoint
    def chunk(start):
        positions = (start + jnp.arange(chunk_size)).astype(Lambda.real.dtype)
        vandermonde = jnp.exp(log_bar[..., None] * positions)  # (H, N, chunk)
        return 2.0 * jnp.einsum("...hn,hnl->...hl", weights, vandermonde).real

    pieces = jax.lax.map(chunk, jnp.arange(num_chunks) * chunk_size)  # (chunks, ..., H, chunk)
    K = jnp.moveaxis(pieces, 0, -2)
    return K.reshape(*K.shape[:-2], num_chunks * chunk_size)[..., :L]


def bidirectional_kernel(K_forward, K_backward):
    """Circular kernel of length 2L that runs K_forward causally and K_backward anti-causally.

    y_t = sum_{s<=t} K_forward[t-s] u_s + sum_{s>=t} K_backward[s-t] u_s, i.e. the backward SSM
    is the forward SSM run on the reversed sequence (no off-by-one).

    Args:
      K_forward, K_backward: (..., L) kernels.

    Returns:
      (..., 2L) kernel for `fft_conv`.

    >>> bidirectional_kernel(jnp.array([1.0, 2.0]), jnp.array([10.0, 20.0]))
    Array([11.,  2.,  0., 20.], dtype=float32)
    """
    K_forward, K_backward = jnp.asarray(K_forward), jnp.asarray(K_backward)
    zero = jnp.zeros_like(K_forward[..., :1])
    head = K_forward.at[..., 0].add(K_backward[..., 0])
    return jnp.concatenate([head, zero, jnp.flip(K_backward[..., 1:], axis=-1)], axis=-1)


def fft_conv(u: ArrayLike, K: ArrayLike) -> jax.Array:
    """Convolution of u with a per-channel kernel via real FFTs of length 2L.

    The FFT runs in at least float32 (XLA's FFT takes no bfloat16 or integers); the result has u's
    floating dtype (float32 for integer u).

    Args:
      u: (..., L, H) real input.
      K: (H, L) causal kernel, or (H, 2L) circular kernel from `bidirectional_kernel`.

    Returns:
      (..., L, H) output, y_t = sum_s K[t - s] u_s (causal) or with circular indexing mod 2L.

    Refuses complex u or K (TypeError) and a K of another shape (ValueError).

    >>> fft_conv(jnp.array([[1.0], [0.0], [0.0]]), jnp.array([[1.0, 0.5, 0.25]]))[:, 0]
    Array([1.  , 0.5 , 0.25], dtype=float32)
    """
    u, K = jnp.asarray(u), jnp.asarray(K)
    for name, array in (("u", u), ("K", K)):
        if jnp.issubdtype(array.dtype, jnp.complexfloating):
            raise TypeError(f"{name} must be a real array, got dtype {array.dtype}")
    if u.ndim < 2:
        raise ValueError(f"u must have shape (..., L, H), got {u.shape}")
    L, H = u.shape[-2:]
    if K.shape not in ((H, L), (H, 2 * L)):
        raise ValueError(f"K must have shape (H, L) = {(H, L)} or (H, 2L) = {(H, 2 * L)}, got {K.shape}")
    out_dtype = u.dtype if jnp.issubdtype(u.dtype, jnp.floating) else jnp.dtype(jnp.float32)
    real_dtype = jnp.promote_types(jnp.promote_types(out_dtype, K.dtype), jnp.float32)
    n = 2 * L
    u_f = jnp.fft.rfft(u.astype(real_dtype), n=n, axis=-2)
    K_f = jnp.fft.rfft(K.astype(real_dtype), n=n, axis=-1).T
    return jnp.fft.irfft(u_f * K_f, n=n, axis=-2)[..., :L, :].astype(out_dtype)


def linear_recurrence(Lambda_bar, Bu, *, reverse: bool = False):
    """All states of x_k = Lambda_bar_k x_{k-1} + Bu_k (x_{-1} = 0) by a parallel associative scan.

    S5 paper (Smith et al., ICLR 2023), Sec. 3.2: the operator
    (a_i, b_i) . (a_j, b_j) = (a_j a_i, a_j b_i + b_j) is associative, so `jax.lax.associative_scan`
    runs the recurrence in O(log L) depth.

    Args:
      Lambda_bar: (P,) or (L, P) (a per-token transition) complex.
      Bu: (L, P) complex inputs to the state.
      reverse: run from the last token to the first.

    Returns:
      (L, P) states.

    >>> linear_recurrence(jnp.array([0.5]), jnp.ones((3, 1))).real[:, 0]
    Array([1.  , 1.5 , 1.75], dtype=float32)
    """
    Bu = jnp.asarray(Bu)
    a = jnp.broadcast_to(jnp.asarray(Lambda_bar), Bu.shape)

    def combine(left, right):
        a_i, b_i = left
        a_j, b_j = right
        return a_j * a_i, a_j * b_i + b_j

    _, states = jax.lax.associative_scan(combine, (a, Bu), reverse=reverse)
    return states


def transfer_function(A, B, C, omega):
    """G(i omega) = C (i omega I - A)^{-1} B, for dense or diagonal A (PTD paper, Sec. 3).

    Args:
      A: (N, N) state matrix, or (N,) its diagonal.
      B: (N,) input vector.
      C: (N,) output vector, or (P, N) for P outputs (C = I gives the resolvent (i omega - A)^{-1} B).
      omega: (W,) real frequencies.

    Returns:
      (W,) or (W, P) complex transfer function values.

    >>> G = transfer_function(jnp.array([-1.0]), jnp.array([1.0]), jnp.array([1.0]), jnp.array([0.0, 1.0]))
    >>> print(jnp.round(G, 3))
    [1. +0.j  0.5-0.5j]
    """
    A, B, C = jnp.asarray(A), jnp.asarray(B), jnp.asarray(C)
    N = B.shape[-1]
    if A.shape not in ((N,), (N, N)) or B.shape != (N,) or C.ndim not in (1, 2) or C.shape[-1] != N:
        raise ValueError(
            f"expected A (N,) or (N, N), B (N,), C (N,) or (P, N) with N = {N}, got {A.shape}, {B.shape}, {C.shape}"
        )
    s = 1j * jnp.asarray(omega)
    if A.ndim == 1:
        states = B / (s[:, None] - A)
    else:
        eye = jnp.eye(N, dtype=s.dtype)
        states = jax.vmap(lambda z: jnp.linalg.solve(z * eye - A, B.astype(s.dtype)))(s)
    return states @ C.T
