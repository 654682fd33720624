"""Sequential oriented gratings: an offline stand-in for sequential image classification (sCIFAR /
sMNIST in the S4 and PTD papers), with no download.

Class c is a sinusoidal grating at orientation pi c / classes with random phase and spatial frequency,
plus pixel noise; images are flattened row-major into sequences of length size^2, so telling the
orientation apart needs information from rows that lie `size` tokens apart.
"""

from __future__ import annotations

import numpy as np

__all__ = ["oriented_gratings"]


def oriented_gratings(
    num_examples: int, *, size: int = 16, classes: int = 10, noise: float = 0.3, seed: int = 0
) -> dict[str, np.ndarray]:
    """Random grating images flattened to sequences.

    Args:
      num_examples: number of images.
      size: image side; sequences have length size^2.
      classes: number of orientations in [0, pi).
      noise: standard deviation of added Gaussian pixel noise.
      seed: NumPy seed.

    Returns:
      dict with "inputs" float32 (num_examples, size^2, 1) and "labels" int32 (num_examples,).

    >>> data = oriented_gratings(3, size=8)
    >>> data["inputs"].shape, data["labels"].dtype
    ((3, 64, 1), dtype('int32'))
    """
    if not isinstance(num_examples, int) or num_examples < 1:
        raise ValueError(f"num_examples must be a positive integer, got {num_examples!r}")
    if size < 2 or classes < 2:
        raise ValueError(f"need size >= 2 and classes >= 2, got {size}, {classes}")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, num_examples)
    angle = np.pi * labels / classes
    frequency = rng.uniform(1.5, 3.0, num_examples) * 2 * np.pi / size
    phase = rng.uniform(0, 2 * np.pi, num_examples)
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    projection = np.cos(angle)[:, None, None] * cols + np.sin(angle)[:, None, None] * rows
    images = np.cos(frequency[:, None, None] * projection + phase[:, None, None])
    images += noise * rng.standard_normal(images.shape)
    return {
        "inputs": images.reshape(num_examples, size * size, 1).astype(np.float32),
        "labels": labels.astype(np.int32),
    }
