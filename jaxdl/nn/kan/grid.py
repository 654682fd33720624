"""Grid update and grid extension for knot-based KAN layers (Liu et al. 2024, "KAN", Sec. 2.2 "grid update",
Sec. 2.4 "grid extension"; pykan `update_grid_from_samples`, `initialize_grid_from_parent`).

Both are pure functions (knots, coefficients, samples) -> (new knots, new coefficients). The coefficients are
refit by least squares so that the layer's spline part stays the same function on the samples.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

__all__ = [
    "adaptive_knots",
    "extend_knots",
    "fit_coefficients",
    "refine",
    "refined_knots",
    "resize_basis_axis",
    "update_grid",
]

BasisFn = Callable[[Array, Array], Array]  # (x (B, D), knots (D, K)) -> features (B, D, M)


def extend_knots(interior: ArrayLike, order: int) -> Array:
    """Add `order` knots on each side of interior knots (D, G + 1), with step (last - first) / G (pykan).

    >>> import jax.numpy as jnp
    >>> extend_knots(jnp.array([[0.0, 1.0, 3.0]]), 1).tolist()
    [[-1.5, 0.0, 1.0, 3.0, 4.5]]
    """
    interior = jnp.asarray(interior)
    step = (interior[:, -1:] - interior[:, :1]) / (interior.shape[1] - 1)
    offsets = jnp.arange(1, order + 1, dtype=interior.dtype)
    left = interior[:, :1] - step * offsets[::-1]
    right = interior[:, -1:] + step * offsets
    return jnp.concatenate([left, interior, right], axis=1)


def adaptive_knots(x: ArrayLike, grid_size: int, order: int, grid_eps: float = 0.02) -> Array:
    """Knots from samples: grid_eps * uniform + (1 - grid_eps) * quantiles, then extended (KAN Sec. 2.2).

    The adaptive grid takes the sorted samples at indices floor(n j / G), j < G, plus the largest sample; the
    uniform grid spans [min, max] in G equal steps. Non-finite samples (NaN, +-inf) are ignored: n counts the
    finite samples of each input. An input without a finite sample gets non-finite knots (`update_grid` keeps
    its old grid then).

    Args:
      x: samples of shape (B, D).
      grid_size: G.
      order: k.
      grid_eps: weight of the uniform grid, in [0, 1] (pykan default 0.02).

    Returns:
      Knots of shape (D, G + 2k + 1).

    >>> import jax.numpy as jnp
    >>> adaptive_knots(jnp.array([[0.0], [1.0], [2.0], [9.0]]), 2, 0, grid_eps=0.0).tolist()
    [[0.0, 2.0, 9.0]]
    """
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (batch, in_features), got {x.shape}")
    if not isinstance(grid_eps, jax.Array) and not 0.0 <= grid_eps <= 1.0:
        raise ValueError(f"grid_eps must be in [0, 1], got {grid_eps}")
    finite = jnp.isfinite(x)
    count = finite.sum(axis=0)[:, None]  # (D, 1) finite samples per input
    ordered = jnp.sort(jnp.where(finite, x, jnp.inf), axis=0).T  # (D, B), the non-finite ones last
    last = jnp.maximum(count - 1, 0)
    indices = jnp.concatenate([(count * np.arange(grid_size)) // grid_size, last], axis=1)
    quantiles = jnp.take_along_axis(ordered, indices, axis=1)
    fractions = jnp.linspace(0.0, 1.0, grid_size + 1, dtype=ordered.dtype)
    low, high = ordered[:, :1], jnp.take_along_axis(ordered, last, axis=1)
    uniform = low + (high - low) * fractions
    return extend_knots(grid_eps * uniform + (1 - grid_eps) * quantiles, order)


def refined_knots(grid: ArrayLike, order: int, new_grid_size: int) -> Array:
    """Knots for grid extension: the parent's interior knots linearly interpolated at G' + 1 points (KAN Sec. 2.4).

    Args:
      grid: parent knots of shape (D, G + 2k + 1).
      order: k.
      new_grid_size: G'.

    Returns:
      Knots of shape (D, G' + 2k + 1).

    >>> from jaxdl.nn.kan.bspline import uniform_knots
    >>> refined_knots(uniform_knots(1, 2, 1), 1, 4).tolist()
    [[-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5]]
    """
    grid = jnp.asarray(grid)
    interior = grid[:, order : grid.shape[1] - order]
    old_size = interior.shape[1] - 1
    positions = np.linspace(0.0, old_size, new_grid_size + 1)
    resampled = jax.vmap(lambda row: jnp.interp(positions, np.arange(old_size + 1.0), row))(interior)
    return extend_knots(resampled, order)


def fit_coefficients(features: ArrayLike, targets: ArrayLike) -> Array:
    """Per-input least squares: for each d, coef_d = argmin ||features[:, d] @ coef_d - targets[:, d]||.

    Uses an SVD solve (minimum-norm where a basis function has no samples), vmapped over inputs.

    Args:
      features: basis values of shape (B, D, M).
      targets: per-edge curves of shape (B, D, N).

    Returns:
      Coefficients of shape (D, M, N).

    >>> import jax.numpy as jnp
    >>> fit_coefficients(jnp.ones((3, 1, 1)), 2 * jnp.ones((3, 1, 1))).round(5).tolist()
    [[[2.0]]]
    """
    solve = lambda a, b: jnp.linalg.lstsq(a, b)[0]
    return jax.vmap(solve, in_axes=(1, 1))(jnp.asarray(features), jnp.asarray(targets))


def _edge_curves(basis_fn: BasisFn, x: Array, grid: Array, coef: Array) -> Array:
    return jnp.einsum("bdm,dmn->bdn", basis_fn(x, grid), coef)


def _refit(basis_fn: BasisFn, x: Array, grid: Array, coef: Array, new_grid: Array) -> Array:
    """Least-squares coefficients on new_grid that keep the curves on the finite samples of each input."""
    finite = jnp.isfinite(x)
    x = jnp.where(finite, x, 0.0)
    keep = finite[..., None].astype(x.dtype)  # a non-finite sample of input d drops out of input d's fit
    features = basis_fn(x, new_grid) * keep
    targets = _edge_curves(basis_fn, x, grid, coef) * keep
    return fit_coefficients(features, targets)


def _check_samples(x: Array, grid: Array, minimum: int, why: str) -> None:
    """Shape checks, and (for concrete x) enough finite samples per input; ValueError naming x otherwise."""
    if x.ndim != 2 or x.shape[1] != grid.shape[0]:
        raise ValueError(f"x must have shape (batch, {grid.shape[0]}), got {x.shape}")
    if x.shape[0] < minimum:
        raise ValueError(f"x must hold at least {minimum} samples {why}, got {x.shape[0]}")
    if not isinstance(x, jax.core.Tracer):
        count = np.asarray(jnp.isfinite(x).sum(axis=0))
        if count.min() < minimum:
            d = int(count.argmin())
            raise ValueError(
                f"x must hold at least {minimum} finite samples of every input {why}; input {d} has "
                f"{int(count[d])} (non-finite samples are ignored)"
            )


def update_grid(
    basis_fn: BasisFn, x: ArrayLike, grid: ArrayLike, coef: ArrayLike, order: int, grid_eps: float = 0.02
) -> tuple[Array, Array]:
    """Move the knots to the sample distribution and refit the coefficients (KAN Sec. 2.2, "grid update").

    Args:
      basis_fn: (x (B, D), knots) -> features (B, D, M), e.g. `partial(bspline_basis, order=k)`.
      x: samples of shape (B, D), the layer's inputs.
      grid: current knots (D, G + 2k + 1).
      coef: current coefficients (D, M, N).
      order: k.
      grid_eps: uniform-grid weight (0: pure quantiles).

    Returns:
      (new knots, new coefficients), same shapes as the inputs.

    Non-finite samples are ignored (per input: a NaN in x[b, d] removes sample b from input d's knots and
    fit). An input whose finite samples are all equal cannot place knots and keeps its grid and coefficients.
    Refuses (ValueError): x not (B, D), an empty x, grid_eps outside [0, 1], and, when x is concrete (not
    traced), an input without any finite sample; under `jax.jit` such an input keeps its grid and
    coefficients too.

    >>> import functools, jax.numpy as jnp
    >>> from jaxdl.nn.kan.bspline import bspline_basis, uniform_knots
    >>> basis = functools.partial(bspline_basis, order=3)
    >>> x = jnp.linspace(-0.5, 0.5, 64)[:, None]
    >>> grid, coef = update_grid(basis, x, uniform_knots(1, 5, 3), jnp.ones((1, 8, 2)), 3)
    >>> grid.shape, coef.shape
    ((1, 12), (1, 8, 2))
    """
    x, grid, coef = jnp.asarray(x), jnp.asarray(grid), jnp.asarray(coef)
    _check_samples(x, grid, 1, "to place knots")
    if not 0.0 <= grid_eps <= 1.0:
        raise ValueError(f"grid_eps must be in [0, 1], got {grid_eps}")
    return _update_grid(basis_fn, x, grid, coef, order, grid_eps)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _update_grid(basis_fn, x, grid, coef, order, grid_eps):
    new_grid = adaptive_knots(x, grid.shape[1] - 2 * order - 1, order, grid_eps).astype(grid.dtype)
    finite = jnp.isfinite(x)
    low = jnp.min(jnp.where(finite, x, jnp.inf), axis=0)
    high = jnp.max(jnp.where(finite, x, -jnp.inf), axis=0)
    usable = high > low  # (D,): inputs whose finite samples span no interval keep their grid and coefficients
    new_grid = jnp.where(usable[:, None], new_grid, grid)
    new_coef = jnp.where(usable[:, None, None], _refit(basis_fn, x, grid, coef, new_grid), coef)
    return new_grid, new_coef.astype(coef.dtype)


def refine(
    basis_fn: BasisFn, x: ArrayLike, grid: ArrayLike, coef: ArrayLike, order: int, new_grid_size: int
) -> tuple[Array, Array]:
    """Grid extension: a finer (or coarser) grid and the coefficients that best keep the curves on `x` (KAN Sec. 2.4).

    The coefficient array changes shape from (D, G + k, N) to (D, G' + k, N): optimizer moments for it must be
    rebuilt, either re-initialised or carried over with `resize_basis_axis`.

    Args:
      basis_fn: (x (B, D), knots) -> features (B, D, M).
      x: samples of shape (B, D) covering the region of interest (B >= G' + k).
      grid: current knots (D, G + 2k + 1).
      coef: current coefficients (D, G + k, N).
      order: k.
      new_grid_size: G'.

    Returns:
      (knots (D, G' + 2k + 1), coefficients (D, G' + k, N)).

    Non-finite samples are ignored as in `update_grid`. Refuses (ValueError): new_grid_size < 1, x not (B, D),
    and fewer than G' + k samples (for concrete x: finite samples of every input), the least-squares minimum.

    >>> import functools, jax.numpy as jnp
    >>> from jaxdl.nn.kan.bspline import bspline_basis, uniform_knots
    >>> basis = functools.partial(bspline_basis, order=3)
    >>> x = jnp.linspace(-1, 1, 64)[:, None]
    >>> grid, coef = refine(basis, x, uniform_knots(1, 3, 3), jnp.ones((1, 6, 1)), 3, 10)
    >>> grid.shape, coef.shape, bool(jnp.allclose(coef, 1.0, atol=1e-3))
    ((1, 17), (1, 13, 1), True)
    """
    if (
        isinstance(new_grid_size, bool)
        or not isinstance(new_grid_size, int | np.integer)
        or new_grid_size < 1
    ):
        raise ValueError(f"new_grid_size must be a positive int, got {new_grid_size!r}")
    x, grid, coef = jnp.asarray(x), jnp.asarray(grid), jnp.asarray(coef)
    needed = int(new_grid_size) + order
    _check_samples(x, grid, needed, f"(G' + k = {new_grid_size} + {order}) to refit the coefficients")
    return _refine(basis_fn, x, grid, coef, order, int(new_grid_size))


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _refine(basis_fn, x, grid, coef, order, new_grid_size):
    new_grid = refined_knots(grid, order, new_grid_size)
    return new_grid, _refit(basis_fn, x, grid, coef, new_grid).astype(coef.dtype)


def resize_basis_axis(tree, old_size: int, new_size: int, axis: int = 1):
    """Linearly resample every leaf whose `axis` has length `old_size` onto `new_size` points.

    Use it to carry optimizer moments (e.g. Adam's mu and nu) across `refine` instead of resetting them, as
    jaxKAN's "adaptive state transition" does. Leaves of other shapes are returned unchanged, so apply it to
    the moments of the coefficient arrays only (a parameter that happens to have the same length is resized too).

    Args:
      tree: a pytree of arrays.
      old_size: G + k before refinement.
      new_size: G' + k after.
      axis: the basis axis (1 for KANLinear's spline kernel (D, M, N)).

    Returns:
      The pytree with resized leaves.

    >>> import jax.numpy as jnp
    >>> resize_basis_axis({"mu": jnp.array([[0.0, 2.0]])}, 2, 3)["mu"].tolist()
    [[0.0, 1.0, 2.0]]
    """
    old_points = np.linspace(0.0, 1.0, old_size)
    new_points = np.linspace(0.0, 1.0, new_size)

    def resize(leaf):
        if not hasattr(leaf, "ndim") or leaf.ndim <= axis or leaf.shape[axis] != old_size:
            return leaf
        moved = jnp.moveaxis(leaf, axis, -1)
        flat = moved.reshape(-1, old_size)
        resized = jax.vmap(lambda row: jnp.interp(new_points, old_points, row))(flat)
        return jnp.moveaxis(resized.reshape(*moved.shape[:-1], new_size), -1, axis).astype(leaf.dtype)

    return jax.tree.map(resize, tree)
