"""Pytree-aware matrix-free linear operators shared by the Hessian probes.

A *vector* here is any pytree of float arrays shaped like a model's parameters, and an
*operator* is a function ``matvec(v) -> A v`` between such pytrees. A *block* of vectors
is the same pytree with one extra leading axis. The tree operations work leaf by leaf (every
reduction a sum of per-leaf reductions); the Krylov solvers (:mod:`jaxdl.probes.lanczos`, the
power iteration) instead run on the raveled vector (:func:`flat_operator`), where each basis
operation is one kernel rather than one per leaf, which on a GPU is most of a Lanczos step's cost
for small models. Raveling concatenates the leaves: parameters sharded across devices (model
parallelism) are gathered; replicated, data-parallel parameters are unaffected.

Inner products use ``Precision.HIGHEST``: on GPUs the default float32 matmul precision
is TF32-like, which is enough to break the orthogonality Lanczos relies on.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxdl._typing import PyTree

Operator = Callable[[PyTree], PyTree]

_HIGHEST = jax.lax.Precision.HIGHEST


def tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
    """Real inner product ``sum_leaves <a_leaf, b_leaf>`` of two pytrees of equal structure.

    >>> float(tree_vdot({"w": jnp.ones(3)}, {"w": jnp.arange(3.0)}))
    3.0
    """
    parts = jax.tree.leaves(jax.tree.map(lambda x, y: jnp.vdot(x, y, precision=_HIGHEST), a, b))
    return _sum(parts)


def _sum(parts: list[jax.Array]) -> jax.Array:
    """The sum of per-leaf partial results (one array)."""
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def tree_norm(a: PyTree) -> jax.Array:
    """Euclidean norm of a pytree seen as one vector.

    >>> float(tree_norm({"a": jnp.array([3.0]), "b": jnp.array([4.0])}))
    5.0
    """
    return jnp.sqrt(tree_vdot(a, a))


def tree_axpy(alpha: jax.Array | float, x: PyTree, y: PyTree) -> PyTree:
    """``alpha * x + y`` leaf by leaf (BLAS axpy).

    >>> tree_axpy(2.0, {"w": jnp.ones(2)}, {"w": jnp.ones(2)})["w"].tolist()
    [3.0, 3.0]
    """
    return jax.tree.map(lambda a, b: (alpha * a + b).astype(b.dtype), x, y)


def tree_scale(alpha: jax.Array | float, x: PyTree) -> PyTree:
    """``alpha * x`` leaf by leaf, keeping each leaf's dtype."""
    return jax.tree.map(lambda a: (alpha * a).astype(a.dtype), x)


def tree_size(a: PyTree) -> int:
    """Total number of entries: the dimension of the vector space (a Python int)."""
    return int(sum(np.prod(np.shape(x), dtype=np.int64) for x in jax.tree.leaves(a)))


def tree_random_like(key: jax.Array, like: PyTree, distribution: str = "rademacher") -> PyTree:
    """A random vector shaped like ``like``: i.i.d. Rademacher (±1) or standard normal entries.

    One draw of ``P`` numbers is cut into the leaves: a single random-bits kernel per vector
    instead of one per leaf, which keeps compile times short for many-leaved models.

    >>> v = tree_random_like(jax.random.key(0), {"w": jnp.zeros(4)})
    >>> sorted(set(abs(v["w"]).tolist()))
    [1.0]
    """
    leaves, treedef = jax.tree.flatten(like)
    dtype = jnp.result_type(*leaves)
    if distribution == "rademacher":
        flat = jax.random.rademacher(key, (tree_size(like),), dtype=dtype)
    elif distribution == "normal":
        flat = jax.random.normal(key, (tree_size(like),), dtype=dtype)
    else:
        raise ValueError(f"distribution must be 'rademacher' or 'normal', got {distribution!r}")
    out, offset = [], 0
    for x in leaves:
        size = int(np.prod(jnp.shape(x), dtype=np.int64))
        out.append(flat[offset : offset + size].reshape(jnp.shape(x)).astype(jnp.result_type(x)))
        offset += size
    return jax.tree.unflatten(treedef, out)


def check_like(v: PyTree, like: PyTree, name: str = "v", like_name: str = "params") -> None:
    """Raise ``ValueError`` unless ``v`` has the tree structure and leaf shapes of ``like``.

    Runs in Python on static shapes, so it is safe under ``jit``.
    """
    v_def, like_def = jax.tree.structure(v), jax.tree.structure(like)
    if v_def != like_def:  # type: ignore[operator]  # PyTreeDef compares by structure
        raise ValueError(
            f"{name} must have the tree structure of {like_name}: got {v_def}, expected {like_def}"
        )
    for path_leaf, w in zip(jax.tree.leaves_with_path(like), jax.tree.leaves(v), strict=True):
        path, x = path_leaf
        if jnp.shape(w) != jnp.shape(x):
            raise ValueError(
                f"{name}{jax.tree_util.keystr(path)} must have shape {jnp.shape(x)} like "
                f"{like_name}, got {jnp.shape(w)}"
            )


def check_float_leaves(params: PyTree, name: str = "params") -> None:
    """Raise ``TypeError`` if any leaf of ``params`` is not a floating-point array."""
    leaves = jax.tree.leaves_with_path(params)
    if not leaves:
        raise ValueError(f"{name} must contain at least one array, got an empty pytree")
    for path, x in leaves:
        if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
            raise TypeError(
                f"{name}{jax.tree_util.keystr(path)} must be a floating-point array, got {jnp.result_type(x)}"
            )


