"""The `kan` rows of the bad-input catalogue (/work/shared/reference/bad-inputs.md), one case per row.

Each case either raises the specific error type with a message naming the argument, or checks the right
result against an independent value (a reference, a closed form, or the same computation on clean input).
"""

import functools

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdl.nn.kan import (
    AFKAN,
    GRKAN,
    KAN,
    KATMLP,
    KANLinear,
    SelectableKAN,
    bspline_basis,
    kan_linear,
    linen,
    uniform_knots,
)
from tests.reference import kan as ref


def _layer(**kwargs):
    return KANLinear(3, 4, rngs=nnx.Rngs(0), **kwargs)


@functools.cache
def _shared_layer():
    return _layer()


def _x(rows=2):
    return jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (rows, 3)), jnp.float32)


def _numpy_int_widths():
    y = KANLinear(np.int64(3), np.int64(4), rngs=nnx.Rngs(0))(_x())
    np.testing.assert_array_equal(y, _shared_layer()(_x()))


def _int_input():
    x = jnp.array([[1, 0, -1], [0, 1, 0]], jnp.int32)
    np.testing.assert_allclose(_shared_layer()(x), _shared_layer()(x.astype(jnp.float32)), rtol=1e-6)


def _list_input():
    x = [[0.1, -0.2, 0.3]]
    np.testing.assert_array_equal(_shared_layer()(x), _shared_layer()(jnp.asarray(x)))


def _empty_batch():
    assert _shared_layer()(jnp.zeros((0, 3))).shape == (0, 4)


def _nan_stays_in_its_row():
    x = _x().at[0, 1].set(jnp.nan)
    y = _shared_layer()(x)
    assert not np.isfinite(np.asarray(y[0])).any()
    np.testing.assert_allclose(y[1], _shared_layer()(x[1:])[0], rtol=1e-6)


def _inf_gives_the_limit():
    # x_0 -> +inf: the splines vanish outside the grid and silu(x) ~ x, so y_j -> sign(w_b[0, j]) * inf.
    layer = _shared_layer()
    x = _x().at[0, 0].set(jnp.inf)
    y = np.asarray(layer(x))
    np.testing.assert_array_equal(y[0], np.sign(np.asarray(layer.base_kernel[...][0])) * np.inf)
    np.testing.assert_allclose(y[1], layer(x[1:])[0], rtol=1e-6)


def _update_grid_on_constant_x_keeps_the_function():
    model = KAN([2, 1], grid_size=3, rngs=nnx.Rngs(0))
    x = jnp.ones((8, 2)) * jnp.array([0.3, -0.4])
    before = model(x)
    grid = model.layers[0].grid[...]
    model.update_grid(x)  # all samples equal: no interval to place knots on, so the grid is kept
    np.testing.assert_array_equal(model.layers[0].grid[...], grid)
    np.testing.assert_allclose(model(x), before, rtol=1e-6)


def _update_grid_ignores_nan_samples():
    model = KAN([2, 1], grid_size=3, rngs=nnx.Rngs(0))
    x = np.random.default_rng(1).uniform(-1, 1, (24, 2))
    x_nan = x.copy()
    x_nan[5, 0] = np.nan
    model.update_grid(jnp.asarray(x_nan, jnp.float32))
    grid = np.asarray(model.layers[0].grid[...], np.float64)
    assert np.isfinite(grid).all()
    np.testing.assert_allclose(
        grid[0], ref.quantile_grid(np.delete(x, 5, 0)[:, :1], 3, 3, 0.02)[0], atol=1e-6
    )
    np.testing.assert_allclose(grid[1], ref.quantile_grid(x[:, 1:], 3, 3, 0.02)[0], atol=1e-6)
    assert np.isfinite(np.asarray(model(jnp.asarray(x, jnp.float32)))).all()


def _update_grid(x):
    KAN([2, 1], rngs=nnx.Rngs(0)).update_grid(x)


