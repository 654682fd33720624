"""Batch preprocessing that runs inside the jitted step: pixels to floats, labels to one-hot vectors.

Both functions accept NumPy or JAX arrays, work under ``jit``/``vmap``, and check what can be checked
before XLA sees it: dtypes and shapes always, values when they are concrete (not traced).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["normalize_images", "one_hot"]


def _dtype(x: Any) -> np.dtype:
    return x.dtype if isinstance(x, jax.Array | np.ndarray) else np.asarray(x).dtype


def _concrete(x: Any) -> np.ndarray | None:
    """``x`` as a host array when its values are known now; None under a trace."""
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def _channel_stats(value: Any, name: str, channels: int) -> jax.Array:
    stats = jnp.asarray(value, jnp.float32)
    if stats.ndim > 1 or (stats.ndim == 1 and stats.shape[0] not in (1, channels)):
        raise ValueError(
            f"{name} must be a scalar or have shape ({channels},) (one value per channel), "
            f"got shape {stats.shape}"
        )
    return stats


def normalize_images(images: Any, mean: Any = None, std: Any = None) -> jax.Array:
    """Integer pixels in ``[0, 255]`` to float32 in ``[0, 1]``, optionally standardised per channel.

    Works on NumPy or JAX arrays and inside ``jit``; calling it in the jitted step lets the 4x smaller
    uint8 batch cross to the device. Compiles with the caller (eagerly: one small op per call).

    Args:
      images: integer array ``(..., H, W, C)``.
      mean, std: optional per-channel statistics, scalars or ``(C,)``, in ``[0, 1]`` units; the result
        is ``(images / 255 - mean) / std``.

    Returns:
      float32 array of the same shape.

    Raises:
      TypeError: ``images`` is not an integer array.
      ValueError: ``images`` is a scalar, ``mean``/``std`` do not match the channel axis, ``std`` has
        a non-positive entry, or (for NumPy input, whose values are checked on the host) a pixel lies
        outside ``[0, 255]``.

    Example:
      >>> normalize_images(np.array([[0, 255]], np.uint8))
      Array([[0., 1.]], dtype=float32)
    """
    dtype = _dtype(images)
    if not np.issubdtype(dtype, np.integer):
        raise TypeError(f"images must hold integer pixels in [0, 255] (e.g. uint8), got dtype {dtype}")
    if np.ndim(images) == 0:
        raise ValueError("images must have at least a channel axis (..., H, W, C), got a scalar")
    if not isinstance(images, jax.Array) and dtype != np.uint8:  # host values: cheap to check here
        host = np.asarray(images)
        if host.size and (host.min() < 0 or host.max() > 255):
            raise ValueError(
                f"images must hold pixels in [0, 255], got values in [{host.min()}, {host.max()}]"
            )
    channels = int(np.shape(images)[-1])
    x = jnp.asarray(images).astype(jnp.float32) / 255.0
    if mean is not None:
        x = x - _channel_stats(mean, "mean", channels)
    if std is not None:
        scale = _channel_stats(std, "std", channels)
        host_std = _concrete(std)
        if host_std is not None and not np.all(host_std > 0):
            raise ValueError(f"std must be positive in every channel, got {host_std}")
        x = x / scale
    return x


def one_hot(labels: Any, num_classes: int) -> jax.Array:
    """Integer labels ``(...)`` to float32 one-hot vectors ``(..., num_classes)``.

    Labels must lie in ``[0, num_classes)``. Concrete labels outside it are refused; under a trace
    (``jit``, ``vmap``) the values cannot be checked, so the row of an out-of-range label is all NaN,
    which makes the loss NaN instead of silently zero (``jax.nn.one_hot`` gives an all-zero row).

    Args:
      labels: integer array of any shape.
      num_classes: a positive Python integer (static under ``jit``).

    Raises:
      TypeError: ``labels`` is not an integer array.
      ValueError: ``num_classes`` is not a positive integer, or a concrete label is out of range.

    Example:
      >>> one_hot(np.array([2, 0]), 3)
      Array([[0., 0., 1.],
             [1., 0., 0.]], dtype=float32)
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    dtype = _dtype(labels)
    if not np.issubdtype(dtype, np.integer):
        raise TypeError(f"labels must be integers, got dtype {dtype}")
    host = _concrete(labels)
    if host is not None and host.size and (host.min() < 0 or host.max() >= num_classes):
        bad = host[(host < 0) | (host >= num_classes)]
        raise ValueError(
            f"labels must lie in [0, num_classes) = [0, {num_classes}), got {bad.size} outside it "
            f"(e.g. {bad.flat[0]})"
        )
    labels = jnp.asarray(labels)
    encoded = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if host is not None:
        return encoded
    valid = (labels >= 0) & (labels < num_classes)
    return jnp.where(valid[..., None], encoded, jnp.nan)
