"""The KAN layer as one matmul over basis features (Liu et al. 2024, "KAN", Sec. 2.2, eq. for phi(x) =
w_b b(x) + spline(x); computed in the efficient-kan form y = b(x) W_b + vec(B(x)) C).

The per-edge tensor (batch, in, out) that pykan materialises is never formed: the basis features
(batch, in, M) are contracted with the coefficients (in, M, out) in a single dot_general.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike, DTypeLike

from jaxdl.nn._checks import _check_float_dtype, _check_size
from jaxdl.nn.kan.bspline import bspline_basis, uniform_knots
from jaxdl.nn.kan.chebyshev import chebyshev_basis
from jaxdl.nn.kan.fourier import fourier_basis
from jaxdl.nn.kan.rbf import rbf_basis, rbf_centers
from jaxdl.nn.kan.relu_kan import relu_kan_basis, relu_kan_supports

__all__ = ["Basis", "get_basis", "kan_linear", "spline_kernel_init"]


class Basis(NamedTuple):
    """How a basis family plugs into `kan_linear`.

    Attributes:
      num_basis: (grid_size, order) -> M, the number of features per input.
      init_grid: (in_features, grid_size, order, grid_range, dtype) -> grid array built in `dtype`, or None for
        grid-free bases.
      evaluate: (x (..., D), grid, grid_size, order) -> features (..., D, M).
      knot_based: whether the grid holds extended knots, so `update_grid` and `refine` apply.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.nn.kan.kan_linear import get_basis
      >>> bspline = get_basis("bspline")
      >>> grid = bspline.init_grid(1, 2, 1, (-1.0, 1.0), jnp.float32)  # D = 1 input, G = 2 intervals, k = 1
      >>> grid.tolist(), bspline.num_basis(2, 1), bspline.knot_based
      ([[-2.0, -1.0, 0.0, 1.0, 2.0]], 3, True)
      >>> bspline.evaluate(jnp.array([[0.25]]), grid, 2, 1).tolist()  # hat functions peaking at -1, 0, 1
      [[[0.0, 0.75, 0.25]]]
    """

    num_basis: Callable[[int, int], int]
    init_grid: Callable[[int, int, int, tuple[float, float], Any], Array | None]
    evaluate: Callable[[Array, Array | None, int, int], Array]
    knot_based: bool


def _knots(grid: Array | None) -> Array:
    if grid is None:
        raise ValueError("this basis needs its grid (knots or centres), got grid=None")
    return grid


def _relu_kan(x, grid, grid_size, order):
    return relu_kan_basis(x, *relu_kan_supports(grid, order))


_BASES: Mapping[str, Basis] = MappingProxyType(
    {
        "bspline": Basis(
            lambda g, k: g + k,
            uniform_knots,
            lambda x, grid, g, k: bspline_basis(x, _knots(grid), k),
            knot_based=True,
        ),
        "relu": Basis(lambda g, k: g + k, uniform_knots, _relu_kan, knot_based=True),
        "rbf": Basis(
            lambda g, k: g,
            lambda d, g, k, grid_range, dtype: rbf_centers(d, g, grid_range, dtype),
            lambda x, grid, g, k: rbf_basis(x, _knots(grid)),
            knot_based=False,
        ),
        "chebyshev": Basis(
            lambda g, k: g + 1, lambda *_: None, lambda x, grid, g, k: chebyshev_basis(x, g), knot_based=False
        ),
        "fourier": Basis(
            lambda g, k: 2 * g, lambda *_: None, lambda x, grid, g, k: fourier_basis(x, g), knot_based=False
        ),
    }
)


def _check_kan_linear_args(
    basis: str,
    grid_size: Any,
    spline_order: Any,
    grid_range: Any,
    dtype: Any,
    param_dtype: Any,
) -> None:
    """The checks the NNX and Linen `KANLinear` (and the layers built on it) share."""
    spec = get_basis(basis)
    _check_size("grid_size", grid_size)
    _check_size("spline_order", spline_order, minimum=0)
    if basis == "rbf" and grid_size < 2:
        raise ValueError(f"grid_size (number of RBF centres) must be >= 2, got {grid_size}")
    try:
        low, high = (float(v) for v in grid_range)
    except (TypeError, ValueError) as error:
        raise ValueError(f"grid_range must be (low, high) with low < high, got {grid_range!r}") from error
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"grid_range must be (low, high) with low < high, got {(low, high)}")
    _check_float_dtype("dtype", dtype, optional=True)
    _check_float_dtype("param_dtype", param_dtype)
    del spec


def get_basis(name: str) -> Basis:
    """The `Basis` registered under `name` ("bspline", "relu", "rbf", "chebyshev", "fourier").

    `grid_size` means: intervals G for "bspline"/"relu" (M = G + k), centres for "rbf" (M = G), the degree for
    "chebyshev" (M = G + 1) and frequencies for "fourier" (M = 2G).

    >>> get_basis("bspline").num_basis(5, 3)
    8
    """
    if name not in _BASES:
        raise ValueError(f"basis must be one of {sorted(_BASES)}, got {name!r}")
    return _BASES[name]


def _base_kernel_init(key: Array, shape: tuple[int, ...], dtype: DTypeLike = jnp.float32) -> Array:
    """w_b ~ U(-1, 1) / sqrt(in_features), pykan's `scale_base` with mu = 0, sigma = 1. Shape (D, N).

    >>> import jax
    >>> float(abs(_base_kernel_init(jax.random.key(0), (4, 3))).max()) <= 0.5
    True
    """
    return jax.random.uniform(key, shape, dtype, -1.0, 1.0) / jnp.sqrt(shape[0]).astype(dtype)


def spline_kernel_init(scale: float = 0.1) -> Callable[..., Array]:
    """c ~ N(0, scale^2) / sqrt(in_features): the KAN paper's N(0, 0.1) coefficients times pykan's
    w_s = 1 / sqrt(in_features). Returns an initializer for shape (D, M, N).

    >>> import jax
    >>> spline_kernel_init()(jax.random.key(0), (4, 8, 3)).shape
    (4, 8, 3)
    """

    def init(key: Array, shape: tuple[int, ...], dtype: DTypeLike = jnp.float32) -> Array:
        return jax.random.normal(key, shape, dtype) * (scale / jnp.sqrt(shape[0])).astype(dtype)

    return init


def kan_linear(
    x: ArrayLike,
    spline_kernel: ArrayLike,
    grid: ArrayLike | None = None,
    base_kernel: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    *,
    basis: str = "bspline",
    grid_size: int = 5,
    spline_order: int = 3,
    base_activation: Callable[[Array], Array] | None = None,
    dtype: DTypeLike | None = None,
) -> Array:
    """y = base_activation(x) @ base_kernel + sum_{d,m} B_m(x_d) spline_kernel[d, m] + bias.

    Each output j is a sum over inputs d of the edge functions phi_jd(x_d) = w_b b(x_d) + sum_m c_dmj B_m(x_d)
    (KAN Sec. 2.2). The basis is evaluated in at least float32; the contractions run in `dtype`.

    Args:
      x: inputs of shape (..., D).
      spline_kernel: coefficients c of shape (D, M, N).
      grid: the basis' grid (see `get_basis`), or None for grid-free bases.
      base_kernel: w_b of shape (D, N), or None for no base branch.
      bias: shape (N,) or None.
      basis, grid_size, spline_order: the basis family and its size (see `get_basis`); the same names as the
        layers' arguments.
      base_activation: b, e.g. `jax.nn.silu`; required when `base_kernel` is given.
      dtype: computation dtype of the contractions (default: promoted from inputs and parameters).

    Returns:
      Shape (..., N).

    Refuses: an unknown basis, a spline_kernel that is not (D, M, N) with M matching the basis, x not of shape
    (..., D), a base_kernel without base_activation (ValueError).

    >>> import jax.numpy as jnp
    >>> from jaxdl.nn.kan.bspline import uniform_knots
    >>> y = kan_linear(jnp.zeros((4, 2)), jnp.ones((2, 8, 3)), uniform_knots(2, 5, 3))
    >>> y.shape, bool(jnp.allclose(y, 2.0))
    ((4, 3), True)
    """
    spec = get_basis(basis)
    x = jnp.asarray(x)
    spline_kernel = jnp.asarray(spline_kernel)
    if spline_kernel.ndim != 3:
        raise ValueError(
            f"spline_kernel must have shape (in_features, num_basis, out_features), got {spline_kernel.shape}"
        )
    in_features, num_basis, _ = spline_kernel.shape
    if x.ndim < 1 or x.shape[-1] != in_features:
        raise ValueError(f"x must have shape (..., {in_features}), got {x.shape}")
    if num_basis != spec.num_basis(grid_size, spline_order):
        raise ValueError(
            f"spline_kernel has {num_basis} basis functions; {basis} with G={grid_size}, k={spline_order} needs "
            f"{spec.num_basis(grid_size, spline_order)}"
        )
    if base_kernel is not None and base_activation is None:
        raise ValueError("base_activation is required when base_kernel is given")
    if dtype is None:
        dtype = jnp.result_type(x, spline_kernel, *(a for a in (base_kernel, bias) if a is not None))
    return _kan_linear(
        x, spline_kernel, grid, base_kernel, bias, basis, grid_size, spline_order, base_activation, dtype
    )


@functools.partial(jax.jit, static_argnums=(5, 6, 7, 8, 9))
def _kan_linear(
    x, spline_kernel, grid, base_kernel, bias, basis, grid_size, spline_order, base_activation, dtype
):
    spec = _BASES[basis]
    features = spec.evaluate(x.astype(jnp.promote_types(x.dtype, jnp.float32)), grid, grid_size, spline_order)
    y = jnp.einsum("...dm,dmn->...n", features.astype(dtype), spline_kernel.astype(dtype))
    if base_kernel is not None:
        y = y + base_activation(x.astype(dtype)) @ base_kernel.astype(dtype)
    if bias is not None:
        y = y + bias.astype(dtype)
    return y


@functools.cache
def _knot_basis_fn(basis: str, order: int) -> Callable[[Array, Array], Array]:
    """(x (B, D), knots (D, G + 2k + 1)) -> features for a knot-based basis, as `grid.update_grid` expects.

    Cached, so the same function object (and jit cache entry) serves every call.

    >>> _knot_basis_fn("bspline", 3) is _knot_basis_fn("bspline", 3)
    True
    """
    spec = get_basis(basis)
    if not spec.knot_based:
        raise ValueError(
            f"grid update and refine need a knot-based basis ('bspline' or 'relu'), got {basis!r}"
        )
    return lambda x, knots: spec.evaluate(x, knots, knots.shape[1] - 2 * order - 1, order)
