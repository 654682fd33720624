"""Image-classification data from TensorFlow Datasets without TensorFlow, and a NumPy batch loader.

`image_classification` opens a prepared tfds dataset through `tfds.data_source` (random access over
ArrayRecord files; no TensorFlow import). When the data is not on disk it can hand back a synthetic
stand-in of the same shapes, after saying so loudly, so that every example runs offline.

`Loader` turns any random-access source (`len(source)`, `source[i] -> dict`) into a deterministic,
epoch-aware stream of NumPy batches, sharded across processes for multi-host training: epoch `e` is a
permutation drawn from `(seed, e)`, cut into global batches of `batch_size * process_count` examples,
and process `p` takes the `p`-th contiguous block of `batch_size` rows of each global batch. All
processes therefore agree on the order without talking to each other, and the union of their batches
is the batch a single process with `batch_size * process_count` would see.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Split sizes of the datasets we know, for the synthetic stand-in when no DatasetInfo is on disk.
_KNOWN_SPLITS = {
    "mnist": {"train": 60_000, "test": 10_000},
    "fashion_mnist": {"train": 60_000, "test": 10_000},
    "kmnist": {"train": 60_000, "test": 10_000},
    "cifar10": {"train": 50_000, "test": 10_000},
    "cifar100": {"train": 50_000, "test": 10_000},
}
_DEFAULT_SPLITS = {"train": 10_000, "test": 2_000}
# What tfds raises from `data_source(..., download=False)` when the dataset is not prepared in a
# random-access format: KeyError (no splits), NotImplementedError (only TFRecord files), the others
# for partial or unreadable folders.
_NOT_ON_DISK = (KeyError, NotImplementedError, FileNotFoundError, AssertionError)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about an image-classification source.

    Attributes:
      name: tfds name, e.g. ``"mnist"``.
      split: the split that was opened, e.g. ``"train"``.
      num_classes: number of label values.
      image_shape: ``(height, width, channels)`` of one image.
      num_examples: ``len(source)``.
      synthetic: True when the source is the synthetic stand-in rather than the real data.

    Example:
      >>> from jaxdl.data.tfds import DatasetInfo
      >>> info = DatasetInfo("mnist", "test", 10, (28, 28, 1), num_examples=10_000, synthetic=False)
      >>> height, width, channels = info.image_shape
      >>> height * width * channels, info.num_classes  # a flattened image, and the logits a model needs
      (784, 10)
    """

    name: str
    split: str
    num_classes: int
    image_shape: tuple[int, int, int]
    num_examples: int
    synthetic: bool


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


def image_classification(
    name: str,
    split: str,
    *,
    data_dir: str | None = None,
    fallback: str | None = "synthetic",
    seed: int = 0,
):
    """Open a tfds image-classification split for random access, or a synthetic stand-in.

    Reads the prepared dataset with ``tfds.data_source(name, split=split, download=False)``: nothing is
    downloaded and TensorFlow is not imported. Prepare the data once beforehand, e.g.
    ``tfds build mnist --file_format=array_record`` (or ``tfds.data_source(name, download=True)``).

    Args:
      name: a tfds dataset with ``image`` and ``label`` features: ``"mnist"``, ``"fashion_mnist"``,
        ``"cifar10"``, ...
      split: a tfds split, e.g. ``"train"``, ``"test"`` (the synthetic stand-in knows only those two).
      data_dir: tfds data folder (default: tfds's own, ``~/tensorflow_datasets`` or ``$TFDS_DATA_DIR``).
      fallback: ``"synthetic"`` to return a same-shaped synthetic source (announced by a printed notice) when
        the data is not on disk; ``None`` to raise ``FileNotFoundError`` instead.
      seed: seed of the synthetic stand-in (ignored for real data).

    Returns:
      ``(source, info)``: ``source[i]`` is ``{"image": uint8 (H, W, C), "label": int64 ()}`` (real
      tfds sources may carry more fields, which `Loader` drops if they are not numeric) and
      ``len(source)`` its size; ``info`` is a `DatasetInfo`.

    Raises:
      ValueError: unknown dataset, or a dataset without image/label features, or a bad ``fallback``.
      FileNotFoundError: the data is not prepared and ``fallback`` is None.

    Example:
      >>> source, info = image_classification("mnist", "test", data_dir="/nonexistent")  # doctest: +ELLIPSIS
      jaxdl.data: mnist/test is not prepared under /nonexistent...
      >>> info.num_classes, info.image_shape, info.synthetic, len(source)
      (10, (28, 28, 1), True, 10000)
    """
    if fallback not in ("synthetic", None):
        raise ValueError(f"fallback must be 'synthetic' or None, got {fallback!r}")
    import tensorflow_datasets as tfds  # imported here: 0.5 s that `import jaxdl` need not pay

    builder = tfds.builder(name, data_dir=data_dir)
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise ValueError(f"{name!r} is not an image-classification dataset: features are {list(features)}")
    image_shape = tuple(features["image"].shape)
    num_classes = int(features["label"].num_classes)
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except _NOT_ON_DISK as err:
        where = data_dir or "the default tfds data folder"
        reason = f"{name}/{split} is not prepared under {where}"
        if builder.is_prepared():  # there is data, but not in a random-access format
            reason += f" as random-access files ({type(err).__name__}: {str(err).splitlines()[0]})"
        if fallback is None:
            raise FileNotFoundError(
                f"{reason}. Prepare it once with `tfds build {name} --file_format=array_record` "
                "(needs network access), or pass fallback='synthetic'."
            ) from err
        splits = _KNOWN_SPLITS.get(name, _DEFAULT_SPLITS)
        if split not in splits:
            raise ValueError(
                f"the synthetic stand-in for {name!r} has splits {sorted(splits)}, got split={split!r}"
            ) from err
        if None in image_shape:
            raise ValueError(
                f"{name!r} has variable image shape {image_shape}; no synthetic stand-in"
            ) from err
        print(
            f"jaxdl.data: {reason}.\n"
            f"jaxdl.data: USING A SYNTHETIC STAND-IN for {name}/{split} ({splits[split]} examples of "
            f"shape {image_shape}, {num_classes} classes). Numbers from it say nothing about {name}."
        )
        source = SyntheticImageSource(splits[split], image_shape, num_classes, seed=seed, split=split)
        synthetic = True
    else:
        synthetic = False
    info = DatasetInfo(name, split, num_classes, image_shape, len(source), synthetic)
    return source, info


