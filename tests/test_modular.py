import numpy as np
import pytest

from jaxdl.data.modular import modular_arithmetic, one_hot_pairs


def test_paper_split_sizes_and_labels():
    split = modular_arithmetic(113, train_fraction=0.4, seed=0)
    assert split.x_train.shape == (5107, 2) and split.x_test.shape == (7662, 2)
    for x, y in ((split.x_train, split.y_train), (split.x_test, split.y_test)):
        np.testing.assert_array_equal(y, (x[:, 0] + x[:, 1]) % 113)


def test_split_is_a_partition_of_all_pairs_and_deterministic():
    split = modular_arithmetic(13, train_fraction=0.5, seed=3)
    pairs = {tuple(p) for p in np.concatenate([split.x_train, split.x_test])}
    assert len(pairs) == 169
    again = modular_arithmetic(13, train_fraction=0.5, seed=3)
    np.testing.assert_array_equal(split.x_train, again.x_train)
    other = modular_arithmetic(13, train_fraction=0.5, seed=4)
    assert not np.array_equal(split.x_train, other.x_train)


@pytest.mark.parametrize(("operation", "expected"), [("subtract", (5 - 9) % 11), ("multiply", (5 * 9) % 11)])
def test_other_operations(operation, expected):
    split = modular_arithmetic(11, operation=operation, train_fraction=0.9)
    x = np.concatenate([split.x_train, split.x_test])
    y = np.concatenate([split.y_train, split.y_test])
    assert y[np.flatnonzero((x[:, 0] == 5) & (x[:, 1] == 9))[0]] == expected


def test_one_hot_pairs():
    encoded = one_hot_pairs(np.array([[1, 2], [0, 0]]), 3)
    np.testing.assert_array_equal(encoded, [[0, 1, 0, 0, 0, 1], [1, 0, 0, 1, 0, 0]])


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"modulus": 1}, "modulus"),
        ({"operation": "divide"}, "operation"),
        ({"train_fraction": 1.0}, "train_fraction"),
    ],
)
def test_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        modular_arithmetic(**kwargs)


def test_one_hot_pairs_rejects_bad_shape():
    with pytest.raises(ValueError, match="x must have shape"):
        one_hot_pairs(np.zeros((3, 3), int), 5)
