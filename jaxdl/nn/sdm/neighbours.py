"""Exact k-nearest-neighbour search by squared L2 distance, blocked and optionally sharded.

The SDM estimator needs the k nearest training exemplars of every point in the exemplar space h'
(Schmaltz, arXiv:2509.12760, §3.1.2-3.1.3); the reference code uses FAISS ``IndexFlatL2``, an exact
search that returns squared distances. Here the search is plain JAX:

    ||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2,   then ``lax.top_k`` on the negated distances,

scanned over blocks of exemplars so that memory stays at ``query_block x block`` distances, and
optionally split over the devices of a mesh (each device searches its shard, then the per-device
candidates are gathered and merged).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

_NO_INDEX = -1


def _validate(queries, exemplars, k, exclude, block_size, query_block_size) -> None:
    if queries.ndim != 2:
        raise ValueError(f"nearest_neighbours: queries must have shape [B, M], got {queries.shape}")
    if exemplars.ndim != 2 or exemplars.shape[1] != queries.shape[1]:
        raise ValueError(
            f"nearest_neighbours: exemplars must have shape [N, {queries.shape[1]}] to match the queries, "
            f"got {exemplars.shape}"
        )
    available = exemplars.shape[0] - (exclude is not None)
    if not isinstance(k, int) or not 1 <= k <= available:
        raise ValueError(
            f"nearest_neighbours: k must be an int in [1, {available}] "
            f"({exemplars.shape[0]} exemplars{', one excluded per query' if exclude is not None else ''}), "
            f"got {k!r}"
        )
    if exclude is not None and jnp.shape(exclude) != queries.shape[:1]:
        raise ValueError(
            f"nearest_neighbours: exclude must have shape [B] = {queries.shape[:1]}, got {jnp.shape(exclude)}"
        )
    for name, value in (("block_size", block_size), ("query_block_size", query_block_size)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"nearest_neighbours: {name} must be a positive int or None, got {value!r}")


def _pad_rows(x: jax.Array, multiple: int, value=0) -> jax.Array:
    pad = -x.shape[0] % multiple
    return jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1), constant_values=value)


def _merge(dist_a, index_a, dist_b, index_b, k):
    """The k smallest of two candidate lists; ties keep the earlier list first."""
    dist = jnp.concatenate([dist_a, dist_b], axis=1)
    index = jnp.concatenate([index_a, index_b], axis=1)
    neg, pos = jax.lax.top_k(-dist, k)
    return -neg, jnp.take_along_axis(index, pos, axis=1)


def _search_shard(queries, exemplars, exclude, offset, *, k, block, num_valid, compute_dtype, precision):
    """Top-k over one padded exemplar shard whose first row has global index ``offset``."""
    num_blocks = exemplars.shape[0] // block
    k_shard = min(k, exemplars.shape[0])
    out_dtype = jnp.promote_types(queries.dtype, jnp.float32)
    query_sq = jnp.sum(jnp.square(queries.astype(out_dtype)), axis=1)
    queries_c = queries.astype(compute_dtype)

    def search_block(b, rows):
        index = offset + b * block + jnp.arange(block, dtype=jnp.int32)
        cross = jnp.dot(
            queries_c, rows.astype(compute_dtype).T, precision=precision, preferred_element_type=out_dtype
        )
        rows_sq = jnp.sum(jnp.square(rows.astype(out_dtype)), axis=1)
        # Rounding can make a self-distance slightly negative; FAISS users clamp it the same way.
        dist = jnp.maximum(query_sq[:, None] - 2 * cross + rows_sq[None, :], 0)
        invalid = index[None, :] >= num_valid
        if exclude is not None:
            invalid = invalid | (index[None, :] == exclude[:, None])
        neg, pos = jax.lax.top_k(-jnp.where(invalid, jnp.inf, dist), min(k_shard, block))
        return -neg, index[pos]

    blocks = exemplars.reshape(num_blocks, block, exemplars.shape[1])
    if num_blocks == 1:
        return search_block(0, blocks[0])

    def step(carry, xs):
        return _merge(*carry, *search_block(*xs), k=k_shard), None

    init = (
        jnp.full((queries.shape[0], k_shard), jnp.inf, out_dtype),
        jnp.full((queries.shape[0], k_shard), _NO_INDEX, jnp.int32),
    )
    (dist, index), _ = jax.lax.scan(step, init, (jnp.arange(num_blocks, dtype=jnp.int32), blocks))
    return dist, index


def nearest_neighbours(
    queries: jax.Array,
    exemplars: jax.Array,
    k: int,
    *,
    exclude: jax.Array | None = None,
    block_size: int | None = None,
    query_block_size: int | None = None,
    compute_dtype=None,
    precision: str | jax.lax.Precision | None = "highest",
    mesh: Mesh | None = None,
    axis_name: str | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Exact k nearest exemplars of each query by squared L2 distance, nearest first.

    The search behind q and d of the SDM estimator (arXiv:2509.12760, §3.1.2-3.1.3), a JAX
    replacement for FAISS ``IndexFlatL2``. Memory is bounded by ``query_block_size x block_size``
    distances; with a ``mesh`` the exemplars are split over the devices of ``axis_name``.

    Args:
      queries: ``[B, M]`` query vectors.
      exemplars: ``[N, M]`` exemplar (support) vectors.
      k: number of neighbours, ``1 <= k <= N`` (``N - 1`` with ``exclude``).
      exclude: optional ``[B]`` int exemplar index to skip for each query (a training point's own row,
        -1 for none): the self-match exclusion of §1.2, robust to duplicate points.
      block_size: exemplars scored per step (``None``: all of them at once).
      query_block_size: queries scored per step (``None``: all of them at once).
      compute_dtype: dtype of the ``queries @ exemplars.T`` product (e.g. ``jnp.bfloat16``); the
        product is accumulated and the norms computed in float32 or wider.
      precision: matmul precision of the product; "highest" keeps float32 exact on GPU/TPU.
      mesh: optional mesh; the exemplars are sharded over ``axis_name`` and queries replicated.
      axis_name: mesh axis to shard the exemplars over (default: the mesh's only axis).

    Returns:
      ``(sq_distances [B, k], indices [B, k] int32)``, ascending distance; ties keep the lower index.

    >>> import jax.numpy as jnp
    >>> exemplars = jnp.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    >>> dist, idx = nearest_neighbours(jnp.array([[0.9, 0.0]]), exemplars, k=2)
    >>> idx.tolist(), [round(v, 2) for v in dist[0].tolist()]
    ([[1, 0]], [0.01, 0.81])
    """
    queries, exemplars = jnp.asarray(queries), jnp.asarray(exemplars)
    _validate(queries, exemplars, k, exclude, block_size, query_block_size)
    if compute_dtype is None:
        compute_dtype = jnp.promote_types(queries.dtype, exemplars.dtype)
    if mesh is not None:
        if axis_name is None and len(mesh.axis_names) == 1:
            axis_name = mesh.axis_names[0]
        if axis_name not in mesh.axis_names:
            raise ValueError(
                f"nearest_neighbours: axis_name must name an axis of the mesh {mesh.axis_names}, got {axis_name!r}"
            )
    num_valid = exemplars.shape[0]
    num_shards = 1 if mesh is None else mesh.shape[axis_name]
    shard_rows = -(-num_valid // num_shards)
    block = min(block_size or shard_rows, shard_rows)
    shard_rows = -(-shard_rows // block) * block
    exemplars = _pad_rows(exemplars, num_shards * shard_rows)
    search = functools.partial(
        _search_shard, k=k, block=block, num_valid=num_valid, compute_dtype=compute_dtype, precision=precision
    )

    if mesh is None:
        search_all = functools.partial(search, offset=0)
    else:

        def search_sharded(queries, exemplars, exclude):
            offset = jax.lax.axis_index(axis_name) * shard_rows
            dist, index = search(queries, exemplars, exclude, offset)
            dist = jax.lax.all_gather(dist, axis_name, axis=1, tiled=True)
            index = jax.lax.all_gather(index, axis_name, axis=1, tiled=True)
            neg, pos = jax.lax.top_k(-dist, k)
            return -neg, jnp.take_along_axis(index, pos, axis=1)

        replicated, sharded = PartitionSpec(), PartitionSpec(axis_name)
        search_all = jax.shard_map(
            search_sharded,
            mesh=mesh,
            in_specs=(replicated, sharded, None if exclude is None else replicated),
            out_specs=(replicated, replicated),
            # The merged top-k is identical on every device, but all_gather's result is typed as varying.
            check_vma=False,
        )

    if query_block_size is None or query_block_size >= queries.shape[0]:
        return search_all(queries, exemplars, exclude)
    num_queries = queries.shape[0]
    chunks = _pad_rows(queries, query_block_size).reshape(-1, query_block_size, queries.shape[1])
    if exclude is None:
        dist, index = jax.lax.map(lambda q: search_all(q, exemplars, None), chunks)
    else:
        excluded = _pad_rows(jnp.asarray(exclude), query_block_size, _NO_INDEX).reshape(-1, query_block_size)
        dist, index = jax.lax.map(lambda xs: search_all(xs[0], exemplars, xs[1]), (chunks, excluded))
    return dist.reshape(-1, k)[:num_queries], index.reshape(-1, k)[:num_queries]
