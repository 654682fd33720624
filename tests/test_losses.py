import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxdl.losses import softmax_collapse_fraction, stablemax_cross_entropy
from tests.reference.optimizers import stablemax as stablemax_reference


def test_worked_example(x64):
    # Values computed by hand from Def. 4: s = [2, 1/3, 1.5], p_0 = 2 / (23/6) = 12/23.
    logits, labels = jnp.array([[1.0, -2.0, 0.5]]), jnp.array([0])
    np.testing.assert_allclose(stablemax_cross_entropy(logits, labels), [-np.log(12 / 23)], rtol=1e-12)
    np.testing.assert_allclose(stablemax_cross_entropy(logits, labels), [0.6505875661], rtol=1e-9)
    grad = jax.grad(lambda z: stablemax_cross_entropy(z, labels).sum())(logits)
    np.testing.assert_allclose(grad, [[-0.23913043, 0.02898551, 0.26086957]], rtol=1e-6)


def test_matches_numpy_reference(x64, rng):
    logits = rng.normal(scale=4.0, size=(10, 7))
    labels = rng.integers(0, 7, size=10)
    expected = -np.log(stablemax_reference(logits)[np.arange(10), labels])
    np.testing.assert_allclose(stablemax_cross_entropy(logits, labels), expected, rtol=1e-12)


def test_float32_gradients_finite_at_one_and_zero():
    logits = jnp.array([[1.0, 0.0, -1.0, 2.0]], jnp.float32)
    grad = jax.grad(lambda z: stablemax_cross_entropy(z, jnp.array([1])).sum())(logits)
    assert bool(jnp.all(jnp.isfinite(grad)))


def test_batched_shapes_jit_and_sharding(mesh, rng):
    logits = jnp.asarray(rng.normal(size=(8, 3, 5)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 5, size=(8, 3)))
    loss = stablemax_cross_entropy(logits, labels)
    assert loss.shape == (8, 3)
    np.testing.assert_allclose(jax.jit(stablemax_cross_entropy)(logits, labels), loss, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(stablemax_cross_entropy)(logits, labels), loss, rtol=1e-6)
    put = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))
    np.testing.assert_allclose(jax.jit(stablemax_cross_entropy)(put(logits), put(labels)), loss, rtol=1e-6)


def test_bad_labels():
    logits = jnp.zeros((4, 3))
    with pytest.raises(ValueError, match="labels must have shape"):
        stablemax_cross_entropy(logits, jnp.zeros((3,), jnp.int32))
    with pytest.raises(TypeError, match="labels must be integer"):
        stablemax_cross_entropy(logits, jnp.zeros((4,)))


def test_softmax_collapse_fraction():
    # float32 absorbs exp(-17) ~ 4e-8 < 2^-24 when added to 1; exp(-10) ~ 4.5e-5 survives.
    logits = jnp.array([[0.0, 17.0, 17.0 - 20.0], [0.0, 10.0, 0.0], [5.0, 5.0, 5.0], [-30.0, 0.0, -40.0]])
    assert float(softmax_collapse_fraction(logits)) == 0.5
    assert float(jax.jit(softmax_collapse_fraction)(logits)) == 0.5


def test_softmax_collapse_depends_on_dtype(x64):
    logits = jnp.array([[0.0, 17.0]])
    assert float(softmax_collapse_fraction(logits.astype(jnp.float32))) == 1.0
    assert float(softmax_collapse_fraction(logits.astype(jnp.float64))) == 0.0
