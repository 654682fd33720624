"""Similarity q and distance quantile d of the SDM estimator.

Schmaltz, "Similarity-Distance-Magnitude Activations", arXiv:2509.12760:

- Eq. 4, similarity: q is the length of the leading run of nearest training exemplars that are
  correctly predicted (y_tr = ŷ_tr) with the same prediction as the query (ŷ_tr = ŷ).
- Eq. 5 and App. A.4.2, distance: d = min_c [1 - eCDF_c(d_nearest)], where eCDF_c is the empirical
  CDF of the nearest-exemplar distances of the points of true class c with q > 0, taken exclusively
  (``1 - searchsorted(sorted_c, x, 'left') / n_c``); a class without such points gives 0.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp


class ClassECDF(NamedTuple):
    """Per-class sorted samples of a statistic, the data of C empirical CDFs.

    Attributes:
      values: ``[C, N]`` each row ascending, padded at the end with +inf.
      counts: ``[C]`` int32 number of real samples in each row.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.nn.sdm import ClassECDF, distance_quantile
      >>> inf = jnp.inf
      >>> ecdf = ClassECDF(jnp.array([[1.0, 2.0, 3.0, 4.0], [5.0, inf, inf, inf]]), jnp.array([4, 1]))
      >>> # at 2.5: 1 - 2/4 = 0.5 for class 0 and 1 - 0/1 = 1 for class 1; d is the smaller
      >>> distance_quantile(jnp.array([2.5, 0.5]), ecdf).tolist()
      [0.5, 1.0]
    """

    values: jax.Array
    counts: jax.Array


def similarity_q(
    neighbour_indices: jax.Array,
    predictions: jax.Array,
    exemplar_labels: jax.Array,
    exemplar_predictions: jax.Array,
) -> jax.Array:
    """q: the number of leading neighbours that are correctly predicted as the query's prediction.

    [ACT] Eq. 4: ``match_i = (y_tr[n_i] == ŷ_tr[n_i]) & (ŷ_tr[n_i] == ŷ)`` over the neighbours n_1, n_2, ...
    nearest first, and q = the length of the leading run of matches, so 0 <= q <= k. Exemplars with a
    label outside the classes (e.g. -99 for an out-of-distribution exemplar) never match. Skip a
    training point's own row in the search (``nearest_neighbours(..., exclude=...)``).

    Args:
      neighbour_indices: ``[B, k]`` exemplar indices, nearest first.
      predictions: ``[B]`` predicted class ŷ of each query.
      exemplar_labels: ``[N]`` true labels of the exemplars.
      exemplar_predictions: ``[N]`` predicted classes of the exemplars.

    Returns:
      ``[B]`` int32 q.

    >>> import jax.numpy as jnp
    >>> labels = jnp.array([0, 0, 1, 0])
    >>> preds = jnp.array([0, 0, 1, 1])  # exemplar 3 is mispredicted
    >>> similarity_q(jnp.array([[0, 1, 3, 2], [1, 2, 0, 3]]), jnp.array([0, 0]), labels, preds).tolist()
    [2, 1]
    """
    if neighbour_indices.ndim != 2:
        raise ValueError(
            f"similarity_q: neighbour_indices must have shape [B, k], got {neighbour_indices.shape}"
        )
    if jnp.shape(predictions) != neighbour_indices.shape[:1]:
        raise ValueError(
            f"similarity_q: predictions must have shape [B] = {neighbour_indices.shape[:1]}, "
            f"got {jnp.shape(predictions)}"
        )
    if jnp.shape(exemplar_labels) != jnp.shape(exemplar_predictions) or jnp.ndim(exemplar_labels) != 1:
        raise ValueError(
            "similarity_q: exemplar_labels and exemplar_predictions must both have shape [N], got "
            f"{jnp.shape(exemplar_labels)} and {jnp.shape(exemplar_predictions)}"
        )
    neighbour_labels = jnp.asarray(exemplar_labels)[neighbour_indices]
    neighbour_predictions = jnp.asarray(exemplar_predictions)[neighbour_indices]
    match = (neighbour_labels == neighbour_predictions) & (neighbour_predictions == predictions[:, None])
    # The position of the first mismatch (k if none): one reduction. ``cumprod(match).sum()`` gives the
    # same q but lowers to a reduce-window of width k, O(k^2) per row on CPUs and GPUs.
    k = match.shape[1]
    return jnp.min(jnp.where(match, k, jnp.arange(k, dtype=jnp.int32)), axis=1, initial=k)


@functools.partial(jax.jit, static_argnames="num_classes")
def class_ecdf(
    values: jax.Array, labels: jax.Array, num_classes: int, where: jax.Array | None = None
) -> ClassECDF:
    """Sorts ``values`` into one row per true class (labels outside ``[0, C)`` are dropped).

    For the distance eCDFs of [ACT] App. A.4.2 pass the nearest-exemplar distances with
    ``where = q > 0``; for the DKW sample sizes of App. A.5 pass q' of all calibration points.

    Args:
      values: ``[N]`` statistic per point.
      labels: ``[N]`` int true labels.
      num_classes: C.
      where: optional ``[N]`` bool, the points to keep.

    Returns:
      A `ClassECDF` with ``values [C, N]``.

    >>> import jax.numpy as jnp
    >>> ecdf = class_ecdf(jnp.array([3.0, 1.0, 2.0]), jnp.array([0, 0, 1]), num_classes=2)
    >>> ecdf.values.tolist(), ecdf.counts.tolist()
    ([[1.0, 3.0, inf], [2.0, inf, inf]], [2, 1])
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"class_ecdf: num_classes must be a positive int, got {num_classes!r}")
    if jnp.ndim(values) != 1 or jnp.shape(labels) != jnp.shape(values):
        raise ValueError(
            f"class_ecdf: values and labels must both have shape [N], got {jnp.shape(values)} and {jnp.shape(labels)}"
        )
    member = jnp.asarray(labels)[None, :] == jnp.arange(num_classes)[:, None]
    if where is not None:
        member = member & jnp.asarray(where, bool)[None, :]
    rows = jnp.where(member, jnp.asarray(values)[None, :], jnp.inf)
    return ClassECDF(jnp.sort(rows, axis=1), jnp.sum(member, axis=1, dtype=jnp.int32))


