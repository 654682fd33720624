"""Pallas kernels for the fused optimizer steps: outputs written into donated inputs.

Used by `jaxdl.optim.fused` with `kernel="pallas"`, and imported only then (importing Pallas
costs about half a second). On a GPU the kernels are lowered through Triton. On any other backend
the same computation runs as plain XLA, unless `INTERPRET_OFF_GPU` is set (the tests set it, to
run the kernels in Pallas's interpreter on CPU).

`multi_tensor` is PyTorch's `multi_tensor_apply` idea: one kernel updates many parameter leaves
and their moment buffers, where XLA writes each output leaf with a kernel of its own (a few
hundred bias and norm-scale vectors cost a few hundred launches, and each large leaf's kernel
its own ramp-up and tail).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

# Run the kernels in Pallas's interpreter off GPUs (tests) instead of falling back to XLA.
INTERPRET_OFF_GPU = False

# `multi_tensor`: elements per program, warps per program, leaves per kernel (a branch each).
_LEAF_BLOCK = 1024
_LEAF_WARPS = 4
_LEAVES_PER_KERNEL = 32


def _compiler_params(num_warps: int):
    if jax.default_backend() != "gpu":
        return None
    from jax.experimental.pallas import triton as pltriton

    return pltriton.CompilerParams(num_warps=num_warps, num_stages=1)


def _use_kernel() -> bool:
    return jax.default_backend() == "gpu" or INTERPRET_OFF_GPU


def _scalar_vector(scalars: Sequence[jax.Array]) -> jax.Array:
    values = [jnp.asarray(s, jnp.float32) for s in scalars] or [jnp.float32(0)]
    scal = jnp.zeros((max(8, pl.next_power_of_2(len(values))),), jnp.float32)
    return scal.at[: len(values)].set(jnp.stack(values))


def multi_tensor(
    bodies: Sequence[Callable[..., Sequence[jax.Array]]],
    leaves: Sequence[Sequence[jax.Array]],
    storage: Sequence[jax.Array],
    where: Sequence[Sequence[tuple[int, int]]],
    scalars: Sequence[jax.Array],
    block: int | None = None,
    num_warps: int | None = None,
    leaves_per_kernel: int | None = None,
) -> tuple[list[jax.Array], list[jax.Array]]:
    """Update many leaves and their optimizer buffers with few kernels (PyTorch's
    `multi_tensor_apply`, as Pallas kernels).

    Leaf j is `leaves[l][j]` for each input l (any shape; `leaves[0]` are the parameters, written
    in place) and has buffer b at element `where[j][b][1]` of the 1-D array `storage[where[j][b][0]]`
    (one flat buffer shared by many small leaves, or a large leaf's own buffer). Computes
    `bodies[j](*leaf_blocks, *buffer_blocks, *scalars) -> (leaf_out, *buffer_outs)` elementwise
    and returns the new leaves 0 (in their shapes) and the new storage arrays, each written in
    place of its input: donate them to the enclosing jit. Every program of a kernel handles
    `block` elements of one leaf (masked at the leaf's end); one kernel per `leaves_per_kernel`
    leaves (each leaf is one branch of the kernel, and compile time grows with them). The
    defaults are the module's `_LEAF_BLOCK`, `_LEAF_WARPS`, `_LEAVES_PER_KERNEL` (read at call time).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.optim._pallas import multi_tensor
      >>> ps, gs, m = [jnp.ones(2), jnp.zeros(3)], [jnp.ones(2), jnp.ones(3)], jnp.zeros(5)
      >>> body = lambda p, g, m, a: (p - a * g, m + g)
      >>> new_ps, (new_m,) = multi_tensor([body] * 2, [ps, gs], [m], [[(0, 0)], [(0, 2)]], [0.5])
      >>> print(new_ps[0], new_ps[1], new_m)
      [0.5 0.5] [-0.5 -0.5 -0.5] [1. 1. 1. 1. 1.]
    """
    if not _use_kernel():
        return _multi_tensor_xla(bodies, leaves, storage, where, scalars)
    block, num_warps = block or _LEAF_BLOCK, num_warps or _LEAF_WARPS
    per_kernel = leaves_per_kernel or _LEAVES_PER_KERNEL
    k = len(leaves[0])
    new_leaves: list[jax.Array] = []
    new_storage = list(storage)
    for first in range(0, k, per_kernel):
        chunk = range(first, min(first + per_kernel, k))
        outs, new_storage = _multi_tensor_kernel(
            [bodies[j] for j in chunk],
            [[jnp.ravel(group[j]) for j in chunk] for group in leaves],
            new_storage,
            [where[j] for j in chunk],
            scalars,
            block,
            num_warps,
        )
        new_leaves += [x.reshape(leaves[0][j].shape) for x, j in zip(outs, chunk, strict=True)]
    return new_leaves, new_storage


def _multi_tensor_xla(bodies, leaves, storage, where, scalars):
    """The same computation as plain XLA (off GPUs): one body call per leaf."""
    scalars = [jnp.asarray(s, jnp.float32) for s in scalars]
    storage = list(storage)
    new_leaves = []
    for j, body in enumerate(bodies):
        n = leaves[0][j].size
        bufs = [jax.lax.dynamic_slice_in_dim(storage[s], at, n) for s, at in where[j]]
        out = body(*[jnp.ravel(group[j]) for group in leaves], *bufs, *scalars)
        new_leaves.append(out[0].reshape(leaves[0][j].shape))
        for (s, at), new in zip(where[j], out[1:], strict=True):
            storage[s] = jax.lax.dynamic_update_slice_in_dim(storage[s], new.astype(storage[s].dtype), at, 0)
    return new_leaves, storage


def _multi_tensor_kernel(bodies, leaves, storage, where, scalars, block, num_warps):
    """One kernel over `leaves` (lists of 1-D arrays): program i handles one block of one leaf."""
    from jax.experimental.pallas import triton as pltriton

    n_in, k, n_store, n_scal = len(leaves), len(leaves[0]), len(storage), len(scalars)
    sizes = [x.shape[0] for x in leaves[0]]
    block = min(block, max(8, pl.next_power_of_2(max(sizes))))
    programs = [pl.cdiv(n, block) for n in sizes]
    firsts = [sum(programs[:j]) for j in range(k)]
    leaf_dtypes = []
    for j in range(k):
        args = [jax.ShapeDtypeStruct((block,), g[j].dtype) for g in leaves]
        args += [jax.ShapeDtypeStruct((block,), storage[s].dtype) for s, _ in where[j]]
        out = jax.eval_shape(lambda *a, j=j: tuple(bodies[j](*a, *[jnp.float32(0)] * n_scal)), *args)
        leaf_dtypes.append(out[0].dtype)

    def kernel(scal_ref, *refs):
        ins, outs = refs[: n_in * k + n_store], refs[n_in * k + n_store :]
        pid = pl.program_id(0)
        scal = [scal_ref[i] for i in range(n_scal)]
        for j in range(k):

            @pl.when((pid >= firsts[j]) & (pid < firsts[j] + programs[j]))
            def _(j=j):
                at = (pid - firsts[j]) * block
                mask = at + jax.lax.iota(jnp.int32, block) < sizes[j]
                refs_in = [ins[i * k + j].at[pl.ds(at, block)] for i in range(n_in)]
                refs_in += [ins[n_in * k + s].at[pl.ds(start + at, block)] for s, start in where[j]]
                new = bodies[j](*[pltriton.load(r, mask=mask, other=0) for r in refs_in], *scal)
                refs_out = [outs[j].at[pl.ds(at, block)]]
                refs_out += [outs[k + s].at[pl.ds(start + at, block)] for s, start in where[j]]
                for ref, value in zip(refs_out, new, strict=True):
                    pltriton.store(ref, value.astype(ref.dtype), mask=mask)

    out_shape = [jax.ShapeDtypeStruct((n,), d) for n, d in zip(sizes, leaf_dtypes, strict=True)]
    out_shape += [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in storage]
    aliases = {1 + j: j for j in range(k)}
    aliases.update({1 + n_in * k + s: k + s for s in range(n_store)})
    outs = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(sum(programs),),
        input_output_aliases=aliases,
        interpret=jax.default_backend() != "gpu",
        compiler_params=_compiler_params(num_warps),
    )(_scalar_vector(scalars), *[x for group in leaves for x in group], *storage)
    return list(outs[:k]), list(outs[k:])
