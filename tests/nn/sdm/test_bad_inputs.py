"""The `sdm` rows of the bad-input catalogue (issue #15), one case per row.

Each case either raises the given error type with a message naming the argument, before XLA sees
the input, or returns the right answer (checked against the NumPy reference).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxdl.nn.sdm import CalibrationPoints, ExemplarMemory, SDMHead, build_index, fit_sdm, nearest_neighbours
from tests.reference import sdm as ref

RNG = np.random.default_rng(0)
QUERIES = RNG.normal(size=(4, 3)).astype(np.float32)
EXEMPLARS = RNG.normal(size=(10, 3)).astype(np.float32)
X = RNG.normal(size=(40, 4)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int32)


def _head(in_features=8, num_classes=3, **kwargs):
    return SDMHead(in_features, num_classes, hidden=4, rngs=nnx.Rngs(0), **kwargs)


def _calibrated_head():
    """A 2-class head with three exemplars and a calibration, set by hand (no training)."""
    head = SDMHead(4, 2, hidden=8, rngs=nnx.Rngs(0))
    labels = jnp.array([0, 1, 1])
    points = CalibrationPoints(jnp.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9]]), jnp.ones(3), labels)
    memory = ExemplarMemory(build_index(jnp.eye(3, 8)), labels, labels)
    head.state.set_value(head.state.get_value()._replace(memory=memory, calibration_points=points))
    head.calibrate(0.9)
    return head


def _fit(train=(X[:20], Y[:20]), calibration=(X[20:], Y[20:]), head=None, **kwargs):
    head = SDMHead(4, 2, hidden=4, k=8, rngs=nnx.Rngs(0)) if head is None else head
    options = {"key": jax.random.key(0), "epochs": 1, "progress": False, "optimizer": optax.adam(1e-2)}
    return fit_sdm(head, train, calibration, **(options | kwargs))


def _nan_features():
    x = X.copy()
    x[3, 2] = np.nan
    return x


# (catalogue call, thunk, error type, regex that names the argument)
ERRORS = [
    (
        "nearest_neighbours k=11 > 10 exemplars",
        lambda: nearest_neighbours(QUERIES, EXEMPLARS, 11),
        ValueError,
        "k must",
    ),
    ("nearest_neighbours k=0", lambda: nearest_neighbours(QUERIES, EXEMPLARS, 0), ValueError, "k must"),
    (
        "nearest_neighbours rank-1 queries",
        lambda: nearest_neighbours(QUERIES[0], EXEMPLARS, 3),
        ValueError,
        r"queries must have shape \[B, M\]",
    ),
    (
        "nearest_neighbours feature mismatch (4,3) vs (10,5)",
        lambda: nearest_neighbours(QUERIES, RNG.normal(size=(10, 5)), 3),
        ValueError,
        r"exemplars must have shape \[N, 3\]",
    ),
    (
        "nearest_neighbours empty exemplars (0, 3)",
        lambda: nearest_neighbours(QUERIES, np.zeros((0, 3), np.float32), 1),
        ValueError,
        "exemplars must hold at least one row",
    ),
    (
        "nearest_neighbours exclude of wrong shape",
        lambda: nearest_neighbours(QUERIES, EXEMPLARS, 3, exclude=np.arange(3)),
        ValueError,
        r"exclude must have shape \[B\]",
    ),
    (
        "nearest_neighbours block_size=0",
        lambda: nearest_neighbours(QUERIES, EXEMPLARS, 3, block_size=0),
        ValueError,
        "block_size must be a positive int",
    ),
    (
        "nearest_neighbours refine=-1",
        lambda: nearest_neighbours(QUERIES, EXEMPLARS, 3, refine=-1),
        ValueError,
        "refine must be a non-negative int",
    ),
    ("SDMHead(8, 1) one class", lambda: _head(num_classes=1), ValueError, "num_classes must be an int >= 2"),
    ("SDMHead(8, 3, k=0)", lambda: _head(k=0), ValueError, "k must be an int >= 1"),
    (
        "SDMHead.predict before fit",
        lambda: _head().predict(np.ones((2, 8))),
        ValueError,
        "no exemplar memory",
    ),
    ("SDMHead.calibrate before fit", lambda: _head().calibrate(0.9), ValueError, "no calibration points"),
    ("SDMHead(8,3) on x (2, 5)", lambda: _head()(np.ones((2, 5))), ValueError, "x must have 8 features"),
    (
        "fit_sdm float labels",
        lambda: _fit(train=(X[:20], Y[:20] * 1.0)),
        ValueError,
        "train labels must be integers",
    ),
    (
        "fit_sdm labels out of range (2 with 2 classes)",
        lambda: _fit(train=(X[:20], Y[:20] + 1)),
        ValueError,
        r"train labels must lie in \[0, 2\)",
    ),
    (
        "fit_sdm empty train set",
        lambda: _fit(train=(X[:0], Y[:0])),
        ValueError,
        "train needs at least 2 points",
    ),
    (
        "fit_sdm train given as a dict",
        lambda: _fit(train={"x": X, "y": Y}),
        TypeError,
        "train must be a pair",
    ),
    (
        "fit_sdm train x of wrong width (40, 5)",
        lambda: _fit(train=(np.ones((20, 5), np.float32), Y[:20])),
        ValueError,
        r"train features must have shape \[N, 4\]",
    ),
    ("fit_sdm batch_size=0", lambda: _fit(batch_size=0), ValueError, "batch_size must be a positive int"),
    ("fit_sdm epochs=0", lambda: _fit(epochs=0), ValueError, "epochs must be a positive int"),
    (
        "fit_sdm with NaN in train features",
        lambda: _fit(train=(_nan_features()[:20], Y[:20])),
        ValueError,
        "train features must be finite",
    ),
    ("SDMHead.calibrate(alpha=1.5)", lambda: _calibrated_head().calibrate(1.5), ValueError, "alpha must be"),
    (
        "SDMHead.calibrate(alpha=nan)",
        lambda: _calibrated_head().calibrate(math.nan),
        ValueError,
        "alpha must be",
    ),
    ("fit_sdm(alpha=0.0)", lambda: _fit(alpha=0.0), ValueError, "fit_sdm: alpha must be"),
    (
        "SDMHead.predict on NaN features",
        lambda: _calibrated_head().predict(np.array([[np.nan, 0, 0, 0], [0, 0, 0, 0]], np.float32)),
        ValueError,
        "x has nan or inf",
    ),
]


@pytest.mark.parametrize(
    "thunk, error, pattern", [case[1:] for case in ERRORS], ids=[case[0] for case in ERRORS]
)
def test_refused_with_a_message_naming_the_argument(thunk, error, pattern):
    with pytest.raises(error, match=pattern):
        thunk()


def test_k_as_a_numpy_integer_is_accepted():
    dist, idx = nearest_neighbours(QUERIES, EXEMPLARS, np.int64(3))
    expected_dist, expected_idx = ref.knn(QUERIES, EXEMPLARS, 3)
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_allclose(dist, expected_dist, rtol=2e-6, atol=2e-6)


def test_empty_queries_give_empty_results():
    dist, idx = nearest_neighbours(np.zeros((0, 3), np.float32), EXEMPLARS, 3)
    assert (dist.shape, dist.dtype, idx.shape, idx.dtype) == ((0, 3), jnp.float32, (0, 3), jnp.int32)


def test_nan_exemplar_is_never_a_neighbour_when_k_leaves_room():
    exemplars = EXEMPLARS.copy()
    exemplars[7] = np.nan
    dist, idx = nearest_neighbours(QUERIES, exemplars, 3)
    expected_dist, expected_idx = ref.knn(QUERIES, np.delete(exemplars, 7, axis=0), 3)
    np.testing.assert_array_equal(idx, expected_idx + (expected_idx >= 7))
    np.testing.assert_allclose(dist, expected_dist, rtol=2e-6, atol=2e-6)


def test_exclude_index_out_of_range_excludes_nothing():
    expected = nearest_neighbours(QUERIES, EXEMPLARS, 3)
    got = nearest_neighbours(QUERIES, EXEMPLARS, 3, exclude=np.full(4, 99))
    jax.tree.map(np.testing.assert_array_equal, got, expected)


@pytest.mark.slow
def test_batch_size_above_the_train_size_is_one_full_batch():
    """batch_size 1000 > 20 points: one minibatch of all 20 (the padding carries weight 0).

    Epoch 1 is plain cross-entropy (q = e - 2, d = 1), and its one step's loss is taken before the
    update: the mean cross-entropy of the initial head over all 20 standardised training points.
    """
    history = _fit(batch_size=1000, alpha=None)
    fresh = SDMHead(4, 2, hidden=4, k=8, rngs=nnx.Rngs(0))
    fresh.standardization[...] = jnp.array([X[:20].mean(), X[:20].std(ddof=1)])
    expected = optax.softmax_cross_entropy_with_integer_labels(fresh(X[:20])[0], Y[:20]).mean()
    assert history["train_loss"][0][0] == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.slow
def test_single_class_calibration_set_warns_and_admits_nothing():
    head = SDMHead(4, 2, hidden=4, k=8, rngs=nnx.Rngs(0))
    only_class_1 = Y[20:] == 1
    with pytest.warns(UserWarning, match=r"no points of class\(es\) \[0\]"):
        _fit(head=head, calibration=(X[20:][only_class_1], Y[20:][only_class_1]), alpha=0.9)
    output = head.predict(X)
    assert not np.asarray(output.admitted).any() and not np.asarray(output.admitted_lower).any()
    np.testing.assert_array_equal(output.d, 0.0)  # the empty class-0 eCDF gives d = 0 ([ACT] Eq. 5)
    np.testing.assert_allclose(output.probs, 0.5)  # d = 0: the uniform distribution
