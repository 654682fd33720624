"""An exact k-nearest-neighbour index by squared L2 distance: built once, searched many times.

The SDM estimator needs the k nearest training exemplars of every point in the exemplar space h'
(Schmaltz, arXiv:2509.12760, §3.1.2-3.1.3); the reference code uses FAISS ``IndexFlatL2``, an exact
search returning squared distances. `ExemplarIndex` is its JAX counterpart, used as FAISS users
expect: ``index = build_index(exemplars); dist, idx = index.search(queries, k)``.

`build_index` does the per-exemplar work once: the squared norms ||e||^2 (in float32 or wider), an
optional low-precision copy for the products (``compute_dtype=jnp.bfloat16``), and, with a ``mesh``,
the padding to a multiple of the shard count (padding rows get an infinite norm, so they are never
returned) and the placement of one shard per device. A search then ranks

    s = ||e||^2 - 2 q.e       (per query, the same order as ||q - e||^2 = ||q||^2 + s),

selects the k smallest exactly by group minima (`_split._search_split`, built on ``_selection.py``:
``lax.top_k`` sorts whole rows on GPUs), adds ||q||^2 to the k survivors only, and re-ranks the
candidates around the k-th by an accurate distance (``refine``, `_refine.py`), so the float32 exact
mode matches a float64 brute force. `_search_split`'s module says how the selection splits over a
mesh and what it measured (benchmarks/RESULTS.md, runs A-E). The search is one jitted function per
(index layout, shapes, options): repeated calls compile nothing, eagerly or inside a user's ``jit``.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxdl.nn.sdm._refine import accurate_sq_distances
from jaxdl.nn.sdm._scores import _cross, _scores
from jaxdl.nn.sdm._selection import smallest_k
from jaxdl.nn.sdm._split import _search_split, _split_group_size

_TILE_BYTES = 2 << 30
"""Default bound on the float32 score tile of one step (query block x exemplar rows of a device)."""

_COMPACT_K = 1024
"""From this k on, the levels of `smallest_k` sort only the candidates under the k-th group minimum
(`top_k_below`; the split route's last level always compacts, by gathers). On an H200 at 1,024 x 1M
(bf16 products) that took the search from 10.1 to 8.3 ms at k = 2,048 (one GPU; 6.3 to 5.7 ms on
two) and gained nothing at k = 128 (6.34 vs 6.36 ms; on 2 GPUs 3.80 vs 3.63 ms without), when
`smallest_k` made the whole selection."""

_REFINE = 16
"""Boundary candidates re-ranked by accurate distance in the exact float32 mode (see `_refine.py`)."""


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["vectors", "sq_norms", "search_vectors"],
    meta_fields=["num_exemplars", "precision", "mesh", "axis_name"],
)
@dataclasses.dataclass(frozen=True)
class ExemplarIndex:
    """Exemplars prepared for exact squared-L2 search (see `build_index`); a pytree.

    Attributes:
      vectors: ``[N_pad, M]`` the exemplars as given (padded with zero rows to a multiple of the shard
        count when built on a mesh).
      sq_norms: ``[N_pad]`` ||e||^2 in float32 or wider; +inf on padding rows.
      search_vectors: ``[N_pad, M]`` the copy the products use when ``compute_dtype`` differs from
        the exemplars' dtype (e.g. bfloat16), else None.
      num_exemplars: N, the number of real exemplars (static).
      precision: matmul precision of the products (static).
      mesh, axis_name: the mesh and axis the rows are split over, or None (static).

    >>> import jax.numpy as jnp
    >>> index = build_index(jnp.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]]))
    >>> index.shape, index.sq_norms.tolist()
    ((3, 2), [0.0, 1.0, 50.0])
    """

    vectors: jax.Array
    sq_norms: jax.Array
    search_vectors: jax.Array | None
    num_exemplars: int
    precision: Any = "highest"
    mesh: Mesh | None = None
    axis_name: str | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(N, M)``: the real exemplars and their width."""
        return self.num_exemplars, self.vectors.shape[1]

    @property
    def exemplars(self) -> jax.Array:
        """The ``[N, M]`` exemplars without padding (a slice when the index is padded)."""
        if self.vectors.shape[0] == self.num_exemplars:
            return self.vectors
        return self.vectors[: self.num_exemplars]

    def search(
        self,
        queries: jax.Array,
        k: int,
        *,
        exclude: jax.Array | None = None,
        query_block_size: int | None = None,
        block_size: int | None = None,
        approximate: bool = False,
        recall_target: float = 0.95,
        refine: int | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """The k nearest exemplars of each query by squared L2 distance, nearest first.

        Exact by default: ties go to the lower exemplar index, as FAISS ``IndexFlatL2`` and a stable
        argsort do. Non-finite distances (NaN or infinite vectors, overflow) rank last, ties to
        the lower index, and come back as +inf, never NaN; an ``exclude``-d row ranks after them, so
        it is never returned, even for k = N - 1. Compiles once per index layout, query
        shape and options; runs inside ``jit``, ``vmap`` and ``grad`` (no gradient flows into it).

        The float32 search ranks by ||e||^2 - 2 q.e from one GEMM, whose rounding can swap two
        neighbours that float64 tells apart (at 1M x 1,000 dims, about 2 in 100,000 of the k = 2,048
        neighbours). ``refine`` re-ranks the candidates around the k-th, positions ``k - refine`` to
        ``k + refine``, by ||q - e||^2 summed to about 44 bits in float32 (`_refine.py`), so that the
        set of k neighbours and the order of that window match float64 whenever the float32 error
        moves no neighbour by more than ``refine`` places; earlier positions keep the float32 order.

        Args:
          queries: ``[B, M]`` query vectors.
          k: number of neighbours, ``1 <= k <= N`` (``N - 1`` with ``exclude``).
          exclude: optional ``[B]`` int exemplar index to skip for each query (a training point's own
            row, -1 or any out-of-range index for none): the self-match exclusion of [ACT] §1.2,
            robust to duplicate points.
          query_block_size: queries scored per step (default: as many as keep the float32 score tile
            under 2 GiB per device). Larger blocks re-read the exemplars fewer times.
          block_size: exemplar rows scored per step on each device (default: all of them); smaller
            blocks bound memory by ``query_block_size x block_size`` at the cost of a merge per block.
          approximate: use ``lax.approx_min_k`` (``recall_target``) instead of the exact selection;
            fast on TPUs, where it is an approximate operation; on CPUs and GPUs XLA computes it
            exactly by sorting, at the cost of ``lax.top_k``.
          recall_target: the expected recall of the approximate mode.
          refine: boundary candidates re-ranked by accurate distance (0: none). Default: 16 when the
            products are float32 at full precision (the exact mode: on an H200 at 1M x 1,000, recall
            against float64 0.99998 -> 1.0 for +0.1-0.7% time), else 0. With bfloat16 products, 64
            re-ranked from the index's float32 vectors gave recall 1.0 there too for +3-8% (0.12-0.18x
            torch's float32 time); how many a data set needs depends on its bf16 rounding.

        Returns:
          ``(sq_distances [B, k], indices [B, k] int32)``, ascending distance. On a mesh the exact
          search returns them sharded over the queries (each device selected its share).

        >>> import jax.numpy as jnp
        >>> index = build_index(jnp.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]]))
        >>> dist, idx = index.search(jnp.array([[0.9, 0.0]]), k=2)
        >>> idx.tolist(), [round(v, 2) for v in dist[0].tolist()]
        ([[1, 0]], [0.01, 0.81])
        """
        queries = jnp.asarray(queries)
        k = _check_search(self, queries, k, exclude, query_block_size, block_size, approximate, recall_target)
        if refine is None:
            refine = _default_refine(self)
        elif isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
            raise ValueError(f"nearest_neighbours: refine must be a non-negative int or None, got {refine!r}")
        if queries.shape[0] == 0:
            dtype = jnp.promote_types(jnp.result_type(queries), self.sq_norms.dtype)
            return jnp.zeros((0, k), dtype), jnp.zeros((0, k), jnp.int32)
        if exclude is not None:
            exclude = jnp.asarray(exclude).astype(jnp.int32)
        return _search(
            self,
            queries,
            exclude,
            k=k,
            query_block_size=query_block_size,
            block_size=block_size,
            approximate=approximate,
            recall_target=float(recall_target),
            refine=0 if approximate else refine,
        )


def build_index(
    exemplars: jax.Array,
    *,
    compute_dtype: jax.typing.DTypeLike | None = None,
    precision: str | jax.lax.Precision | None = "highest",
    mesh: Mesh | None = None,
    axis_name: str | None = None,
) -> ExemplarIndex:
    """Prepares ``exemplars [N, M]`` for repeated exact search (`ExemplarIndex.search`).

    Computes the squared norms once, a ``compute_dtype`` copy if asked, and on a ``mesh`` pads the
    rows to a multiple of the devices on ``axis_name`` and places one shard per device (exemplars
    already laid out that way are not copied). Eager or under ``jit``.

    Args:
      exemplars: ``[N, M]`` exemplar (support) vectors; N may be 0 (an index that cannot be searched).
      compute_dtype: dtype of the ``queries @ exemplars.T`` products (e.g. ``jnp.bfloat16``: half the
        bytes, ~10x the GEMM rate of float32, nearly the same neighbours); products are accumulated
        and norms computed in float32 or wider.
      precision: matmul precision of the products: "highest" (default) keeps float32 exact on
        GPU/TPU; None uses the backend default (TF32 on NVIDIA GPUs).
      mesh: optional mesh to split the exemplar rows over.
      axis_name: the mesh axis to split over (default: the mesh's only axis).

    Returns:
      An `ExemplarIndex`.

    >>> import jax.numpy as jnp
    >>> index = build_index(jnp.eye(3), compute_dtype=jnp.bfloat16)
    >>> index.search_vectors.dtype, index.search(jnp.array([[0.0, 0.9, 0.0]]), k=1)[1].tolist()
    (dtype(bfloat16), [[1]])
    """
    exemplars = jnp.asarray(exemplars)
    if exemplars.ndim != 2:
        raise ValueError(f"build_index: exemplars must have shape [N, M], got {exemplars.shape}")
    if not jnp.issubdtype(exemplars.dtype, jnp.floating):
        raise TypeError(f"build_index: exemplars must be floating point, got dtype {exemplars.dtype}")
    if compute_dtype is not None and not jnp.issubdtype(compute_dtype, jnp.floating):
        raise TypeError(f"build_index: compute_dtype must be a floating dtype or None, got {compute_dtype!r}")
    if mesh is not None:
        if axis_name is None and len(mesh.axis_names) == 1:
            axis_name = mesh.axis_names[0]
        if axis_name not in mesh.axis_names:
            raise ValueError(
                f"build_index: axis_name must name an axis of the mesh {mesh.axis_names}, got {axis_name!r}"
            )
    num_exemplars = exemplars.shape[0]
    norm_dtype = jnp.promote_types(exemplars.dtype, jnp.float32)
    sq_norms = jnp.sum(jnp.square(exemplars.astype(norm_dtype)), axis=1)
    search_vectors = None
    if compute_dtype is not None and jnp.dtype(compute_dtype) != exemplars.dtype:
        search_vectors = exemplars.astype(compute_dtype)
    if mesh is not None:
        pad = -num_exemplars % mesh.shape[axis_name]
        if pad:
            exemplars = jnp.pad(exemplars, ((0, pad), (0, 0)))
            sq_norms = jnp.pad(sq_norms, (0, pad), constant_values=jnp.inf)
            if search_vectors is not None:
                search_vectors = jnp.pad(search_vectors, ((0, pad), (0, 0)))
        exemplars, sq_norms, search_vectors = _place(
            (exemplars, sq_norms, search_vectors), NamedSharding(mesh, PartitionSpec(axis_name))
        )
    return ExemplarIndex(exemplars, sq_norms, search_vectors, num_exemplars, precision, mesh, axis_name)


def _place(arrays, sharding):
    if any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(arrays)):
        return jax.lax.with_sharding_constraint(arrays, sharding)
    return jax.device_put(arrays, sharding)