def _refine(x, grid_size):
    KAN([2, 1], rngs=nnx.Rngs(0)).refine(x, grid_size)


def _af_kan_constant_row():
    # L2 min-max normalisation of a constant row is 0 (eps convention), so z = LayerNorm(0) = norm_bias.
    layer = AFKAN(2, 2, rngs=nnx.Rngs(0))
    y = layer(jnp.full((1, 2), 0.7))
    expected = ref.silu(np.asarray(layer.norm_bias[...], np.float64)) @ np.asarray(layer.kernel[...])
    np.testing.assert_allclose(y[0], expected, atol=1e-7)


def _raises(error, match, fn, *args, **kwargs):
    def case():
        with pytest.raises(error, match=match):
            fn(*args, **kwargs)

    return case


R = nnx.Rngs
CASES = {
    "KANLinear grid_size=0": _raises(ValueError, "grid_size", lambda: _layer(grid_size=0)),
    "KANLinear grid_size=2.5": _raises(ValueError, "grid_size", lambda: _layer(grid_size=2.5)),
    "KANLinear spline_order=-1": _raises(ValueError, "spline_order", lambda: _layer(spline_order=-1)),
    "KANLinear(0, 4)": _raises(ValueError, "in_features", lambda: KANLinear(0, 4, rngs=R(0))),
    "KANLinear(np.int64(3), 4)": _numpy_int_widths,
    "KANLinear grid_range=(1, -1)": _raises(ValueError, "grid_range", lambda: _layer(grid_range=(1, -1))),
    "KANLinear grid_range=(nan, 1)": _raises(
        ValueError, "grid_range", lambda: _layer(grid_range=(np.nan, 1))
    ),
    "KANLinear basis typo": _raises(ValueError, "basis must be one of", lambda: _layer(basis="bsplines")),
    "KANLinear param_dtype=int32": _raises(TypeError, "param_dtype", lambda: _layer(param_dtype=jnp.int32)),
    "KANLinear param_dtype=complex64": _raises(
        TypeError, "param_dtype", lambda: _layer(param_dtype=jnp.complex64)
    ),
    "KANLinear x (2, 5)": _raises(
        ValueError, r"x must have shape \(\.\.\., 3\)", lambda: _shared_layer()(jnp.ones((2, 5)))
    ),
    "KANLinear scalar x": _raises(
        ValueError, r"x must have shape \(\.\.\., 3\)", lambda: _shared_layer()(1.0)
    ),
    "KANLinear int32 x": _int_input,
    "KANLinear list x": _list_input,
    "KANLinear empty batch": _empty_batch,
    "KANLinear NaN stays in its row": _nan_stays_in_its_row,
    "KANLinear +inf input": _inf_gives_the_limit,
    "KAN([3])": _raises(ValueError, "features", lambda: KAN([3], rngs=R(0))),
    "KAN([2, 0, 1])": _raises(ValueError, r"features\[1\]", lambda: KAN([2, 0, 1], rngs=R(0))),
    "KAN.update_grid constant x": _update_grid_on_constant_x_keeps_the_function,
    "KAN.update_grid with a NaN sample": _update_grid_ignores_nan_samples,
    "KAN.update_grid wrong feature dim": _raises(
        ValueError, r"x must have shape \(\.\.\., 2\)", _update_grid, jnp.ones((10, 3))
    ),
    "KAN.update_grid empty x": _raises(ValueError, "x must hold at least 1", _update_grid, jnp.ones((0, 2))),
    "KAN.refine G=20 on 5 samples": _raises(
        ValueError, r"x must hold at least 23 samples", _refine, jnp.linspace(-1, 1, 10).reshape(5, 2), 20
    ),
    "KAN.refine grid_size=0": _raises(ValueError, "grid_size", _refine, jnp.ones((30, 2)), 0),
    "KANLinear(basis='rbf').update_grid": _raises(
        ValueError, "knot-based basis", lambda: _layer(basis="rbf").update_grid(_x())
    ),
    "KANLinear(basis='rbf', grid_size=1)": _raises(
        ValueError, "grid_size", lambda: _layer(basis="rbf", grid_size=1)
    ),
    "GRKAN groups not dividing": _raises(ValueError, "groups", lambda: GRKAN(10, 4, groups=4, rngs=R(0))),
    "GRKAN init='sigmoid'": _raises(
        ValueError, "init must be one of", lambda: GRKAN(8, 4, init="sigmoid", rngs=R(0))
    ),
    "GRKAN num_order=0": _raises(
        ValueError, "num_order", lambda: GRKAN(8, 4, num_order=0, den_order=0, rngs=R(0))
    ),
    "KATMLP groups=5": _raises(ValueError, "groups", lambda: KATMLP(16, groups=5, rngs=R(0))),
    "KATMLP wrong width": _raises(
        ValueError, r"x must have shape \(\.\.\., 16\)", lambda: KATMLP(16, rngs=R(0))(jnp.ones((2, 5, 12)))
    ),
    "AFKAN combination='foo'": _raises(
        ValueError, "combination must be one of", lambda: AFKAN(3, 2, combination="foo", rngs=R(0))
    ),
    "AFKAN constant row": _af_kan_constant_row,
    "SelectableKAN bases=()": _raises(ValueError, "bases", lambda: SelectableKAN(3, 2, bases=(), rngs=R(0))),
    "SelectableKAN bases=('foo',)": _raises(
        ValueError, "basis must be one of", lambda: SelectableKAN(3, 2, bases=("foo",), rngs=R(0))
    ),
    "kan_linear 2-D spline_kernel": _raises(
        ValueError, "spline_kernel must have shape", lambda: kan_linear(jnp.ones((2, 3)), jnp.ones((3, 8)))
    ),
    "kan_linear grid_size mismatch": _raises(
        ValueError,
        "spline_kernel has 8 basis functions",
        lambda: kan_linear(jnp.ones((2, 3)), jnp.ones((3, 8, 2)), uniform_knots(3, 7, 3), grid_size=7),
    ),
    "bspline_basis grid of another width": _raises(
        ValueError, "grid must have shape", lambda: bspline_basis(jnp.ones((2, 3)), uniform_knots(4, 5, 3), 3)
    ),
    "bspline_basis repeated knots": _raises(
        ValueError,
        "grid must hold finite, non-decreasing knots",
        lambda: bspline_basis(jnp.ones((2, 3)), jnp.zeros((3, 12)), 3),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_kan_bad_input(name):
    CASES[name]()


def test_every_kan_row_is_covered():
    assert len(CASES) == 40  # the catalogue's kan rows


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (
            lambda: linen.KANLinear(4, grid_size=0),
            ValueError,
            "grid_size",
        ),
        (
            lambda: linen.GRKAN(4, init_kind="sigmoid"),
            ValueError,
            "init_kind",
        ),
        (lambda: linen.KAN((4, 0)), ValueError, r"features\[1\]"),
        (
            lambda: linen.AFKAN(2, param_dtype=jnp.int32),
            TypeError,
            "param_dtype",
        ),
        (lambda: linen.AFKAN(2, dtype=jnp.int32), TypeError, "dtype must be"),
    ],
)
def test_linen_twins_refuse_at_construction(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_update_grid_under_jit_ignores_nan_samples():
    layer = KANLinear(2, 1, grid_size=3, rngs=nnx.Rngs(0))
    x = np.random.default_rng(2).uniform(-1, 1, (24, 2)).astype(np.float32)
    x_nan = x.copy()
    x_nan[[3, 7], 1] = np.nan
    nnx.jit(lambda m, x: m.update_grid(x))(layer, jnp.asarray(x_nan))
    expected = ref.quantile_grid(np.delete(x, [3, 7], 0)[:, 1:].astype(np.float64), 3, 3, 0.02)[0]
    np.testing.assert_allclose(layer.grid[...][1], expected, atol=1e-6)
