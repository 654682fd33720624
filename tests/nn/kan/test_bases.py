"""Basis functions against float64 NumPy references from the papers, SciPy/NumPy peers, and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from numpy.polynomial import chebyshev as np_chebyshev
from scipy.interpolate import BSpline

from jaxdl.nn.kan import (
    af_kan_basis,
    af_kan_phases,
    bspline_basis,
    chebyshev_basis,
    fourier_basis,
    rbf_basis,
    rbf_centers,
    relu_kan_basis,
    relu_kan_supports,
    uniform_knots,
)
from tests.reference import kan as ref


def _nonuniform_grid(rng, dims, grid_size, order):
    interior = np.sort(rng.uniform(-1, 1, size=(dims, grid_size + 1)), axis=1)
    interior[:, 0], interior[:, -1] = -1.0, 1.0
    step = 2.0 / grid_size
    left = interior[:, :1] - step * np.arange(order, 0, -1)
    right = interior[:, -1:] + step * np.arange(1, order + 1)
    return np.concatenate([left, interior, right], axis=1)


@pytest.mark.parametrize("order", [0, 1, 3])
def test_bspline_matches_cox_de_boor_reference(x64, rng, order):
    grid = _nonuniform_grid(rng, 3, 5, order)
    x = rng.uniform(-1.6, 1.6, size=(20, 3))
    got = bspline_basis(x, grid, order)
    assert got.shape == (20, 3, 5 + order)
    np.testing.assert_allclose(got, ref.bspline_basis(x, grid, order), atol=1e-12)


def test_bspline_matches_scipy(x64, rng):
    grid = _nonuniform_grid(rng, 2, 6, 3)
    x = rng.uniform(-1, 1, size=(50, 2))
    got = np.asarray(bspline_basis(x, grid, 3))
    for d in range(2):
        design = BSpline.design_matrix(x[:, d], grid[d], 3).toarray()
        np.testing.assert_allclose(got[:, d], design, atol=1e-12)


def test_bspline_partition_of_unity_inside_and_zero_outside(x64, rng):
    grid = uniform_knots(4, 7, 3, (-1.0, 1.0), dtype=jnp.float64)
    inside = rng.uniform(-1, 1, size=(100, 4))
    np.testing.assert_allclose(bspline_basis(inside, grid, 3).sum(-1), 1.0, atol=1e-12)
    outside = np.concatenate([rng.uniform(-5, -1.8575, (50, 4)), rng.uniform(1.8575, 5, (50, 4))])
    np.testing.assert_array_equal(bspline_basis(outside, grid, 3), 0.0)


def test_relu_kan_matches_reference_and_shares_bspline_support(x64, rng):
    grid = uniform_knots(3, 4, 2, dtype=jnp.float64)
    starts, ends = relu_kan_supports(grid, 2)
    x = rng.uniform(-1.6, 1.6, size=(30, 3))
    got = relu_kan_basis(x, starts, ends)
    np.testing.assert_allclose(got, ref.relu_kan_basis(x, np.asarray(starts), np.asarray(ends)), atol=1e-12)
    # Peak 1 at the centre, and zero exactly where the B-spline of the same index is zero.
    np.testing.assert_allclose(relu_kan_basis((starts + ends)[None, :, 0] / 2, starts, ends)[0, :, 0], 1.0)
    np.testing.assert_array_equal(got == 0, bspline_basis(x, grid, 2) == 0)


def test_relu_kan_supports_reproduce_paper_phases():
    grid = uniform_knots(1, 5, 3, (0.0, 1.0))
    starts, ends = relu_kan_supports(grid, 3)
    np.testing.assert_allclose(starts[0], np.arange(-3, 5) / 5, atol=1e-6)
    np.testing.assert_allclose(ends[0], np.arange(-3, 5) / 5 + 4 / 5, atol=1e-6)


@pytest.mark.parametrize("combination", sorted(ref.AF_COMBINATIONS))
def test_af_kan_basis_matches_reference(x64, rng, combination):
    starts, ends = (np.asarray(a, np.float64) for a in af_kan_phases(3, 3))
    x = rng.normal(size=(6, 4))
    got = af_kan_basis(x, starts, ends, combination=combination)
    np.testing.assert_allclose(got, ref.af_kan_basis(x, starts, ends, combination), rtol=1e-12, atol=1e-14)


def test_rbf_matches_reference_and_fastkan_width(x64, rng):
    centers = rbf_centers(3, 8, (-2.0, 2.0), dtype=jnp.float64)
    x = rng.normal(size=(10, 3))
    np.testing.assert_allclose(
        rbf_basis(x, centers), ref.rbf_basis(x, np.asarray(centers), 4 / 7), atol=1e-13
    )


def test_chebyshev_matches_reference_and_numpy(x64, rng):
    x = rng.normal(size=(10, 3)) * 2
    got = np.asarray(chebyshev_basis(x, 6))
    np.testing.assert_allclose(got, ref.chebyshev_basis(x, 6), atol=1e-12)
    np.testing.assert_allclose(got, np_chebyshev.chebvander(np.tanh(x), 6), atol=1e-12)


def test_fourier_matches_reference(x64, rng):
    x = rng.normal(size=(10, 3)) * 3
    np.testing.assert_allclose(fourier_basis(x, 4), ref.fourier_basis(x, 4), atol=1e-12)


GRAD_CASES = {
    "bspline": lambda x: bspline_basis(x, uniform_knots(2, 5, 3, dtype=jnp.float64), 3),
    "relu": lambda x: relu_kan_basis(x, *relu_kan_supports(uniform_knots(2, 5, 3, dtype=jnp.float64), 3)),
    "af_kan": lambda x: af_kan_basis(x, *(a.astype(jnp.float64) for a in af_kan_phases(3, 3))),
    "rbf": lambda x: rbf_basis(x, rbf_centers(2, 6, dtype=jnp.float64)),
    "chebyshev": lambda x: chebyshev_basis(x, 5),
    "fourier": lambda x: fourier_basis(x, 3),
}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_basis_gradients_order_two(x64, name):
    # Points away from knots, where every basis is smooth. Second order forward-over-forward, first order
    # reverse: the reverse-over-reverse check adds nothing for these elementwise maps and is slow to compile.
    x = jnp.array([[0.13, -0.41], [-0.77, 0.05]])
    fn = jax.jit(GRAD_CASES[name])
    check_grads(fn, (x,), order=2, modes=("fwd",), atol=1e-6, rtol=1e-6)
    check_grads(fn, (x,), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


def test_bases_under_jit_and_vmap(rng):
    x = jnp.asarray(rng.uniform(-1, 1, size=(5, 8, 3)), jnp.float32)
    grid = uniform_knots(3, 5, 3)
    direct = bspline_basis(x, grid, 3)
    np.testing.assert_allclose(jax.jit(bspline_basis, static_argnums=2)(x, grid, 3), direct, atol=1e-6)
    np.testing.assert_allclose(jax.vmap(lambda xi: bspline_basis(xi, grid, 3))(x), direct, atol=1e-6)
    np.testing.assert_allclose(
        jax.vmap(lambda xi: chebyshev_basis(xi, 4))(x), chebyshev_basis(x, 4), atol=1e-6
    )


def test_bad_inputs_raise():
    grid = uniform_knots(3, 5, 3)
    with pytest.raises(ValueError, match="grid must have shape"):
        bspline_basis(jnp.ones((2, 4)), grid, 3)
    with pytest.raises(ValueError, match="order must be an int >= 0"):
        bspline_basis(jnp.ones((2, 3)), grid, -1)
    with pytest.raises(ValueError, match="degree must be >= 0"):
        chebyshev_basis(jnp.ones(3), -1)
    with pytest.raises(ValueError, match="num_frequencies"):
        fourier_basis(jnp.ones(3), 0)
    with pytest.raises(ValueError, match="combination must be one of"):
        af_kan_basis(jnp.ones((1, 2)), *af_kan_phases(3, 3), combination="quad9")
    with pytest.raises(ValueError, match="same shape"):
        relu_kan_basis(jnp.ones((1, 2)), jnp.zeros(3), jnp.ones(4))
    with pytest.raises(ValueError, match="centers must have shape"):
        rbf_basis(jnp.ones((1, 2)), jnp.zeros((3, 4)))
