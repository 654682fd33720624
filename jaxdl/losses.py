"""Losses and loss diagnostics, optax-style: per-example values, integer labels."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdl.nn.activations import log_stablemax
from jaxdl.nn.sdm.activation import sdm_log_loss

__all__ = ["sdm_log_loss", "softmax_collapse_fraction", "stablemax_cross_entropy"]


def _check_logits_labels(logits: jax.Array, labels: jax.Array) -> None:
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise TypeError(f"logits must be a floating-point array, got dtype {logits.dtype}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if logits.ndim < 1 or labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels must have shape logits.shape[:-1] = {logits.shape[:-1]}, got {labels.shape}"
        )


def stablemax_cross_entropy(logits: jax.typing.ArrayLike, labels: jax.typing.ArrayLike) -> jax.Array:
    """StableMax cross-entropy (StCE), -log StableMax(z)_y (Prieto et al. 2025, Def. 4).

    Args:
      logits: (..., num_classes) floating point. Computed in at least float32; pass float64
        logits (with x64 enabled) for the float64 loss the paper's code uses.
      labels: (...) integer class indices.

    Returns:
      Per-example losses, shape (...).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.losses import stablemax_cross_entropy
      >>> print(stablemax_cross_entropy(jnp.array([[1.0, -2.0, 0.5]]), jnp.array([0])).round(6))
      [0.650588]
    """
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    _check_logits_labels(logits, labels)
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    log_p = log_stablemax(logits, axis=-1)
    return -jnp.take_along_axis(log_p, labels[..., None], axis=-1)[..., 0]


def softmax_collapse_fraction(logits: jax.typing.ArrayLike) -> jax.Array:
    """Share of rows in Softmax Collapse (Prieto et al. 2025, Def. 3).

    A row collapses when sum_j exp(z_j - max z) rounds to exactly 1 in the logits' dtype: every
    other class is absorbed, the loss of a correct prediction is exactly 0 and its gradient
    vanishes. Computed in the logits' own dtype on purpose (that is what collapses).

    Args:
      logits: (..., num_classes) floating point.

    Returns:
      A scalar in [0, 1] (float32).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.losses import softmax_collapse_fraction
      >>> print(softmax_collapse_fraction(jnp.array([[0.0, 1.0], [0.0, 40.0]])))
      0.5
    """
    logits = jnp.asarray(logits)
    if not jnp.issubdtype(logits.dtype, jnp.floating) or logits.ndim < 1:
        raise TypeError(f"logits must be a floating-point array of rank >= 1, got {logits.dtype}")
    total = jnp.sum(jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True)), axis=-1)
    return jnp.mean((total == 1).astype(jnp.float32))
