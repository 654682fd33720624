"""The SDM activation and its log in base 2+q (the loss built on it, `sdm_log_loss`, is in `jaxdl.losses`).

Schmaltz, "Similarity-Distance-Magnitude Activations", arXiv:2509.12760, Eq. 6-7 (the same
activation as Eq. 7 of "Similarity-Distance-Magnitude Universal Verification", arXiv:2502.20167):

    SDM(z)_i = (2+q)^(d z_i) / sum_c (2+q)^(d z_c) = softmax(z * d * ln(2+q))_i
    L(z, y)  = -log_(2+q) SDM(z)_y = CE(z * d * ln(2+q), y) / ln(2+q)

q (similarity) and d (distance quantile) are per-example statistics from a nearest-neighbour search;
they are inputs, not learned, so no gradient flows into them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Q_OFFSET = 2.0
"""The base offset of the SDM activation: the base is ``2 + q`` ([ACT] Eq. 6)."""


def _scale(
    logits: jax.Array, q: jax.Array, d: jax.Array, axis: int, name: str
) -> tuple[jax.Array, jax.Array]:
    """Returns (logits * d * ln(2+q), ln(2+q)) with q and d broadcast along the class axis."""
    logits = jnp.asarray(logits)
    if logits.ndim == 0:
        raise ValueError(f"{name}: logits must have a class axis, got a scalar")
    axis = axis % logits.ndim
    batch_shape = logits.shape[:axis] + logits.shape[axis + 1 :]
    q = jax.lax.stop_gradient(jnp.asarray(q, logits.dtype))
    d = jax.lax.stop_gradient(jnp.asarray(d, logits.dtype))
    for arg, value in (("q", q), ("d", d)):
        try:
            jnp.broadcast_shapes(value.shape, batch_shape)
        except ValueError:
            raise ValueError(
                f"{name}: {arg} must broadcast to the logits shape without the class axis {batch_shape}, "
                f"got shape {value.shape}"
            ) from None
    log_base = jnp.log(Q_OFFSET + q)
    scale = jnp.expand_dims(jnp.broadcast_to(d * log_base, batch_shape), axis)
    return logits * scale, jnp.broadcast_to(log_base, batch_shape)


def sdm_activation(logits: jax.Array, q: jax.Array, d: jax.Array, axis: int = -1) -> jax.Array:
    """The SDM activation, ``softmax(logits * d * ln(2+q))`` ([ACT] Eq. 6, stable form Eq. 10).

    q = e-2 and d = 1 give the ordinary softmax; d = 0 gives the uniform distribution; for d > 0 the
    argmax is that of ``logits``. q and d are treated as constants (``stop_gradient``).

    Args:
      logits: ``[..., C, ...]`` logits z' with the class axis at ``axis``.
      q: similarity, shape broadcastable to ``logits`` without the class axis, q >= 0.
      d: distance quantile in [0, 1], same broadcasting as ``q``.
      axis: the class axis.

    Returns:
      Probabilities of the shape of ``logits``.

    >>> import jax.numpy as jnp
    >>> sdm_activation(jnp.array([1.0, 3.0]), q=0.0, d=1.0)  # 2^1 / (2^1 + 2^3)
    Array([0.2, 0.8], dtype=float32)
    """
    scaled, _ = _scale(logits, q, d, axis, "sdm_activation")
    return jax.nn.softmax(scaled, axis=axis)


def sdm_log_prob(logits: jax.Array, q: jax.Array, d: jax.Array, axis: int = -1) -> jax.Array:
    """``log_(2+q) SDM(logits)``, the log of the SDM activation in base 2+q ([ACT] Eq. 7).

    Args:
      logits: ``[..., C, ...]`` logits z' with the class axis at ``axis``.
      q: similarity, shape broadcastable to ``logits`` without the class axis.
      d: distance quantile, same broadcasting as ``q``.
      axis: the class axis.

    Returns:
      Log-probabilities in base 2+q, the shape of ``logits``.

    >>> import jax.numpy as jnp
    >>> log_prob = sdm_log_prob(jnp.array([1.0, 3.0]), q=0.0, d=1.0)  # log2 of [0.2, 0.8]
    >>> [round(v, 4) for v in log_prob.tolist()]
    [-2.3219, -0.3219]
    """
    scaled, log_base = _scale(logits, q, d, axis, "sdm_log_prob")
    return jax.nn.log_softmax(scaled, axis=axis) / jnp.expand_dims(log_base, axis)
