"""A deterministic synthetic stand-in for an image-classification split (when the real data is absent).

Random access like a ``tfds.data_source``: example ``i`` is a function of ``(seed, split, i)`` only.
`jaxdl.data.image_classification` hands it back, after announcing it, when the requested data is not
on disk, so that every example runs offline; numbers measured on it say nothing about the real data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["SyntheticImageSource"]


class SyntheticImageSource:
    """A random-access, deterministic stand-in for an image-classification split.

    Each class has a fixed random binary template (drawn from ``seed``, shared by all splits). Example
    ``i`` blends its class's template with a random class's (weight ``U(0, 0.5)`` on the other), shifts
    it by up to 2 pixels and adds Gaussian noise (std 80 grey levels), all drawn from
    ``(seed, split, i)``: any example can be read in any order and always has the same value. A
    linear classifier gets about 80% of 28x28 examples right, so a small network has something to
    learn; the numbers say nothing about the real dataset.

    Args:
      num_examples: length of the source.
      image_shape: ``(height, width, channels)``.
      num_classes: number of classes; labels are uniform over ``range(num_classes)``.
      seed: chooses the templates and the per-example draws.
      split: a name mixed into the per-example seeds, so train and test differ.

    Example:
      >>> src = SyntheticImageSource(100, (28, 28, 1), 10, seed=0, split="train")
      >>> len(src), src[3]["image"].shape, src[3]["image"].dtype, int(src[3]["label"]) < 10
      (100, (28, 28, 1), dtype('uint8'), True)
    """

    def __init__(
        self,
        num_examples: int,
        image_shape: Sequence[int],
        num_classes: int,
        *,
        seed: int = 0,
        split: str = "train",
    ):
        if num_examples < 0:
            raise ValueError(f"num_examples must be non-negative, got {num_examples}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if len(image_shape) != 3 or any(int(d) < 1 for d in image_shape):
            raise ValueError(f"image_shape must be (height, width, channels) > 0, got {tuple(image_shape)}")
        self.num_examples = int(num_examples)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_classes = int(num_classes)
        self._seed = int(seed)
        self._split_code = int.from_bytes(split.encode()[:8].ljust(8, b"\0"), "little")
        # Sparse strokes on a dark background, roughly like digits.
        draws = np.random.default_rng(self._seed).uniform(0.0, 1.0, (num_classes, *self.image_shape))
        self._templates = (draws > 0.75).astype(np.float64)

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = int(index)
        if not 0 <= index < self.num_examples:
            raise IndexError(f"index {index} out of range for a source of length {self.num_examples}")
        rng = np.random.default_rng([self._seed, self._split_code, index])
        label, other = rng.integers(self.num_classes, size=2)
        weight = rng.uniform(0.0, 0.5)
        strokes = (1.0 - weight) * self._templates[label] + weight * self._templates[other]
        strokes = np.roll(strokes, tuple(rng.integers(-2, 3, size=2)), axis=(0, 1))
        image = 30.0 + 170.0 * strokes + rng.normal(0.0, 80.0, self.image_shape)
        return {"image": np.clip(image, 0, 255).astype(np.uint8), "label": np.asarray(label, np.int64)}
