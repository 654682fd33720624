"""Pallas kernels for the fused optimizer steps: outputs written into donated inputs.

Used by `jaxdl.optim.fused` with `kernel="pallas"`, and imported only then (importing Pallas
costs about half a second). On a GPU the kernels are lowered through Triton. On any other backend
the same computation runs as plain XLA, unless `INTERPRET_OFF_GPU` is set (the tests set it, to
run the kernels in Pallas's interpreter on CPU).

`multi_tensor` is PyTorch's `multi_tensor_apply` idea: one kernel updates many parameter leaves
and their moment buffers, where XLA writes each output leaf with a kernel of its own (a few
hundred bias and norm-scale vectors cost a few hundred launches, and each large leaf's kernel
its own ramp-up and tail). It also reduces: each program writes its block's partial sums to a
small array, and the caller finishes the per-leaf values with a few small XLA reductions (apex's
multi_tensor_l2norm does the same for LAMB's norms).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

# Run the kernels in Pallas's interpreter off GPUs (tests) instead of falling back to XLA.
INTERPRET_OFF_GPU = False

# `multi_tensor`: elements per program, warps per program, leaves per kernel (a branch each).
_LEAF_BLOCK = 1024
_LEAF_WARPS = 4
# 217 leaves: 3 kernels a pass (72-73 leaves each); 4 kernels (64) and 7 (32) were 2-4% slower
# (RESULTS.md, runs H and I). Compile time grows with the leaves a kernel.
_LEAVES_PER_KERNEL = 80
# The same for kernels that also reduce (`n_sums`); None: as above. Blocks of 4,096 make each
# 4,096-element leaf one block, so its per-leaf values need no reduction between the passes:
# ⊥SGD on 217 leaves 0.627 -> 0.604 ms (run I).
_SUM_BLOCK: int | None = 4096
_SUM_WARPS: int | None = 8


def _compiler_params(num_warps: int):
    if jax.default_backend() != "gpu":
        return None
    from jax.experimental.pallas import triton as pltriton

    return pltriton.CompilerParams(num_warps=num_warps, num_stages=1)


def _use_kernel() -> bool:
    return jax.default_backend() == "gpu" or INTERPRET_OFF_GPU


def _scalar_vector(scalars: Sequence[jax.Array]) -> jax.Array:
    values = [jnp.asarray(s, jnp.float32) for s in scalars] or [jnp.float32(0)]
    return _padded(jnp.stack(values))


def _padded(values: jax.Array) -> jax.Array:
    """A 1-D float32 vector padded with zeros to a power of 2 (at least 8) elements."""
    out = jnp.zeros((max(8, pl.next_power_of_2(values.shape[0])),), jnp.float32)
    return out.at[: values.shape[0]].set(values)


class MultiTensor(NamedTuple):
    """What `multi_tensor` returns: the new leaves 0 (in their shapes; empty when not written),
    the storage arrays (new where written, else the inputs), and the block sums: `sums[i, b]` is
    sum i of block b, blocks in leaf order, `blocks[j]` of them for leaf j (None without sums)."""

    leaves: list[jax.Array]
    storage: list[jax.Array]
    sums: jax.Array | None
    blocks: tuple[int, ...]


def multi_tensor(
    bodies: Sequence[Callable[..., Sequence[jax.Array]]],
    leaves: Sequence[Sequence[jax.Array]],
    storage: Sequence[jax.Array],
    where: Sequence[Sequence[tuple[int, int]]],
    scalars: Sequence[jax.Array],
    *,
    leaf_scalars: jax.Array | None = None,
    n_sums: int = 0,
    write_leaves: bool = True,
    writes: Sequence[bool] | None = None,
    block: int | None = None,
    num_warps: int | None = None,
    leaves_per_kernel: int | None = None,
) -> MultiTensor:
    """Update many leaves and their optimizer buffers with few kernels (PyTorch's
    `multi_tensor_apply`, as Pallas kernels), and optionally reduce over them.

    Leaf j is `leaves[l][j]` for each input l (any shape; `leaves[0]` are the parameters) and has
    buffer b at element `where[j][b][1]` of the 1-D array `storage[where[j][b][0]]` (one flat
    buffer shared by many small leaves, or a large leaf's own buffer). Computes, on each block of
    each leaf, `bodies[j](*leaf_blocks, *buffer_blocks, *scalars, *leaf_scalars[j])`, which
    returns the new block of leaf 0 (if `write_leaves`), the new block of each buffer whose
    storage array is written (`writes`, default all), then `n_sums` scalars: the block's partial
    sums (reductions over the block; entries past a leaf's end are loaded as 0). Written arrays
    are written in place of their inputs: donate them to the enclosing jit. `leaf_scalars` is a
    (leaves, n) array of per-leaf values. Every program of a kernel handles `block` elements of
    one leaf (masked at the leaf's end); the leaves are dealt round-robin to ceil(leaves /
    `leaves_per_kernel`) kernels (each leaf is one branch of its kernel, and compile time grows
    with them; pass the leaves largest first to give every kernel a share of the large ones).
    The defaults are the module's `_LEAF_BLOCK`, `_LEAF_WARPS`, `_LEAVES_PER_KERNEL` (`_SUM_BLOCK`,
    `_SUM_WARPS` where set, for kernels that reduce; all read at call time). Off GPUs (unless
    `INTERPRET_OFF_GPU`), plain XLA with one block per leaf.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.optim._pallas import multi_tensor
      >>> ps, gs, m = [jnp.ones(2), jnp.zeros(3)], [jnp.ones(2), jnp.ones(3)], jnp.zeros(5)
      >>> body = lambda p, g, m, a: (p - a * g, m + g, jnp.sum(g * g))
      >>> out = multi_tensor([body] * 2, [ps, gs], [m], [[(0, 0)], [(0, 2)]], [0.5], n_sums=1)
      >>> print(out.leaves[0], out.leaves[1], out.storage[0], out.sums, out.blocks)
      [0.5 0.5] [-0.5 -0.5 -0.5] [1. 1. 1. 1. 1.] [[2. 3.]] (1, 1)
    """
    writes = tuple(writes) if writes is not None else (True,) * len(storage)
    if not _use_kernel():
        return _multi_tensor_xla(
            bodies, leaves, storage, where, scalars, leaf_scalars, n_sums, write_leaves, writes
        )
    if n_sums:
        block, num_warps = block or _SUM_BLOCK, num_warps or _SUM_WARPS
    block, num_warps = block or _LEAF_BLOCK, num_warps or _LEAF_WARPS
    per_kernel = leaves_per_kernel or _LEAVES_PER_KERNEL
    k = len(leaves[0])
    sizes = [x.size for x in leaves[0]]
    block = min(block, max(8, pl.next_power_of_2(max(sizes))))
    counts = tuple(pl.cdiv(n, block) for n in sizes)
    slots = [sum(counts[:j]) for j in range(k)]  # each leaf's first block in `sums`
    n_kernels = pl.cdiv(k, per_kernel)
    # Kernel c takes leaves c, c + n_kernels, ...: given leaves sorted by size, every kernel gets
    # large and small leaves, so no kernel is a handful of small leaves (a launch and a single
    # program's latency, not bandwidth).
    # (In runs of `per_kernel` leaves instead, ⊥AdamW on 217 leaves took 1.184 instead of 1.077 ms:
    # RESULTS.md, runs D and E.)
    kernels = [range(c, k, n_kernels) for c in range(n_kernels)]
    own = None if leaf_scalars is None else _padded(leaf_scalars.astype(jnp.float32).reshape(-1))
    sums = None
    new_leaves: list = [None] * k
    new_storage = list(storage)
    for members in kernels:
        outs, new_storage, sums = _multi_tensor_kernel(
            [bodies[j] for j in members],
            [[jnp.ravel(group[j]) for j in members] for group in leaves],
            new_storage,
            [where[j] for j in members],
            scalars,
            (own, None if leaf_scalars is None else leaf_scalars.shape[1], list(members)),
            (sums, n_sums, [slots[j] for j in members], sum(counts)),
            write_leaves,
            writes,
            block,
            num_warps,
        )
        for x, j in zip(outs, members, strict=False):
            new_leaves[j] = x.reshape(leaves[0][j].shape)
    return MultiTensor(
        new_leaves if write_leaves else [],
        new_storage,
        None if sums is None else sums.reshape(n_sums, -1),
        counts,
    )


def _multi_tensor_xla(bodies, leaves, storage, where, scalars, leaf_scalars, n_sums, write_leaves, writes):
    """The same computation as plain XLA (off GPUs): one body call (one block) per leaf."""
    scalars = [jnp.asarray(s, jnp.float32) for s in scalars]
    storage = list(storage)
    new_leaves, sums = [], []
    for j, body in enumerate(bodies):
        n = leaves[0][j].size
        bufs = [jax.lax.dynamic_slice_in_dim(storage[s], at, n) for s, at in where[j]]
        own = [] if leaf_scalars is None else list(leaf_scalars[j])
        out = list(body(*[jnp.ravel(group[j]) for group in leaves], *bufs, *scalars, *own))
        if write_leaves:
            new_leaves.append(out.pop(0).reshape(leaves[0][j].shape))
        for s, at in where[j]:
            if writes[s]:
                new = out.pop(0).astype(storage[s].dtype)
                storage[s] = jax.lax.dynamic_update_slice_in_dim(storage[s], new, at, 0)
        sums.append(jnp.stack([jnp.asarray(x, jnp.float32) for x in out]) if n_sums else None)
    stacked = jnp.stack(sums, axis=1) if n_sums else None
    return MultiTensor(new_leaves, storage, stacked, (1,) * len(bodies))


def _multi_tensor_kernel(
    bodies, leaves, storage, where, scalars, own, sums, write_leaves, writes, block, num_warps
):
    """One kernel over `leaves` (lists of 1-D arrays): program i handles one block of one leaf.
    `own` is (the padded per-leaf scalars or None, scalars per leaf, each leaf's index in them);
    `sums` is (the flat sums array, or None for a new one, sums per block, each leaf's first
    slot, slots per sum). Returns the new leaves, the storage and the sums array."""
    from jax.experimental.pallas import triton as pltriton

    own_array, n_own, own_index = own
    sums_array, n_sums, sums_slots, sums_stride = sums
    n_own = n_own or 0
    n_in, k, n_store, n_scal = len(leaves), len(leaves[0]), len(storage), len(scalars)
    written = [s for s in range(n_store) if writes[s]]
    sizes = [x.shape[0] for x in leaves[0]]
    programs = [pl.cdiv(n, block) for n in sizes]
    firsts = [sum(programs[:j]) for j in range(k)]
    leaf_dtypes = []
    for j in range(k):
        args = [jax.ShapeDtypeStruct((block,), g[j].dtype) for g in leaves]
        args += [jax.ShapeDtypeStruct((block,), storage[s].dtype) for s, _ in where[j]]
        zeros = [jnp.float32(0)] * (n_scal + n_own)
        out = jax.eval_shape(lambda *a, j=j, z=zeros: tuple(bodies[j](*a, *z)), *args)
        leaf_dtypes.append(out[0].dtype if write_leaves else None)

    n_lead = 1 + (own_array is not None)
    sums_in = n_sums > 0 and sums_array is not None
    n_inputs = n_lead + n_in * k + n_store + sums_in

    def kernel(*refs):
        scal_ref, own_ref = refs[0], refs[1] if own_array is not None else None
        ins, outs = refs[n_lead:n_inputs], refs[n_inputs:]
        leaf_outs = outs[:k] if write_leaves else []
        store_outs = dict(zip(written, outs[len(leaf_outs) :], strict=False))
        sums_out = outs[-1] if n_sums else None
        pid = pl.program_id(0)
        scal = [scal_ref[i] for i in range(n_scal)]
        for j in range(k):

            @pl.when((pid >= firsts[j]) & (pid < firsts[j] + programs[j]))
            def _(j=j):
                at = (pid - firsts[j]) * block
                mask = at + jax.lax.iota(jnp.int32, block) < sizes[j]
                refs_in = [ins[i * k + j].at[pl.ds(at, block)] for i in range(n_in)]
                refs_in += [ins[n_in * k + s].at[pl.ds(start + at, block)] for s, start in where[j]]
                mine = [own_ref[own_index[j] * n_own + i] for i in range(n_own)]
                loaded = [pltriton.load(r, mask=mask, other=0) for r in refs_in]
                new = list(bodies[j](*loaded, *scal, *mine))
                refs_out = [leaf_outs[j].at[pl.ds(at, block)]] if write_leaves else []
                refs_out += [store_outs[s].at[pl.ds(start + at, block)] for s, start in where[j] if writes[s]]
                for ref, value in zip(refs_out, new, strict=False):
                    pltriton.store(ref, value.astype(ref.dtype), mask=mask)
                slot = sums_slots[j] + pid - firsts[j] if n_sums else 0
                for i, value in enumerate(new[len(refs_out) :]):
                    sums_out[i * sums_stride + slot] = jnp.asarray(value, jnp.float32)

    out_shape = (
        [jax.ShapeDtypeStruct((n,), d) for n, d in zip(sizes, leaf_dtypes, strict=True)]
        if write_leaves
        else []
    )
    out_shape += [jax.ShapeDtypeStruct(storage[s].shape, storage[s].dtype) for s in written]
    aliases = {n_lead + j: j for j in range(k)} if write_leaves else {}
    aliases.update({n_lead + n_in * k + s: len(aliases) + i for i, s in enumerate(written)})
    args = [_scalar_vector(scalars)] + ([own_array] if own_array is not None else [])
    args += [x for group in leaves for x in group] + list(storage)
    if n_sums:
        # Every slot is written by exactly one program of one of the kernels: the first kernel
        # makes the array (no fill), the others write into it in place.
        if sums_in:
            aliases[n_inputs - 1] = len(out_shape)
            args.append(sums_array)
        out_shape.append(jax.ShapeDtypeStruct((n_sums * sums_stride,), jnp.float32))
    outs = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(sum(programs),),
        input_output_aliases=aliases,
        interpret=jax.default_backend() != "gpu",
        compiler_params=_compiler_params(num_warps),
    )(*args)
    outs = list(outs)
    new_leaves = outs[:k] if write_leaves else []
    new_storage = list(storage)
    for i, s in enumerate(written):
        new_storage[s] = outs[len(new_leaves) + i]
    return new_leaves, new_storage, outs[-1] if n_sums else None
