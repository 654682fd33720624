"""GR-KAN's rational: against the float64 reference, the fitted initialisation, the variance-preserving gain."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from jaxdl.nn.kan import GRKAN, fit_rational, gr_kan, group_rational, rational, rational_gain
from jaxdl.nn.kan.rational import _TARGETS
from tests.reference import kan as ref


def test_rational_matches_reference(x64, rng):
    a, b = rng.normal(size=6), rng.normal(size=4)
    x = rng.normal(size=50) * 3
    np.testing.assert_allclose(rational(x, a, b), [ref.rational(v, a, b) for v in x], rtol=1e-12)


def test_denominator_is_at_least_one(x64, rng):
    # Q = 1 + sum |b_q| |x|^q >= 1, whatever the signs: F = P exactly when b = 0, and |F| <= |P| always.
    a, b = rng.normal(size=6), rng.normal(size=4)
    x = np.linspace(-10, 10, 201)
    p = np.polynomial.polynomial.polyval(x, a)
    assert np.all(np.abs(rational(x, a, b)) <= np.abs(p) + 1e-12)
    np.testing.assert_allclose(rational(x, a, np.zeros(4)), p, rtol=1e-12)


def test_group_rational_matches_reference(x64, rng):
    a, b = rng.normal(size=(4, 6)), rng.normal(size=(4, 4))
    x = rng.normal(size=(5, 12))
    np.testing.assert_allclose(group_rational(x, a, b), ref.group_rational(x, a, b), rtol=1e-12)


# Max |F - target| on [-3, 3] of the fitted (m, n) = (5, 4) rational: the stated accuracy of the init.
FIT_TOLERANCE = {"identity": 1e-12, "swish": 1e-5, "gelu": 4e-3, "tanh": 1e-5, "relu": 4e-2}


@pytest.mark.parametrize("target", sorted(FIT_TOLERANCE))
def test_fit_reproduces_target_on_interval(x64, target):
    a, b = fit_rational(target, 5, 4)
    assert np.all(b >= 0)
    x = np.linspace(-3, 3, 2001)
    error = np.abs(np.asarray(rational(x, a, b)) - _TARGETS[target](x)).max()
    assert error < FIT_TOLERANCE[target], error


def test_gain_matches_monte_carlo_second_moment(rng):
    for target in ("identity", "swish", "gelu"):
        a, b = fit_rational(target)
        x = rng.normal(size=1_000_000)
        second_moment = np.mean(np.array([ref.rational(v, a, b) for v in x[:20_000]]) ** 2)
        np.testing.assert_allclose(1 / rational_gain(a, b), second_moment, rtol=0.03)
    # SiLU's E[silu(x)^2] by quadrature of the exact function: the rational's gain is within 0.5% of it.
    nodes, weights = np.polynomial.hermite_e.hermegauss(200)
    silu_gain = np.sqrt(2 * np.pi) / np.sum(weights * ref.silu(nodes) ** 2)
    np.testing.assert_allclose(rational_gain(*fit_rational("swish")), silu_gain, rtol=5e-3)
    assert rational_gain(*fit_rational("identity")) == pytest.approx(1.0, abs=1e-12)


def test_grkan_initialisation_is_variance_preserving():
    layer = GRKAN(512, 512, groups=8, init="swish", use_bias=False, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2048, 512))
    with jax.default_matmul_precision("highest"):
        y = layer(x)
    # W ~ N(0, gain / fan_in) and gain = 1 / E[F(x)^2], so E[y^2] = fan_in * E[F(x)^2] * gain / fan_in = 1.
    assert float(jnp.mean(y**2)) == pytest.approx(1.0, rel=0.05)
    np.testing.assert_allclose(layer.numerator[...][3], fit_rational("swish")[0], rtol=1e-6)


def test_grkan_gradients_order_two(x64, rng):
    a, b = rng.normal(size=(2, 6)) * 0.5, rng.normal(size=(2, 4)) * 0.5
    kernel, bias = rng.normal(size=(4, 3)), rng.normal(size=3)
    x = rng.normal(size=(3, 4))
    fn = jax.jit(gr_kan)
    check_grads(fn, (x, a, b, kernel, bias), order=2, modes=("fwd",), atol=1e-5, rtol=1e-5)
    check_grads(fn, (x, a, b, kernel, bias), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)


def test_rational_errors():
    with pytest.raises(ValueError, match="divisible by the number of groups"):
        group_rational(jnp.ones((2, 6)), jnp.ones((4, 3)), jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="must share g"):
        group_rational(jnp.ones((2, 8)), jnp.ones((4, 3)), jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="target must be one of"):
        fit_rational("softsign")
    with pytest.raises(ValueError, match="divisible by groups"):
        GRKAN(12, 4, groups=8, rngs=nnx.Rngs(0))


def test_cached_fit_is_read_only():
    a, b = fit_rational("swish")
    with pytest.raises(ValueError, match="read-only"):
        a[0] = 99.0
    with pytest.raises(ValueError, match="read-only"):
        b[0] = 99.0
