"""Losses and loss diagnostics, optax-style: per-example values, integer labels.

- `stablemax_cross_entropy`: StCE, -log StableMax(z)_y (Prieto et al., ICLR 2025, Def. 4), with a
  `dtype` to compute it in (float64 as the authors' code does, with x64 switched on for the loss
  alone).
- `softmax_collapse_fraction`: the share of rows in Softmax Collapse (Def. 3).
- `sdm_log_loss`: the SDM loss (Schmaltz 2025), see `jaxdl.nn.sdm`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.nn.activations import log_stablemax
from jaxdl.nn.sdm.activation import sdm_log_prob

__all__ = ["sdm_log_loss", "softmax_collapse_fraction", "stablemax_cross_entropy"]


def _check_logits_labels(logits: jax.Array, labels: jax.Array) -> None:
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise TypeError(f"logits must be a floating-point array, got dtype {logits.dtype}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if logits.ndim < 1:
        raise ValueError("logits must have a class axis, shape (..., num_classes), got a scalar")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels must have shape logits.shape[:-1] = {logits.shape[:-1]}, got {labels.shape}"
        )
    num_classes = logits.shape[-1]
    if num_classes == 0:
        raise ValueError(f"logits must have at least one class on the last axis, got shape {logits.shape}")
    if not isinstance(labels, jax.core.Tracer) and labels.size:
        # Concrete labels are checked here; under jit an out-of-range label gives a NaN loss.
        host = np.asarray(labels)
        low, high = int(host.min()), int(host.max())
        if low < 0 or high >= num_classes:
            bad = low if low < 0 else high
            raise ValueError(f"labels must lie in [0, {num_classes}) (logits.shape[-1]), got {bad}")


def _compute_dtype(dtype: jax.typing.DTypeLike | None, logits: jax.Array) -> np.dtype:
    if dtype is None:
        return np.dtype(jnp.promote_types(logits.dtype, jnp.float32))
    try:
        compute = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be a floating-point dtype, got {dtype!r}") from None
    if not jnp.issubdtype(compute, jnp.floating):
        raise TypeError(f"dtype must be a floating-point dtype, got {compute}")
    return compute


def _stce(logits: jax.Array, labels: jax.Array, dtype: np.dtype) -> jax.Array:
    """Per-example StCE in `dtype`. A row with +inf logits takes its limit: StableMax puts mass
    1/k on each of its k infinite logits, so the loss is log k there and +inf elsewhere."""
    logits = logits.astype(dtype)
    pos_inf = logits == jnp.inf
    inf_row = jnp.any(pos_inf, axis=-1)
    safe = jnp.where(inf_row[..., None], 0, logits)  # keeps NaN out of the finite rows' gradients
    log_p = jnp.take_along_axis(log_stablemax(safe, axis=-1), labels[..., None], axis=-1)[..., 0]
    label_inf = jnp.take_along_axis(pos_inf, labels[..., None], axis=-1)[..., 0]
    limit = jnp.where(label_inf, jnp.log(jnp.sum(pos_inf, axis=-1).astype(dtype)), jnp.inf)
    loss = jnp.where(inf_row, limit, -log_p)
    in_range = (labels >= 0) & (labels < logits.shape[-1])
    return jnp.where(in_range, loss, jnp.nan)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _stce_x64(logits: jax.Array, labels: jax.Array, out_dtype: np.dtype) -> jax.Array:
    """float64 StCE for float32 programs: x64 is on in the forward AND the backward pass (a
    scope around the forward alone lets `grad` build float32 zeros for float64 transposes)."""
    with jax.enable_x64(True):
        return _stce(logits, labels, np.dtype(np.float64)).astype(out_dtype)


def _stce_x64_fwd(logits, labels, out_dtype):
    with jax.enable_x64(True):
        loss, vjp = jax.vjp(lambda z: _stce(z, labels, np.dtype(np.float64)).astype(out_dtype), logits)
    return loss, vjp


def _stce_x64_bwd(out_dtype, vjp, cotangent):
    with jax.enable_x64(True):
        return vjp(cotangent)[0], None


_stce_x64.defvjp(_stce_x64_fwd, _stce_x64_bwd)


def stablemax_cross_entropy(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    dtype: jax.typing.DTypeLike | None = None,
) -> jax.Array:
    """StableMax cross-entropy (StCE), -log StableMax(z)_y (Prieto et al. 2025, Def. 4).

    StableMax(z)_i = s(z_i) / sum_j s(z_j), s(x) = x + 1 (x >= 0), 1 / (1 - x) (x < 0), computed
    as log_softmax(g(z)) with g = log s (Prop. 1). Traces once per shapes and dtype under `jit`;
    composes with `grad` and `vmap`.

    Args:
      logits: (..., num_classes) floating point, num_classes >= 1.
      labels: (...) integer class indices in [0, num_classes). Concrete labels out of range raise
        a ValueError; under `jit` they give a NaN loss (as `optax` does for too-large labels).
      dtype: the dtype to compute the loss (and so its gradient with respect to `logits`) in.
        Default: the logits' dtype, at least float32. ``jnp.float64`` computes it in float64 as
        the paper's code does (``--cross_entropy_dtype float64``), with x64 switched on for this
        computation only (`jax.enable_x64`), so float32 models need no global x64 mode.

    Returns:
      Per-example losses, shape (...), in the logits' dtype (at least float32). A row with
      +inf logits gives the limit (log k on one of its k infinite logits, +inf elsewhere);
      NaN logits give NaN.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.losses import stablemax_cross_entropy
      >>> print(stablemax_cross_entropy(jnp.array([[1.0, -2.0, 0.5]]), jnp.array([0])).round(6))
      [0.650588]
      >>> z, y = jnp.array([[1e8, 0.0]]), jnp.array([0])  # float32: 1 + 1e-8 rounds to 1
      >>> print(stablemax_cross_entropy(z, y), stablemax_cross_entropy(z, y, dtype=jnp.float64))
      [-0.] [1.e-08]
    """
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    _check_logits_labels(logits, labels)
    out_dtype = jnp.promote_types(logits.dtype, jnp.float32)
    compute = _compute_dtype(dtype, logits)
    if compute == np.float64 and not jax.enable_x64.value:
        return _stce_x64(logits, labels, np.dtype(out_dtype))
    return _stce(logits, labels, compute).astype(out_dtype)


def softmax_collapse_fraction(logits: jax.typing.ArrayLike) -> jax.Array:
    """Share of rows in Softmax Collapse (Prieto et al. 2025, Def. 3).

    A row collapses when sum_j exp(z_j - max z) rounds to exactly 1 in the logits' dtype: every
    other class is absorbed, the loss of a correct prediction is exactly 0 and its gradient
    vanishes. Computed in the logits' own dtype on purpose (that is what collapses). Traces once
    per shapes under `jit`.

    Args:
      logits: (..., num_classes) floating point, at least one row and one class.

    Returns:
      A scalar in [0, 1] (float32).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.losses import softmax_collapse_fraction
      >>> print(softmax_collapse_fraction(jnp.array([[0.0, 1.0], [0.0, 40.0]])))
      0.5
    """
    logits = jnp.asarray(logits)
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise TypeError(f"logits must be a floating-point array, got dtype {logits.dtype}")
    if logits.ndim < 1 or logits.size == 0:
        raise ValueError(f"logits must have at least one row and one class, got shape {logits.shape}")
    total = jnp.sum(jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True)), axis=-1)
    return jnp.mean((total == 1).astype(jnp.float32))


def sdm_log_loss(logits: jax.Array, labels: jax.Array, q: jax.Array, d: jax.Array) -> jax.Array:
    """Per-example SDM loss ``CE(z * d * ln(2+q), y) / ln(2+q)`` (Schmaltz, arXiv:2509.12760, Eq. 7), optax-style.

    With q = e-2 and d = 1 this is ``optax.softmax_cross_entropy_with_integer_labels``. Take the mean
    over examples for the training objective. No gradient flows into q or d.

    Args:
      logits: ``[..., C]`` logits z'.
      labels: ``[...]`` integer labels in ``[0, C)``.
      q: ``[...]`` similarity (or a scalar).
      d: ``[...]`` distance quantile (or a scalar).

    Returns:
      ``[...]`` losses.

    >>> import jax.numpy as jnp
    >>> from jaxdl.losses import sdm_log_loss
    >>> loss = sdm_log_loss(jnp.array([[1.0, 3.0]]), jnp.array([1]), q=jnp.array([6.0]), d=jnp.array([1.0]))
    >>> loss.round(4)
    Array([0.0075], dtype=float32)
    """
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"sdm_log_loss: labels must be integers, got dtype {labels.dtype}")
    if labels.shape != jnp.shape(logits)[:-1]:
        raise ValueError(
            f"sdm_log_loss: labels must have shape logits.shape[:-1] = {jnp.shape(logits)[:-1]}, "
            f"got {labels.shape}"
        )
    log_prob = sdm_log_prob(logits, q, d, axis=-1)
    return -jnp.take_along_axis(log_prob, labels[..., None], axis=-1)[..., 0]
