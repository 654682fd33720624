import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.losses import sdm_log_loss
from jaxdl.nn.sdm import activation
from jaxdl.nn.sdm.activation import sdm_activation, sdm_log_prob
from tests.reference import sdm as ref

Z = np.array([1.0, 3.0])


@pytest.mark.parametrize(
    "q, d, expected",
    [
        (math.e - 2, 1.0, [0.119203, 0.880797]),  # ordinary softmax
        (0.0, 1.0, [0.2, 0.8]),
        (2.0, 0.5, [0.2, 0.8]),
        (6.0, 1.0, [0.015385, 0.984615]),
    ],
)
def test_worked_values(x64, q, d, expected):
    np.testing.assert_allclose(sdm_activation(jnp.asarray(Z), q, d), expected, atol=1e-6)
    np.testing.assert_allclose(sdm_activation(jnp.asarray(Z), q, d), ref.sdm_activation(Z, q, d), rtol=1e-12)


@pytest.mark.parametrize(
    "q, d, expected",
    [(0.0, 1.0, (2.321928, 0.321928)), (2.0, 0.5, (1.160964, 0.160964)), (6.0, 1.0, (2.007456, 0.007456))],
)
def test_loss_values(x64, q, d, expected):
    logits = jnp.asarray([Z, Z])
    loss = sdm_log_loss(logits, jnp.array([0, 1]), jnp.full(2, q), jnp.full(2, d))
    np.testing.assert_allclose(loss, expected, atol=1e-6)
    np.testing.assert_allclose(loss, [ref.sdm_loss(Z, y, q, d) for y in (0, 1)], rtol=1e-12)


def test_random_batch_against_reference(x64, rng):
    logits = rng.normal(size=(16, 5)) * 3
    q = rng.integers(0, 50, size=16).astype(np.float64)
    d = rng.uniform(size=16)
    labels = rng.integers(0, 5, size=16)
    probs = sdm_activation(logits, q, d)
    np.testing.assert_allclose(
        probs, [ref.sdm_activation(*args) for args in zip(logits, q, d, strict=True)], rtol=1e-12
    )
    loss = sdm_log_loss(jnp.asarray(logits), jnp.asarray(labels), q, d)
    expected = [ref.sdm_loss(*args) for args in zip(logits, labels, q, d, strict=True)]
    np.testing.assert_allclose(loss, expected, rtol=1e-12)
    np.testing.assert_allclose(
        jnp.exp(sdm_log_prob(logits, q, d) * np.log(2 + q)[:, None]), probs, rtol=1e-12
    )


def test_softmax_and_cross_entropy_recovered(rng):
    logits = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 4, size=8))
    q, d = jnp.full(8, math.e - 2), jnp.ones(8)
    np.testing.assert_allclose(sdm_activation(logits, q, d), jax.nn.softmax(logits), rtol=1e-5)
    # optax is the peer for the plain cross-entropy.
    np.testing.assert_allclose(
        sdm_log_loss(logits, labels, q, d),
        optax.softmax_cross_entropy_with_integer_labels(logits, labels),
        rtol=1e-5,
    )


def test_uniform_at_zero_distance_and_argmax_preserved(rng):
    logits = jnp.asarray(rng.normal(size=(32, 6)) * 5, jnp.float32)
    q = jnp.asarray(rng.integers(0, 100, size=32), jnp.float32)
    np.testing.assert_allclose(sdm_activation(logits, q, jnp.zeros(32)), 1 / 6, rtol=1e-6)
    d = jnp.asarray(rng.uniform(0.05, 1, size=32), jnp.float32)
    np.testing.assert_array_equal(jnp.argmax(sdm_activation(logits, q, d), -1), jnp.argmax(logits, -1))


def test_sharpens_with_q_and_d():
    p = [float(sdm_activation(jnp.asarray(Z), q, 1.0)[1]) for q in (0.0, 2.0, 10.0, 100.0)]
    assert p == sorted(p) and p[-1] > 0.9999


def test_axis_argument(rng):
    logits = jnp.asarray(rng.normal(size=(3, 4, 5)), jnp.float32)
    q, d = jnp.asarray(rng.uniform(0, 9, size=(3, 5))), jnp.asarray(rng.uniform(size=(3, 5)))
    moved = sdm_activation(jnp.moveaxis(logits, 1, -1), q, d)
    np.testing.assert_allclose(sdm_activation(logits, q, d, axis=1), jnp.moveaxis(moved, -1, 1), rtol=1e-6)


def test_no_gradient_through_q_and_d(rng):
    logits = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
    labels = jnp.array([0, 1, 2, 0])

    def loss(z, q, d):
        return sdm_log_loss(z, labels, q, d).mean()

    g_z, g_q, g_d = jax.grad(loss, argnums=(0, 1, 2))(logits, jnp.full(4, 3.0), jnp.full(4, 0.7))
    assert np.all(np.asarray(g_q) == 0) and np.all(np.asarray(g_d) == 0)
    # Closed form: d/dz [CE(z d ln(2+q)) / ln(2+q)] = d (softmax(z d ln(2+q)) - onehot) / B.
    expected = 0.7 * (sdm_activation(logits, 3.0, 0.7) - jax.nn.one_hot(labels, 3)) / 4
    np.testing.assert_allclose(g_z, expected, rtol=1e-5, atol=1e-7)


def test_jit_and_vmap_agree(rng):
    logits = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
    q, d = jnp.arange(6.0), jnp.linspace(0, 1, 6)
    eager = sdm_activation(logits, q, d)
    np.testing.assert_allclose(jax.jit(sdm_activation)(logits, q, d), eager, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(sdm_activation)(logits, q, d), eager, rtol=1e-6)


def test_bad_inputs():
    with pytest.raises(ValueError, match="q must broadcast"):
        sdm_activation(jnp.zeros((4, 3)), jnp.zeros(5), 1.0)
    with pytest.raises(ValueError, match="class axis"):
        sdm_activation(jnp.array(1.0), 0.0, 1.0)
    with pytest.raises(TypeError, match="labels must be integers"):
        sdm_log_loss(jnp.zeros((4, 3)), jnp.zeros(4), 0.0, 1.0)
    with pytest.raises(ValueError, match="labels must have shape"):
        sdm_log_loss(jnp.zeros((4, 3)), jnp.zeros(3, int), 0.0, 1.0)
    assert activation.Q_OFFSET == 2.0