def _check_search(
    index, queries, k, exclude, query_block_size, block_size, approximate, recall_target
) -> int:
    width = index.vectors.shape[1]
    if queries.ndim != 2 or queries.shape[1] != width:
        raise ValueError(f"nearest_neighbours: queries must have shape [B, {width}], got {queries.shape}")
    if not jnp.issubdtype(queries.dtype, jnp.floating):
        raise TypeError(f"nearest_neighbours: queries must be floating point, got dtype {queries.dtype}")
    if index.num_exemplars == 0:
        raise ValueError("nearest_neighbours: exemplars must hold at least one row, got shape (0, ...)")
    available = index.num_exemplars - (exclude is not None)
    try:
        k = operator.index(k)
    except TypeError:
        k = None
    if k is None or isinstance(k, bool) or not 1 <= k <= available:
        raise ValueError(
            f"nearest_neighbours: k must be an int in [1, {available}] "
            f"({index.num_exemplars} exemplars{', one excluded per query' if exclude is not None else ''}), "
            f"got {k!r}"
        )
    if exclude is not None:
        if jnp.shape(exclude) != queries.shape[:1]:
            raise ValueError(
                f"nearest_neighbours: exclude must have shape [B] = {queries.shape[:1]}, got {jnp.shape(exclude)}"
            )
        if not jnp.issubdtype(jnp.result_type(exclude), jnp.integer):
            raise TypeError(
                f"nearest_neighbours: exclude must hold integer indices, got {jnp.result_type(exclude)}"
            )
    for name, value in (("block_size", block_size), ("query_block_size", query_block_size)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"nearest_neighbours: {name} must be a positive int or None, got {value!r}")
    if not isinstance(approximate, bool):
        raise TypeError(f"nearest_neighbours: approximate must be a bool, got {approximate!r}")
    if not 0 < recall_target <= 1:
        raise ValueError(f"nearest_neighbours: recall_target must lie in (0, 1], got {recall_target!r}")
    return k


