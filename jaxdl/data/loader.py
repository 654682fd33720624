"""A generic batch loader: deterministic, epoch-aware, process-sharded NumPy batches of any source.

`Loader` turns any random-access source (``len(source)``, ``source[i] -> dict``) into a stream of
NumPy batches. Epoch ``e`` is a permutation drawn from ``(seed, e)``, cut into global batches of
``batch_size * process_count`` examples, and process ``p`` takes the ``p``-th contiguous block of
``batch_size`` rows of each global batch. All processes therefore agree on the order without talking
to each other, and the union of their batches is the batch one process with
``batch_size * process_count`` would see. `ArraySource` puts in-memory arrays behind the same
interface. Nothing here imports tensorflow_datasets.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np

__all__ = ["ArraySource", "Loader"]


def _non_negative_int(value: Any, name: str) -> int:
    """``value`` as an int, or a ValueError/TypeError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be a non-negative integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


class ArraySource:
    """A random-access source over a dict of equal-length arrays (row ``i`` of every field).

    Lets in-memory data (generated tasks, NumPy datasets such as scikit-learn's digits) use `Loader`,
    with a vectorised gather.

    Args:
      arrays: mapping from field name to an array (at least 1-D) whose leading axis indexes examples.

    Raises:
      TypeError: ``arrays`` is not a mapping, or a field is a scalar.
      ValueError: ``arrays`` is empty or its fields differ in length.

    Example:
      >>> src = ArraySource({"x": np.arange(6).reshape(3, 2), "y": np.array([0, 1, 0])})
      >>> len(src), src[1]
      (3, {'x': array([2, 3]), 'y': np.int64(1)})
      >>> src.gather(np.array([2, 0]))["y"]
      array([0, 0])
    """

    def __init__(self, arrays: Mapping[str, Any]):
        if not isinstance(arrays, Mapping):
            raise TypeError(f"arrays must be a mapping from field name to array, got {type(arrays).__name__}")
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        scalars = sorted(k for k, v in self.arrays.items() if v.ndim == 0)
        if scalars:
            raise TypeError(f"arrays must have a leading example axis; fields {scalars} are scalars")
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
    (`stream` with ``start_step``). Batches are host NumPy arrays: nothing compiles.

    Args:
      source: anything with ``len(source)`` and ``source[i] -> dict`` of arrays (a ``tfds.data_source``,
        `ArraySource`, `SyntheticImageSource`). Sources with a ``gather(indices)`` method are read in
        one call per batch; others one example at a time.
      batch_size: examples per batch on this process (the global batch is ``batch_size * process_count``).
      seed: shuffling seed, a non-negative integer.
      shuffle: reshuffle every epoch; False keeps the source order.
      drop_remainder: drop the last incomplete global batch. False is allowed only with one process,
        since processes must see batches of equal shape.
      process_index, process_count: this process's place among ``process_count`` readers (default:
        ``jax.process_index()`` and ``jax.process_count()``).
      keys: the fields to batch (default: every field with a numeric dtype, e.g. dropping cifar10's
        string ``id``).

    Raises:
      TypeError: ``source`` has no ``len``/``[]``, or ``batch_size``/``seed`` is not an integer.
      ValueError: a non-positive ``batch_size``, a negative ``seed``, a process index outside
        ``[0, process_count)``, ``drop_remainder=False`` with several processes, or a source too short
        for one full global batch. Epoch and step numbers must be non-negative integers.

    Example:
      >>> loader = Loader(ArraySource({"x": np.arange(10)}), batch_size=4, seed=0)
      >>> len(loader), [b["x"].shape for b in loader.epoch(0)]
      (2, [(4,), (4,)])
    """

    def __init__(
        self,
        source: Any,
        *,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        drop_remainder: bool = True,
        process_index: int | None = None,
        process_count: int | None = None,
        keys: Sequence[str] | None = None,
    ):
        if not (hasattr(source, "__len__") and hasattr(source, "__getitem__")):
            raise TypeError(
                f"source must support len(source) and source[i] -> dict, got {type(source).__name__}"
            )
        process_index = jax.process_index() if process_index is None else int(process_index)
        process_count = jax.process_count() if process_count is None else int(process_count)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        seed = _non_negative_int(seed, "seed")
        if process_count < 1 or not 0 <= process_index < process_count:
            raise ValueError(
                f"need 0 <= process_index < process_count, got process_index={process_index}, "
                f"process_count={process_count}"
            )
        if not drop_remainder and process_count > 1:
            raise ValueError(
                "drop_remainder=False needs process_count == 1: processes must see equal batches"
            )
        if isinstance(keys, str):
            raise TypeError(f"keys must be a sequence of field names, got the string {keys!r}")
        self.source = source
        self.batch_size = int(batch_size)
        self.seed = seed
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
        """The source indices of epoch ``epoch`` (>= 0), in visiting order (all processes, before sharding)."""
        epoch = _non_negative_int(epoch, "epoch")
        n = len(self.source)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def batch(self, epoch: int, index: int) -> dict[str, np.ndarray]:
        """Batch ``index`` (``0 <= index < len(self)``) of epoch ``epoch`` for this process."""
        if not 0 <= index < len(self):
            raise IndexError(f"batch index {index} out of range for {len(self)} batches per epoch")
        return self._gather(self._rows(self.order(epoch), index))

    def epoch(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
        """The batches of epoch ``epoch``: dicts of NumPy arrays with a leading batch axis."""
        order = self.order(epoch)  # validates eagerly, before the first next()
        return (self._gather(self._rows(order, index)) for index in range(len(self)))

    def stream(self, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """Batches forever, epoch after epoch, beginning at global step ``start_step`` (>= 0).

        Step ``s`` is batch ``s % len(self)`` of epoch ``s // len(self)``, so a run restored at step
        ``s`` continues with exactly the batches it would have seen.
        """
        epoch, index = divmod(_non_negative_int(start_step, "start_step"), len(self))
        return self._stream(epoch, index)

    def _stream(self, epoch: int, index: int) -> Iterator[dict[str, np.ndarray]]:
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
