"""Hessian estimators: top eigenvalues, trace and spectral density of a curvature operator.

The operators (Hessian, GGN and empirical-Fisher products, microbatch averages) live in
:mod:`jaxdl.probes.curvature`; their names stay importable from here. The estimators:

- Top eigenvalues by Lanczos with full reorthogonalisation (Lanczos 1950; Paige 1976) or by
  power iteration with deflation (PyHessian, Yao et al. 2020, Alg. 1).
- Trace by Hutchinson (1989) with Rademacher probes, or Hutch++ (Meyer et al. 2021, Alg. 1).
- Spectral density by stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; Ghorbani,
  Krishnan & Xiao 2019, eq. 6) with Gaussian broadening as in PyHessian.

Each estimator is jitted once per ``loss_fn`` object and options (the functions are held
weakly, so passing a new ``lambda`` every call recompiles but does not leak), and then once per
input shapes. :func:`hessian_probes` binds a ``loss_fn`` once, for use in a training loop.
Every estimator also runs inside the caller's ``jax.jit`` with traced ``params``, ``batch``
and ``key``; a batch sharded over a ``Mesh`` turns their reductions into all-reduces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl._typing import PyTree
from jaxdl.probes import _cache
from jaxdl.probes import _operators as ops
from jaxdl.probes import lanczos as lz
from jaxdl.probes.curvature import (
    GGN,
    Batches,
    EmpiricalFisher,
    _curvature_from_parts,
    _curvature_parts,
    curvature_operator,
    fisher_vp,
    ggn_vp,
    hvp,
    stack_batches,
)

__all__ = [
    "GGN",
    "Batches",
    "EigenResult",
    "EmpiricalFisher",
    "HessianProbes",
    "SpectralDensity",
    "TraceResult",
    "curvature_operator",
    "density_from_ritz",
    "fisher_vp",
    "ggn_vp",
    "hessian_probes",
    "hessian_trace",
    "hvp",
    "spectral_density",
    "stack_batches",
    "top_eigenvalues",
]

Curvature = Callable | GGN | EmpiricalFisher

# ---- eigenvalues ------------------------------------------------------------------------------


class EigenResult(NamedTuple):
    """Extremal eigenpairs of a curvature matrix.

    Attributes:
      eigenvalues: ``(k,)``, ordered by the selection rule (largest first for ``"algebraic"``).
      eigenvectors: a pytree like ``params`` whose leaves carry a leading axis ``k``; unit norm.
      residuals: ``(k,)`` residual norms ``||C y - lambda y||`` (Lanczos) or the last relative
        change of the eigenvalue estimate (power iteration).
      num_matvecs: number of matrix-vector products used.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxdl.probes.hessian import top_eigenvalues
      >>> loss = lambda w, _: 0.5 * jnp.sum(jnp.array([1.0, 2.0, 3.0]) * w**2)  # H = diag(1, 2, 3)
      >>> res = top_eigenvalues(loss, jnp.zeros(3), None, key=jax.random.key(0))
      >>> res.eigenvalues.round(4).tolist(), jnp.abs(res.eigenvectors).round(4).tolist()  # λ = 3 along e_3
      ([3.0], [[0.0, 0.0, 1.0]])
    """

    eigenvalues: jax.Array
    eigenvectors: PyTree
    residuals: jax.Array
    num_matvecs: jax.Array


def top_eigenvalues(
    loss_fn: Curvature,
    params: PyTree,
    batch: PyTree,
    *,
    key: jax.Array,
    k: int = 1,
    method: str = "lanczos",
    num_iters: int = 100,
    tol: float = 1e-3,
    which: str = "algebraic",
) -> EigenResult:
    """The ``k`` largest eigenvalues of the Hessian (or GGN / Fisher) and their eigenvectors.

    ``method="lanczos"`` runs at most ``num_iters`` Lanczos steps with full
    reorthogonalisation and stops once every wanted Ritz pair has residual below
    ``tol * |lambda|``. ``method="power"`` is PyHessian's deflated power iteration (Yao et
    al. 2020, Alg. 1), ``num_iters`` iterations per eigenvalue at most, stopping when the
    relative change falls below ``tol``; for ``which="algebraic"`` it first finds the
    dominant eigenvalue and, if negative, shifts by it.

    Compiles once per ``loss_fn`` object (for :class:`GGN` / :class:`EmpiricalFisher`, per
    their functions), option values and input shapes; later calls reuse the program. The cache
    holds ``loss_fn`` weakly, so a new ``lambda`` per call compiles every time but does not
    leak: build the loss once outside the loop (or use :func:`hessian_probes`). Inside your
    own ``jax.jit`` it is traced into your program with traced ``params``, ``batch``, ``key``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``, or a :class:`GGN` / :class:`EmpiricalFisher`.
      params: any pytree of float arrays (``P`` entries in all).
      batch: the data, or :class:`Batches`.
      key: PRNG key for the start vectors.
      k: number of eigenpairs (static, ``k <= P``).
      method: ``"lanczos"`` or ``"power"``.
      num_iters: maximum Lanczos steps (``>= k``), or power iterations per eigenvalue.
      tol: relative convergence tolerance; ``0`` runs all ``num_iters``.
      which: ``"algebraic"`` (largest; the sharpness of edge-of-stability studies),
        ``"magnitude"`` (PyHessian's convention) or ``"smallest"``.

    Returns:
      :class:`EigenResult` ``(eigenvalues, eigenvectors, residuals, num_matvecs)``.

    >>> loss = lambda w, _: 0.5 * jnp.sum(jnp.arange(1.0, 6.0) * w**2)
    >>> res = top_eigenvalues(loss, jnp.zeros(5), None, key=jax.random.key(0), k=2)
    >>> [round(x, 4) for x in res.eigenvalues.tolist()]
    [5.0, 4.0]
    """
    _check_choice("method", method, ("lanczos", "power"))
    _check_choice("which", which, lz._WHICH)
    dimension = _check_params(params)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= dimension:
        raise ValueError(f"k must be an int in [1, {dimension}] (the number of parameters), got {k!r}")
    _check_int("num_iters", num_iters, k, f"at least k={k}")
    if not isinstance(tol, int | float) or not tol >= 0:
        raise ValueError(f"tol must be a non-negative number, got {tol!r}")
    _check_key(key)
    options = (k, method, num_iters, float(tol), which)
    return _jitted("top_eigenvalues", loss_fn, options)(params, batch, key)


def _top_eigenvalues_probe(curvature, k, method, num_iters, tol, which, params, batch, key) -> EigenResult:
    matvec = curvature_operator(curvature, params, batch)
    if which == "smallest":
        res = _top_eigenvalues(ops.scale(matvec, -1.0), params, key, k, method, num_iters, tol, "algebraic")
        return res._replace(eigenvalues=-res.eigenvalues)
    return _top_eigenvalues(matvec, params, key, k, method, num_iters, tol, which)


def _top_eigenvalues(matvec, params, key, k, method, num_iters, tol, which) -> EigenResult:
    # On the raveled vector (one kernel per basis operation; see jaxdl.probes.lanczos). The start
    # vector is the draw of ops.tree_random_like, before it is cut into leaves.
    flat_matvec, _, unravel = ops.flat_operator(matvec, params)
    v0 = jax.random.normal(key, (ops.tree_size(params),), jnp.result_type(*jax.tree.leaves(params)))
    res = _top_eigenvalues_flat(flat_matvec, v0, key, k, method, num_iters, tol, which)
    return res._replace(eigenvectors=jax.vmap(unravel)(res.eigenvectors))


def _top_eigenvalues_flat(matvec, v0, key, k, method, num_iters, tol, which) -> EigenResult:
    if method == "lanczos":
        res = lz._lanczos_flat(matvec, v0, num_iters, tol=tol, k=k, which=which)
        pairs = lz._wanted_pairs(res.alphas, res.betas, res.num_steps, k, which)
        vectors = lz.ritz_vectors(res.basis, pairs.vectors)
        return EigenResult(pairs.values, vectors, pairs.residuals, res.num_steps)
    if which == "magnitude":
        return _deflated_power(matvec, v0, key, k, num_iters, tol)
    # Largest algebraic by power iteration: if the dominant eigenvalue is negative, the
    # shifted operator A - lambda_1 I is positive semi-definite and its dominant eigenvalues
    # are the largest algebraic ones of A, moved by -lambda_1.
    first = _deflated_power(matvec, v0, key, 1, num_iters, tol)
    sigma = jnp.minimum(first.eigenvalues[0], 0.0)
    warm = ops.block_get(first.eigenvectors, 0)
    shifted = _deflated_power(ops.shift(matvec, sigma), warm, key, k, num_iters, tol)
    return shifted._replace(
        eigenvalues=shifted.eigenvalues + sigma, num_matvecs=shifted.num_matvecs + first.num_matvecs
    )


def _deflated_power(matvec, v0, key, k, num_iters, tol) -> EigenResult:
    """PyHessian's power iteration: Gram-Schmidt against the found vectors at every step."""
    found = ops.block_zeros(k, v0)
    values = jnp.zeros((k,), jnp.result_type(*jax.tree.leaves(v0)))
    changes = jnp.zeros_like(values)
    total = jnp.array(0, jnp.int32)
    for i in range(k):
        start = v0 if i == 0 else ops.tree_random_like(jax.random.fold_in(key, i), v0, "normal")
        start = ops.project_out(found, start)
        start = ops.tree_scale(1.0 / ops.tree_norm(start), start)

        def step(state, found=found):
            it, v, lam, _ = state
            w = ops.project_out(found, matvec(v))
            new_lam = ops.tree_vdot(w, v)
            change = jnp.abs(new_lam - lam) / (jnp.abs(lam) + 1e-6)
            norm = ops.tree_norm(w)
            v = ops.tree_scale(1.0 / jnp.where(norm > 0, norm, 1.0), w)
            return it + 1, v, new_lam, change

        def keep_going(state):
            it, _, _, change = state
            return (it < num_iters) & ((it < 2) | (change >= tol))

        init = (
            jnp.array(0, jnp.int32),
            start,
            jnp.array(0.0, values.dtype),
            jnp.array(jnp.inf, values.dtype),
        )
        it, v, lam, change = jax.lax.while_loop(keep_going, step, init)
        found = ops.block_set(found, i, v)
        values, changes, total = values.at[i].set(lam), changes.at[i].set(change), total + it
    return EigenResult(values, found, changes, total)


# ---- trace ------------------------------------------------------------------------------------


class TraceResult(NamedTuple):
    """A stochastic trace estimate.

    Attributes:
      trace: the estimate of ``tr(C)``.
      standard_error: its standard error (sample standard deviation of the random part / sqrt(n)).
      samples: the random quadratic forms ``z^T C z`` (Hutchinson) or the residual forms of
        Hutch++, whose mean (plus the exact low-rank part) is the estimate.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxdl.probes.hessian import hessian_trace
      >>> loss = lambda w, _: 0.5 * jnp.sum(jnp.arange(1.0, 5.0) * w**2)  # H = diag(1, 2, 3, 4)
      >>> res = hessian_trace(loss, jnp.zeros(4), None, key=jax.random.key(0), num_samples=3)
      >>> # a diagonal H gives z^T H z = tr(H) = 10 for every Rademacher z, so the error is 0
      >>> res.samples.tolist(), float(res.trace), float(res.standard_error)
      ([10.0, 10.0, 10.0], 10.0, 0.0)
    """

    trace: jax.Array
    standard_error: jax.Array
    samples: jax.Array


def hessian_trace(
    loss_fn: Curvature,
    params: PyTree,
    batch: PyTree,
    *,
    key: jax.Array,
    num_samples: int = 100,
    method: str = "hutchinson",
    distribution: str = "rademacher",
    vectors_per_step: int = 10,
) -> TraceResult:
    """Stochastic estimate of the Hessian (or GGN / Fisher) trace.

    ``"hutchinson"`` (Hutchinson 1989): ``tr(C) ≈ (1/m) sum_i z_i^T C z_i``; with Rademacher
    ``z`` the per-sample variance is ``2 (||C||_F^2 - sum_i C_ii^2)``, zero for diagonal ``C``.
    ``"hutch++"`` (Meyer, Musco, Musco & Woodruff 2021, Alg. 1): a third of the ``m``
    products sketch the top range ``Q`` of ``C``, whose trace ``tr(Q^T C Q)`` is taken
    exactly, and Hutchinson estimates the rest on ``(I - QQ^T) C (I - QQ^T)``; the error
    falls as ``1/m`` instead of ``1/sqrt(m)`` for matrices with decaying spectra.

    Compiles once per ``loss_fn`` object (for :class:`GGN` / :class:`EmpiricalFisher`, per
    their functions), option values and input shapes; later calls reuse the program. The cache
    holds ``loss_fn`` weakly, so a new ``lambda`` per call compiles every time but does not
    leak: build the loss once outside the loop (or use :func:`hessian_probes`). Inside your
    own ``jax.jit`` it is traced into your program with traced ``params``, ``batch``, ``key``.

    Args:
      loss_fn, params, batch: as in :func:`top_eigenvalues`.
      key: PRNG key for the probe vectors.
      num_samples: ``m``, the number of matrix-vector products (``>= 2``; ``>= 3`` for hutch++).
      method: ``"hutchinson"`` or ``"hutch++"``.
      distribution: ``"rademacher"`` or ``"normal"`` probe entries.
      vectors_per_step: products computed together by ``vmap`` (memory for speed).

    Returns:
      :class:`TraceResult` ``(trace, standard_error, samples)``.

    >>> loss = lambda w, _: 0.5 * jnp.sum(jnp.arange(1.0, 5.0) * w**2)
    >>> float(hessian_trace(loss, jnp.zeros(4), None, key=jax.random.key(0), num_samples=2).trace)
    10.0
    """
    _check_choice("method", method, ("hutchinson", "hutch++"))
    _check_choice("distribution", distribution, ("rademacher", "normal"))
    minimum = 3 if method == "hutch++" else 2
    _check_int("num_samples", num_samples, minimum, f"at least {minimum} for method={method!r}")
    _check_int("vectors_per_step", vectors_per_step, 1)
    _check_key(key)
    options = (num_samples, method, distribution, vectors_per_step)
    return _jitted("hessian_trace", loss_fn, options)(params, batch, key)


def _trace_probe(curvature, num_samples, method, distribution, vectors_per_step, params, batch, key):
    _check_params(params)
    matvec = curvature_operator(curvature, params, batch)
    apply_block = lambda block: jax.lax.map(matvec, block, batch_size=vectors_per_step)
    draw = lambda k, n: jax.vmap(lambda kk: ops.tree_random_like(kk, params, distribution))(
        jax.random.split(k, n)
    )

    if method == "hutchinson":
        probes = draw(key, num_samples)
        samples = jax.vmap(ops.tree_vdot)(probes, apply_block(probes))
        return TraceResult(jnp.mean(samples), _standard_error(samples), samples)

    sketch_key, probe_key = jax.random.split(key)
    num_sketch = num_samples // 3
    num_probes = num_samples - 2 * num_sketch
    basis = _orthonormalise(apply_block(draw(sketch_key, num_sketch)))
    low_rank = jnp.trace(ops.block_gram(basis, apply_block(basis)))
    probes = draw(probe_key, num_probes)
    probes = jax.vmap(lambda z: ops.project_out(basis, z, passes=1))(probes)
    samples = jax.vmap(ops.tree_vdot)(probes, apply_block(probes))
    return TraceResult(low_rank + jnp.mean(samples), _standard_error(samples), samples)


def _orthonormalise(block: PyTree, passes: int = 2) -> PyTree:
    """An orthonormal basis of the span of a block (rank-deficient directions become zero rows).

    Gram-matrix eigendecomposition, repeated: ``Q = Y U diag(d^{-1/2})`` with ``Y^T Y = U D U^T``.
    """
    for _ in range(passes):
        gram = ops.block_gram(block, block)
        d, u = jnp.linalg.eigh(gram)
        keep = d > jnp.finfo(d.dtype).eps * gram.shape[0] * jnp.max(d)
        inv_sqrt = jnp.where(keep, jax.lax.rsqrt(jnp.where(keep, d, 1.0)), 0.0)
        block = ops.block_matmul(block, u * inv_sqrt)
    return block


def _standard_error(samples: jax.Array) -> jax.Array:
    return jnp.std(samples, ddof=1) / np.sqrt(samples.shape[0])


# ---- spectral density -------------------------------------------------------------------------


class SpectralDensity(NamedTuple):
    """A smoothed eigenvalue density from stochastic Lanczos quadrature.

    Attributes:
      grid: ``(G,)`` eigenvalue axis.
      density: ``(G,)`` density on ``grid``; integrates to 1 (trapezoid rule).
      ritz_values: ``(num_runs, m)`` quadrature nodes (Ritz values of each run).
      ritz_weights: ``(num_runs, m)`` quadrature weights (squared first components); each row sums to 1.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxdl.probes.hessian import spectral_density
      >>> loss = lambda w, _: 0.5 * jnp.sum(jnp.array([1.0, 3.0]) * w**2)  # H = diag(1, 3)
      >>> sd = spectral_density(loss, jnp.zeros(2), None, key=jax.random.key(0), num_runs=1, num_points=101)
      >>> sd.ritz_values.round(4).tolist(), sd.ritz_weights.round(4).tolist()  # mass 1/2 at each eigenvalue
      ([[1.0, 3.0]], [[0.5, 0.5]])
      >>> sd.grid.shape, round(float(jnp.trapezoid(sd.density, sd.grid)), 4)
      ((101,), 1.0)
    """

    grid: jax.Array
    density: jax.Array
    ritz_values: jax.Array
    ritz_weights: jax.Array


def spectral_density(
    loss_fn: Curvature,
    params: PyTree,
    batch: PyTree,
    *,
    key: jax.Array,
    num_runs: int = 10,
    lanczos_steps: int = 90,
    sigma_squared: float = 1e-5,
    grid: jax.Array | None = None,
    num_points: int = 10_000,
    runs_per_step: int = 1,
) -> SpectralDensity:
    """Eigenvalue density of the Hessian (or GGN / Fisher) by stochastic Lanczos quadrature.

    Each run starts Lanczos from a normalised Rademacher vector ``v``; the eigenpairs
    ``(theta_k, s_k)`` of its tridiagonal ``T_m`` give the Gauss quadrature
    ``v^T f(C) v ≈ sum_k s_k[0]^2 f(theta_k)`` (Golub & Meurant), exact for polynomials of
    degree ``< 2m``. Averaging over runs estimates ``tr f(C) / P``; broadening each node by a
    Gaussian gives the density (Ghorbani, Krishnan & Xiao 2019, eq. 6):
    ``phi(t) = (1/runs) sum_runs sum_k s_k[0]^2 N(t; theta_k, sigma^2)``.

    Compiles once per ``loss_fn`` object (for :class:`GGN` / :class:`EmpiricalFisher`, per
    their functions), option values and input shapes; later calls reuse the program. The cache
    holds ``loss_fn`` weakly, so a new ``lambda`` per call compiles every time but does not
    leak: build the loss once outside the loop (or use :func:`hessian_probes`). Inside your
    own ``jax.jit`` it is traced into your program with traced ``params``, ``batch``, ``key``.

    Args:
      loss_fn, params, batch: as in :func:`top_eigenvalues`.
      key: PRNG key for the start vectors.
      num_runs: number of independent Lanczos runs.
      lanczos_steps: ``m`` steps per run (clipped to ``P``).
      sigma_squared: relative Gaussian variance; the variance used is
        ``sigma_squared * max(1, lambda_max - lambda_min)`` (PyHessian's rule).
      grid: optional ``(G,)`` evaluation points; by default ``num_points`` points spanning the
        Ritz values plus three standard deviations.
      num_points: grid size when ``grid`` is not given (static).
      runs_per_step: runs computed together by ``vmap`` (each needs ``m + 1`` parameter-sized
        vectors of memory).

    Returns:
      :class:`SpectralDensity` ``(grid, density, ritz_values, ritz_weights)``.

    >>> loss = lambda w, _: 0.5 * jnp.sum(jnp.array([1.0, 1.0, 3.0]) * w**2)
    >>> sd = spectral_density(loss, jnp.zeros(3), None, key=jax.random.key(0), num_runs=2)
    >>> round(float(sd.grid[jnp.argmax(sd.density)]), 2), sd.ritz_weights.sum(axis=1).round(4).tolist()
    (1.0, [1.0, 1.0])
    """
    for name, value in (
        ("num_runs", num_runs),
        ("lanczos_steps", lanczos_steps),
        ("runs_per_step", runs_per_step),
        ("num_points", num_points),
    ):
        _check_int(name, value, 1)
    if not isinstance(sigma_squared, int | float) or not sigma_squared > 0:
        raise ValueError(f"sigma_squared must be a positive number, got {sigma_squared!r}")
    _check_key(key)
    options = (num_runs, lanczos_steps, float(sigma_squared), num_points, runs_per_step)
    return _jitted("spectral_density", loss_fn, options)(params, batch, key, grid)


def _density_probe(
    curvature, num_runs, lanczos_steps, sigma_squared, num_points, runs_per_step, params, batch, key, grid
) -> SpectralDensity:
    _check_params(params)
    matvec = curvature_operator(curvature, params, batch)

    flat_matvec, _, _ = ops.flat_operator(matvec, params)
    size, dtype = ops.tree_size(params), jnp.result_type(*jax.tree.leaves(params))

    def one_run(run_key):
        v0 = jax.random.rademacher(run_key, (size,), dtype)  # ops.tree_random_like before the cut
        res = lz._lanczos_flat(flat_matvec, v0, lanczos_steps)
        theta, s = jnp.linalg.eigh(lz.tridiagonal(res.alphas, res.betas))
        return theta, s[0] ** 2

    values, weights = jax.lax.map(one_run, jax.random.split(key, num_runs), batch_size=runs_per_step)
    grid, density = density_from_ritz(
        values, weights, sigma_squared=sigma_squared, grid=grid, num_points=num_points
    )
    return SpectralDensity(grid, density, values, weights)


def density_from_ritz(
    ritz_values: jax.Array,
    ritz_weights: jax.Array,
    *,
    sigma_squared: float = 1e-5,
    grid: jax.Array | None = None,
    num_points: int = 10_000,
) -> tuple[jax.Array, jax.Array]:
    """Gaussian-broadened density from quadrature nodes and weights of several runs.

    Args:
      ritz_values, ritz_weights: ``(num_runs, m)``.
      sigma_squared, grid, num_points: as in :func:`spectral_density`.

    Returns:
      ``(grid, density)``, the density normalised to unit integral on the grid.

    >>> g, d = density_from_ritz(jnp.array([[0.0, 1.0]]), jnp.array([[0.5, 0.5]]), num_points=101)
    >>> round(float(jnp.trapezoid(d, g)), 6)
    1.0
    """
    if ritz_values.shape != ritz_weights.shape or ritz_values.ndim != 2:
        raise ValueError(
            "ritz_values and ritz_weights must both have shape (num_runs, m), got "
            f"{ritz_values.shape} and {ritz_weights.shape}"
        )
    lo, hi = jnp.min(ritz_values), jnp.max(ritz_values)
    variance = sigma_squared * jnp.maximum(1.0, hi - lo)
    if grid is None:
        pad = 3.0 * jnp.sqrt(variance)
        grid = jnp.linspace(lo - pad, hi + pad, num_points)
    grid = jnp.asarray(grid, ritz_values.dtype)
    if grid.ndim != 1:
        raise ValueError(f"grid must be one-dimensional, got shape {grid.shape}")
    z = (grid[:, None] - ritz_values.reshape(-1)[None, :]) ** 2 / (2.0 * variance)
    kernel = jnp.exp(-z) / jnp.sqrt(2.0 * jnp.pi * variance)
    density = kernel @ ritz_weights.reshape(-1) / ritz_values.shape[0]
    return grid, density / jnp.trapezoid(density, grid)


# ---- a probe object for one loss ----------------------------------------------------------------


class HessianProbes:
    """The Hessian (or GGN / Fisher) probes of one ``loss_fn``, compiled once for a training loop.

    Build it once, outside the loop, and call its methods with the current ``params``,
    ``batch`` and ``key``; each method compiles on its first call per options and shapes and
    reuses the program afterwards, eagerly or inside the caller's ``jax.jit``. The methods take
    the keyword options of :func:`top_eigenvalues`, :func:`hessian_trace` and
    :func:`spectral_density`.

    Attributes:
      loss_fn: ``loss_fn(params, batch) -> scalar``, or a :class:`GGN` / :class:`EmpiricalFisher`.

    >>> probes = hessian_probes(lambda w, x: 0.5 * jnp.sum(x * w**2))  # H = diag(x)
    >>> x, key = jnp.array([1.0, 2.0, 3.0]), jax.random.key(0)
    >>> [round(float(probes.top_eigenvalues(jnp.zeros(3), x, key).eigenvalues[0]), 4) for _ in range(2)]
    [3.0, 3.0]
    >>> float(probes.trace(jnp.zeros(3), x, key, num_samples=2).trace), probes.hvp(jnp.zeros(3), x, jnp.ones(3)).tolist()
    (6.0, [1.0, 2.0, 3.0])
    """

    def __init__(self, loss_fn: Curvature):
        _curvature_parts(loss_fn)  # validates the specification
        self.loss_fn = loss_fn

    def hvp(self, params: PyTree, batch: PyTree, v: PyTree) -> PyTree:
        """``C v`` for the curvature ``C`` of ``loss_fn`` at ``params`` (jitted, see :func:`hvp`).

        >>> hessian_probes(lambda w, _: jnp.sum(w**2)).hvp(jnp.ones(2), None, jnp.ones(2)).tolist()
        [2.0, 2.0]
        """
        return _jitted("hvp", self.loss_fn, ())(params, batch, v)

    def top_eigenvalues(self, params: PyTree, batch: PyTree, key: jax.Array, **options: Any) -> EigenResult:
        """:func:`top_eigenvalues` of ``loss_fn``.

        >>> probes = hessian_probes(lambda w, _: 0.5 * jnp.sum(jnp.array([1.0, 4.0]) * w**2))
        >>> probes.top_eigenvalues(jnp.zeros(2), None, jax.random.key(0)).eigenvalues.round(4).tolist()
        [4.0]
        """
        return top_eigenvalues(self.loss_fn, params, batch, key=key, **options)

    def trace(self, params: PyTree, batch: PyTree, key: jax.Array, **options: Any) -> TraceResult:
        """:func:`hessian_trace` of ``loss_fn``.

        >>> probes = hessian_probes(lambda w, _: 0.5 * jnp.sum(jnp.array([1.0, 4.0]) * w**2))
        >>> float(probes.trace(jnp.zeros(2), None, jax.random.key(0), num_samples=2).trace)
        5.0
        """
        return hessian_trace(self.loss_fn, params, batch, key=key, **options)

    def density(self, params: PyTree, batch: PyTree, key: jax.Array, **options: Any) -> SpectralDensity:
        """:func:`spectral_density` of ``loss_fn``.

        >>> probes = hessian_probes(lambda w, _: 0.5 * jnp.sum(jnp.array([1.0, 4.0]) * w**2))
        >>> probes.density(jnp.zeros(2), None, jax.random.key(0), num_runs=1).ritz_values.round(4).tolist()
        [[1.0, 4.0]]
        """
        return spectral_density(self.loss_fn, params, batch, key=key, **options)


def hessian_probes(loss_fn: Curvature) -> HessianProbes:
    """Bind the probes to one ``loss_fn`` (or :class:`GGN` / :class:`EmpiricalFisher`): see :class:`HessianProbes`.

    >>> probes = hessian_probes(lambda w, _: jnp.sum(w**2))
    >>> round(float(probes.top_eigenvalues(jnp.ones(3), None, jax.random.key(0)).eigenvalues[0]), 4)
    2.0
    """
    return HessianProbes(loss_fn)


# ---- the compile cache and argument checks ------------------------------------------------------


def _hvp_probe(curvature, params, batch, v):
    if callable(curvature) and not isinstance(curvature, GGN | EmpiricalFisher):
        return hvp(curvature, params, batch, v)
    return curvature_operator(curvature, params, batch)(v)


_PROBES: dict[str, Callable[..., Any]] = {
    "hvp": _hvp_probe,
    "top_eigenvalues": _top_eigenvalues_probe,
    "hessian_trace": _trace_probe,
    "spectral_density": _density_probe,
}


def _jitted(name: str, loss_fn: Curvature, options: tuple) -> Callable[..., Any]:
    """The jitted probe ``name`` for ``loss_fn`` and static ``options``, from the weak cache."""
    kind, functions = _curvature_parts(loss_fn)

    def build(resolve):
        def probe(*args):
            return _PROBES[name](_curvature_from_parts(kind, resolve()), *options, *args)

        probe.__name__ = probe.__qualname__ = name
        return jax.jit(probe)

    return _cache.cached(functions, (name, kind, options), build)


def _check_params(params) -> int:
    ops.check_float_leaves(params)
    return ops.tree_size(params)


def _check_key(key) -> None:
    """Refuse anything but a PRNG key, before tracing (so the message shows the value, not a tracer)."""
    if not isinstance(key, jax.Array):
        raise TypeError(f"key must be a PRNG key (jax.random.key(seed)), got {type(key).__name__} {key!r}")
    if not (
        jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or (key.dtype == jnp.uint32 and key.shape == (2,))
    ):
        raise TypeError(
            "key must be a PRNG key (jax.random.key(seed)) or a legacy uint32[2] key, got an array of "
            f"dtype {key.dtype} and shape {key.shape}"
        )


def _check_int(name: str, value: Any, minimum: int, expected: str | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        expected = expected or ("a positive int" if minimum == 1 else f"an int >= {minimum}")
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
