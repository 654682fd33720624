"""Modular arithmetic, the grokking task (Power et al. 2022; Prieto et al. 2025, Sec. 2).

All p^2 pairs (a, b) with a label (a op b) mod p, split at random into train and test. The
grokking experiments of Prieto et al. use p = 113, addition, 40% of the pairs for training,
and concatenated one-hot encodings of a and b as the MLP's input.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["ModularSplit", "modular_arithmetic", "one_hot_pairs"]

_OPERATIONS = {
    "add": lambda a, b, p: (a + b) % p,
    "subtract": lambda a, b, p: (a - b) % p,
    "multiply": lambda a, b, p: (a * b) % p,
}


class ModularSplit(NamedTuple):
    """Integer pairs (N, 2) and labels (N,) for the train and the test split (int32).

    Example:
      >>> from jaxdl.data.modular import modular_arithmetic
      >>> split = modular_arithmetic(5, train_fraction=0.4)  # 25 pairs: 10 for training, 15 for testing
      >>> split.x_train.shape, split.y_train.shape, split.x_test.shape, split.y_test.shape
      ((10, 2), (10,), (15, 2), (15,))
      >>> split.x_train[0].tolist(), int(split.y_train[0])  # (3 + 4) mod 5
      ([3, 4], 2)
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def modular_arithmetic(
    modulus: int = 113, *, operation: str = "add", train_fraction: float = 0.4, seed: int = 0
) -> ModularSplit:
    """Every pair (a, b) in [0, modulus)^2 labelled (a op b) mod modulus, split at random.

    Example:
      >>> from jaxdl.data.modular import modular_arithmetic
      >>> split = modular_arithmetic(113, train_fraction=0.4)
      >>> split.x_train.shape, split.x_test.shape
      ((5107, 2), (7662, 2))
    """
    if not isinstance(modulus, int) or modulus < 2:
        raise ValueError(f"modulus must be an int >= 2, got {modulus!r}")
    if operation not in _OPERATIONS:
        raise ValueError(f"operation must be one of {sorted(_OPERATIONS)}, got {operation!r}")
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction!r}")
    a, b = (g.ravel() for g in np.meshgrid(np.arange(modulus), np.arange(modulus), indexing="ij"))
    x = np.stack([a, b], axis=1).astype(np.int32)
    y = _OPERATIONS[operation](a, b, modulus).astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(y))
    n_train = int(train_fraction * len(y))  # floor, as the paper's code does: 5107 of 12769 at 40%
    train, test = order[:n_train], order[n_train:]
    return ModularSplit(x[train], y[train], x[test], y[test])


def one_hot_pairs(x: np.ndarray, modulus: int) -> np.ndarray:
    """Concatenated one-hot encodings of each pair: (N, 2) ints -> (N, 2 * modulus) float32.

    Example:
      >>> import numpy as np
      >>> from jaxdl.data.modular import one_hot_pairs
      >>> one_hot_pairs(np.array([[0, 2]]), 3)
      array([[1., 0., 0., 0., 0., 1.]], dtype=float32)
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"x must have shape (N, 2), got {x.shape}")
    eye = np.eye(modulus, dtype=np.float32)
    return np.concatenate([eye[x[:, 0]], eye[x[:, 1]]], axis=1)
