"""Grid update and grid extension: knots against the KAN paper's procedure, function preserved on the samples."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdl.nn.kan import (
    KAN,
    KANLinear,
    adaptive_knots,
    bspline_basis,
    refine,
    resize_basis_axis,
    uniform_knots,
    update_grid,
)
from tests.reference import kan as ref


@pytest.mark.parametrize("grid_eps", [0.0, 0.02, 1.0])
def test_adaptive_knots_match_reference(x64, rng, grid_eps):
    x = rng.normal(size=(101, 3))
    got = adaptive_knots(x, 5, 3, grid_eps)
    np.testing.assert_allclose(got, ref.quantile_grid(x, 5, 3, grid_eps), atol=1e-12)


def test_pure_quantile_grid_sits_on_samples_and_balances_counts(x64, rng):
    x = rng.normal(size=(1000, 2))
    knots = np.asarray(adaptive_knots(x, 4, 3, grid_eps=0.0))
    interior = knots[:, 3:-3]
    for d in range(2):
        assert set(interior[d]).issubset(set(x[:, d]))
        counts = np.histogram(x[:, d], bins=interior[d])[0]
        assert counts.min() >= 249 and counts.max() <= 251  # 1000 samples, 4 intervals


def _smooth_coefficients(grid, order, out):
    # Coefficients of a smooth curve: interpolate sin/cos at the Greville points of the knots.
    knots = np.asarray(grid)
    count = knots.shape[1] - order - 1
    greville = np.stack([knots[:, m + 1 : m + order + 1].mean(1) for m in range(count)], axis=1)
    return np.stack([np.sin(2 * greville + j) for j in range(out)], axis=-1)


def test_update_grid_keeps_function_on_samples(x64, rng):
    order = 3
    grid = uniform_knots(2, 8, order, dtype=jnp.float64)
    coef = _smooth_coefficients(grid, order, 3)
    x = np.clip(rng.normal(0.0, 0.4, size=(512, 2)), -1, 1)
    basis = functools.partial(bspline_basis, order=order)
    before = jnp.einsum("bdm,dmn->bdn", basis(x, grid), coef)
    new_grid, new_coef = update_grid(basis, x, grid, coef, order, grid_eps=0.02)
    after = jnp.einsum("bdm,dmn->bdn", basis(x, new_grid), new_coef)
    rel = np.linalg.norm(after - before) / np.linalg.norm(before)
    assert rel < 1e-2, rel
    np.testing.assert_allclose(new_grid, ref.quantile_grid(x, 8, order, 0.02), atol=1e-12)


def test_refine_keeps_function_and_extends_grid(x64, rng):
    order = 3
    grid = uniform_knots(2, 3, order, dtype=jnp.float64)
    coef = rng.normal(size=(2, 6, 2))
    x = rng.uniform(-1, 1, size=(400, 2))
    basis = functools.partial(bspline_basis, order=order)
    before = jnp.einsum("bdm,dmn->bdn", basis(x, grid), coef)
    new_grid, new_coef = refine(basis, x, grid, coef, order, 10)
    assert new_grid.shape == (2, 17) and new_coef.shape == (2, 13, 2)
    # A cubic spline on 3 uniform intervals is also a cubic spline on 9 nested ones; 10 is close to that.
    np.testing.assert_allclose(new_grid[:, 3:-3], np.tile(np.linspace(-1, 1, 11), (2, 1)), atol=1e-12)
    after = jnp.einsum("bdm,dmn->bdn", basis(x, new_grid), new_coef)
    assert np.linalg.norm(after - before) / np.linalg.norm(before) < 5e-3


def test_refine_to_nested_grid_is_exact(x64, rng):
    grid = uniform_knots(1, 3, 3, dtype=jnp.float64)
    coef = rng.normal(size=(1, 6, 1))
    x = rng.uniform(-1, 1, size=(200, 1))
    basis = functools.partial(bspline_basis, order=3)
    new_grid, new_coef = refine(basis, x, grid, coef, 3, 9)
    before = jnp.einsum("bdm,dmn->bdn", basis(x, grid), coef)
    after = jnp.einsum("bdm,dmn->bdn", basis(x, new_grid), new_coef)
    np.testing.assert_allclose(after, before, atol=1e-10)


def test_layer_update_grid_in_place_under_nnx_jit(rng):
    layer = KANLinear(3, 4, rngs=nnx.Rngs(0))
    # Samples spread like the initial grid: the new knots are close to the old ones and the refit is near exact.
    x = jnp.asarray(rng.uniform(-1, 1, size=(512, 3)), jnp.float32)
    before = layer(x)
    shapes = jax.tree.map(jnp.shape, nnx.state(layer))
    nnx.jit(lambda m, x: m.update_grid(x))(layer, x)
    assert jax.tree.map(jnp.shape, nnx.state(layer)) == shapes
    with jax.default_matmul_precision("highest"):
        rel = jnp.linalg.norm(layer(x) - before) / jnp.linalg.norm(before)
    assert rel < 1e-2, rel
    np.testing.assert_allclose(
        layer.grid[...], ref.quantile_grid(np.asarray(x, np.float64), 5, 3, 0.02), atol=1e-5
    )


def test_kan_refine_keeps_outputs(rng):
    model = KAN([2, 3, 1], grid_size=3, rngs=nnx.Rngs(1))
    x = jnp.asarray(rng.uniform(-1, 1, size=(300, 2)), jnp.float32)
    with jax.default_matmul_precision("highest"):
        before = model(x)
        model.refine(x, 9)
        after = model(x)
    assert model.layers[0].spline_kernel[...].shape == (2, 12, 3)
    assert model.layers[1].grid_size == 9
    np.testing.assert_allclose(after, before, atol=5e-3)


def test_resize_basis_axis_interpolates_matching_leaves_only():
    tree = {"mu": jnp.arange(6.0).reshape(1, 3, 2), "count": jnp.zeros((4,))}
    out = resize_basis_axis(tree, 3, 5)
    assert out["mu"].shape == (1, 5, 2)
    np.testing.assert_allclose(out["mu"][0, :, 0], [0.0, 1.0, 2.0, 3.0, 4.0])
    assert out["count"].shape == (4,)


def test_grid_errors():
    layer = KANLinear(2, 2, basis="chebyshev", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="knot-based basis"):
        layer.update_grid(jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="grid_eps must be in"):
        adaptive_knots(jnp.ones((4, 2)), 3, 3, grid_eps=2.0)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\)"):
        KANLinear(3, 2, rngs=nnx.Rngs(0)).update_grid(jnp.ones((4, 2)))