def _pad_rows(x: jax.Array, multiple: int, value=0) -> jax.Array:
    pad = -x.shape[0] % multiple
    return jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1), constant_values=value) if pad else x


def _select(scores, k, approximate, recall_target, levels, compact):
    if approximate:
        vals, index = jax.lax.approx_min_k(scores, k, recall_target=recall_target)
        return vals, index.astype(jnp.int32)
    return smallest_k(scores, k, levels, compact)


def _merge_lists(scores, index, k):
    """The k smallest of candidate lists ``[B, n]``; ties go to the lower index, empty slots (-1) last."""
    key = jnp.where(index < 0, jnp.iinfo(jnp.int32).max, index)
    scores, _, index = jax.lax.sort((scores, key, index), dimension=1, num_keys=2)
    return scores[:, :k], index[:, :k]


def _merge(scores_a, index_a, scores_b, index_b, k):
    return _merge_lists(
        jnp.concatenate([scores_a, scores_b], axis=1), jnp.concatenate([index_a, index_b], axis=1), k
    )


def _search_local(
    vectors,
    sq_norms,
    queries,
    exclude,
    offset,
    *,
    k,
    block,
    precision,
    approximate,
    recall_target,
    levels,
    compact,
):
    """The k smallest scores s = ||e||^2 - 2 q.e of one device's rows (global indices from ``offset``)."""
    rows = vectors.shape[0]

    def score_rows(start, size):
        part = jax.lax.dynamic_slice_in_dim(vectors, start, size) if size < rows else vectors
        norms = jax.lax.dynamic_slice_in_dim(sq_norms, start, size) if size < rows else sq_norms
        cross = _cross(part, queries, norms.dtype, precision=precision)
        scores = _scores(cross, norms, exclude, offset + start)
        vals, index = _select(scores, min(k, size), approximate, recall_target, levels, compact)
        return vals, index + offset + start

    if block >= rows:
        return score_rows(0, rows)
    num_full, tail = divmod(rows, block)
    k_out = min(k, rows)

    def step(carry, start):
        return _merge(*carry, *score_rows(start, block), k=k_out), None

    scores, index = score_rows(0, block)
    missing = k_out - scores.shape[1]
    if missing:  # blocks smaller than k: fill the running list with empty slots
        scores = jnp.pad(scores, ((0, 0), (0, missing)), constant_values=jnp.inf)
        index = jnp.pad(index, ((0, 0), (0, missing)), constant_values=-1)
    starts = jnp.arange(1, num_full, dtype=jnp.int32) * block
    carry, _ = jax.lax.scan(step, (scores, index), starts)
    if tail:
        carry = _merge(*carry, *score_rows(num_full * block, tail), k=k_out)
    return carry


