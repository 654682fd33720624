"""The exact selection of the index (`index.ExemplarIndex.search`), on one device or split over a mesh.

`_search_split`: the minima of groups of g rows, the k groups with the smallest minima, then only
the entries of those groups at or below the k-th minimum (about k of the k·g), compacted by gathers
and sorted. Over a mesh the exemplar rows are split over the devices and the selection over the
queries: each device scores all queries against its rows, the group minima go by an all-to-all to
the device selecting for those queries, which sends each device the chosen groups it holds; each
device masks and compacts only those groups' entries under the bound and sends them back (the owned
exchange, `_owned_capacities`).

Measured on H200s at 1,024 x 1M x 1,000 (bf16 products; benchmarks/RESULTS.md, run E): one GPU
searches in 7.0-7.2 ms at k = 2,048 and 5.6-5.7 ms at k = 128 (0.29x / 0.24x torch ``mm`` +
``topk``; the bf16 GEMM with its scores written takes 3.9 ms). Two GPUs, the queries already on
both, take 3.9-4.1 / 3.1-3.4 ms, 1.71-1.90x / 1.63-1.78x one GPU per blocked call (the route
before the owned exchange: 1.58-1.66x / 1.64-1.69x, its keep masks computed for all k groups on
every device), 1.82-1.87x / 1.74-1.83x with 10 calls queued a wait, and 1.9-1.98x in kernel time.
A blocked call also pays 0.55-0.95 ms between two calls' kernels (the wait's wake-up, the next
dispatch), on one GPU as on two, which does not halve: the sharded bf16 GEMM alone, with no
selection, scales 1.48-1.87x per blocked call in the same runs. float32 (``refine=16``) scales 1.88-1.97x. The per-device top-k and merge route
measured 1.17-1.35x. Query chunks in one program, with or without XLA's latency-hiding scheduler,
did not hide the all-to-alls; the last sorts without the compaction branch's read of its flag to
the host were slower, not faster. The branch to the fallbacks costs nothing measurable per blocked
call, but it keeps the host from queueing the next call until its predicate is read back (0.3 ms a
queued call on 2 GPUs; without it 1.94-1.98x); command buffers with conditional nodes (an XLA flag)
gained nothing clear (runs A-E). The search is one jitted
function per (index layout, shapes, options): repeated calls compile nothing, eagerly or inside a
user's ``jit``.
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


def _split_group_size(rows: int, num_shards: int, k: int, exchange: str = "owned") -> int | None:
    """The first-level group of `_search_split`, a divisor of one shard's ``rows``, or None (then the
    mesh takes the merge route and one device `smallest_k` on whole rows).

    ``"entries"``: `smallest_k`'s power of two for all rows, halved until it divides (None when that
    shrinks it more than 4x). ``"owned"`` and ``"compact"``: the owners send only the entries under
    the bound, so the group no longer sets the second exchange's size, and the keep masks cost about
    as much per entry as the minima: sqrt(8 n / k) balances the k g masked entries against the n / g minima (measured
    on an H200 at 1M rows: g = 250 beat 100, 125 and 32 at k = 128), and at least n / ``_DIRECT_MAX``,
    so that the minima are one direct sort (no second level with its host-read branch: g = 125 beat
    32 at k = 2,048); the divisor of ``rows`` nearest to that within a factor of 2, at most 1,024.
    """
    ideal = _group_size(rows * num_shards, k)
    if exchange == "entries" or ideal == 1:
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


def _capacity(mean: float, std: float, limit: int) -> int:
    """Slots for a count of about ``mean``: six standard deviations and 8 over it, in multiples of 8,
    at most ``limit``."""
    return min(limit, 8 * math.ceil((mean + 6 * std + 8) / 8))


def _owned_capacities(n: int, k: int, group: int, num_shards: int) -> tuple[int, int]:
    """The slots a device gives each query in the owned exchange of `_search_split`: its share of the
    k chosen groups, and of the entries under the bound.

    For i.i.d. scores a fraction x = k g / n of the groups is chosen and about e = k (-ln(1 - x) / x)
    entries lie under the bound (k of them the groups' minima; at n = 1M, g = 125: 1.15 k at
    k = 2,048, 1.02 k at k = 128). With the rows in no particular order each of P devices holds a
    binomial share of the groups, k / P on average, and about e / P of the entries (their count
    varies as a Poisson count would).
    """
    x = min(k * group / n, 0.99)
    entries = k * -math.log1p(-x) / x / num_shards
    groups = k / num_shards
    return _capacity(groups, math.sqrt(groups * (1 - 1 / num_shards)), k), _capacity(
        entries, math.sqrt(entries), 2 * k
    )


def _search_split(
    vectors, sq_norms, queries, exclude, *, axis, k, group, precision, levels, compact, exchange="owned"
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
    over senders). ``"owned"``: only the entries at or below the query's k-th group minimum (the
    bound; about k of them, the only ones that can be among the k smallest, see `smallest_k`). The
    selecting device sends each device the bound and the chosen groups it owns (one contiguous run
    of the sorted list, in slots for its expected share, `_owned_capacities`); each device marks and
    compacts only those groups' entries under the bound, in index order, into slots for its share
    of them, and the selecting device sorts the devices' slots side by side. When a query's share
    overflows its slots on some device (rows stored in an order that puts a query's neighbours on
    one device, ties at the bound), every device, agreed by one ``pmax``, redoes it with room for
    all k groups and 2k entries (``"compact"``, the route alone), and past that takes the
    ``"entries"`` exchange. The work of the common case is queued before the branch that reads the
    agreement to the host, so the device does not wait for the branch's launches.
    Returns this device's ``B / P`` queries' ``(scores [B / P, k], indices)``.
    """
    rows, num = vectors.shape[0], queries.shape[0]
    if axis is None:  # one device: the exchanges are the identity
        num_shards, me = 1, 0

        def to_owners(x, split, concat):
            return x

        def gather(x):
            return x

        def agree(flag):
            return flag
    else:
        num_shards, me = jax.lax.psum(1, axis), jax.lax.axis_index(axis)

        def to_owners(x, split, concat):
            return jax.lax.all_to_all(x, axis, split, concat, tiled=True)

        def gather(x):
            return jax.lax.all_gather(x, axis, axis=0, tiled=True)

        def agree(flag):
            return jax.lax.pmax(flag, axis)

    # The GEMM's output stays the one [B, rows] buffer: the routes below gather from it and finish
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
    mine_queries = num // num_shards

    def every_entry():
        wanted = gather(groups) - me * per_shard  # [B, k], local
        mine = (wanted >= 0) & (wanted < per_shard)
        local = jnp.where(mine, wanted, 0)  # groups held elsewhere read group 0 (a cached line), masked
        # Each chosen group has one owner: the minimum over the P senders is its entries.
        entries = jnp.where(mine[:, :, None], group_scores(local), jnp.inf).reshape(num, k * group)
        entries = to_owners(entries, 0, 0)
        entries = jnp.min(entries.reshape(num_shards, mine_queries, k * group), axis=0)
        vals, position = last_k(entries, bound, k, compact)
        index = jnp.take_along_axis(groups, position // group, axis=1) * group + position % group
        return vals, index.astype(jnp.int32)

    def owned(group_slots, entry_slots):
        """The owned exchange with these slots a query: its result and whether every share fit."""
        if axis is None:  # one device holds every chosen group
            local, every_bound, held, spilled = groups, bound, True, False
        else:
            # Per device d, the run of my queries' sorted groups that d owns, in ``group_slots`` slots.
            device = groups // per_shard
            counts = jnp.sum(device[:, :, None] == jnp.arange(num_shards), axis=1)  # [B / P, P]
            starts = jnp.cumsum(counts, axis=1) - counts
            slot = jnp.arange(group_slots, dtype=jnp.int32)
            position = jnp.minimum(starts[:, :, None] + slot, k - 1).reshape(mine_queries, -1)
            run = jnp.take_along_axis(groups, position, axis=1).reshape(mine_queries, num_shards, group_slots)
            local = run - jnp.arange(num_shards, dtype=jnp.int32)[:, None] * per_shard
            local = jnp.where(slot < counts[:, :, None], local, -1)  # -1: an empty slot
            # Per device d, its slots and the bound for my queries, as rows d * B / P + b; to the owners.
            outgoing = (jnp.swapaxes(local, 0, 1).reshape(num, group_slots), jnp.tile(bound, num_shards))
            packed, layout = _pack(outgoing)
            local, every_bound = _unpack(to_owners(packed, 0, 0), layout)  # [B, group_slots], [B]
            held = (local >= 0)[:, :, None]
            local = jnp.maximum(local, 0)  # empty slots read group 0 (a cached line), masked
            spilled = jnp.any(counts > group_slots)
        bits = keep_bits((group_scores(local) <= every_bound[:, None, None]) & held)  # [B, group_slots, W]
        valid, slot_group, slot_entry, count = compact_chosen(bits, jnp.zeros(num, jnp.int32), entry_slots)
        row = jnp.take_along_axis(local, slot_group, axis=1) * group + slot_entry
        values = jnp.where(valid, scores_at(row), jnp.inf)
        index = jnp.where(valid, me * rows + row, jnp.iinfo(jnp.int32).max)
        if axis is not None:  # to the selecting devices: [P, B / P, entry_slots], side by side in row order
            packed, layout = _pack((values, index))
            received = to_owners(packed, 0, 0).reshape(num_shards, mine_queries, -1)
            values, index = (
                jnp.swapaxes(a, 0, 1).reshape(mine_queries, -1) for a in _unpack(received, layout)
            )
        vals, position = _top_k_smallest(values, k)
        # An infinite bound could tie a real entry with an empty slot: such queries take the fallback.
        overflow = spilled | jnp.any(count > entry_slots) | ~jnp.all(bound < jnp.inf)
        return (vals, jnp.take_along_axis(index, position, axis=1)), agree(overflow.astype(jnp.int32)) == 0

    def first_fit(ladder):  # the owned exchange with the first slots that fit, else every entry
        result, fits = owned(*ladder[0])
        return jax.lax.cond(
            fits, lambda: result, lambda: first_fit(ladder[1:]) if ladder[1:] else every_entry()
        )

    if exchange == "entries":
        return every_entry()
    full = (k, 2 * k)  # room for every chosen group and 2k entries on each device
    slots = _owned_capacities(rows * num_shards, k, group, num_shards) if exchange == "owned" else full
    return first_fit([slots, full] if slots != full else [full])