class ArraySource:
    """A random-access source over a dict of equal-length arrays (row ``i`` of every field).

    Lets in-memory data (generated tasks, NumPy datasets) use `Loader`, with a vectorised gather.

    Args:
      arrays: mapping from field name to an array whose leading axis indexes examples.

    Example:
      >>> src = ArraySource({"x": np.arange(6).reshape(3, 2), "y": np.array([0, 1, 0])})
      >>> len(src), src[1]
      (3, {'x': array([2, 3]), 'y': np.int64(1)})
    """

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        lengths = {k: len(v) for k, v in self.arrays.items()}
        if not lengths or len(set(lengths.values())) != 1:
            raise ValueError(
                f"arrays must be a non-empty mapping of equal-length arrays, got lengths {lengths}"
            )
        self._length = next(iter(lengths.values()))

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {k: v[index] for k, v in self.arrays.items()}

    def gather(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Rows ``indices`` of every field, as one batch."""
        return {k: v[indices] for k, v in self.arrays.items()}


class Loader:
    """Deterministic, epoch-aware, process-sharded NumPy batches from a random-access source.

    Epoch ``e`` visits a permutation drawn from ``(seed, e)`` (or the natural order when
    ``shuffle=False``), in global batches of ``batch_size * process_count`` examples; this process
    gets rows ``[process_index * batch_size, (process_index + 1) * batch_size)`` of each. Iteration
    order depends only on ``(seed, epoch)``, so a run resumed at a step sees the same batches
    (`stream` with ``start_step``).

    Args:
      source: anything with ``len(source)`` and ``source[i] -> dict`` of arrays (a ``tfds.data_source``,
        `ArraySource`, `SyntheticImageSource`). Sources with a ``gather(indices)`` method are read in
        one call per batch; others one example at a time.
      batch_size: examples per batch on this process (the global batch is ``batch_size * process_count``).
      seed: shuffling seed.
      shuffle: reshuffle every epoch; False keeps the source order.
      drop_remainder: drop the last incomplete global batch. False is allowed only with one process,
        since processes must see batches of equal shape.
      process_index, process_count: this process's place among ``process_count`` readers (default:
        ``jax.process_index()`` and ``jax.process_count()``).
      keys: the fields to batch (default: every field with a numeric dtype, e.g. dropping cifar10's
        string ``id``).

    Example:
      >>> loader = Loader(ArraySource({"x": np.arange(10)}), batch_size=4, seed=0)
      >>> len(loader), [b["x"].shape for b in loader.epoch(0)]
      (2, [(4,), (4,)])
    """

    def __init__(
        self,
        source,
        *,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        drop_remainder: bool = True,
        process_index: int | None = None,
        process_count: int | None = None,
        keys: Sequence[str] | None = None,
    ):
        process_index = jax.process_index() if process_index is None else int(process_index)
        process_count = jax.process_count() if process_count is None else int(process_count)
        if not isinstance(batch_size, int | np.integer) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if process_count < 1 or not 0 <= process_index < process_count:
            raise ValueError(
                f"need 0 <= process_index < process_count, got process_index={process_index}, "
                f"process_count={process_count}"
            )
        if not drop_remainder and process_count > 1:
            raise ValueError(
                "drop_remainder=False needs process_count == 1: processes must see equal batches"
            )
        self.source = source
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.drop_remainder = bool(drop_remainder)
        self.process_index = process_index
        self.process_count = process_count
        self.keys = None if keys is None else tuple(keys)
        self.global_batch_size = self.batch_size * process_count
        if len(self) == 0:
            raise ValueError(
                f"a source of {len(source)} examples gives no full global batch of {self.global_batch_size}"
            )

    def __len__(self) -> int:
        """Batches per epoch."""
        full, rest = divmod(len(self.source), self.global_batch_size)
        return full + (1 if rest and not self.drop_remainder else 0)

    def order(self, epoch: int) -> np.ndarray:
        """The source indices of epoch ``epoch``, in visiting order (all processes, before sharding)."""
        n = len(self.source)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, int(epoch)]).permutation(n)

    def batch(self, epoch: int, index: int) -> dict[str, np.ndarray]:
        """Batch ``index`` (``0 <= index < len(self)``) of epoch ``epoch`` for this process."""
        if not 0 <= index < len(self):
            raise IndexError(f"batch index {index} out of range for {len(self)} batches per epoch")
        return self._gather(self._rows(self.order(epoch), index))

    def epoch(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
        """The batches of epoch ``epoch``: dicts of NumPy arrays with a leading batch axis."""
        order = self.order(epoch)
        for index in range(len(self)):
            yield self._gather(self._rows(order, index))

    def stream(self, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """Batches forever, epoch after epoch, beginning at global step ``start_step``.

        Step ``s`` is batch ``s % len(self)`` of epoch ``s // len(self)``, so a run restored at step
        ``s`` continues with exactly the batches it would have seen.
        """
        epoch, index = divmod(int(start_step), len(self))
        while True:
            order = self.order(epoch)
            for i in range(index, len(self)):
                yield self._gather(self._rows(order, i))
            epoch, index = epoch + 1, 0

    def _rows(self, order: np.ndarray, index: int) -> np.ndarray:
        """This process's block of global batch ``index``."""
        start = index * self.global_batch_size + self.process_index * self.batch_size
        return order[start : start + self.batch_size]

    def _gather(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        if hasattr(self.source, "gather"):
            batch = self.source.gather(indices)
        else:
            # One item at a time: tfds's `__getitems__` is not reliable (broken under mock_data).
            examples = [self.source[int(i)] for i in indices]
            batch = {k: np.stack([ex[k] for ex in examples]) for k in examples[0]}
        if self.keys is not None:
            missing = set(self.keys) - set(batch)
            if missing:
                raise KeyError(f"keys {sorted(missing)} are not fields of the source: {sorted(batch)}")
            return {k: batch[k] for k in self.keys}
        return {k: v for k, v in batch.items() if np.issubdtype(v.dtype, np.number) or v.dtype == np.bool_}


def normalize_images(images, mean=None, std=None) -> jax.Array:
    """Integer pixels in ``[0, 255]`` to float32 in ``[0, 1]``, optionally standardised per channel.

    Works on NumPy or JAX arrays and inside ``jit``; calling it in the jitted step lets the 4x smaller
    uint8 batch cross to the device.

    Args:
      images: integer array ``(..., H, W, C)``.
      mean, std: optional per-channel statistics ``(C,)`` in ``[0, 1]`` units; the result is
        ``(images / 255 - mean) / std``.

    Returns:
      float32 array of the same shape.

    Example:
      >>> normalize_images(np.array([[0, 255]], np.uint8))
      Array([[0., 1.]], dtype=float32)
    """
    dtype = np.asarray(images).dtype if not isinstance(images, jax.Array) else images.dtype
    if not np.issubdtype(dtype, np.integer):
        raise TypeError(f"images must hold integer pixels in [0, 255] (e.g. uint8), got dtype {dtype}")
    x = jnp.asarray(images).astype(jnp.float32) / 255.0
    if mean is not None:
        x = x - jnp.asarray(mean, jnp.float32)
    if std is not None:
        x = x / jnp.asarray(std, jnp.float32)
    return x


def one_hot(labels, num_classes: int) -> jax.Array:
    """Integer labels ``(...)`` to float32 one-hot vectors ``(..., num_classes)``.

    Example:
      >>> one_hot(np.array([2, 0]), 3)
      Array([[0., 0., 1.],
             [1., 0., 0.]], dtype=float32)
    """
    if not isinstance(num_classes, int | np.integer) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    dtype = np.asarray(labels).dtype if not isinstance(labels, jax.Array) else labels.dtype
    if not np.issubdtype(dtype, np.integer):
        raise TypeError(f"labels must be integers, got dtype {dtype}")
    return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
