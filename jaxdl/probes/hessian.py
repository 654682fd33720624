"""Hessian probes: HVP, Gauss-Newton and Fisher products, top eigenvalues, trace and spectral density.

All probes are pure functions of ``(loss_fn, params, batch)`` that run under ``jit`` with
any parameter pytree (nothing is raveled), so they can be called every k steps inside a
jitted training loop; a batch sharded over a ``Mesh`` turns their reductions into
all-reduces. The methods:

- Hessian-vector product, forward-over-reverse ``jvp(grad(L))`` (Pearlmutter 1994; the JAX
  autodiff cookbook): ``H v`` at about twice the cost of a gradient.
- Generalised Gauss-Newton product ``J^T H_l J v`` (Schraudolph 2002; Martens 2020, eq. 9):
  a ``jvp`` of the model, the loss Hessian in output space, a ``vjp`` back.
- Empirical Fisher product ``(1/N) sum_i g_i g_i^T v`` (Kunstner et al. 2019, eq. 3).
- Top eigenvalues by Lanczos with full reorthogonalisation (Lanczos 1950; Paige 1976) or by
  power iteration with deflation (PyHessian, Yao et al. 2020, Alg. 1).
- Trace by Hutchinson (1989) with Rademacher probes, or Hutch++ (Meyer et al. 2021, Alg. 1).
- Spectral density by stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; Ghorbani,
  Krishnan & Xiao 2019, eq. 6) with Gaussian broadening as in PyHessian.

The object whose curvature is probed is chosen by the first argument: a plain
``loss_fn(params, batch) -> scalar`` means the Hessian; :class:`GGN` and
:class:`EmpiricalFisher` select the other two. A :class:`Batches` in place of ``batch``
averages the operator over stacked microbatches with ``lax.scan`` (a full-data Hessian
whose data do not fit in one step).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl._typing import PyTree
from jaxdl.probes import _operators as ops
from jaxdl.probes import lanczos as lz

# ---- curvature specifications -----------------------------------------------------------------


class GGN(NamedTuple):
    """Select the generalised Gauss-Newton matrix ``J^T H_l J`` instead of the Hessian.

    Attributes:
      apply_fn: ``apply_fn(params, batch) -> outputs`` (any pytree of arrays).
      loss: ``loss(outputs, batch) -> scalar``; its Hessian in output space is ``H_l``.

    >>> spec = GGN(lambda w, b: b @ w, lambda out, b: 0.5 * jnp.mean(out**2))
    >>> x = jnp.diag(jnp.array([2.0, 1.0]))
    >>> top_eigenvalues(spec, jnp.zeros(2), x, key=jax.random.key(0)).eigenvalues.round(4).tolist()
    [2.0]
    """

    apply_fn: Callable[[PyTree, PyTree], PyTree]
    loss: Callable[[PyTree, PyTree], jax.Array]


class EmpiricalFisher(NamedTuple):
    """Select the empirical Fisher ``(1/N) sum_i g_i g_i^T`` (``g_i`` the per-example gradients).

    Attributes:
      per_example_loss_fn: ``per_example_loss_fn(params, batch) -> (N,)`` losses.

    >>> spec = EmpiricalFisher(lambda w, b: b @ w)
    >>> curvature_operator(spec, jnp.zeros(2), jnp.eye(2))(jnp.ones(2)).tolist()
    [0.5, 0.5]
    """

    per_example_loss_fn: Callable[[PyTree, PyTree], jax.Array]


class Batches(NamedTuple):
    """Microbatches stacked along a leading axis; probes average their operator over them.

    Every leaf of ``data`` has shape ``(num_batches, ...)``; the microbatches must have equal
    sizes so that the average of per-batch mean losses is the full-data mean loss.

    >>> loss = lambda w, b: 0.5 * jnp.mean((b["x"] @ w) ** 2)
    >>> data = Batches({"x": jnp.ones((2, 3, 2))})  # 2 microbatches of 3 examples
    >>> hvp(loss, jnp.zeros(2), data, jnp.array([1.0, 0.0])).tolist()
    [1.0, 1.0]
    """

    data: PyTree


def stack_batches(batches: Iterable[PyTree]) -> Batches:
    """Stack an iterable of equally shaped batches into a :class:`Batches` (on the host).

    >>> b = stack_batches([{"x": np.ones(3)}, {"x": np.zeros(3)}])
    >>> b.data["x"].shape
    (2, 3)
    """
    batches = list(batches)
    if not batches:
        raise ValueError("batches must contain at least one batch")
    return Batches(jax.tree.map(lambda *xs: np.stack(xs), *batches))


# ---- matrix-vector products -------------------------------------------------------------------


def hvp(loss_fn: Callable, params: PyTree, batch: PyTree, v: PyTree) -> PyTree:
    """Hessian-vector product ``H v`` of ``loss_fn(., batch)`` at ``params`` (forward-over-reverse).

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: any pytree of float arrays.
      batch: the data (any pytree), or :class:`Batches` to average over microbatches.
      v: a pytree with the structure and shapes of ``params``.

    Returns:
      ``H v``, shaped like ``params``.

    >>> A = jnp.array([[2.0, 1.0], [1.0, 3.0]])
    >>> hvp(lambda w, _: 0.5 * w @ A @ w, jnp.zeros(2), None, jnp.array([1.0, 0.0])).tolist()
    [2.0, 1.0]
    """
    _check_inputs(params, v)
    return _mean_over_batches(lambda b: jax.jvp(jax.grad(lambda p: loss_fn(p, b)), (params,), (v,))[1], batch)


def ggn_vp(apply_fn: Callable, loss: Callable, params: PyTree, batch: PyTree, v: PyTree) -> PyTree:
    """Generalised Gauss-Newton product ``J^T H_l J v`` (Schraudolph 2002; Martens 2020, eq. 9).

    ``J`` is the Jacobian of ``apply_fn(., batch)`` at ``params`` and ``H_l`` the Hessian of
    ``loss(., batch)`` at the model outputs. It equals the Hessian for a model linear in its
    parameters and, for softmax cross-entropy or squared error, the Fisher information.

    Args:
      apply_fn: ``apply_fn(params, batch) -> outputs``.
      loss: ``loss(outputs, batch) -> scalar``.
      params, batch, v: as in :func:`hvp`.

    >>> X = jnp.array([[1.0, 0.0], [1.0, 2.0]])
    >>> mse = lambda out, b: 0.5 * jnp.mean(out**2)
    >>> ggn_vp(lambda w, b: X @ w, mse, jnp.zeros(2), None, jnp.array([1.0, 0.0])).tolist()
    [1.0, 1.0]
    """
    _check_inputs(params, v)
    return _mean_over_batches(lambda b: _ggn_operator(apply_fn, loss, params, b)(v), batch)


def fisher_vp(per_example_loss_fn: Callable, params: PyTree, batch: PyTree, v: PyTree) -> PyTree:
    """Empirical Fisher product ``(1/N) sum_i g_i (g_i . v)`` without per-example gradients.

    With ``l(p)`` the vector of the ``N`` per-example losses and ``J_l`` its Jacobian, this is
    ``J_l^T (J_l v) / N`` (Kunstner, Balles & Hennig 2019, eq. 3): one ``jvp`` and one ``vjp``.

    Args:
      per_example_loss_fn: ``per_example_loss_fn(params, batch) -> (N,)``.
      params, batch, v: as in :func:`hvp`.

    >>> X = jnp.array([[1.0, 0.0], [0.0, 2.0]])
    >>> fisher_vp(lambda w, b: X @ w, jnp.zeros(2), None, jnp.array([1.0, 1.0])).tolist()
    [0.5, 2.0]
    """
    _check_inputs(params, v)
    return _mean_over_batches(lambda b: _fisher_operator(per_example_loss_fn, params, b)(v), batch)


def curvature_operator(
    curvature: Callable | GGN | EmpiricalFisher, params: PyTree, batch: PyTree
) -> ops.Operator:
    """The matrix-free operator ``v -> C v`` for a curvature specification at ``params``.

    The forward (and backward) pass is linearised once here, so repeated products, as in
    Lanczos, replay only the linear part.

    Args:
      curvature: ``loss_fn(params, batch)`` (Hessian), :class:`GGN` or :class:`EmpiricalFisher`.
      params: any pytree of float arrays.
      batch: the data, or :class:`Batches`.

    >>> op = curvature_operator(lambda w, _: jnp.sum(w**2), jnp.ones(2), None)
    >>> op(jnp.array([1.0, 2.0])).tolist()
    [2.0, 4.0]
    """
    ops.check_float_leaves(params)
    if isinstance(batch, Batches):
        _check_batches(batch)
        return lambda v: _mean_over_batches(lambda b: _single_batch_operator(curvature, params, b)(v), batch)
    return _single_batch_operator(curvature, params, batch)


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


@functools.partial(jax.jit, static_argnames=("loss_fn", "k", "method", "num_iters", "tol", "which"))
def top_eigenvalues(
    loss_fn: Callable | GGN | EmpiricalFisher,
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
    _check_choice("which", which, lz.WHICH)
    dimension = _check_probe_args(params, key)
    if not 1 <= k <= dimension:
        raise ValueError(f"k must be in [1, {dimension}] (the number of parameters), got {k}")
    if num_iters < k:
        raise ValueError(f"num_iters must be at least k={k}, got {num_iters}")
    if tol < 0:
        raise ValueError(f"tol must be non-negative, got {tol}")
    matvec = curvature_operator(loss_fn, params, batch)
    if which == "smallest":
        res = _top_eigenvalues(ops.scale(matvec, -1.0), params, key, k, method, num_iters, tol, "algebraic")
        return res._replace(eigenvalues=-res.eigenvalues)
    return _top_eigenvalues(matvec, params, key, k, method, num_iters, tol, which)


def _top_eigenvalues(matvec, params, key, k, method, num_iters, tol, which) -> EigenResult:
    v0 = ops.tree_random_like(key, params, "normal")
    if method == "lanczos":
        res = lz.lanczos(matvec, v0, num_iters, tol=tol, k=k, which=which)
        pairs = lz.ritz_pairs(res.alphas, res.betas, res.num_steps, k, which)
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
    res = _deflated_power(ops.shift(matvec, sigma), warm, key, k, num_iters, tol)
    return res._replace(eigenvalues=res.eigenvalues + sigma, num_matvecs=res.num_matvecs + first.num_matvecs)


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


@functools.partial(
    jax.jit, static_argnames=("loss_fn", "num_samples", "method", "distribution", "vectors_per_step")
)
def hessian_trace(
    loss_fn: Callable | GGN | EmpiricalFisher,
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
    _check_probe_args(params, key)
    minimum = 3 if method == "hutch++" else 2
    if num_samples < minimum:
        raise ValueError(f"num_samples must be at least {minimum} for method={method!r}, got {num_samples}")
    if vectors_per_step < 1:
        raise ValueError(f"vectors_per_step must be a positive int, got {vectors_per_step}")
    matvec = curvature_operator(loss_fn, params, batch)
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


@functools.partial(
    jax.jit,
    static_argnames=("loss_fn", "num_runs", "lanczos_steps", "sigma_squared", "num_points", "runs_per_step"),
)
def spectral_density(
    loss_fn: Callable | GGN | EmpiricalFisher,
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
    _check_probe_args(params, key)
    for name, value in (
        ("num_runs", num_runs),
        ("lanczos_steps", lanczos_steps),
        ("runs_per_step", runs_per_step),
    ):
        if value < 1:
            raise ValueError(f"{name} must be a positive int, got {value}")
    if sigma_squared <= 0:
        raise ValueError(f"sigma_squared must be positive, got {sigma_squared}")
    matvec = curvature_operator(loss_fn, params, batch)

    def one_run(run_key):
        v0 = ops.tree_random_like(run_key, params, "rademacher")
        res = lz.lanczos(matvec, v0, lanczos_steps)
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


# ---- helpers ----------------------------------------------------------------------------------


def _single_batch_operator(curvature, params, batch) -> ops.Operator:
    if isinstance(curvature, GGN):
        return _ggn_operator(curvature.apply_fn, curvature.loss, params, batch)
    if isinstance(curvature, EmpiricalFisher):
        return _fisher_operator(curvature.per_example_loss_fn, params, batch)
    if callable(curvature):
        _, linear_hvp = jax.linearize(jax.grad(lambda p: curvature(p, batch)), params)
        return lambda v: linear_hvp(_checked(v, params))
    raise TypeError(
        f"loss_fn must be a callable loss_fn(params, batch), GGN or EmpiricalFisher, got {type(curvature).__name__}"
    )


def _ggn_operator(apply_fn, loss, params, batch) -> ops.Operator:
    outputs, jvp_fn = jax.linearize(lambda p: apply_fn(p, batch), params)
    vjp_fn = jax.linear_transpose(jvp_fn, params)
    _, output_hvp = jax.linearize(jax.grad(lambda o: loss(o, batch)), outputs)
    return lambda v: vjp_fn(output_hvp(jvp_fn(_checked(v, params))))[0]


def _fisher_operator(per_example_loss_fn, params, batch) -> ops.Operator:
    losses, jvp_fn = jax.linearize(lambda p: per_example_loss_fn(p, batch), params)
    if jnp.ndim(losses) != 1:
        raise ValueError(
            f"per_example_loss_fn must return a vector of per-example losses, got shape {jnp.shape(losses)}"
        )
    vjp_fn = jax.linear_transpose(jvp_fn, params)
    return lambda v: vjp_fn(jvp_fn(_checked(v, params)) / losses.shape[0])[0]


def _mean_over_batches(fn: Callable[[PyTree], PyTree], batch: PyTree) -> PyTree:
    """``fn(batch)``, or the mean of ``fn`` over the microbatches of a :class:`Batches`."""
    if not isinstance(batch, Batches):
        return fn(batch)
    num = _check_batches(batch)

    def accumulate(total, microbatch):
        return jax.tree.map(jnp.add, total, fn(microbatch)), None

    first = fn(jax.tree.map(lambda x: x[0], batch.data))
    rest = jax.tree.map(lambda x: x[1:], batch.data)
    total, _ = jax.lax.scan(accumulate, first, rest)
    return jax.tree.map(lambda t: t / num, total)


def _check_batches(batch: Batches) -> int:
    sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in jax.tree.leaves(batch.data)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"every leaf of Batches.data must have the same leading (microbatch) axis, got sizes {sizes}"
        )
    (num,) = sizes
    if num < 1:
        raise ValueError("Batches.data must hold at least one microbatch")
    return num


def _check_inputs(params, v) -> None:
    ops.check_float_leaves(params)
    ops.check_like(v, params)


def _checked(v, params):
    ops.check_like(v, params)
    return v


def _check_probe_args(params, key) -> int:
    ops.check_float_leaves(params)
    if not isinstance(key, jax.Array) or not (
        jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or (key.dtype == jnp.uint32 and key.shape == (2,))
    ):
        raise TypeError(f"key must be a PRNG key (jax.random.key(seed)), got {key!r}")
    return ops.tree_size(params)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