def _distances(queries, scores):
    """||q||^2 + s, clamped at 0 (rounding can make a self-distance slightly negative, as in FAISS);
    +inf for unrepresentable (see `_scores`) and excluded rows and for a query whose norm is not
    finite, never NaN."""
    out_dtype = jnp.promote_types(queries.dtype, scores.dtype)
    query_sq = jnp.sum(jnp.square(queries.astype(out_dtype)), axis=1)
    dist = jnp.maximum(query_sq[:, None] + scores.astype(out_dtype), 0)
    usable = (scores < jnp.finfo(scores.dtype).max) & jnp.isfinite(query_sq)[:, None]
    return jnp.where(usable, dist, jnp.inf)


def _rerank(dist, found, k, refine, accurate):
    """Re-ranks the list positions from ``k - refine`` on by ``accurate(ids) -> (hi, lo)``; the first k.

    ``dist, found [B, k + m]`` are ascending by the fast distance; the window's values become the
    accurate distances (their gradient stays the fast one's). Non-finite fast distances (excluded,
    NaN or padding rows, empty slots) stay +inf.
    """
    first = max(0, k - refine)
    if refine == 0 or first >= dist.shape[1]:
        return dist[:, :k], found[:, :k]
    ids, fast = found[:, first:], dist[:, first:]
    hi, lo = accurate(ids)
    usable = jnp.isfinite(fast) & jnp.isfinite(hi)
    hi, lo = jnp.where(usable, hi, jnp.inf), jnp.where(usable, lo, 0)
    # Ties to the lower index; the unusable entries keep the fast order, which put excluded rows last.
    position = jnp.arange(ids.shape[1], dtype=jnp.int32)[None, :]
    key = jnp.where(usable, ids, jnp.iinfo(jnp.int32).max - ids.shape[1] + position)
    hi, lo, _, ids, fast = jax.lax.sort((hi, lo, key, ids, fast), dimension=1, num_keys=3)
    take = k - first
    exact = (hi[:, :take] + lo[:, :take]).astype(dist.dtype)
    fast = fast[:, :take]
    refined = jnp.where(jnp.isfinite(hi[:, :take]), exact + (fast - jax.lax.stop_gradient(fast)), jnp.inf)
    return (
        jnp.concatenate([dist[:, :first], refined], axis=1),
        jnp.concatenate([found[:, :first], ids[:, :take]], axis=1),
    )


