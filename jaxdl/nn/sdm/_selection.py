"""Exact k smallest entries of each row, by a hierarchy of group minima (ties to the lower index).

``lax.top_k`` on a GPU sorts each whole row: for a (1024, 1M) distance matrix that is about 70 ms at
k = 128 and at k = 2048, twenty times the bf16 distance GEMM itself (issue #17). Two-stage selection
sorts far less and stays exact:

1. split each row into groups of g consecutive entries and take each group's minimum;
2. select the k groups with the smallest minima (ties: lower group index) -- recursively, the same
   way, since that is again a k-smallest problem on n / g entries;
3. gather those k groups' k·g entries, in increasing index order, and ``lax.top_k`` them.

Why it is exact: let x be one of the k smallest entries (order: value, then index), in group h. If h
were not selected, each of the k selected groups would have a minimum below min_h <= x, or equal to it
with a lower group index; either way each holds an entry that precedes x, so k entries precede x, a
contradiction. Sorting work drops from n per row to about n/g + k·g (g ~ sqrt(n/k) balances them).

4. (``compact``) only the candidates at or below the k-th smallest group minimum can be among the k
   smallest (the k selected minima are k entries at or below it), and after step 2 a row holds about
   k of them, not k·g: they are compacted in index order (a running count by two small matmuls, a
   scatter) and the final sort takes 2k entries; rows with more (ties at the bound) sort all k·g
   (`top_k_below`). Measured on an H200 (1,024 x 1M, bf16 products): 10.1 -> 8.3 ms at k = 2,048,
   nothing at k = 128 (6.36 vs 6.34 ms; 3.63 vs 3.80 ms on 2 GPUs), so the index compacts from
   k = 1,024 on. The branch costs a device-to-host read of one flag per level.

   Measured and not kept (H200s, k = 2,048, bf16): taking the last sort's k·g candidates by one
   more level of group minima, with no branch and so no flag read, 9.46 vs 8.83 ms on one GPU and
   6.09 vs 5.37 ms on two; compacting at the outermost level only (one flag read instead of two)
   8.74 / 5.64 ms. The flag reads are not what costs.

5. (`keep_bits`, `compact_chosen`; the index's split route, `_split._search_split`) the same
   compaction without a scatter: a mask of each chosen group's entries under the bound (one uint32
   word per 32 rows), their running count over the groups, and for each of the 2k slots a binary
   search over that count and then over the mask's bits names the entry it holds; only those
   entries are gathered. Its cost no longer grows with k·g through a scatter of every candidate, so
   the groups can be much larger (125-250 rows at 1M rows): few enough minima for one direct sort
   and no second level. On an H200 at 1,024 x 1M (bf16) the search took 7.0 instead of 8.7 ms at
   k = 2,048 and 5.3 instead of 6.5 ms at k = 128 (benchmarks/RESULTS.md, run D).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_DIRECT_MAX = 8192
"""Rows up to this length (or with k close to it) go straight to ``lax.top_k``."""


def _group_size(n: int, k: int, compact: bool = False) -> int:
    """A power of two near sqrt(n / k), or 1 when grouping would not shrink the sort: the k * g
    candidates and n / g minima must be fewer than n / 2 entries (fewer than n with ``compact``,
    where the candidates are compacted to 2k before their sort)."""
    if n <= _DIRECT_MAX:
        return 1
    g = 2 ** max(1, round(math.log2(math.sqrt(n / k))))
    g = min(g, 1024)
    if -(-n // g) < k or k * g + -(-n // g) > (n if compact else n // 2):
        return 1
    return g


def smallest_k(
    values: jax.Array, k: int, levels: int = 2, compact: bool = True
) -> tuple[jax.Array, jax.Array]:
    """The k smallest entries of each row of ``values [B, n]``, ascending, ties to the lower index.

    ``levels`` caps the depth of the group-minimum hierarchy (0: plain ``lax.top_k``); ``compact``
    sorts only the candidates at or below the k-th group minimum (`top_k_below`). NaN must be
    replaced by +inf beforehand.

    >>> import jax.numpy as jnp
    >>> vals, idx = smallest_k(jnp.array([[3.0, 1.0, 2.0, 1.0]]), 3)
    >>> vals.tolist(), idx.tolist()
    ([[1.0, 1.0, 2.0]], [[1, 3, 2]])
    """
    num_rows, n = values.shape
    g = _group_size(n, k, compact) if levels > 0 else 1
    if g == 1:
        return _top_k_smallest(values, k)
    num_groups = -(-n // g)
    padded = jnp.pad(values, ((0, 0), (0, num_groups * g - n)), constant_values=jnp.inf)
    grouped = padded.reshape(num_rows, num_groups, g)
    group_minima, groups = smallest_k(jnp.min(grouped, axis=2), k, levels - 1, compact)
    groups = jnp.sort(groups, axis=1)  # index order, so that top_k's ties go to the lower index
    candidates = jnp.take_along_axis(grouped, groups[:, :, None], axis=1).reshape(num_rows, k * g)
    vals, position = last_k(candidates, group_minima[:, -1], k, compact)
    index = jnp.take_along_axis(groups, position // g, axis=1) * g + position % g
    return vals, index.astype(jnp.int32)


def last_k(candidates: jax.Array, bound: jax.Array, k: int, compact: bool) -> tuple[jax.Array, jax.Array]:
    """The k smallest of the chosen groups' entries ``candidates [B, k·g]`` (values, positions), ties
    to the lower position; ``bound [B]`` is the k-th smallest group minimum.

    ``compact``: False sorts them all (``lax.top_k``); True compacts those under ``bound`` first
    (`top_k_below`, one device-to-host flag read for its fallback).

    >>> import jax.numpy as jnp
    >>> vals, pos = last_k(jnp.array([[5.0, 1.0, 9.0, 1.0]]), jnp.array([5.0]), 2, True)
    >>> vals.tolist(), pos.tolist()
    ([[1.0, 1.0]], [[1, 3]])
    """
    return top_k_below(candidates, bound, k) if compact else _top_k_smallest(candidates, k)


def _top_k_smallest(values: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """``lax.top_k`` for the k smallest of each row (values ascending, int32 positions)."""
    neg, position = jax.lax.top_k(-values, k)
    return -neg, position.astype(jnp.int32)


_PREFIX_BLOCK = 128
"""Block of the matmul prefix count in `top_k_below` (counts up to 128 are exact in bfloat16)."""


def _prefix_count(keep: jax.Array) -> jax.Array:
    """Inclusive running count of ``keep [B, n]`` (bool) along rows, as int32, by two matmuls.

    Within blocks of 128 and then over the block totals, each a product with a triangular 0/1 matrix:
    every operand is an integer <= 128 (exact in bfloat16) and every sum < 2^24 (exact in the float32
    accumulator), so the counts are exact. ``cumsum`` lowers to a reduce-window on GPUs.
    """
    rows, n = keep.shape
    block = _PREFIX_BLOCK
    blocks = -(-n // block)
    padded = jnp.pad(keep, ((0, 0), (0, blocks * block - n))).astype(jnp.bfloat16)
    upper = jnp.triu(jnp.ones((block, block), jnp.bfloat16))  # upper[i, j] = i <= j
    within = jnp.dot(padded.reshape(rows, blocks, block), upper, preferred_element_type=jnp.float32)
    totals = within[:, :, -1].astype(jnp.bfloat16)  # exact: at most 128
    strictly = jnp.triu(jnp.ones((blocks, blocks), jnp.bfloat16), 1)  # strictly[i, j] = i < j
    before = jnp.dot(totals, strictly, preferred_element_type=jnp.float32)
    counts = (within + before[:, :, None]).reshape(rows, blocks * block)[:, :n]
    return counts.astype(jnp.int32)


def top_k_below(candidates: jax.Array, bound: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """The k smallest of ``candidates [B, n]`` (values, positions), ties to the lower position, given
    ``bound [B]`` with at least k entries of each row at or below it.

    Only entries <= bound can be among the k smallest: when every row has at most ``2k`` of them they
    are compacted in order (a running count, then a scatter) and ``lax.top_k`` sorts 2k entries a row
    instead of n; otherwise (many ties at the bound) it sorts the whole rows. After group-minimum
    selection the bound is the k-th smallest group minimum and a row holds about k entries below it.

    >>> import jax.numpy as jnp
    >>> vals, pos = top_k_below(jnp.array([[5.0, 1.0, 9.0, 1.0, 3.0, 7.0]]), jnp.array([3.0]), 2)
    >>> vals.tolist(), pos.tolist()
    ([[1.0, 1.0]], [[1, 3]])
    """
    rows, n = candidates.shape
    capacity = 2 * k
    if capacity >= n:
        return _top_k_smallest(candidates, k)
    keep = candidates <= bound[:, None]

    def compacted(candidates):
        slot = jnp.where(keep, _prefix_count(keep) - 1, capacity)  # capacity: dropped
        row = jnp.arange(rows)[:, None]
        values = jnp.full((rows, capacity), jnp.inf, candidates.dtype)
        values = values.at[row, slot].set(candidates, mode="drop", unique_indices=True)
        source = jnp.zeros((rows, capacity), jnp.int32)
        source = source.at[row, slot].set(
            jnp.arange(n, dtype=jnp.int32)[None, :], mode="drop", unique_indices=True
        )
        smallest, position = _top_k_smallest(values, k)
        return smallest, jnp.take_along_axis(source, position, axis=1)

    fits = jnp.all(jnp.sum(keep, axis=1) <= capacity)
    return jax.lax.cond(fits, compacted, lambda c: _top_k_smallest(c, k), candidates)


_WORD = 32
"""Bits in one word of a group's keep mask (`keep_bits`): a group of g rows has ceil(g / 32) words."""


