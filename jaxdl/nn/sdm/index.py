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

selects the k smallest exactly by group minima (`_search_split`, built on ``_selection.py``:
``lax.top_k`` sorts whole rows on GPUs), adds ||q||^2 to the k survivors only, and re-ranks the
candidates around the k-th by an accurate distance (``refine``, `_refine.py`), so the float32 exact
mode matches a float64 brute force.

The selection (`_search_split`, on one device or many): the minima of groups of g rows, the k
groups with the smallest minima, then only the entries of those groups at or below the k-th minimum
(about k of the k·g), compacted by gathers and sorted. Over a mesh the exemplar rows are split over
the devices and the selection over the queries: each device scores all queries against its rows,
the group minima go by an all-to-all to the device selecting for those queries, and the owners of
the chosen groups send back only their entries under each query's bound (before: all k·g, +inf
where they did not own the group). On an H200 at 1,024 x 1M x 1,000 (bf16 products) one GPU
searches in 7.0 ms at k = 2,048 (8.7 ms with `smallest_k` and its scatter compaction; the bf16 GEMM
with its scores written takes 3.8 ms) and 5.3 ms at k = 128 (6.5 ms). Two GPUs take 4.2 / 3.05 ms
with the queries already on both (1.67x / 1.73x one GPU) and 4.5 / 3.25 ms with the queries on one
(1.58x / 1.63x): below 1.8x at bf16, where what does not halve (~0.7 ms a call at k = 2,048: the
keep masks every device computes for all queries ~0.2 ms, the exchanges ~0.3 ms, launches, branch
reads and the 2-device dispatch ~0.2 ms) weighs against ~3.5 ms of halved work; float32
(``refine=16``) is 1.88-1.89x. The per-device top-k and merge route measured 1.17-1.35x. Query
chunks in one program, with or without XLA's latency-hiding scheduler, did not hide the all-to-alls,
and the last sorts without the compaction branch's flag read to the host were slower, not faster:
measured and not kept (benchmarks/RESULTS.md, runs A-D). The search is one jitted function per
(index layout, shapes, options): repeated calls compile nothing, eagerly or inside a user's ``jit``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxdl.nn.sdm._refine import accurate_sq_distances
from jaxdl.nn.sdm._selection import (
    _DIRECT_MAX,
    _group_size,
    _top_k_smallest,
    compact_chosen,
    keep_bits,
    last_k,
    smallest_k,
)

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


