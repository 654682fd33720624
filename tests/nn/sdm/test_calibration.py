import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.nn.sdm.activation import sdm_activation
from jaxdl.nn.sdm.calibration import (
    SDMCalibration,
    calibrate_thresholds,
    dkw_epsilon,
    effective_sample_size,
    high_reliability,
    lower_distance,
    rescaled_similarity,
)
from tests.reference import sdm as ref


@pytest.mark.parametrize(
    "q, p, expected",
    [
        (0, 0.9, 0.0),
        (1, 0.2, 1.0),
        (1, 0.99, 1.0),
        (100, 0.5, 10.0995),
        (100, 0.99, 97.390),
        (5, 0.8, 4.7433),
    ],
)
def test_rescaled_similarity_values(x64, q, p, expected):
    assert float(rescaled_similarity(jnp.asarray(float(q)), jnp.asarray(p))) == pytest.approx(
        expected, abs=1e-3
    )
    assert float(rescaled_similarity(jnp.asarray(float(q)), jnp.asarray(p))) == pytest.approx(
        ref.rescaled_similarity(q, p)
    )


@pytest.mark.parametrize(
    "n, expected", [(0, 1.0), (1, 1.3581), (10, 0.42947), (100, 0.13581), (1000, 0.042947)]
)
def test_dkw_epsilon_values(x64, n, expected):
    assert float(dkw_epsilon(jnp.asarray(n), 0.95)) == pytest.approx(expected, abs=1e-4)
    assert float(dkw_epsilon(jnp.asarray(n), 0.95)) == pytest.approx(ref.dkw_epsilon(n, 0.95), rel=1e-12)


def _calibration_set(rng, n=300, num_classes=3):
    """Accuracy grows with q': points with larger q' are right more often (a monotone toy)."""
    labels = rng.integers(0, num_classes, size=n)
    q_prime = rng.uniform(0, 40, size=n)
    right = rng.uniform(size=n) < 0.5 + q_prime / 80
    predictions = np.where(right, labels, (labels + 1) % num_classes)
    logits = 4 * rng.normal(size=(n, num_classes)) ** 2 * 0.2
    logits[np.arange(n), predictions] += 2 + q_prime / 8
    probs = np.asarray(jax.nn.softmax(logits))
    q_prime[rng.uniform(size=n) < 0.1] = 0.5  # some OOD points
    return probs, q_prime, labels


@pytest.mark.parametrize("alpha", [0.8, 0.9, 0.95])
def test_alg1_against_reference(x64, rng, alpha):
    probs, q_prime, labels = _calibration_set(rng)
    cal = calibrate_thresholds(
        jnp.asarray(probs), jnp.asarray(q_prime), jnp.asarray(labels), alpha, candidates_per_step=16
    )
    q_min, thresholds = ref.calibrate(probs, q_prime, labels, alpha)
    assert math.isfinite(q_min)  # the monotone toy has a threshold
    assert float(cal.q_min) == q_min
    np.testing.assert_allclose(cal.thresholds, thresholds)
    assert np.all(np.asarray(cal.thresholds) >= alpha)


def test_alg1_rejects_everything_when_no_threshold_works(rng):
    probs, q_prime, labels = _calibration_set(rng)
    probs = np.full_like(probs, 1 / 3)  # uniform outputs can never reach alpha
    cal = calibrate_thresholds(jnp.asarray(probs), jnp.asarray(q_prime), jnp.asarray(labels), 0.9)
    assert float(cal.q_min) == math.inf and np.all(np.asarray(cal.thresholds) == 0)
    admitted = high_reliability(jnp.asarray(probs), jnp.asarray(q_prime), jnp.zeros(len(labels), int), cal)
    assert not np.any(admitted)


def test_alg1_is_jittable_for_a_fixed_alpha(rng):
    probs, q_prime, labels = (jnp.asarray(a) for a in _calibration_set(rng, n=64))
    eager = calibrate_thresholds(probs, q_prime, labels, 0.9)
    jitted = jax.jit(lambda p, q, y: calibrate_thresholds(p, q, y, 0.9))(probs, q_prime, labels)
    jax.tree.map(np.testing.assert_array_equal, eager, jitted)


def test_high_reliability_against_reference(rng):
    probs, q_prime, labels = _calibration_set(rng)
    cal = calibrate_thresholds(jnp.asarray(probs), jnp.asarray(q_prime), jnp.asarray(labels), 0.9)
    predictions = probs.argmax(1)
    admitted = high_reliability(jnp.asarray(probs), jnp.asarray(q_prime), jnp.asarray(predictions), cal)
    expected = ref.high_reliability(probs, q_prime, predictions, float(cal.q_min), np.asarray(cal.thresholds))
    np.testing.assert_array_equal(admitted, expected)
    assert 0 < expected.sum() < len(expected)


def test_high_reliability_rejection_reasons():
    cal = SDMCalibration(jnp.array(0.9), jnp.array(3.0), jnp.array([0.9, 0.9]), None)
    probs = jnp.array([[0.95, 0.05]] * 3 + [[0.85, 0.15], [0.5, 0.5]])
    q_prime = jnp.array([5.0, 0.9, 2.5, 5.0, 5.0])  # ok, OOD, below q'_min, below ψ, d = 0 (uniform)
    assert high_reliability(probs, q_prime, jnp.zeros(5, int), cal).tolist() == [
        True,
        False,
        False,
        False,
        False,
    ]


def test_zero_distance_never_admitted(rng):
    logits = jnp.asarray(rng.normal(size=(20, 2)) * 10, jnp.float32)
    probs = sdm_activation(logits, jnp.full(20, 50.0), jnp.zeros(20))
    cal = SDMCalibration(jnp.array(0.9), jnp.array(1.0), jnp.array([0.9, 0.9]), None)
    assert not np.any(high_reliability(probs, jnp.full(20, 50.0), jnp.argmax(logits, 1), cal))


def test_lower_distance_against_reference(x64, rng):
    probs, q_prime, labels = _calibration_set(rng, n=120)
    cal = calibrate_thresholds(jnp.asarray(probs), jnp.asarray(q_prime), jnp.asarray(labels), 0.9)
    d = rng.uniform(size=40)
    query_q_prime = np.concatenate([rng.uniform(0, 45, size=38), [0.0, 1000.0]])
    expected = ref.lower_distance(d, query_q_prime, labels, q_prime, 3, 0.9)
    np.testing.assert_allclose(
        lower_distance(jnp.asarray(d), jnp.asarray(query_q_prime), cal), expected, rtol=1e-12
    )
    sizes = effective_sample_size(jnp.asarray(query_q_prime), cal.q_prime_ecdf)
    assert sizes.shape == (40, 3) and np.all(np.asarray(sizes[-2]) == 0)  # q' = 0 → n̂ = 0 → ε = 1


def test_bad_alpha(rng):
    probs, q_prime, labels = (jnp.asarray(a) for a in _calibration_set(rng, n=10))
    for alpha in (0.5, 1.2, "0.9"):
        with pytest.raises(ValueError, match="alpha must be a float in"):
            calibrate_thresholds(probs, q_prime, labels, alpha)
    with pytest.raises(ValueError, match="probs must have shape"):
        calibrate_thresholds(probs[0], q_prime, labels, 0.9)
