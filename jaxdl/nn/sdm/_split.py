"""The exact selection of the index (`index.ExemplarIndex.search`), on one device or split over a mesh.

`_search_split`, on one device or many: the minima of groups of g rows, the k
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

import math

import jax
import jax.numpy as jnp

from jaxdl.nn.sdm._scores import _cross, _finish, _scores
from jaxdl.nn.sdm._selection import (
    _DIRECT_MAX,
    _group_size,
    _top_k_smallest,
    compact_chosen,
    keep_bits,
    last_k,
    smallest_k,
)


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
