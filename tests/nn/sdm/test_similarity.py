import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.nn.sdm.neighbours import nearest_neighbours
from jaxdl.nn.sdm.similarity import class_ecdf, distance_quantile, similarity_q
from tests.reference import sdm as ref

# Exemplars 0..5: label, prediction. Exemplar 4 is labelled 1 but predicted 0 (a mistake).
LABELS = jnp.array([1, 1, 0, 1, 1, 1])
PREDS = jnp.array([1, 1, 0, 1, 0, 1])


def test_known_pattern():
    # Match pattern [1, 1, 0, 1] → q = 2.
    assert similarity_q(jnp.array([[0, 1, 2, 3]]), jnp.array([1]), LABELS, PREDS).tolist() == [2]


def test_mistaken_neighbour_breaks_the_run_even_if_its_label_is_the_prediction():
    # Exemplar 4 has y_tr = 1 = ŷ but ŷ_tr = 0 ≠ y_tr.
    assert similarity_q(jnp.array([[0, 4, 1]]), jnp.array([1]), LABELS, PREDS).tolist() == [1]
    # A query predicted 0 is matched by exemplar 2 only.
    assert similarity_q(jnp.array([[2, 4, 0]]), jnp.array([0]), LABELS, PREDS).tolist() == [1]


def test_capped_at_k_and_ood_labels_never_match():
    all_match = jnp.array([[0, 1, 3, 5]])
    assert similarity_q(all_match, jnp.array([1]), LABELS, PREDS).tolist() == [4]
    assert similarity_q(all_match[:, :2], jnp.array([1]), LABELS, PREDS).tolist() == [2]
    ood = LABELS.at[0].set(-99)
    assert similarity_q(all_match, jnp.array([1]), ood, PREDS).tolist() == [0]


def test_self_exclusion_through_the_search():
    # Points on a line; all correctly predicted class 1 except point 2.
    points = jnp.array([[0.0], [1.0], [2.5], [4.0]])
    labels, preds = jnp.array([1, 1, 1, 1]), jnp.array([1, 1, 0, 1])
    _, with_self = nearest_neighbours(points, points, 3)
    _, without_self = nearest_neighbours(points, points, 3, exclude=jnp.arange(4))
    assert with_self[:, 0].tolist() == [0, 1, 2, 3]
    assert similarity_q(without_self, preds, labels, preds).tolist() == [1, 1, 0, 0]
    assert similarity_q(with_self, preds, labels, preds).tolist() == [2, 2, 0, 1]


def test_random_against_reference(rng):
    labels = rng.integers(0, 3, size=60)
    preds = np.where(rng.uniform(size=60) < 0.8, labels, rng.integers(0, 3, size=60))
    neighbours = np.stack([rng.permutation(60)[:12] for _ in range(25)])
    queries = rng.integers(0, 3, size=25)
    q = similarity_q(jnp.asarray(neighbours), jnp.asarray(queries), jnp.asarray(labels), jnp.asarray(preds))
    np.testing.assert_array_equal(q, ref.similarity_q(neighbours, queries, labels, preds))


def test_distance_quantile_boundaries():
    ecdf = class_ecdf(jnp.array([1.0, 2.0, 4.0, 8.0]), jnp.array([0, 0, 0, 0]), num_classes=1)
    x = jnp.array([0.0, 1.0, 1.5, 8.0, 8.5])  # zero, min, inside, max, above max
    np.testing.assert_allclose(distance_quantile(x, ecdf), [1.0, 1.0, 0.75, 0.25, 0.0])


def test_empty_class_gives_zero_and_minimum_over_classes():
    values, labels = jnp.array([1.0, 2.0, 3.0, 4.0]), jnp.array([0, 0, 1, 1])
    empty = class_ecdf(values, labels, num_classes=3)
    assert distance_quantile(jnp.array([0.0, 2.0]), empty).tolist() == [0.0, 0.0]
    both = class_ecdf(values, labels, num_classes=2)
    # x = 3: class 0 gives 0, class 1 gives 1 → d = 0.
    assert distance_quantile(jnp.array([3.0, 1.5]), both).tolist() == [0.0, 0.5]


def test_ecdf_excludes_points_with_q_zero_and_foreign_labels():
    values = jnp.array([5.0, 1.0, 2.0, 3.0])
    ecdf = class_ecdf(
        values, jnp.array([0, 0, -99, 0]), num_classes=1, where=jnp.array([True, False, True, True])
    )
    assert ecdf.counts.tolist() == [2]
    assert ecdf.values[0, :2].tolist() == [3.0, 5.0]


def test_distance_quantile_random_against_reference(x64, rng):
    values = rng.exponential(size=50)
    labels = rng.integers(0, 3, size=50)
    keep = rng.uniform(size=50) < 0.7
    x = np.concatenate([rng.exponential(size=30), values[:5], [0.0]])
    ecdf = class_ecdf(jnp.asarray(values), jnp.asarray(labels), 3, where=jnp.asarray(keep))
    expected = ref.distance_quantile(x, [values[(labels == c) & keep] for c in range(3)])
    np.testing.assert_allclose(distance_quantile(jnp.asarray(x), ecdf), expected)
    np.testing.assert_allclose(jax.jit(distance_quantile)(jnp.asarray(x), ecdf), expected)


def test_bad_inputs():
    with pytest.raises(ValueError, match="neighbour_indices must have shape"):
        similarity_q(jnp.zeros(3, int), jnp.zeros(3, int), LABELS, PREDS)
    with pytest.raises(ValueError, match="predictions must have shape"):
        similarity_q(jnp.zeros((3, 2), int), jnp.zeros(2, int), LABELS, PREDS)
    with pytest.raises(ValueError, match="num_classes"):
        class_ecdf(jnp.zeros(3), jnp.zeros(3, int), 0)
