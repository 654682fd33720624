import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxdl.nn import log_stablemax, stablemax
from tests.reference.optimizers import stablemax as stablemax_reference


def test_matches_numpy_reference(x64, rng):
    x = rng.normal(scale=5.0, size=(6, 11))
    np.testing.assert_allclose(stablemax(x), stablemax_reference(x), rtol=1e-13)
    np.testing.assert_allclose(log_stablemax(x), np.log(stablemax_reference(x)), rtol=1e-13)
    np.testing.assert_allclose(stablemax(x, axis=0), stablemax_reference(x, axis=0), rtol=1e-13)


def test_is_softmax_of_signed_log(x64, rng):
    # Prieto et al. 2025, Prop. 1: StableMax(x) = softmax(sign(x) log(1 + |x|)).
    x = rng.normal(scale=3.0, size=(4, 7))
    np.testing.assert_allclose(stablemax(x), jax.nn.softmax(np.sign(x) * np.log1p(np.abs(x))), rtol=1e-13)


def test_sums_to_one_and_is_monotone(rng):
    x = jnp.asarray(rng.normal(scale=10.0, size=(5, 9)), jnp.float32)
    np.testing.assert_allclose(stablemax(x).sum(-1), 1.0, rtol=1e-6)
    order = jnp.argsort(x, axis=-1)
    probs = jnp.take_along_axis(stablemax(x), order, axis=-1)
    assert bool(jnp.all(jnp.diff(probs, axis=-1) >= 0))


def test_does_not_collapse_where_softmax_does():
    x = jnp.array([[0.0, 110.0, 1.0]])  # exp(-110) is below the smallest float32
    assert float(jax.nn.softmax(x)[0, 0]) == 0.0  # float32 softmax underflows
    assert float(stablemax(x)[0, 0]) > 1e-3  # StableMax: 1 / (111 + 1 + 2)


@pytest.mark.parametrize("value", [0.0, 1.0, -1.0, 1e30, -1e30, 3e38])
def test_float32_gradients_are_finite_at_the_branch_points(value):
    # The naive where-port gives NaN at x = 1 (and the one-where form at +-1).
    x = jnp.array([value, 0.3, -1.0, 0.5], jnp.float32)
    grad = jax.grad(lambda z: log_stablemax(z)[1])(x)
    assert bool(jnp.all(jnp.isfinite(grad)))


def test_gradient_at_zero_is_that_of_log1p(x64):
    # g'(0) = 1: sign(x) * log1p(|x|) would give 0 here.
    g = jax.grad(lambda z: log_stablemax(z)[0])(jnp.array([0.0, 0.0]))
    np.testing.assert_allclose(g, [0.5, -0.5], rtol=1e-12)


def test_transforms(mesh, rng):
    x = jnp.asarray(rng.normal(size=(16, 5)), jnp.float32)
    expected = stablemax(x)
    np.testing.assert_allclose(jax.jit(stablemax)(x), expected, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(stablemax)(x), expected, rtol=1e-6)
    sharded = jax.device_put(x, NamedSharding(mesh, P("data")))
    out = jax.jit(stablemax)(sharded)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert out.sharding.is_equivalent_to(sharded.sharding, 2)


def test_rejects_integer_input():
    with pytest.raises(TypeError, match="x must be a floating-point"):
        stablemax(jnp.arange(3))
