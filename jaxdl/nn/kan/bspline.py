"""B-spline basis by the Cox–de Boor recursion (Liu et al. 2024, "KAN: Kolmogorov-Arnold Networks", Sec. 2.2).

A KAN edge function is phi(x) = w_b * b(x) + sum_m c_m B_m(x), where B_m are the order-k B-splines on a grid
of G intervals extended by k knots on each side (G + 2k + 1 knots, G + k basis functions).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

__all__ = ["bspline_basis", "uniform_knots"]


def uniform_knots(in_features: int, grid_size: int, order: int, grid_range=(-1.0, 1.0), dtype=jnp.float32):
    """Extended uniform knots, one row per input (pykan `extend_grid` of a `linspace` grid).

    Args:
      in_features: number of inputs D.
      grid_size: number of grid intervals G on `grid_range`.
      order: spline order k; k knots are added on each side with the same step.
      grid_range: (low, high) of the un-extended grid.
      dtype: dtype of the result.

    Returns:
      Knots of shape (D, G + 2k + 1).

    >>> uniform_knots(1, 2, 1).tolist()
    [[-2.0, -1.0, 0.0, 1.0, 2.0]]
    """
    low, high = grid_range
    step = (high - low) / grid_size
    knots = low + step * np.arange(-order, grid_size + order + 1)
    return jnp.asarray(np.tile(knots, (in_features, 1)), dtype)


def _safe_divide(numerator: Array, denominator: Array) -> Array:
    # Repeated knots give 0/0 terms that Cox–de Boor defines as 0; guard the division so gradients stay finite.
    nonzero = denominator != 0
    return jnp.where(nonzero, numerator / jnp.where(nonzero, denominator, 1), 0)


def bspline_basis(x: ArrayLike, grid: ArrayLike, order: int) -> Array:
    """B-spline basis functions of order `order` on per-input knots (KAN paper Sec. 2.2, Cox–de Boor recursion).

    B_{m,0}(x) = 1[t_m <= x < t_{m+1}] and
    B_{m,p}(x) = (x - t_m)/(t_{m+p} - t_m) B_{m,p-1}(x) + (t_{m+p+1} - x)/(t_{m+p+1} - t_{m+1}) B_{m+1,p-1}(x).
    Intervals are half-open, so every basis function is 0 outside [t_0, t_last), also at x = +-inf (NaN stays
    NaN). Inside the un-extended grid [t_k, t_{G+k}) the functions sum to 1.

    Args:
      x: inputs of shape (..., D).
      grid: knots of shape (D, G + 2k + 1), non-decreasing along the last axis.
      order: spline order k >= 0 (3 is cubic).

    Returns:
      Basis values of shape (..., D, G + k).

    Refuses (ValueError): order not an int >= 0, a grid not of shape (D, >= order + 2), and concrete (not
    traced) knots that are non-finite, decreasing, or span no interval in some row.

    >>> import jax.numpy as jnp
    >>> basis = bspline_basis(jnp.array([[0.1, -0.5]]), uniform_knots(2, 5, 3), 3)
    >>> basis.shape, bool(jnp.allclose(basis.sum(-1), 1.0))
    ((1, 2, 8), True)
    """
    x = jnp.asarray(x)
    grid = jnp.asarray(grid)
    if not isinstance(order, int) or order < 0:
        raise ValueError(f"order must be an int >= 0, got {order!r}")
    if grid.ndim != 2 or x.ndim < 1 or grid.shape[0] != x.shape[-1]:
        raise ValueError(
            f"grid must have shape (D, num_knots) with D = x.shape[-1]; got x {x.shape}, grid {grid.shape}"
        )
    if grid.shape[1] < order + 2:
        raise ValueError(f"grid needs at least order + 2 = {order + 2} knots per input, got {grid.shape[1]}")
    if not isinstance(grid, jax.core.Tracer):  # concrete knots can be checked; traced ones cannot
        knots = np.asarray(grid, np.float64)
        if (
            not np.all(np.isfinite(knots))
            or np.any(np.diff(knots, axis=1) < 0)
            or np.any(knots[:, -1] <= knots[:, 0])
        ):
            raise ValueError(
                "grid must hold finite, non-decreasing knots spanning a positive interval in every row, got "
                f"rows from {knots[:, 0].tolist()} to {knots[:, -1].tolist()}"
            )
    return _cox_de_boor(x, grid, order)


@functools.partial(jax.jit, static_argnums=2)
def _cox_de_boor(x: Array, grid: Array, order: int) -> Array:
    dtype = jnp.result_type(x, grid, jnp.float32)
    t = grid.astype(dtype)
    # Outside [t_0, t_last) every basis function is 0; clamping there keeps +-inf inputs from giving inf * 0.
    x = jnp.clip(x.astype(dtype)[..., None], t[:, :1] - 1, t[:, -1:] + 1)
    basis = ((x >= t[:, :-1]) & (x < t[:, 1:])).astype(dtype)
    for p in range(1, order + 1):
        left = _safe_divide(x - t[:, : -(p + 1)], t[:, p:-1] - t[:, : -(p + 1)])
        right = _safe_divide(t[:, p + 1 :] - x, t[:, p + 1 :] - t[:, 1:-p])
        basis = left * basis[..., :-1] + right * basis[..., 1:]
    return basis
