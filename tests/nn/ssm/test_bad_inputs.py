"""The `ssm` rows of the bad-input catalogue (/work/shared/reference/bad-inputs.md), one case per row, plus the
dtype cases of issue #15 (bfloat16 input, param_dtype, the cache dtype).

Each case either raises the specific error type with a message naming the argument, or checks the right
result against an independent value (the recurrent mode, the float input, a closed form).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.experimental import checkify

from jaxdl.nn.ssm import S4D, S5, SequenceModel, linen, ptd

R = nnx.Rngs
PTD_FAST = dict(steps=300)  # the property (convolution == recurrence) does not depend on the solve length


@functools.cache
def _s4d(**kwargs):
    return S4D(4, 8, rngs=R(0), **kwargs)


@functools.cache
def _s5(**kwargs):
    return S5(4, 8, rngs=R(0), **kwargs)


def _u(shape=(2, 16, 4), seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _recurrent(layer, u):
    step = jax.jit(lambda u_t, cache: layer.step(u_t, cache))
    cache, outputs = layer.init_cache(u.shape[0]), []
    for t in range(u.shape[1]):
        y_t, cache = step(u[:, t], cache)
        outputs.append(y_t)
    return jnp.stack(outputs, axis=1)


def _matches_recurrence(layer):
    u = _u((2, 12, 4))
    with jax.default_matmul_precision("highest"):
        y = layer(u)
        assert y.shape == u.shape
        np.testing.assert_allclose(y, _recurrent(layer, u), rtol=1e-4, atol=1e-4)


def _rank2_input():
    u = _u()
    np.testing.assert_allclose(_s4d()(u[0]), _s4d()(u[:1])[0], rtol=1e-6, atol=1e-6)


def _empty_batch():
    assert _s4d()(jnp.zeros((0, 16, 4))).shape == (0, 16, 4)


def _int_input(layer):
    u = jnp.round(3 * _u()).astype(jnp.int32)
    y = layer(u)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(y, layer(u.astype(jnp.float32)), rtol=1e-6, atol=1e-6)


def _debug_reports_first_non_finite(value):
    layer = _s4d(debug=True)
    u = _u().at[1, 10, 2].set(value)
    with pytest.raises(checkify.JaxRuntimeError, match=r"first is at index \(1, 10, 2\)"):
        layer(u)
    error, _ = checkify.checkify(jax.jit(lambda u: layer.config.apply(layer.params(), u)))(u)
    assert "first is at index (1, 10, 2)" in error.get()
    # Without debug the FFT spreads it to earlier positions; the recurrent mode stays causal.
    assert not np.isfinite(np.asarray(_s4d()(u)[1, :10, 2])).all()
    assert np.isfinite(np.asarray(_recurrent(_s4d(), u)[1, :10])).all()


def _s5_is_causal_for_nan():
    u = _u()
    y = _s5()(u.at[1, 10, 2].set(jnp.nan))
    np.testing.assert_array_equal(y[:, :10], _s5()(u)[:, :10])


def _s5_zero_step_is_feedthrough():
    u = _u()
    np.testing.assert_allclose(_s5()(u, step_scale=0.0), _s5().D[...] * u, rtol=1e-6, atol=1e-7)


def _raises(error, match, fn, *args, **kwargs):
    def case():
        with pytest.raises(error, match=match):
            fn(*args, **kwargs)

    return case


CASES = {
    "S4D odd state_size legs": _raises(ValueError, "state_size must be even", lambda: S4D(4, 7, rngs=R(0))),
    "S4D odd state_size ptd": lambda: _matches_recurrence(
        S4D(4, 7, init="ptd", ptd_kwargs=PTD_FAST, rngs=R(0))
    ),
    "S4D state_size=0": _raises(ValueError, "state_size", lambda: S4D(4, 0, rngs=R(0))),
    "S4D(0, 8)": _raises(ValueError, "features", lambda: S4D(0, 8, rngs=R(0))),
    "S4D dt_min=0": _raises(ValueError, "dt_min", lambda: S4D(4, 8, dt_min=0, rngs=R(0))),
    "S4D dt_min > dt_max": _raises(
        ValueError, "dt_min", lambda: S4D(4, 8, dt_min=0.1, dt_max=0.01, rngs=R(0))
    ),
    "S4D dt_min=nan": _raises(ValueError, "dt_min", lambda: S4D(4, 8, dt_min=float("nan"), rngs=R(0))),
    "S4D dt_max=inf": _raises(ValueError, "dt_max", lambda: S4D(4, 8, dt_max=float("inf"), rngs=R(0))),
    "S4D init='foo'": _raises(ValueError, "init must be one of", lambda: S4D(4, 8, init="foo", rngs=R(0))),
    "S4D method='euler'": _raises(ValueError, "method", lambda: S4D(4, 8, method="euler", rngs=R(0))),
    "S4D chunk_size=0": _raises(ValueError, "chunk_size", lambda: S4D(4, 8, chunk_size=0, rngs=R(0))),
    "S4D chunk_size=-3": _raises(ValueError, "chunk_size", lambda: S4D(4, 8, chunk_size=-3, rngs=R(0))),
    "S4D unknown ptd_kwargs": _raises(
        TypeError,
        "ptd_kwargs has unknown keys",
        lambda: S4D(4, 8, init="ptd", ptd_kwargs={"foo": 1}, rngs=R(0)),
    ),
    "S4D(4.0, 8)": _raises(ValueError, "features", lambda: S4D(4.0, 8, rngs=R(0))),
    "S5 blocks not dividing": _raises(ValueError, "blocks", lambda: S5(4, 10, 4, rngs=R(0))),
    "S5 ptd odd block": lambda: _matches_recurrence(S5(4, 6, 2, init="ptd", ptd_kwargs=PTD_FAST, rngs=R(0))),
    "S5 legs odd block": lambda: _matches_recurrence(S5(4, 6, 2, rngs=R(0))),
    "S5 blocks=0": _raises(ValueError, "blocks", lambda: S5(4, 8, 0, rngs=R(0))),
    "S5 init='lin'": _raises(ValueError, "init must be one of", lambda: S5(4, 8, init="lin", rngs=R(0))),
    "S4D rank-2 input": _rank2_input,
    "S4D rank-1 input": _raises(
        ValueError, r"u must have shape \(\.\.\., length, 4\)", lambda: _s4d()(jnp.ones(4))
    ),
    "S4D wrong features": _raises(
        ValueError, r"u must have shape \(\.\.\., length, 4\)", lambda: _s4d()(jnp.ones((2, 16, 5)))
    ),
    "S4D zero length": _raises(
        ValueError, "u must hold at least one position", lambda: _s4d()(jnp.ones((2, 0, 4)))
    ),
    "S5 zero length": _raises(
        ValueError, "u must hold at least one position", lambda: _s5()(jnp.ones((2, 0, 4)))
    ),
    "S4D empty batch": _empty_batch,
    "S4D int32 input": lambda: _int_input(_s4d()),
    "S5 int32 input": lambda: _int_input(_s5()),
    "S4D complex input": _raises(
        TypeError, "u must be a real", lambda: _s4d()(jnp.ones((2, 16, 4), jnp.complex64))
    ),
    "S4D NaN at t=10": lambda: _debug_reports_first_non_finite(jnp.nan),
    "S4D +inf at t=10": lambda: _debug_reports_first_non_finite(jnp.inf),
    "S5 NaN at t=10 is causal": _s5_is_causal_for_nan,
    "S5 step_scale=0": _s5_zero_step_is_feedthrough,
    "S5 step_scale of shape (3,)": _raises(
        ValueError, "step_scale", lambda: _s5()(_u(), step_scale=jnp.ones(3))
    ),
    "S4D bidirectional step": _raises(
        ValueError,
        "bidirectional",
        lambda: _s4d(bidirectional=True).step(jnp.ones((2, 4)), jnp.zeros((2, 4, 4), jnp.complex64)),
    ),
    "S4D.step cache batch 3, u_t batch 2": _raises(
        ValueError, "state must have shape", lambda: _s4d().step(jnp.ones((2, 4)), _s4d().init_cache(3))
    ),
    "S5.step u_t of 5 features": _raises(
        ValueError,
        r"u_t must have shape \(\.\.\., 4\)",
        lambda: _s5().step(jnp.ones((2, 5)), _s5().init_cache(2)),
    ),
    "SequenceModel ssm='s6'": _raises(
        ValueError, "ssm must be one of", lambda: SequenceModel(1, 4, 2, ssm="s6", rngs=R(0))
    ),
    "SequenceModel pool='max'": _raises(
        ValueError, "pool", lambda: SequenceModel(1, 4, 2, pool="max", rngs=R(0))
    ),
    "SequenceModel layers=0": _raises(
        ValueError, "layers", lambda: SequenceModel(1, 4, 2, layers=0, rngs=R(0))
    ),
    "SequenceModel dropout=1.5": _raises(
        ValueError, "dropout", lambda: SequenceModel(1, 4, 2, dropout=1.5, rngs=R(0))
    ),
    "ptd non-square": _raises(ValueError, "A must be a square", lambda: ptd(np.ones((3, 4)))),
    "ptd NaN": _raises(ValueError, "A must be finite", lambda: ptd(np.full((3, 3), np.nan))),
}


@pytest.mark.parametrize("name", list(CASES))
def test_ssm_bad_input(name):
    CASES[name]()


def test_every_ssm_row_is_covered():
    assert len(CASES) == 42  # the catalogue's ssm rows


@pytest.mark.parametrize("layer", [_s4d, _s5], ids=["s4d", "s5"])
def test_bfloat16_input_computes_in_float32_and_returns_bfloat16(layer):
    u = _u()
    u_half = u.astype(jnp.bfloat16)
    y = layer()(u_half)
    assert y.dtype == jnp.bfloat16
    # The only bfloat16 roundings are the input's and the output's (~2^-9 relative each).
    expected = layer()(u_half.astype(jnp.float32))
    np.testing.assert_allclose(
        y.astype(jnp.float32), expected, rtol=2**-8, atol=2**-8 * float(jnp.abs(expected).max())
    )


@pytest.mark.parametrize("cls", [S4D, S5])
def test_param_dtype_and_cache_dtype(cls):
    layer = cls(4, 8, param_dtype=jnp.bfloat16, dtype=jnp.float32, rngs=R(0))
    assert all(p.dtype == jnp.bfloat16 for p in layer.params().values())
    assert layer.init_cache(2).dtype == jnp.complex64
    assert layer(_u()).dtype == jnp.float32
    with pytest.raises(TypeError, match="param_dtype"):
        cls(4, 8, param_dtype=jnp.int32, rngs=R(0))
    with pytest.raises(TypeError, match="dtype"):
        cls(4, 8, dtype=jnp.complex64, rngs=R(0))


def test_cache_dtype_follows_float64_parameters(x64):
    layer = S4D(4, 8, param_dtype=jnp.float64, rngs=R(0))
    cache = layer.init_cache(2)
    assert cache.dtype == jnp.complex128
    u = jnp.asarray(np.random.default_rng(0).standard_normal((2, 4)))
    y, new_cache = layer.step(u, cache)
    assert y.dtype == jnp.float64 and new_cache.dtype == jnp.complex128


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: linen.S4D(4, 8, chunk_size=0), "chunk_size"),
        (lambda: linen.S5(4, 8, blocks=3), "blocks"),
        (lambda: linen.SequenceModel(4, 2, dropout=1.5), "dropout"),
    ],
)
def test_linen_layers_refuse_at_construction(build, match):
    with pytest.raises(ValueError, match=match):
        build()
