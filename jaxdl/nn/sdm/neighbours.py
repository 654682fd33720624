"""Exact k-nearest-neighbour search by squared L2 distance in one call: `nearest_neighbours`.

A thin wrapper over `jaxdl.nn.sdm.index`: it builds an `ExemplarIndex` (squared norms, an optional
low-precision copy, the shards of a mesh) and searches it. Callers that search the same exemplars
more than once should build the index once with `build_index` and call ``index.search``, or pass
the index itself as ``exemplars``.
"""

from __future__ import annotations

import jax
from jax.sharding import Mesh

from jaxdl.nn.sdm.index import ExemplarIndex, build_index


def nearest_neighbours(
    queries: jax.Array,
    exemplars: jax.Array | ExemplarIndex,
    k: int,
    *,
    exclude: jax.Array | None = None,
    block_size: int | None = None,
    query_block_size: int | None = None,
    compute_dtype: jax.typing.DTypeLike | None = None,
    precision: str | jax.lax.Precision | None = "highest",
    mesh: Mesh | None = None,
    axis_name: str | None = None,
    approximate: bool = False,
    recall_target: float = 0.95,
    refine: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Exact k nearest exemplars of each query by squared L2 distance, nearest first.

    The search behind q and d of the SDM estimator (arXiv:2509.12760, §3.1.2-3.1.3), a JAX
    replacement for FAISS ``IndexFlatL2``: ``build_index(exemplars, ...).search(queries, k, ...)``.
    Compiles once per shapes and options, eagerly or under ``jit``. The per-exemplar work (norms, the
    ``compute_dtype`` copy, the shards of a ``mesh``) is redone on every call unless ``exemplars`` is
    already an `ExemplarIndex` (then ``compute_dtype``, ``precision``, ``mesh`` and ``axis_name``
    must be left at their defaults: they are the index's).

    Args:
      queries: ``[B, M]`` query vectors.
      exemplars: ``[N, M]`` exemplar (support) vectors, or an `ExemplarIndex` of them.
      k: number of neighbours, ``1 <= k <= N`` (``N - 1`` with ``exclude``).
      exclude: optional ``[B]`` int exemplar index to skip for each query (a training point's own row,
        -1 for none): the self-match exclusion of §1.2, robust to duplicate points.
      block_size: exemplar rows scored per step and device (``None``: all of them at once).
      query_block_size: queries scored per step (``None``: a float32 score tile of at most 2 GiB per device).
      compute_dtype: dtype of the ``queries @ exemplars.T`` product (e.g. ``jnp.bfloat16``); the
        product is accumulated and the norms computed in float32 or wider.
      precision: matmul precision of the product; "highest" keeps float32 exact on GPU/TPU.
      mesh: optional mesh; the exemplars are sharded over ``axis_name`` and queries replicated.
      axis_name: mesh axis to shard the exemplars over (default: the mesh's only axis).
      approximate: select with ``lax.approx_min_k`` instead of exactly (see `ExemplarIndex.search`).
      recall_target: the approximate mode's expected recall.
      refine: candidates around the k-th re-ranked by an accurate distance (default: 16 for exact
        float32 products, so that the result matches float64; see `ExemplarIndex.search`).

    Returns:
      ``(sq_distances [B, k], indices [B, k] int32)``, ascending distance; ties keep the lower index.

    >>> import jax.numpy as jnp
    >>> exemplars = jnp.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    >>> dist, idx = nearest_neighbours(jnp.array([[0.9, 0.0]]), exemplars, k=2)
    >>> idx.tolist(), [round(v, 2) for v in dist[0].tolist()]
    ([[1, 0]], [0.01, 0.81])
    """
    if isinstance(exemplars, ExemplarIndex):
        if compute_dtype is not None or precision != "highest" or mesh is not None or axis_name is not None:
            raise ValueError(
                "nearest_neighbours: compute_dtype, precision, mesh and axis_name belong to the index when "
                "exemplars is an ExemplarIndex; build the index with them instead"
            )
        index = exemplars
    else:
        exemplars = jax.numpy.asarray(exemplars)
        if jax.numpy.ndim(queries) != 2:
            raise ValueError(
                f"nearest_neighbours: queries must have shape [B, M], got {jax.numpy.shape(queries)}"
            )
        width = jax.numpy.shape(queries)[1]
        if exemplars.ndim != 2 or exemplars.shape[1] != width:
            raise ValueError(
                f"nearest_neighbours: exemplars must have shape [N, {width}] to match the queries, "
                f"got {exemplars.shape}"
            )
        index = build_index(
            exemplars, compute_dtype=compute_dtype, precision=precision, mesh=mesh, axis_name=axis_name
        )
    return index.search(
        queries,
        k,
        exclude=exclude,
        block_size=block_size,
        query_block_size=query_block_size,
        approximate=approximate,
        recall_target=recall_target,
        refine=refine,
    )