def _split_group_size(rows: int, num_shards: int, k: int, exchange: str = "compact") -> int | None:
    """The first-level group of `_search_split`, a divisor of one shard's ``rows``, or None (then the
    mesh takes the merge route and one device `smallest_k` on whole rows).

    ``"entries"``: `smallest_k`'s power of two for all rows, halved until it divides (None when that
    shrinks it more than 4x). ``"compact"``: the owners send only the entries under the bound, so the
    group no longer sets the second exchange's size, and the keep masks cost about as much per entry
    as the minima: sqrt(8 n / k) balances the k g masked entries against the n / g minima (measured
    on an H200 at 1M rows: g = 250 beat 100, 125 and 32 at k = 128), and at least n / ``_DIRECT_MAX``,
    so that the minima are one direct sort (no second level with its host-read branch: g = 125 beat
    32 at k = 2,048); the divisor of ``rows`` nearest to that within a factor of 2, at most 1,024.
    """
    ideal = _group_size(rows * num_shards, k)
    if exchange != "compact" or ideal == 1:
        group = ideal
        while rows % group:
            group //= 2
        return None if ideal > 1 and group < max(2, ideal // 4) else group
    target = max(math.sqrt(8 * rows * num_shards / k), rows * num_shards / _DIRECT_MAX)
    divisors = [d for d in range(max(2, int(target / 2)), min(1024, int(2 * target)) + 1) if rows % d == 0]
    return min(divisors, key=lambda d: abs(math.log(d / target)), default=None)


def _pack(arrays):
    """The 32-bit words of ``[B, ...]`` arrays side by side, ``[B, W]`` int32 (one collective for
    all of them), and the layout `_unpack` takes them apart by."""
    parts = [jax.lax.bitcast_convert_type(a, jnp.int32).reshape(a.shape[0], -1) for a in arrays]
    layout = [(a.shape[1:], a.dtype, p.shape[1]) for a, p in zip(arrays, parts, strict=True)]
    return jnp.concatenate(parts, axis=1), layout


def _unpack(packed, layout):
    out, start = [], 0
    for shape, dtype, width in layout:
        words = packed[..., start : start + width]
        start += width
        size = jnp.dtype(dtype).itemsize // 4
        if size > 1:
            words = words.reshape(*words.shape[:-1], -1, size)
        out.append(jax.lax.bitcast_convert_type(words, dtype).reshape(*packed.shape[:-1], *shape))
    return out


def _search_split(
    vectors, sq_norms, queries, exclude, *, axis, k, group, precision, levels, compact, exchange="compact"
):
    """Inside ``shard_map`` over ``axis``: exemplars split over devices, the selection split over
    queries; with ``axis=None`` the same selection on one device (the exchanges are the identity).

    Each device scores all ``B`` queries against its rows and takes group minima (``group`` rows a
    group); an all-to-all hands every device the minima of all groups for its ``B / P`` queries, which
    it selects exactly as `smallest_k` does; the owners of the chosen groups send their entries back
    (a second all-to-all) and the final ``top_k`` runs on ``B / P`` rows. So all the sorting is split
    over the devices too, where a per-device top-k followed by a merge sorts ``B`` rows on each.

    ``exchange``: what the owners send back. ``"entries"``: every entry of the k chosen groups (k *
    group per query, +inf from the devices that do not own a group; the receiver takes the minimum
    over senders). ``"compact"``: only the entries at or below the query's k-th group minimum (the
    bound; about k of them, the only ones that can be among the k smallest, see `smallest_k`), in
    index order, into 2k slots shared by the senders (each device's counts, all-gathered, place its
    entries after those of the devices before it); when a query has more than 2k such entries (ties
    at the bound) every device takes the ``"entries"`` exchange instead, agreed from the same counts.
    Returns this device's ``B / P`` queries' ``(scores [B / P, k], indices)``.
    """
    rows, num = vectors.shape[0], queries.shape[0]
    if axis is None:  # one device: the exchanges are the identity
        num_shards, me = 1, 0

        def to_owners(x, split, concat):
            return x

        def gather(x):
            return x

        def stack(x):
            return x[None]
    else:
        num_shards, me = jax.lax.psum(1, axis), jax.lax.axis_index(axis)

        def to_owners(x, split, concat):
            return jax.lax.all_to_all(x, axis, split, concat, tiled=True)

        def gather(x):
            return jax.lax.all_gather(x, axis, axis=0, tiled=True)

        def stack(x):
            return jax.lax.all_gather(x, axis)

    # The GEMM's output stays the one [B, rows] buffer: the branches below gather from it and finish
    # the scores of what they gather (passing finished scores into them would write a second one).
    cross = _cross(vectors, queries, sq_norms.dtype, precision=precision)

    def scores_at(row):  # the scores of local rows ``row [B, c]``
        picked = jnp.take_along_axis(cross, row, axis=1)
        return _finish(picked, sq_norms[row], exclude, me * rows + row)

    def group_scores(local):  # the scores of local groups ``local [B, c]``: [B, c, group]
        picked = jnp.take_along_axis(cross.reshape(num, -1, group), local[:, :, None], axis=1)
        first = local[:, :, None] * group
        norms = sq_norms.reshape(-1, group)[local]
        return _finish(picked, norms, exclude, me * rows + first + jnp.arange(group, dtype=jnp.int32))

    scores = _scores(cross, sq_norms, exclude, me * rows)
    if group == 1:  # the groups are the rows themselves
        return smallest_k(to_owners(scores, 0, 1), k, levels, compact)
    per_shard = rows // group
    # [B / P, P * per_shard]: my queries' minima of every group, in global group (= row) order.
    minima = to_owners(jnp.min(scores.reshape(num, per_shard, group), axis=2), 0, 1)
    group_minima, groups = smallest_k(minima, k, levels - 1, compact)
    groups = jnp.sort(groups, axis=1)  # index order, so that top_k's ties go to the lower index
    bound = group_minima[:, -1]
    if exchange == "entries":
        wanted = gather(groups) - me * per_shard  # [B, k], local
    else:
        packed, layout = _pack((groups, bound))
        wanted, every_bound = _unpack(gather(packed), layout)
        wanted = wanted - me * per_shard
    mine = (wanted >= 0) & (wanted < per_shard)
    local = jnp.where(mine, wanted, 0)  # groups held elsewhere read group 0 (a cached line), masked

    def every_entry(_):
        # Each chosen group has one owner: the minimum over the P senders is its entries.
        entries = jnp.where(mine[:, :, None], group_scores(local), jnp.inf).reshape(num, k * group)
        entries = to_owners(entries, 0, 0)
        entries = jnp.min(entries.reshape(num_shards, num // num_shards, k * group), axis=0)
        vals, position = last_k(entries, bound, k, compact)
        index = jnp.take_along_axis(groups, position // group, axis=1) * group + position % group
        return vals, index.astype(jnp.int32)

    if exchange == "entries":
        return every_entry(None)
    bits = keep_bits((group_scores(local) <= every_bound[:, None, None]) & mine[:, :, None])  # [B, k, W]
    count = jnp.sum(jax.lax.population_count(bits).astype(jnp.int32), axis=(1, 2))  # [B] mine under the bound
    counts = stack(count)  # [P, B], the same on every device
    capacity = 2 * k
    first = jnp.sum(jnp.where(jnp.arange(num_shards)[:, None] < me, counts, 0), axis=0)

    def under_bound(_):
        valid, slot_group, slot_entry, _ = compact_chosen(bits, first, capacity)
        row = jnp.take_along_axis(local, slot_group, axis=1) * group + slot_entry
        values = jnp.where(valid, scores_at(row), jnp.inf)
        index = jnp.where(valid, me * rows + row, jnp.iinfo(jnp.int32).max)
        packed, layout = _pack((values, index))
        received = to_owners(packed, 0, 0).reshape(num_shards, num // num_shards, -1)
        values, index = _unpack(received, layout)  # each slot filled by one sender, +inf elsewhere
        vals, position = _top_k_smallest(jnp.min(values, axis=0), k)
        return vals, jnp.take_along_axis(jnp.min(index, axis=0), position, axis=1)

    if capacity >= k * group:
        return under_bound(None)
    fits = jnp.all(jnp.sum(counts, axis=0) <= capacity)
    return jax.lax.cond(fits, under_bound, every_entry, None)


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
    exchange="compact",
    split_group=None,
):
    """The jitted search. Private knobs for the benchmarks: ``levels``, the depth of the exact
    selection's hierarchy (0: ``lax.top_k``); ``compact``, whether the last sort of each level of
    `smallest_k` takes only the candidates under the k-th group minimum (`top_k_below`; the default
    for k >= `_COMPACT_K`); ``sharded_selection``: "split" (`_search_split`, on one device too) or
    "merge" (`smallest_k` on each device's rows, then a merge of the devices' lists: the one-device
    route before); ``exchange`` (`_search_split`): "compact" or "entries"; ``split_group``: its
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
