"""Gaussian radial basis (Li 2024, "Kolmogorov-Arnold Networks are Radial Basis Function Networks" (FastKAN),
arXiv 2405.06721, Sec. 2): b_m(x) = exp(-((x - u_m) / h)^2), a close stand-in for cubic B-splines.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

__all__ = ["rbf_basis", "rbf_centers"]


def rbf_centers(in_features: int, num_centers: int, grid_range=(-2.0, 2.0), dtype=jnp.float32) -> Array:
    """FastKAN's centres: `num_centers` evenly spaced points on `grid_range`, one row per input.

    >>> rbf_centers(1, 3, (-1.0, 1.0)).tolist()
    [[-1.0, 0.0, 1.0]]
    """
    if num_centers < 2:
        raise ValueError(f"num_centers must be >= 2, got {num_centers}")
    centers = np.linspace(grid_range[0], grid_range[1], num_centers)
    return jnp.asarray(np.tile(centers, (in_features, 1)), dtype)


def rbf_basis(x: ArrayLike, centers: ArrayLike, width: ArrayLike | None = None) -> Array:
    """Gaussian bumps exp(-((x - u_m)/h)^2) (FastKAN Sec. 2).

    Args:
      x: inputs of shape (..., D).
      centers: u of shape (D, M) or (M,).
      width: h, a scalar or broadcastable to (D, M); default: the centre spacing (u_last - u_0)/(M - 1) per row,
        FastKAN's h = 4/7 for 8 centres on [-2, 2].

    Returns:
      Basis values of shape (..., D, M).

    >>> import jax.numpy as jnp
    >>> rbf_basis(jnp.array([0.0]), jnp.array([[-1.0, 0.0, 1.0]])).tolist() == [[jnp.exp(-1.0), 1.0, jnp.exp(-1.0)]]
    True
    """
    x = jnp.asarray(x)
    centers = jnp.asarray(centers)
    if x.ndim < 1 or centers.ndim not in (1, 2) or (centers.ndim == 2 and centers.shape[0] != x.shape[-1]):
        raise ValueError(
            f"centers must have shape (M,) or (D, M) with D = x.shape[-1]; got x {x.shape}, centers {centers.shape}"
        )
    if width is None:
        width = (centers[..., -1:] - centers[..., :1]) / (centers.shape[-1] - 1)
    return jnp.exp(-(((x[..., None] - centers) / width) ** 2))
