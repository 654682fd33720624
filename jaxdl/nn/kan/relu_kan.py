"""ReLU-KAN basis (Qiu et al. 2024, "ReLU-KAN: New Kolmogorov-Arnold Networks that Only Need Matrix Addition,
Dot Multiplication, and ReLU", arXiv 2406.02075, Sec. 3).

R_i(x) = [ReLU(e_i - x) * ReLU(x - s_i)]^2 * 16 / (e_i - s_i)^4: a smooth bump on [s_i, e_i] with peak 1.
With s_i = t_i and e_i = t_{i+k+1} it has the support of the order-k B-spline B_i on the same knots, which is
how `KANLinear(basis="relu")` uses it (so the grid update applies unchanged).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

__all__ = ["relu_kan_basis", "relu_kan_supports"]


def relu_kan_basis(x: ArrayLike, starts: ArrayLike, ends: ArrayLike) -> Array:
    """ReLU-KAN bumps R_i(x) = (ReLU(e_i - x) ReLU(x - s_i))^2 * 16 / (e_i - s_i)^4 (ReLU-KAN Sec. 3).

    Args:
      x: inputs of shape (..., D).
      starts: bump starts s, shape (D, M) or (M,) (shared by all inputs).
      ends: bump ends e, same shape as `starts`, with e > s.

    Returns:
      Basis values of shape (..., D, M), each in [0, 1].

    >>> import jax.numpy as jnp
    >>> relu_kan_basis(jnp.array([0.5]), jnp.array([0.0]), jnp.array([1.0])).tolist()
    [[1.0]]
    """
    x = jnp.asarray(x)
    starts = jnp.asarray(starts)
    ends = jnp.asarray(ends)
    if starts.shape != ends.shape:
        raise ValueError(f"starts and ends must have the same shape, got {starts.shape} and {ends.shape}")
    if x.ndim < 1 or starts.ndim not in (1, 2) or (starts.ndim == 2 and starts.shape[0] != x.shape[-1]):
        raise ValueError(
            f"starts must have shape (M,) or (D, M) with D = x.shape[-1]; got x {x.shape}, starts {starts.shape}"
        )
    # Outside [min s, max e] every bump is 0; clamping there keeps +-inf inputs from giving 0 * inf.
    x = jnp.clip(x[..., None], starts.min(axis=-1, keepdims=True) - 1, ends.max(axis=-1, keepdims=True) + 1)
    scale = 4.0 / (ends - starts) ** 2
    return (jax.nn.relu(ends - x) * jax.nn.relu(x - starts) * scale) ** 2


def relu_kan_supports(grid: ArrayLike, order: int) -> tuple[Array, Array]:
    """Bump starts and ends on extended knots: s_i = t_i, e_i = t_{i+k+1} for i = 0 .. G+k-1.

    On the uniform grid of [0, 1] this is ReLU-KAN's s_i = (i - k)/G, e_i = s_i + (k + 1)/G.

    Args:
      grid: knots of shape (D, G + 2k + 1).
      order: k.

    Returns:
      (starts, ends), each of shape (D, G + k).

    >>> import jax.numpy as jnp
    >>> s, e = relu_kan_supports(jnp.arange(6.0)[None], 1)
    >>> s.tolist(), e.tolist()
    ([[0.0, 1.0, 2.0, 3.0]], [[2.0, 3.0, 4.0, 5.0]])
    """
    grid = jnp.asarray(grid)
    return grid[:, : -(order + 1)], grid[:, order + 1 :]