def flat_operator(
    matvec: Operator, like: PyTree
) -> tuple[Callable[[jax.Array], jax.Array], Callable[[PyTree], jax.Array], Callable[[jax.Array], PyTree]]:
    """The operator on raveled vectors: ``(v -> ravel(A unravel(v)), ravel, unravel)``.

    The flat vector has the common dtype of the leaves of ``like`` (``jnp.result_type``), so
    mixed precisions are stored at the widest one; ``unravel`` casts each leaf back to its dtype.

    >>> op, ravel, unravel = flat_operator(lambda t: {"a": 2 * t["a"], "b": 3 * t["b"]}, {"a": jnp.ones(2), "b": jnp.ones(1)})
    >>> op(jnp.array([1.0, 2.0, 3.0])).tolist(), unravel(jnp.arange(3.0))["b"].tolist()
    ([2.0, 4.0, 9.0], [2.0])
    """
    dtype = jnp.result_type(*jax.tree.leaves(like))
    _, unravel = ravel_pytree(like)

    def ravel(tree: PyTree) -> jax.Array:
        leaves = [jnp.ravel(x).astype(dtype) for x in jax.tree.leaves(tree)]
        return leaves[0] if len(leaves) == 1 else jnp.concatenate(leaves)

    return lambda v: ravel(matvec(unravel(v))), ravel, unravel


# ---- blocks: a pytree whose leaves carry one extra leading axis -------------------------------


def block_zeros(num_vectors: int, like: PyTree) -> PyTree:
    """A block of ``num_vectors`` zero vectors shaped like ``like``."""
    return jax.tree.map(lambda x: jnp.zeros((num_vectors, *jnp.shape(x)), jnp.result_type(x)), like)


def block_get(block: PyTree, i: jax.Array | int) -> PyTree:
    """Vector ``i`` of a block (``i`` may be traced)."""
    return jax.tree.map(lambda b: jax.lax.dynamic_index_in_dim(b, i, keepdims=False), block)


def block_set(block: PyTree, i: jax.Array | int, v: PyTree) -> PyTree:
    """The block with vector ``i`` replaced by ``v`` (``i`` may be traced)."""
    return jax.tree.map(
        lambda b, x: jax.lax.dynamic_update_index_in_dim(b, x.astype(b.dtype), i, 0), block, v
    )


def block_dot(block: PyTree, v: PyTree) -> jax.Array:
    """Inner products of every vector of ``block`` with ``v``: shape ``(num_vectors,)``."""

    def leaf_dot(b, x):
        return jnp.tensordot(b.reshape(b.shape[0], -1), x.reshape(-1), axes=1, precision=_HIGHEST)

    parts = jax.tree.leaves(jax.tree.map(leaf_dot, block, v))
    return _sum(parts)


def block_combine(block: PyTree, coeffs: jax.Array) -> PyTree:
    """The linear combination ``sum_i coeffs[i] * block[i]``: one vector."""

    def leaf_combine(b):
        flat = jnp.tensordot(coeffs.astype(b.dtype), b.reshape(b.shape[0], -1), axes=1, precision=_HIGHEST)
        return flat.reshape(b.shape[1:])

    return jax.tree.map(leaf_combine, block)


def block_gram(a: PyTree, b: PyTree) -> jax.Array:
    """The matrix of inner products ``a[i] . b[j]`` of two blocks: shape ``(len(a), len(b))``."""

    def leaf_gram(x, y):
        return jnp.tensordot(
            x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1), axes=(1, 1), precision=_HIGHEST
        )

    parts = jax.tree.leaves(jax.tree.map(leaf_gram, a, b))
    return _sum(parts)


def block_matmul(block: PyTree, matrix: jax.Array) -> PyTree:
    """Right-multiply a block by a matrix: vector ``j`` of the result is ``sum_i matrix[i, j] block[i]``."""

    def leaf_matmul(b):
        flat = jnp.tensordot(matrix.T.astype(b.dtype), b.reshape(b.shape[0], -1), axes=1, precision=_HIGHEST)
        return flat.reshape((matrix.shape[1], *b.shape[1:]))

    return jax.tree.map(leaf_matmul, block)


def project_out(block: PyTree, v: PyTree, passes: int = 2) -> PyTree:
    """Remove from ``v`` its components along the orthonormal (or zero) vectors of ``block``.

    Classical Gram-Schmidt repeated ``passes`` times ("twice is enough", Giraud et al. 2005).
    Zero rows take no part, so a partly filled block works under ``jit`` with static shapes.
    """
    for _ in range(passes):
        v = tree_axpy(-1.0, block_combine(block, block_dot(block, v)), v)
    return v


# ---- operator algebra ------------------------------------------------------------------------


def shift(matvec: Operator, sigma: jax.Array | float) -> Operator:
    """The operator ``v -> A v - sigma v`` (a spectral shift: eigenvalues move by ``-sigma``)."""
    return lambda v: tree_axpy(-sigma, v, matvec(v))


def scale(matvec: Operator, alpha: jax.Array | float) -> Operator:
    """The operator ``v -> alpha A v``."""
    return lambda v: tree_scale(alpha, matvec(v))
