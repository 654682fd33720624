"""One elementwise Pallas kernel over flat buffers, with outputs written into donated inputs.

Used by the fused optimizer steps (`jaxdl.optim.fused`, `kernel="pallas"`). On a GPU the kernel is
lowered through Triton. On any other backend the same body runs as a plain XLA fusion, unless
`INTERPRET_OFF_GPU` is set (the tests set it, to run the kernel in Pallas's interpreter on CPU).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

# Run the kernel in Pallas's interpreter off GPUs (tests) instead of falling back to XLA.
INTERPRET_OFF_GPU = False

# Elements per program and warps per program: 16 elements a thread, 16-byte accesses.
_BLOCK = 4096
_NUM_WARPS = 8


def _compiler_params():
    if jax.default_backend() != "gpu":
        return None
    from jax.experimental.pallas import triton as pltriton

    return pltriton.CompilerParams(num_warps=_NUM_WARPS, num_stages=1)


def elementwise(
    body: Callable[..., Sequence[jax.Array]],
    arrays: Sequence[jax.Array],
    scalars: Sequence[jax.Array],
    aliases: Mapping[int, int],
    block: int = _BLOCK,
) -> list[jax.Array]:
    """`body(*blocks_of_arrays, *scalars)` over 1-D arrays of one length, as one kernel.

    `aliases` maps an index of `arrays` to the index of the output written in its place (donate
    those arrays to the enclosing jit to update them in place). Scalars are float32.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.optim._pallas import elementwise
      >>> x, y = jnp.arange(5.0), jnp.ones(5)
      >>> (out,) = elementwise(lambda x, y, a: (a * x + y,), [x, y], [jnp.float32(2)], {0: 0})
      >>> print(out)
      [1. 3. 5. 7. 9.]
    """
    on_gpu = jax.default_backend() == "gpu"
    if not on_gpu and not INTERPRET_OFF_GPU:
        return list(body(*arrays, *[jnp.asarray(x, jnp.float32) for x in scalars]))
    n = arrays[0].shape[0]
    block = min(block, max(8, pl.next_power_of_2(n)))
    k = len(scalars)
    scal = jnp.zeros((max(8, pl.next_power_of_2(k)),), jnp.float32)
    scal = scal.at[:k].set(jnp.stack([jnp.asarray(s, jnp.float32) for s in scalars]))
    block_args = [jax.ShapeDtypeStruct((block,), x.dtype) for x in arrays]
    out_avals = jax.eval_shape(lambda *a: tuple(body(*a, *[jnp.float32(0)] * k)), *block_args)

    def kernel(scal_ref, *refs):
        ins = [r[...] for r in refs[: len(arrays)]]
        outs = body(*ins, *[scal_ref[i] for i in range(k)])
        for ref, value in zip(refs[len(arrays) :], outs, strict=True):
            ref[...] = value.astype(ref.dtype)

    spec = pl.BlockSpec((block,), lambda i: (i,))
    return pl.pallas_call(
        kernel,
        out_shape=[jax.ShapeDtypeStruct((n,), o.dtype) for o in out_avals],
        grid=(pl.cdiv(n, block),),
        in_specs=[pl.BlockSpec(scal.shape, lambda i: (0,))] + [spec] * len(arrays),
        out_specs=[spec] * len(out_avals),
        input_output_aliases={i + 1: o for i, o in aliases.items()},
        interpret=not on_gpu,
        compiler_params=_compiler_params(),
    )(scal, *arrays)
