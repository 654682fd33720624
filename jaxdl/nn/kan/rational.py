"""Group-rational activation of GR-KAN (Yang & Wang 2025, "Kolmogorov-Arnold Transformer", ICLR, Sec. 4).

F(x) = P(x) / Q(x) with P(x) = a_0 + a_1 x + ... + a_m x^m and Q(x) = 1 + |b_1| |x| + ... + |b_n| |x|^n, the form
KAT's CUDA/Triton kernels compute (Q >= 1, so F has no poles). Channels are split into groups that share one
(a, b). Initial coefficients are a least-squares fit of a target activation in exactly this form, and the
variance-preserving gain is 1 / E[F(x)^2] for x ~ N(0, 1) (KAT Sec. 4.3).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

__all__ = ["fit_rational", "gr_kan", "group_rational", "rational", "rational_gain"]


def rational(x: ArrayLike, numerator: ArrayLike, denominator: ArrayLike) -> Array:
    """F(x) = (a_0 + ... + a_m x^m) / (1 + |b_1||x| + ... + |b_n||x|^n), elementwise (KAT Sec. 4.1).

    Args:
      x: inputs of any shape.
      numerator: a of shape (*C, m + 1), lowest degree first; *C broadcasts against x.shape.
      denominator: b of shape (*C, n), b_1 first.

    Returns:
      F(x), shape broadcast(x.shape, C).

    >>> import jax.numpy as jnp
    >>> rational(jnp.array([-2.0, 2.0]), jnp.array([0.0, 1.0, 1.0]), jnp.array([1.0])).tolist()
    [0.6666666865348816, 2.0]
    """
    x = jnp.asarray(x)
    numerator = jnp.asarray(numerator)
    denominator = jnp.abs(jnp.asarray(denominator))
    if numerator.ndim < 1 or denominator.ndim < 1:
        raise ValueError(
            f"numerator and denominator need a coefficient axis, got {numerator.shape}, {denominator.shape}"
        )
    p = numerator[..., -1]
    for j in range(numerator.shape[-1] - 2, -1, -1):
        p = p * x + numerator[..., j]
    ax = jnp.abs(x)
    q = jnp.zeros_like(ax) if denominator.shape[-1] == 0 else denominator[..., -1]
    for j in range(denominator.shape[-1] - 2, -1, -1):
        q = q * ax + denominator[..., j]
    return p / (1 + q * ax)


def group_rational(x: ArrayLike, numerator: ArrayLike, denominator: ArrayLike) -> Array:
    """GR-KAN's group-rational activation: channel c of D uses the coefficients of group c // (D / g).

    Args:
      x: inputs of shape (..., D), D divisible by g.
      numerator: shape (g, m + 1).
      denominator: shape (g, n).

    Returns:
      Shape (..., D).

    >>> import jax.numpy as jnp
    >>> num = jnp.array([[0.0, 1.0], [0.0, 2.0]]); den = jnp.zeros((2, 1))
    >>> group_rational(jnp.ones((1, 4)), num, den).tolist()
    [[1.0, 1.0, 2.0, 2.0]]
    """
    x = jnp.asarray(x)
    numerator = jnp.asarray(numerator)
    denominator = jnp.asarray(denominator)
    if numerator.ndim != 2 or denominator.ndim != 2 or numerator.shape[0] != denominator.shape[0]:
        raise ValueError(
            f"numerator (g, m+1) and denominator (g, n) must share g; got {numerator.shape}, {denominator.shape}"
        )
    groups = numerator.shape[0]
    if x.ndim < 1 or x.shape[-1] % groups:
        raise ValueError(f"x.shape[-1] must be divisible by the number of groups {groups}, got x {x.shape}")
    grouped = x.reshape(*x.shape[:-1], groups, x.shape[-1] // groups)
    return rational(grouped, numerator[:, None, :], denominator[:, None, :]).reshape(x.shape)


def _gelu(x):
    from scipy.special import erf

    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


_TARGETS: Mapping[str, Callable[[np.ndarray], np.ndarray]] = MappingProxyType(
    {
        "identity": lambda x: x,
        "swish": lambda x: x / (1 + np.exp(-x)),
        "gelu": _gelu,
        "tanh": np.tanh,
        "relu": lambda x: np.maximum(x, 0),
    }
)


def _check_rational_args(
    in_features: int, groups: Any, num_order: Any, den_order: Any, init: Any, init_name: str
) -> None:
    """The checks the NNX and Linen `GRKAN` share; `init_name` is the shell's name for the init target."""
    for name, value, minimum in (
        ("groups", groups, 1),
        ("num_order", num_order, 1),
        ("den_order", den_order, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if in_features % groups:
        raise ValueError(f"in_features ({in_features}) must be divisible by groups ({groups})")
    if init not in _TARGETS:
        raise ValueError(f"{init_name} must be one of {sorted(_TARGETS)}, got {init!r}")


@functools.lru_cache(maxsize=64)
def fit_rational(
    target: str = "swish",
    num_order: int = 5,
    den_order: int = 4,
    interval=(-3.0, 3.0),
    num_points: int = 1000,
) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares coefficients (a, b) such that `rational` matches a target activation on `interval`.

    The fit uses the same Q = 1 + sum |b_q||x|^q as the forward pass (KAT's released gelu coefficients were fit
    to another form and start 1.46 away from GELU under its kernels). It solves the linearised problem
    P(x) - f(x) sum c_q |x|^q = f(x) with c >= 0, then refines min sum (P/Q - f)^2 with scipy's bounded
    least squares. A tiny ridge penalty picks the smallest coefficients when the fit is not unique (for the
    a target with an exact low-degree form). Runs in NumPy/SciPy once per configuration (cached).

    Args:
      target: one of "identity", "swish" (= SiLU), "gelu" (exact erf form), "tanh", "relu".
      num_order: m, the numerator degree.
      den_order: n, the denominator degree.
      interval: fitting interval (KAT: [-3, 3]).
      num_points: evenly spaced fitting points (KAT: 1000).

    Returns:
      (numerator (m + 1,), denominator (n,)) as read-only float64 NumPy arrays (the result is cached),
      denominator >= 0.

    Refuses an unknown `target`, num_order < 1 or den_order < 0 (ValueError).

    >>> a, b = fit_rational("swish", 5, 4)
    >>> x = np.linspace(-3, 3, 101)
    >>> bool(np.abs(np.asarray(rational(x, a, b)) - x / (1 + np.exp(-x))).max() < 1e-5)
    True
    """
    from scipy.optimize import least_squares, lsq_linear

    if target not in _TARGETS:
        raise ValueError(f"target must be one of {sorted(_TARGETS)}, got {target!r}")
    if num_order < 1 or den_order < 0:
        raise ValueError(f"need num_order >= 1 and den_order >= 0, got {num_order}, {den_order}")
    if target == "identity":  # exact, and the least-squares problem is degenerate (P = x Q for any Q)
        numerator = np.zeros(num_order + 1)
        numerator[1] = 1.0
        return _read_only(numerator, np.zeros(den_order))  # type: ignore[return-value]
    x = np.linspace(float(interval[0]), float(interval[1]), num_points)
    f = _TARGETS[target](x)
    powers = x[:, None] ** np.arange(num_order + 1)
    abs_powers = np.abs(x)[:, None] ** np.arange(1, den_order + 1)
    design = np.concatenate([powers, -f[:, None] * abs_powers], axis=1)
    lower = np.r_[np.full(num_order + 1, -np.inf), np.zeros(den_order)]
    ridge = 1e-6 * np.eye(design.shape[1])
    start = lsq_linear(np.r_[design, ridge], np.r_[f, np.zeros(len(ridge))], bounds=(lower, np.inf)).x

    def residual(z):
        fit = (powers @ z[: num_order + 1]) / (1 + abs_powers @ z[num_order + 1 :]) - f
        return np.r_[fit, 1e-6 * z]

    z = least_squares(residual, start, bounds=(lower, np.inf), xtol=1e-15, ftol=1e-15, gtol=1e-15).x
    if np.sum(residual(z) ** 2) > np.sum(residual(start) ** 2):
        z = start
    return _read_only(z[: num_order + 1], z[num_order + 1 :])  # type: ignore[return-value]


def _read_only(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    # fit_rational is cached: hand out arrays nobody can change in place (copies, so no views are shared).
    out = tuple(np.array(a, np.float64) for a in arrays)
    for a in out:
        a.setflags(write=False)
    return out


def rational_gain(numerator: ArrayLike, denominator: ArrayLike, num_nodes: int = 128) -> float:
    """KAT's variance-preserving gain 1 / E[F(x)^2] for x ~ N(0, 1) (KAT Sec. 4.3).

    Computed with Gauss–Hermite quadrature instead of KAT's 10^6-sample Monte Carlo estimate. A linear layer
    after F keeps the activation variance with weights of variance gain / fan_in.

    Args:
      numerator: a of shape (m + 1,).
      denominator: b of shape (n,).
      num_nodes: quadrature nodes.

    Returns:
      The gain as a Python float (1.0 for the identity, about 2.82 for SiLU).

    >>> round(rational_gain([0.0, 1.0], [0.0]), 6)
    1.0
    """
    nodes, weights = np.polynomial.hermite_e.hermegauss(num_nodes)
    a = np.asarray(numerator, np.float64)
    b = np.abs(np.asarray(denominator, np.float64))
    p = np.polynomial.polynomial.polyval(nodes, a)
    q = 1 + np.polynomial.polynomial.polyval(np.abs(nodes), np.r_[0.0, b])
    second_moment = np.sum(weights * (p / q) ** 2) / math.sqrt(2 * math.pi)
    return float(1 / second_moment)


def gr_kan(
    x: ArrayLike,
    numerator: ArrayLike,
    denominator: ArrayLike,
    kernel: ArrayLike,
    bias: ArrayLike | None = None,
    *,
    dtype=None,
) -> Array:
    """GR-KAN layer y = F_g(x) @ W + bias: group-rational activation on the input, then a linear map (KAT eq. 9).

    The rational is evaluated in at least float32 (as KAT's kernels do under autocast); the matmul runs in
    `dtype` (default: promoted from the inputs and parameters).

    Args:
      x: inputs of shape (..., D).
      numerator: (g, m + 1); denominator: (g, n); D divisible by g.
      kernel: W of shape (D, N).
      bias: (N,) or None.
      dtype: computation dtype of the matmul.

    Returns:
      Shape (..., N).

    >>> import jax.numpy as jnp
    >>> a, b = fit_rational("identity")
    >>> gr_kan(jnp.ones((2, 8)), jnp.tile(a, (8, 1)), jnp.tile(b, (8, 1)), jnp.ones((8, 3))).tolist()
    [[8.0, 8.0, 8.0], [8.0, 8.0, 8.0]]
    """
    x = jnp.asarray(x)
    kernel = jnp.asarray(kernel)
    if x.ndim < 1 or x.shape[-1] != kernel.shape[0]:
        raise ValueError(f"x must have shape (..., {kernel.shape[0]}), got {x.shape}")
    if dtype is None:
        dtype = jnp.result_type(x, kernel, *(() if bias is None else (bias,)))
    return _gr_kan(x, jnp.asarray(numerator), jnp.asarray(denominator), kernel, bias, dtype)


@functools.partial(jax.jit, static_argnums=5)
def _gr_kan(x, numerator, denominator, kernel, bias, dtype):
    activated = group_rational(x.astype(jnp.promote_types(x.dtype, jnp.float32)), numerator, denominator)
    y = activated.astype(dtype) @ kernel.astype(dtype)
    return y if bias is None else y + bias.astype(dtype)
