"""The offline data generators used by the SSM examples: ListOps (LRA grammar) and oriented gratings."""

import numpy as np
import pytest

from jaxdl.data.gratings import oriented_gratings
from jaxdl.data.listops import LISTOPS_VOCAB, evaluate_listops, generate_listops
from tests.reference import ssm as ref


def test_listops_labels_lengths_and_uniqueness():
    data = generate_listops(60, min_length=10, max_length=60, seed=0)
    tokens, lengths, labels = data["tokens"], data["lengths"], data["labels"]
    assert tokens.shape == (60, 59) and tokens.dtype == np.int32
    assert np.all((lengths > 10) & (lengths < 60))
    assert len({tuple(row) for row in tokens}) == 60  # distinct expressions
    for row, length, label in zip(tokens, lengths, labels, strict=True):
        words = [LISTOPS_VOCAB[t] for t in row[:length]]
        assert np.all(row[length:] == 0) and "<pad>" not in words
        assert ref.listops_value(words) == label == evaluate_listops(row)
    assert len(np.unique(labels)) >= 5


def test_listops_is_deterministic_for_a_seed():
    a = generate_listops(5, min_length=10, max_length=40, seed=3)
    b = generate_listops(5, min_length=10, max_length=40, seed=3)
    c = generate_listops(5, min_length=10, max_length=40, seed=4)
    np.testing.assert_array_equal(a["tokens"], b["tokens"])
    assert not np.array_equal(a["tokens"], c["tokens"])


def test_listops_operators():
    assert evaluate_listops("[MED 1 9 4 7 ]".split()) == 5  # int(median(1, 4, 7, 9)) = int(5.5)
    assert evaluate_listops("[SM 9 8 [MIN 5 3 ] ]".split()) == 0
    with pytest.raises(ValueError, match="one complete expression"):
        evaluate_listops("1 2".split())
    with pytest.raises(ValueError, match="min_length < max_length"):
        generate_listops(3, min_length=10, max_length=11)


def test_gratings_classes_differ_in_orientation():
    data = oriented_gratings(200, size=8, noise=0.0, seed=0)
    images = data["inputs"][..., 0].reshape(-1, 8, 8)
    assert data["inputs"].shape == (200, 64, 1)
    # Class 0 (vertical stripes) is constant down each column; class 5 (horizontal) along each row.
    vertical, horizontal = images[data["labels"] == 0], images[data["labels"] == 5]
    np.testing.assert_allclose(np.ptp(vertical, axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.ptp(horizontal, axis=2), 0.0, atol=1e-5)
    with pytest.raises(ValueError, match="num_examples"):
        oriented_gratings(0)
