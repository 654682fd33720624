"""The ranking score of the exact search: s = ||e||^2 - 2 q.e, from one GEMM (see `index`).

Per query it orders the exemplars as ||q - e||^2 = ||q||^2 + s does; ||q||^2 is added to the k
survivors only (`index._distances`).
"""

import jax.numpy as jnp


def _scores(cross, sq_norms, exclude, first):
    """s = ||e||^2 - 2 q.e from the GEMM's ``cross [B, rows]`` (`_cross`) and the rows' ``sq_norms``
    (global rows from ``first``).

    A score that is not finite (a NaN or infinite exemplar or query, an overflow) becomes the largest
    finite value (``finfo.max``), so such rows rank last among the searchable rows, ties to the
    lower index; excluded rows get +inf and rank after them, so they are never among the
    ``k <= N - 1`` returned even when k reaches the unrepresentable rows.
    """
    rows = first + jnp.arange(cross.shape[1], dtype=jnp.int32)[None, :]
    return _finish(cross, sq_norms[None, :], exclude, rows)


def _cross(vectors, queries, dtype, *, precision):
    """-2 q.e, ``[B, rows]``, accumulated in ``dtype`` (the GEMM)."""
    scaled = (-2 * queries).astype(vectors.dtype)  # exact: a power-of-two scale
    return jnp.dot(scaled, vectors.T, precision=precision, preferred_element_type=dtype)


def _finish(cross, sq_norms, exclude, rows):
    """`_scores` from the GEMM's ``cross`` and the (broadcast or gathered) ``sq_norms`` and global
    ``rows`` of its entries: elementwise, so a gathered entry gets the value of the full tile."""
    scores = sq_norms + cross
    scores = jnp.where(jnp.isfinite(scores), scores, jnp.finfo(scores.dtype).max)
    if exclude is None:
        return scores
    return jnp.where(rows == exclude.reshape(-1, *[1] * (scores.ndim - 1)), jnp.inf, scores)