def _accurate_rows(vectors, queries, ids, first=0):
    """Accurate (hi, lo) distances to the rows ``ids [B, W]`` of ``vectors`` held from global row
    ``first``; (0, 0) for rows held elsewhere (a ``psum`` over the holders completes them exactly)."""
    local = ids - first
    held = (local >= 0) & (local < vectors.shape[0])
    hi, lo = accurate_sq_distances(queries, vectors[jnp.clip(local, 0, vectors.shape[0] - 1)])
    return jnp.where(held, hi, 0), jnp.where(held, lo, 0)


def _default_refine(index: ExemplarIndex) -> int:
    """The ``refine`` margin `ExemplarIndex.search` uses by default: `_REFINE` candidates for float32
    products at full precision (the exact mode), 0 otherwise (bfloat16 / TF32 products or float64)."""
    full = index.precision in ("highest", jax.lax.Precision.HIGHEST)
    return _REFINE if full and index.search_vectors is None and index.vectors.dtype == jnp.float32 else 0


def _search_impl(
    index: ExemplarIndex,
    queries,
    exclude,
    *,
    k,
    query_block_size,
    block_size,
    approximate,
    recall_target,
    refine=0,
    levels=2,
    sharded_selection="split",
    compact=None,
    exchange="owned",
    split_group=None,
):
    """The jitted search. Private knobs for the benchmarks: ``levels``, the depth of the exact
    selection's hierarchy (0: ``lax.top_k``); ``compact``, whether the last sort of each level of
    `smallest_k` takes only the candidates under the k-th group minimum (`top_k_below`; the default
    for k >= `_COMPACT_K`); ``sharded_selection``: "split" (`_search_split`, on one device too) or
    "merge" (`smallest_k` on each device's rows, then a merge of the devices' lists: the one-device
    route before); ``exchange`` (`_search_split`): "owned", "compact" or "entries"; ``split_group``: its
    first-level group instead of `_split_group_size`'s."""
    vectors = index.vectors if index.search_vectors is None else index.search_vectors
    num_shards = 1 if index.mesh is None else index.mesh.shape[index.axis_name]
    rows = vectors.shape[0] // num_shards
    block = rows if block_size is None else min(block_size, rows)
    k_sel = min(k + refine, index.num_exemplars)
    if compact is None:
        compact = k_sel >= _COMPACT_K
    num_queries = queries.shape[0]
    if query_block_size is None:  # equal blocks, each score tile under _TILE_BYTES
        num_blocks = -(-num_queries // max(1, _TILE_BYTES // (4 * block)))
        query_block_size = -(-num_queries // num_blocks)
    query_block_size = min(query_block_size, num_queries)
    group = None
    if sharded_selection == "split" and not approximate and levels > 0 and block >= rows:
        group = _split_group_size(rows, num_shards, k_sel, exchange) if split_group is None else split_group
    if group is not None:  # the split route takes query blocks of a multiple of the devices
        query_block_size = -(-query_block_size // num_shards) * num_shards
    split = functools.partial(
        _search_split, k=k_sel, group=group, precision=index.precision, levels=levels, compact=compact,
        exchange=exchange,
    )  # fmt: skip
    search = functools.partial(
        _search_local,
        k=k_sel,
        block=block,
        precision=index.precision,
        approximate=approximate,
        recall_target=recall_target,
        levels=levels,
        compact=compact,
    )

    if index.mesh is None:

        def search_all(q, ex):
            if group is not None:
                scores, found = split(vectors, index.sq_norms, q, ex, axis=None)
            else:
                scores, found = search(vectors, index.sq_norms, q, ex, 0)
            return _rerank(
                _distances(q, scores), found, k, refine, lambda ids: _accurate_rows(index.vectors, q, ids)
            )
    else:
        axis = index.axis_name
        sharded, replicated = PartitionSpec(axis), PartitionSpec()

        def accurate_sharded(originals, q, ids):
            return jax.lax.psum(_accurate_rows(originals, q, ids, jax.lax.axis_index(axis) * rows), axis)

        def search_merged(vectors, sq_norms, originals, q, ex):
            scores, found = search(vectors, sq_norms, q, ex, jax.lax.axis_index(axis) * rows)
            scores = jax.lax.all_gather(scores, axis, axis=1, tiled=True)
            found = jax.lax.all_gather(found, axis, axis=1, tiled=True)
            scores, found = _merge_lists(scores, found, k_sel)
            return _rerank(
                _distances(q, scores), found, k, refine, lambda ids: accurate_sharded(originals, q, ids)
            )

        def search_split(vectors, sq_norms, originals, q, ex):
            scores, found = split(vectors, sq_norms, q, ex, axis=axis)
            mine = scores.shape[0]
            my_queries = jax.lax.dynamic_slice_in_dim(q, jax.lax.axis_index(axis) * mine, mine)

            def accurate(ids):  # every device completes the rows it holds, for every query
                every = jax.lax.all_gather(ids, axis, axis=0, tiled=True)
                first = jax.lax.axis_index(axis) * rows
                return jax.lax.psum_scatter(
                    _accurate_rows(originals, q, every, first), axis, scatter_dimension=0, tiled=True
                )

            return _rerank(_distances(my_queries, scores), found, k, refine, accurate)

        out = sharded if group is not None else replicated
        mapped = jax.shard_map(
            search_split if group is not None else search_merged,
            mesh=index.mesh,
            in_specs=(sharded, sharded, sharded, replicated, None if exclude is None else replicated),
            out_specs=(out, out),
            # The merged top-k is identical on every device, but all_gather's result is typed as varying.
            check_vma=False,
        )
        originals = index.vectors if refine else vectors

        def search_all(q, ex):
            return mapped(vectors, index.sq_norms, originals, q, ex)

    if query_block_size >= num_queries and num_queries % query_block_size == 0:
        return search_all(queries, exclude)
    chunks = _pad_rows(queries, query_block_size)
    if query_block_size >= num_queries:
        dist, found = search_all(
            chunks, None if exclude is None else _pad_rows(exclude, query_block_size, -1)
        )
        return _first_rows((dist, found), num_queries, index.mesh)
    chunks = chunks.reshape(-1, query_block_size, queries.shape[1])
    if exclude is None:
        dist, found = jax.lax.map(lambda q: search_all(q, None), chunks)
    else:
        excluded = _pad_rows(exclude, query_block_size, -1).reshape(-1, query_block_size)
        dist, found = jax.lax.map(lambda xs: search_all(*xs), (chunks, excluded))
    return _first_rows((dist.reshape(-1, k), found.reshape(-1, k)), num_queries, index.mesh)


def _first_rows(arrays, num, mesh):
    """``a[:num]`` of each array; on a mesh with explicit axes the (query-sharded) results are first
    replicated, since a slice that does not divide the devices is not defined on a sharded axis."""
    if mesh is not None and any(t == jax.sharding.AxisType.Explicit for t in mesh.axis_types):
        arrays = jax.sharding.reshard(arrays, NamedSharding(mesh, PartitionSpec()))
    return tuple(a[:num] for a in arrays)


_STATIC = (
    "k",
    "query_block_size",
    "block_size",
    "approximate",
    "recall_target",
    "refine",
    "levels",
    "sharded_selection",
    "compact",
    "exchange",
    "split_group",
)
_search = jax.jit(_search_impl, static_argnames=_STATIC)
