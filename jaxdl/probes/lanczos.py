"""Lanczos tridiagonalisation with full reorthogonalisation, for pytree vectors, under ``jit``.

Lanczos (1950) builds an orthonormal basis ``V`` of the Krylov space of a symmetric
operator ``A`` started at ``v0`` and the tridiagonal ``T = V^T A V`` (diagonal ``alphas``,
off-diagonal ``betas``); the eigenvalues of ``T`` (Ritz values) converge to the extremal
eigenvalues of ``A`` first. In floating point the basis loses orthogonality and converged
Ritz values reappear as "ghost" copies (Paige 1976), so every new vector is
Gram-Schmidt-orthogonalised twice against the whole basis, as in PyHessian and in the
stochastic Lanczos quadrature of Ghorbani, Krishnan & Xiao (ICML 2019). The loop is a
``lax.while_loop`` (compile time independent of the number of steps), the basis a pytree
block, and a breakdown (an invariant subspace found, ``beta = 0``) restarts from a random
vector orthogonal to the basis, leaving ``T`` block diagonal. The restart is chosen by a
``select``, not a ``lax.cond``, and with ``tol = 0`` the loop is a ``fori_loop`` with a static
trip count: XLA's GPU runtime reads the predicate of a conditional or of a data-dependent
while loop back on the host, which stalled every step (measured on an H200: 20 steps with a
trivial operator took 7.4 ms with both, 4.1 ms without). The restart direction comes from an
integer hash rather than a PRNG: it only has to be generic, and threefry inside the loop body
would double the compile time.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxdl.probes import _operators as ops

__all__ = [
    "LanczosResult",
    "RitzPairs",
    "lanczos",
    "largest_ritz_pair",
    "ritz_pairs",
    "ritz_vectors",
    "tridiagonal",
]

_WHICH = ("algebraic", "magnitude", "smallest")


class LanczosResult(NamedTuple):
    """The Lanczos decomposition ``A V_m ≈ V_m T_m``.

    Attributes:
      alphas: ``(m,)`` diagonal of ``T``.
      betas: ``(m,)`` off-diagonal: ``betas[j]`` couples steps ``j`` and ``j + 1``;
        ``betas[num_steps - 1]`` is the norm of the residual after the last step. A zero
        marks a breakdown followed by a restart.
      basis: block of ``m + 1`` vectors shaped like ``v0`` (rows past ``num_steps`` are zero).
      num_steps: number of steps taken (``m``, or fewer when ``tol`` stopped it early).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.probes.lanczos import lanczos
      >>> res = lanczos(lambda v: jnp.array([1.0, 3.0]) * v, jnp.ones(2), 2)  # A = diag(1, 3), v0 = (1, 1)
      >>> # v1 = (1, 1)/√2: alpha_1 = 2, A v1 - 2 v1 = (-1, 1)/√2 so beta_1 = 1; v2 = (-1, 1)/√2: alpha_2 = 2
      >>> res.alphas.round(4).tolist(), res.betas.round(4).tolist(), int(res.num_steps)
      ([2.0, 2.0], [1.0, 0.0], 2)
    """

    alphas: jax.Array
    betas: jax.Array
    basis: ops.PyTree
    num_steps: jax.Array


class RitzPairs(NamedTuple):
    """Selected eigenpairs of ``T`` and their residual bounds.

    Attributes:
      values: ``(k,)`` Ritz values, ordered by the selection rule.
      vectors: ``(m, k)`` eigenvectors of ``T`` (coordinates in the Lanczos basis).
      residuals: ``(k,)`` ``|beta_last * s_last|``: ``||A y - theta y||`` for the Ritz vector ``y``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.probes.lanczos import ritz_pairs
      >>> pairs = ritz_pairs(jnp.array([2.0, 2.0]), jnp.array([1.0, 0.0]), 2, k=2)  # T = [[2, 1], [1, 2]]
      >>> pairs.values.round(4).tolist(), pairs.residuals.tolist()  # beta_last = 0: both pairs are exact
      ([3.0, 1.0], [0.0, 0.0])
      >>> pairs.vectors.shape, bool(jnp.allclose(jnp.abs(pairs.vectors), 2**-0.5))  # (1, ±1) / √2
      ((2, 2), True)
    """

    values: jax.Array
    vectors: jax.Array
    residuals: jax.Array


def tridiagonal(alphas: jax.Array, betas: jax.Array, num_steps: jax.Array | int | None = None) -> jax.Array:
    """The dense ``(m, m)`` tridiagonal matrix ``T``; rows past ``num_steps`` are zero.

    >>> tridiagonal(jnp.array([1.0, 2.0]), jnp.array([0.5, 0.0])).tolist()
    [[1.0, 0.5], [0.5, 2.0]]
    """
    m = alphas.shape[0]
    n = m if num_steps is None else num_steps
    active = jnp.arange(m) < n
    diag = jnp.where(active, alphas, 0.0)
    off = jnp.where(jnp.arange(m - 1) < n - 1, betas[: m - 1], 0.0)
    return jnp.diag(diag) + jnp.diag(off, 1) + jnp.diag(off, -1)


def ritz_pairs(
    alphas: jax.Array, betas: jax.Array, num_steps: jax.Array | int, k: int, which: str = "algebraic"
) -> RitzPairs:
    """The ``k`` wanted eigenpairs of the leading ``num_steps x num_steps`` block of ``T``.

    Works with a traced ``num_steps``: the unused part of ``T`` gets a diagonal value below
    every Gershgorin disc of the active block, and its eigenpairs are masked out.

    Args:
      alphas, betas: ``(m,)`` from :func:`lanczos`.
      num_steps: active size ``n <= m``.
      k: number of pairs wanted (static). When ``n < k`` the extra pairs have infinite residuals.
      which: ``"algebraic"`` (largest), ``"smallest"`` (algebraic) or ``"magnitude"``.

    >>> pairs = ritz_pairs(jnp.array([2.0, 1.0]), jnp.array([0.0, 0.0]), 2, k=1)
    >>> pairs.values.tolist()
    [2.0]
    """
    if which not in _WHICH:
        raise ValueError(f"which must be one of {_WHICH}, got {which!r}")
    m = alphas.shape[0]
    active = jnp.arange(m) < num_steps
    off_active = jnp.arange(m - 1) < num_steps - 1
    a = jnp.where(active, alphas, 0.0)
    b = jnp.where(off_active, betas[: m - 1], 0.0)
    radius = jnp.max(jnp.abs(a)) + 2.0 * jnp.max(jnp.abs(b), initial=0.0)
    pad = -2.0 * radius - 1.0
    t = jnp.diag(jnp.where(active, a, pad)) + jnp.diag(b, 1) + jnp.diag(b, -1)
    theta, s = jnp.linalg.eigh(t)
    valid = jnp.sum(jnp.where(active[:, None], s**2, 0.0), axis=0) > 0.5
    score = {"algebraic": theta, "smallest": -theta, "magnitude": jnp.abs(theta)}[which]
    _, idx = jax.lax.top_k(jnp.where(valid, score, -jnp.inf), k)
    last = jax.lax.dynamic_index_in_dim(s, jnp.maximum(num_steps - 1, 0), axis=0, keepdims=False)
    beta_last = betas[jnp.maximum(num_steps - 1, 0)]
    residuals = jnp.where(valid[idx], jnp.abs(beta_last * last[idx]), jnp.inf)
    return RitzPairs(theta[idx], s[:, idx], residuals)


def lanczos(
    matvec: ops.Operator,
    v0: ops.PyTree,
    num_steps: int,
    *,
    tol: float = 0.0,
    k: int = 1,
    which: str = "algebraic",
) -> LanczosResult:
    """Run ``num_steps`` Lanczos steps with full (twice-repeated) reorthogonalisation.

    Args:
      matvec: symmetric linear operator on pytrees shaped like ``v0``.
      v0: nonzero start vector (any pytree of float arrays); it is normalised here.
      num_steps: ``m``, static. Clipped to the dimension ``P`` of the space.
      tol: if positive, stop early once the ``k`` wanted Ritz pairs (see :func:`ritz_pairs`)
        have residuals below ``tol * |theta|``. Zero runs exactly ``m`` steps.
      k, which: the Ritz pairs the ``tol`` test watches.

    Returns:
      A :class:`LanczosResult`. Memory: ``m + 1`` parameter-sized vectors.

    >>> diag = jnp.arange(1.0, 11.0)
    >>> res = lanczos(lambda v: {"w": diag * v["w"]}, {"w": jnp.ones(10)}, 10)
    >>> round(float(ritz_pairs(res.alphas, res.betas, res.num_steps, k=1).values[0]), 4)
    10.0
    """
    ops.check_float_leaves(v0, "v0")
    if which not in _WHICH:
        raise ValueError(f"which must be one of {_WHICH}, got {which!r}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps}")
    m = min(int(num_steps), ops.tree_size(v0))
    dtype = jnp.result_type(*jax.tree.leaves(v0))
    eps = jnp.finfo(dtype).eps

    v0 = ops.tree_scale(1.0 / ops.tree_norm(v0), v0)
    basis = ops.block_set(ops.block_zeros(m + 1, v0), 0, v0)
    alphas = jnp.zeros((m,), dtype)
    betas = jnp.zeros((m,), dtype)

    def step(j, state):
        basis, alphas, betas, anorm, _ = state
        v = ops.block_get(basis, j)
        w = matvec(v)
        alpha = ops.tree_vdot(w, v)
        w = ops.project_out(basis, ops.tree_axpy(-alpha, v, w), passes=1)
        anorm = jnp.maximum(anorm, jnp.abs(alpha) + ops.tree_norm(w))
        # A breakdown (w in the span of the basis) restarts from a hashed direction. The choice is
        # a select, not a lax.cond: XLA's GPU conditional copies its predicate to the host, which
        # would stall every step. The second Gram-Schmidt pass ("twice is enough") then serves both
        # the residual and the restart vector (one pass suffices for a generic vector).
        breakdown = ops.tree_norm(w) <= m * eps * anorm
        w = jax.tree.map(lambda r, z: jnp.where(breakdown, z, r), w, _hash_vector(v0, j))
        w = ops.project_out(basis, w, passes=1)
        beta = ops.tree_norm(w)
        w = ops.tree_scale(1.0 / jnp.where(beta > 0, beta, 1.0), w)
        alphas = alphas.at[j].set(alpha)
        betas = betas.at[j].set(jnp.where(breakdown, 0.0, beta))
        basis = ops.block_set(basis, j + 1, w)
        if tol > 0:
            pairs = ritz_pairs(alphas, betas, j + 1, k, which)
            converged = jnp.all(pairs.residuals <= tol * jnp.maximum(jnp.abs(pairs.values), eps))
        else:
            converged = jnp.array(False)
        return basis, alphas, betas, anorm, converged

    init = (basis, alphas, betas, jnp.array(0.0, dtype), jnp.array(False))
    if tol > 0:  # a data-dependent stop: a while loop

        def keep_going(state):
            j, *_, converged = state
            return (j < m) & ~converged

        j, basis, alphas, betas, _, _ = jax.lax.while_loop(
            keep_going,
            lambda state: (state[0] + 1, *step(state[0], state[1:])),
            (jnp.array(0, jnp.int32), *init),
        )
    else:  # a static trip count: XLA runs the loop without reading a predicate back on the host
        basis, alphas, betas, _, _ = jax.lax.fori_loop(0, m, step, init)
        j = jnp.array(m, jnp.int32)
    return LanczosResult(alphas, betas, basis, j)


def ritz_vectors(basis: ops.PyTree, vectors: jax.Array) -> ops.PyTree:
    """Lift eigenvectors of ``T`` (``(m, k)``) to the parameter space: a block of ``k`` pytrees.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.probes.lanczos import lanczos, ritz_pairs, ritz_vectors
      >>> diag = jnp.arange(1.0, 11.0)
      >>> res = lanczos(lambda v: {"w": diag * v["w"]}, {"w": jnp.ones(10)}, 10)
      >>> top = ritz_vectors(res.basis, ritz_pairs(res.alphas, res.betas, res.num_steps, k=1).vectors)
      >>> print(top["w"].shape, int(jnp.abs(top["w"][0]).argmax()))  # eigenvalue 10 belongs to e_10
      (1, 10) 9
    """
    padded = jnp.concatenate([vectors, jnp.zeros((1, vectors.shape[1]), vectors.dtype)], axis=0)
    return ops.block_matmul(basis, padded)


def _hash_vector(like: ops.PyTree, seed: jax.Array) -> ops.PyTree:
    """A deterministic pseudo-random vector with entries in [-0.5, 0.5) (PCG-style integer hash)."""
    leaves, treedef = jax.tree.flatten(like)
    out, offset = [], 0
    for x in leaves:
        idx = jnp.arange(offset, offset + jnp.size(x), dtype=jnp.uint32).reshape(jnp.shape(x))
        h = idx * jnp.uint32(747796405) + (seed.astype(jnp.uint32) + 1) * jnp.uint32(2891336453)
        h = ((h >> ((h >> 28) + 4)) ^ h) * jnp.uint32(277803737)
        h = (h >> 22) ^ h
        out.append((h.astype(jnp.float32) / 2.0**32 - 0.5).astype(jnp.result_type(x)))
        offset += int(jnp.size(x))
    return jax.tree.unflatten(treedef, out)


def largest_ritz_pair(
    alphas: jax.Array, betas: jax.Array, *, squarings: int = 12
) -> tuple[jax.Array, jax.Array]:
    """The largest eigenvalue of the tridiagonal ``T`` (all ``m`` steps) and its unit eigenvector.

    Power iteration by repeated squaring: with ``lo`` below the Gershgorin discs, ``B = T - lo I``
    is positive semi-definite with the same eigenvectors, and ``squarings`` normalised squarings
    give ``B^(2^squarings)``, whose largest column is the top eigenvector up to a factor
    ``((lambda_2 - lo) / (lambda_1 - lo))^(2^squarings)``; its Rayleigh quotient is
    ``lambda_max`` with the square of that error (a tight cluster at the top leaves the vector
    inside the cluster and the value exact to rounding). A dozen ``m x m`` matrix products at
    ``Precision.HIGHEST``: no LAPACK/cuSOLVER call, which on a GPU costs 0.4 ms of latency even
    for a 20 x 20 ``eigh`` (measured on an H200), and no data-dependent loop.

    Args:
      alphas, betas: ``(m,)`` from :func:`lanczos` (``betas[: m - 1]`` is the off-diagonal).
      squarings: number of squarings (static).

    Returns:
      ``(lambda_max, s)``: a scalar and the ``(m,)`` eigenvector (coordinates in the Lanczos basis).

    >>> value, vector = largest_ritz_pair(jnp.array([2.0, 2.0]), jnp.array([1.0, 0.0]))  # [[2, 1], [1, 2]]
    >>> round(float(value), 5), [round(abs(x), 4) for x in vector.tolist()]
    (3.0, [0.7071, 0.7071])
    """
    m = alphas.shape[0]
    t = tridiagonal(alphas, betas)
    radius = jnp.sum(jnp.abs(t), axis=1) - jnp.abs(alphas)
    scale = jnp.max(jnp.abs(alphas) + radius)
    lo = jnp.min(alphas - radius) - jnp.finfo(t.dtype).eps * scale
    eye = jnp.eye(m, dtype=t.dtype)
    power = jnp.where(scale > 0, (t - lo * eye) / jnp.where(scale > 0, scale, 1.0), eye)  # T = 0: any vector
    for _ in range(squarings):
        power = jnp.matmul(power, power, precision=jax.lax.Precision.HIGHEST)
        power = power / jnp.maximum(jnp.max(jnp.abs(power)), jnp.finfo(t.dtype).tiny)
    norms = jnp.sum(power**2, axis=0)
    s = power[:, jnp.argmax(norms)]
    s = s / jnp.linalg.norm(s)
    value = jnp.dot(
        s, jnp.matmul(t, s, precision=jax.lax.Precision.HIGHEST), precision=jax.lax.Precision.HIGHEST
    )
    return value, s