def distance_quantile(nearest_distance: jax.Array, ecdf: ClassECDF) -> jax.Array:
    """d = min over classes of ``1 - searchsorted(sorted_c, x, 'left') / n_c`` ([ACT] Eq. 5, A.4.2).

    x at or below a class's smallest sample gives 1 for that class, above its largest gives 0, equal
    to the largest gives 1/n_c, and an empty class gives 0 (so d = 0 for every point).

    Args:
      nearest_distance: ``[B]`` distance to the nearest exemplar (squared L2 or L2, as in the eCDF).
      ecdf: per-class sorted distances of the calibration (or training) points with q > 0.

    Returns:
      ``[B]`` d in [0, 1].

    >>> import jax.numpy as jnp
    >>> ecdf = class_ecdf(jnp.array([1.0, 2.0, 3.0, 4.0]), jnp.array([0, 0, 1, 1]), num_classes=2)
    >>> distance_quantile(jnp.array([0.0, 2.0, 3.5, 9.0]), ecdf).tolist()
    [1.0, 0.5, 0.0, 0.0]
    """
    x = jnp.asarray(nearest_distance)
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    x = jnp.maximum(x.astype(dtype), 0)
    position = jax.vmap(lambda row: _searchsorted(row, x))(ecdf.values).astype(dtype)
    counts = ecdf.counts[:, None].astype(dtype)
    quantile = jnp.where(counts > 0, (counts - position) / jnp.maximum(counts, 1), 0)
    return jnp.min(quantile, axis=0)


def _searchsorted(sorted_values: jax.Array, x: jax.Array) -> jax.Array:
    """``searchsorted(sorted_values, x, side="left")`` by an unrolled binary search: one fused kernel
    instead of a ``while`` loop of ~log2(N) steps, each a kernel launch on a GPU."""
    return jnp.searchsorted(sorted_values, x, side="left", method="scan_unrolled")
