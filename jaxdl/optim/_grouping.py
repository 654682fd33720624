"""Per-leaf reductions for many small leaves, batched into one kernel.

XLA runs one reduction kernel per leaf, and a network's many bias and norm-scale vectors are too
small to hide a kernel launch each. Stacking the same-shaped small leaves makes their reductions
a single kernel, and the shared result lets XLA merge the per-leaf elementwise kernels that read
it. Each row of a stack is still one leaf, so every value stays per leaf.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Leaves up to this many elements that share a shape and dtypes are stacked.
GROUP_MAX_SIZE = 1 << 16


def same_shape_groups(*leaf_lists: list[jax.Array]) -> list[list[int]]:
    """Indices of the leaves, grouped by shape and dtypes; large leaves stay alone.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.optim._grouping import same_shape_groups
      >>> same_shape_groups([jnp.zeros(3), jnp.zeros((512, 512)), jnp.ones(3), jnp.zeros(2)])
      [[0, 2], [1], [3]]
    """
    groups: dict = {}
    for i, leaves in enumerate(zip(*leaf_lists, strict=True)):
        small = leaves[0].size <= GROUP_MAX_SIZE
        key = (leaves[0].shape, *(x.dtype for x in leaves)) if small else i
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def stack(leaves: list[jax.Array], members: list[int], dtype=None) -> jax.Array:
    """The member leaves stacked along a new leading axis (cast to `dtype` if given)."""
    stacked = jnp.stack([leaves[i] for i in members])
    return stacked if dtype is None else stacked.astype(dtype)


def row_axes(stacked: jax.Array) -> tuple[int, ...]:
    """The axes that hold one leaf of a stack (all but the leading one)."""
    return tuple(range(1, stacked.ndim))
