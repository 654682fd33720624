"""The whole SDM workflow on a Gaussian mixture with label noise ([ACT] §3.2: admitted-set accuracy)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxdl.nn.sdm import ExemplarMemory, SDMCalibration, SDMHead, SDMState, fit_sdm, restore_head, save_head
from tests.nn.sdm.conftest import SDM_CLASSES, SDM_FEATURES, mixture
from tests.reference import sdm as ref

FEATURES, NUM_CLASSES = SDM_FEATURES, SDM_CLASSES


def admitted_accuracies(output, labels):
    admitted, prediction = np.asarray(output.admitted), np.asarray(output.prediction)
    by_class = [np.mean(prediction[admitted & (labels == c)] == c) for c in range(NUM_CLASSES)]
    by_prediction = [np.mean(labels[admitted & (prediction == c)] == c) for c in range(NUM_CLASSES)]
    return by_class, by_prediction, admitted.mean()


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [0.9, 0.95])
def test_admitted_accuracy_reaches_alpha_on_held_out_data(fitted, alpha):
    head, _, (x, labels) = fitted
    head.calibrate(alpha)
    output = head.predict(x)
    by_class, by_prediction, coverage = admitted_accuracies(output, labels)
    assert min(by_class) >= alpha and min(by_prediction) >= alpha, (by_class, by_prediction)
    assert coverage > 0.2  # not vacuous: a real share is admitted
    lower_by_class = [
        np.mean(np.asarray(output.prediction)[np.asarray(output.admitted_lower) & (labels == c)] == c)
        for c in range(NUM_CLASSES)
    ]
    assert min(lower_by_class) >= alpha
    assert (
        np.asarray(output.admitted_lower).sum() <= np.asarray(output.admitted).sum()
    )  # the conservative rule


@pytest.mark.slow
def test_far_and_shuffled_inputs_are_rejected(fitted):
    head, _, (x, _) = fitted
    head.calibrate(0.9)
    rng = np.random.default_rng(1)
    far = (rng.normal(size=x.shape) * 30).astype(np.float32)
    shuffled = np.stack([row[rng.permutation(FEATURES)] for row in x])
    assert np.mean(np.asarray(head.predict(far).admitted)) <= 0.01
    assert np.mean(np.asarray(head.predict(shuffled).admitted)) <= 0.05
    assert np.mean(np.asarray(head.predict(x).admitted)) > 0.3


@pytest.mark.slow
def test_predict_matches_the_numpy_reference(fitted):
    head, _, (x, _) = fitted
    x = x[:40]
    state: SDMState = head.state.get_value()
    with jax.default_matmul_precision("highest"):
        output = head.predict(x)
        logits, vectors = (np.asarray(a, np.float64) for a in head(jnp.asarray(x)))
    memory = jax.tree.map(np.asarray, state.memory._replace(vectors=state.memory.vectors.exemplars))
    k = min(head.k, memory.vectors.shape[0])
    distances, neighbours = ref.knn(vectors, memory.vectors.astype(np.float64), k)
    prediction = logits.argmax(1)
    q = ref.similarity_q(neighbours, prediction, memory.labels, memory.predictions)
    ecdf = state.distance_ecdf
    class_distances = [np.asarray(ecdf.values[c, : ecdf.counts[c]], np.float64) for c in range(NUM_CLASSES)]
    d = ref.distance_quantile(distances[:, 0], class_distances)
    probs = np.stack([ref.sdm_activation(z, qq, dd) for z, qq, dd in zip(logits, q, d, strict=True)])
    q_prime = ref.rescaled_similarity(q, probs[np.arange(40), prediction])
    calibration = state.calibration
    admitted = ref.high_reliability(
        probs, q_prime, prediction, float(calibration.q_min), np.asarray(calibration.thresholds)
    )
    np.testing.assert_array_equal(output.q, q)
    np.testing.assert_allclose(output.d, d, atol=1e-6)
    np.testing.assert_allclose(output.probs, probs, atol=1e-4)
    np.testing.assert_allclose(output.q_prime, q_prime, rtol=1e-4)
    np.testing.assert_array_equal(output.admitted, admitted)
    np.testing.assert_array_equal(output.neighbours[:, :5], neighbours[:, :5])


@pytest.mark.slow
def test_model_selection_keeps_the_lowest_calibration_loss(fitted):
    _, history, _ = fitted
    losses = history["calibration_loss"][0]
    assert len(losses) == 12 and history["best_calibration_loss"] == min(losses)
    assert history["best_epoch"] == int(np.argmin(losses))
    assert history["train_loss"][0][-1] < history["train_loss"][0][0]


@pytest.mark.slow
def test_predict_sharded_over_eight_devices(fitted, mesh):
    head, _, (x, _) = fitted
    with jax.default_matmul_precision("highest"):
        single = head.predict(x[:64])
        sharded = head.predict(x[:64], mesh=mesh, block_size=16)
    # Far down the list near-equal distances may swap with a different blocking; the head of it may not.
    np.testing.assert_array_equal(single.neighbours[:, :10], sharded.neighbours[:, :10])
    np.testing.assert_allclose(single.nearest_distance, sharded.nearest_distance, rtol=1e-5)
    np.testing.assert_array_equal(single.q, sharded.q)
    np.testing.assert_array_equal(single.admitted, sharded.admitted)
    np.testing.assert_allclose(single.probs, sharded.probs, rtol=1e-6)


@pytest.mark.slow
def test_save_and_restore_round_trip(fitted, tmp_path):
    head, _, (x, _) = fitted
    save_head(tmp_path / "sdm", head)
    restored = restore_head(
        tmp_path / "sdm", SDMHead(FEATURES, NUM_CLASSES, hidden=32, k=256, rngs=nnx.Rngs(5))
    )
    state = restored.state.get_value()
    assert isinstance(state, SDMState) and isinstance(state.memory, ExemplarMemory)
    assert isinstance(state.calibration, SDMCalibration)
    jax.tree.map(np.testing.assert_array_equal, state, head.state.get_value())
    jax.tree.map(np.testing.assert_array_equal, restored.predict(x[:50]), head.predict(x[:50]))


@pytest.mark.slow
def test_multiple_rounds_reshuffle_and_keep_the_best():
    rng = np.random.default_rng(3)
    train, calibration = mixture(rng, 50), mixture(rng, 50)  # equal halves: one compile for both rounds
    head = SDMHead(FEATURES, NUM_CLASSES, hidden=8, k=16, rngs=nnx.Rngs(0))
    history = fit_sdm(
        head,
        train,
        calibration,
        key=jax.random.key(1),
        optimizer=optax.adam(1e-2),
        epochs=2,
        rounds=2,
        progress=False,
    )
    assert len(history["calibration_loss"]) == 2
    flat = [loss for round_losses in history["calibration_loss"] for loss in round_losses]
    assert history["best_calibration_loss"] == min(flat)
    assert head.memory_size == 50
    assert math.isfinite(float(head.state.get_value().calibration.alpha))


def test_bad_inputs(tmp_path):
    head = SDMHead(FEATURES, NUM_CLASSES, hidden=8, rngs=nnx.Rngs(0))
    x, y = mixture(np.random.default_rng(0), 20)
    with pytest.raises(ValueError, match="no exemplar memory"):
        head.predict(x)
    with pytest.raises(ValueError, match="no exemplar memory"):
        save_head(tmp_path / "empty", head)
    with pytest.raises(ValueError, match="no calibration points"):
        head.calibrate(0.9)
    with pytest.raises(ValueError, match="features in its last axis"):
        head(x[:, :5])
    with pytest.raises(ValueError, match="labels must lie in"):
        fit_sdm(head, (x, y + 3), (x, y), key=jax.random.key(0))
    with pytest.raises(ValueError, match="features must have shape"):
        fit_sdm(head, (x[:, :3], y), (x, y), key=jax.random.key(0))
    with pytest.raises(TypeError, match="must be a pair"):
        fit_sdm(head, x, (x, y), key=jax.random.key(0))
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        fit_sdm(head, (x, y), (x, y), key=jax.random.key(0), epochs=0)
    with pytest.raises(ValueError, match="num_classes must be an int"):
        SDMHead(4, 1, rngs=nnx.Rngs(0))


def test_training_loss_that_diverges_raises():
    x, y = mixture(np.random.default_rng(0), 60)  # the 50 calibration points hold every class
    head = SDMHead(FEATURES, NUM_CLASSES, hidden=8, k=8, rngs=nnx.Rngs(0))
    with pytest.raises(FloatingPointError, match="training loss became"):
        fit_sdm(
            head,
            (x[:10], y[:10]),
            (x[10:], y[10:]),
            key=jax.random.key(0),
            epochs=1,
            batch_size=5,
            progress=False,
            optimizer=optax.sgd(float("nan")),
        )