def _count_at_most(ends: jax.Array, rank: jax.Array) -> jax.Array:
    """``#{j : ends[b, j] <= rank[b, s]}`` for nondecreasing rows ``ends [B, n]``: a binary search
    unrolled into elementwise ops and gathers (one fused loop on a GPU, no sort)."""
    n = ends.shape[1]
    found = jnp.zeros(rank.shape, jnp.int32)
    step = 1 << (n.bit_length() - 1)
    while step:
        candidate = found + step
        value = jnp.take_along_axis(ends, jnp.minimum(candidate, n) - 1, axis=1)
        found = jnp.where((candidate <= n) & (value <= rank), candidate, found)
        step //= 2
    return found


def _select_bit(word: jax.Array, rank: jax.Array) -> jax.Array:
    """The position of the ``rank``-th (0-based) set bit of each uint32 ``word``: a binary search over
    the counts of the bits below each position."""
    position = jnp.zeros(word.shape, jnp.int32)
    for step in (16, 8, 4, 2, 1):
        candidate = position + step
        below = word & ((jnp.uint32(1) << candidate.astype(jnp.uint32)) - jnp.uint32(1))
        position = jnp.where(jax.lax.population_count(below).astype(jnp.int32) <= rank, candidate, position)
    return position


def keep_bits(keep: jax.Array) -> jax.Array:
    """``[B, c, W]`` uint32 masks of ``keep [B, c, g]``, W = ceil(g / 32) words a group (bit t of word
    w: entry 32 w + t of the group).

    >>> import jax.numpy as jnp
    >>> keep_bits(jnp.arange(40).reshape(1, 1, 40) % 13 == 0).tolist()  # entries 0, 13, 26, 39
    [[[67117057, 128]]]
    """
    rows, chosen, group = keep.shape
    words = -(-group // _WORD)
    keep = jnp.pad(keep, ((0, 0), (0, 0), (0, words * _WORD - group))).reshape(rows, chosen, words, _WORD)
    shifts = jnp.left_shift(jnp.uint32(1), jnp.arange(_WORD, dtype=jnp.uint32))
    return jnp.sum(jnp.where(keep, shifts, jnp.uint32(0)), axis=3, dtype=jnp.uint32)


def compact_chosen(bits: jax.Array, first: jax.Array, capacity: int):
    """Slots of the entries marked in ``bits [B, c, W]`` (`keep_bits` of c chosen groups, in group
    order), placed in order from slot ``first [B]`` of ``capacity`` slots.

    Returns ``(valid [B, capacity], slot_group [B, capacity], slot_entry [B, capacity], count [B])``:
    slot ``first + r`` holds the r-th marked entry (group order, then entry order), entry
    ``slot_entry`` of chosen group ``slot_group``; ``count`` is the number marked. Gathers and
    elementwise work over the slots (a binary search over the groups' running counts, then over the
    words and bits), no scatter and no sort.

    >>> import jax.numpy as jnp
    >>> bits = jnp.array([[[0b101], [0], [0b10]]], jnp.uint32)  # entries 0 and 2 of group 0, 1 of 2
    >>> valid, g, e, n = compact_chosen(bits, jnp.array([1]), 5)
    >>> valid.tolist(), g.tolist(), e.tolist(), n.tolist()
    ([[False, True, True, True, False]], [[0, 0, 0, 2, 0]], [[0, 0, 2, 1, 0]], [3])
    """
    word_counts = jax.lax.population_count(bits).astype(jnp.int32)  # [B, c, W]
    per_group = jnp.sum(word_counts, axis=2)
    ends = jnp.cumsum(per_group, axis=1)  # inclusive running count, [B, c]
    count = ends[:, -1]
    rank = jnp.arange(capacity, dtype=jnp.int32)[None, :] - first[:, None]
    valid = (rank >= 0) & (rank < count[:, None])
    rank = jnp.where(valid, rank, 0)
    slot_group = jnp.minimum(_count_at_most(ends, rank), bits.shape[1] - 1)
    within = rank - jnp.take_along_axis(ends - per_group, slot_group, axis=1)  # rank in the group
    words = jnp.take_along_axis(bits, slot_group[:, :, None], axis=1)  # [B, capacity, W]
    counts = jnp.take_along_axis(word_counts, slot_group[:, :, None], axis=1)
    word_index = jnp.zeros(within.shape, jnp.int32)
    word, past = words[:, :, 0], valid
    for w in range(1, bits.shape[2]):  # the word holding the entry: skip the words it lies past
        past = past & (counts[:, :, w - 1] <= within)
        within = jnp.where(past, within - counts[:, :, w - 1], within)
        word_index = jnp.where(past, w, word_index)
        word = jnp.where(past, words[:, :, w], word)
    return valid, slot_group, word_index * _WORD + _select_bit(word, within), count
