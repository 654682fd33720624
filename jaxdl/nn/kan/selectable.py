"""Activation-space selection (Yang et al. 2024, "Activation Space Selectable Kolmogorov-Arnold Networks"
(S-KAN), arXiv 2408.08338, Sec. 3): every output node mixes the outputs of a pool of KAN bases with learnable
weights, and after training keeps only its best basis.

The mixing weights are softmax(logits + log(mask)): with the all-ones mask of the full-training phase this is
softmax(logits); after `selection_mask` fixes one basis per node the weights are exactly one-hot.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

__all__ = ["selection_mask", "selection_weights"]


def selection_weights(logits: ArrayLike, mask: ArrayLike) -> Array:
    """Per-node mixing weights softmax(logits + log(mask)) over the pool axis.

    Args:
      logits: shape (N, P): N output nodes, P bases.
      mask: shape (N, P) of 0/1, at least one 1 per row.

    Returns:
      Shape (N, P), rows summing to 1, zero where mask is 0.

    >>> import jax.numpy as jnp
    >>> selection_weights(jnp.zeros((1, 2)), jnp.array([[1.0, 0.0]])).tolist()
    [[1.0, 0.0]]
    """
    logits = jnp.asarray(logits)
    return jax.nn.softmax(jnp.where(jnp.asarray(mask) > 0, logits, -jnp.inf), axis=-1)


def _mix_outputs(outputs: ArrayLike, weights: ArrayLike) -> Array:
    """y_j = sum_p weights[j, p] * outputs[p, ..., j].

    Args:
      outputs: the pool's outputs stacked on axis 0, shape (P, ..., N).
      weights: shape (N, P).

    Returns:
      Shape (..., N).

    >>> import jax.numpy as jnp
    >>> _mix_outputs(jnp.array([[1.0, 1.0], [3.0, 3.0]]), jnp.array([[0.5, 0.5], [1.0, 0.0]])).tolist()
    [2.0, 1.0]
    """
    return jnp.einsum(
        "p...n,np->...n", jnp.asarray(outputs), jnp.asarray(weights).astype(jnp.asarray(outputs).dtype)
    )


def selection_mask(logits: ArrayLike) -> Array:
    """One-hot mask of each node's best basis (largest logit), shape (N, P).

    >>> import jax.numpy as jnp
    >>> selection_mask(jnp.array([[0.1, 2.0], [3.0, 0.0]])).tolist()
    [[0.0, 1.0], [1.0, 0.0]]
    """
    logits = jnp.asarray(logits)
    return jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=logits.dtype)
