"""Stability and learning-rate monitors from the seed papers, built on the Hessian probes.

- :func:`stability_report`: linear stability of (S)GD at the current point. GD with step
  ``eta`` is stable along the sharpest direction iff ``lambda_max(H) <= 2 / eta`` (heavy-ball
  momentum ``beta``: ``(2 + 2 beta) / eta``), and at the edge of stability the sharpness rises
  to and hovers at that value (Cohen et al., ICLR 2021). A minimum that is linearly
  stable for SGD satisfies ``tr(H) <= 2 / eta`` (Wu & Su, ICML 2023).
- :func:`batch_vs_full_spectrum`: extremal eigenvalues of minibatch Hessians against the
  full-data Hessian; the batch extremes are larger in magnitude and shrink towards the full
  ones as the batch grows (Granziol, Zohren & Roberts, JMLR 2022).
- :func:`lr_from_spectrum`: the learning-rate rule that follows (Granziol et al. 2022):
  linear in the batch size for SGD, square root for Adam, while minibatch noise dominates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl._typing import PyTree
from jaxdl.probes import hessian as hs

__all__ = [
    "LearningRates",
    "SpectrumComparison",
    "StabilityReport",
    "batch_vs_full_spectrum",
    "lr_from_spectrum",
    "stability_report",
]


class StabilityReport(NamedTuple):
    """Linear-stability ratios; a value above 1 means the optimizer cannot stay at this point.

    Attributes:
      sharpness_ratio: ``eta * lambda_max / (2 + 2 * momentum)``; ``eta * lambda_max / 2`` for GD.
      trace_ratio: ``eta * tr(H) / 2`` (Wu & Su 2023).
      stable: ``sharpness_ratio <= 1`` for ``"gd"``; both ratios ``<= 1`` for ``"sgd"``.
      lambda_max: the largest (algebraic) Hessian eigenvalue, the sharpness.
      trace: the Hutchinson trace estimate.
      trace_standard_error: its standard error.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxdl.probes.monitors import stability_report
      >>> loss = lambda w, _: 0.5 * jnp.sum(jnp.array([4.0, 1.0]) * w**2)  # lambda_max = 4, tr(H) = 5
      >>> key = jax.random.key(0)
      >>> gd = stability_report(loss, jnp.zeros(2), None, 0.45, key=key, num_samples=2)
      >>> sgd = stability_report(loss, jnp.zeros(2), None, 0.45, key=key, optimizer="sgd", num_samples=2)
      >>> round(float(gd.sharpness_ratio), 4), round(float(gd.trace_ratio), 4)  # 0.45 * 4 / 2, 0.45 * 5 / 2
      (0.9, 1.125)
      >>> bool(gd.stable), bool(sgd.stable)  # GD is stable; SGD also needs tr(H) <= 2 / eta and is not
      (True, False)
    """

    sharpness_ratio: jax.Array
    trace_ratio: jax.Array
    stable: jax.Array
    lambda_max: jax.Array
    trace: jax.Array
    trace_standard_error: jax.Array


def stability_report(
    loss_fn: Callable | hs.GGN | hs.EmpiricalFisher,
    params: PyTree,
    batch: PyTree,
    learning_rate: float | jax.Array,
    *,
    key: jax.Array,
    optimizer: str = "gd",
    momentum: float = 0.0,
    num_iters: int = 20,
    num_samples: int = 100,
) -> StabilityReport:
    """Edge-of-stability and SGD-stability ratios at ``params``.

    Args:
      loss_fn, params, batch: as in :func:`jaxdl.probes.hessian.top_eigenvalues`. Pass the
        fixed probe batch the sharpness is tracked on (Cohen et al. use 5000 training points).
      learning_rate: ``eta`` (a float or a traced scalar, e.g. from a schedule).
      key: PRNG key.
      optimizer: ``"gd"`` (full batch; stable iff ``lambda_max <= (2 + 2 beta) / eta``) or
        ``"sgd"`` (also requires ``tr(H) <= 2 / eta``).
      momentum: heavy-ball ``beta`` in ``[0, 1)``.
      num_iters: Lanczos steps for ``lambda_max`` (10-20 suffice for the top eigenvalue).
      num_samples: Hutchinson probes for the trace.

    >>> loss = lambda w, _: 0.5 * jnp.sum(jnp.array([4.0, 1.0]) * w**2)
    >>> r = stability_report(loss, jnp.zeros(2), None, 0.4, key=jax.random.key(0), num_samples=2)
    >>> round(float(r.sharpness_ratio), 4), round(float(r.trace_ratio), 4), bool(r.stable)
    (0.8, 1.0, True)
    """
    if optimizer not in ("gd", "sgd"):
        raise ValueError(f"optimizer must be 'gd' or 'sgd', got {optimizer!r}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if isinstance(learning_rate, int | float) and learning_rate <= 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate}")
    eig_key, trace_key = jax.random.split(key)
    lam = hs.top_eigenvalues(loss_fn, params, batch, key=eig_key, num_iters=num_iters, tol=0.0).eigenvalues[0]
    tr = hs.hessian_trace(loss_fn, params, batch, key=trace_key, num_samples=num_samples)
    sharpness_ratio = learning_rate * lam / (2.0 + 2.0 * momentum)
    trace_ratio = learning_rate * tr.trace / 2.0
    stable = sharpness_ratio <= 1.0
    if optimizer == "sgd":
        stable = stable & (trace_ratio <= 1.0)
    return StabilityReport(sharpness_ratio, trace_ratio, stable, lam, tr.trace, tr.standard_error)


class SpectrumComparison(NamedTuple):
    """Extremal eigenvalues of minibatch and full-data curvature matrices.

    Attributes:
      batch_sizes: ``(S,)`` the minibatch sizes ``B``.
      batch_max: ``(S, num_draws)`` largest eigenvalue of ``H_B`` for each random minibatch.
      batch_min: ``(S, num_draws)`` smallest eigenvalue of ``H_B``.
      full_max: largest eigenvalue of the full-data matrix.
      full_min: smallest eigenvalue of the full-data matrix.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxdl.probes.monitors import batch_vs_full_spectrum
      >>> loss_fn = lambda w, x: 0.5 * jnp.mean((x @ w) ** 2)  # H_B = x_B^T x_B / B
      >>> data = 2 * jnp.eye(2)  # full data: H = 2 I; a single row: H_1 = diag(4, 0) or diag(0, 4)
      >>> cmp = batch_vs_full_spectrum(
      ...     loss_fn, jnp.zeros(2), data, key=jax.random.key(0), batch_sizes=[1, 2], num_draws=2, num_iters=2
      ... )
      >>> cmp.batch_sizes.tolist(), cmp.batch_max.round(4).tolist(), round(float(cmp.full_max), 4), round(float(cmp.full_min), 4)
      ([1, 2], [[4.0, 4.0], [2.0, 2.0]], 2.0, 2.0)
      >>> bool((cmp.batch_min[0] < cmp.full_min).all())  # the batch extremes lie outside the full ones
      True
    """

    batch_sizes: jax.Array
    batch_max: jax.Array
    batch_min: jax.Array
    full_max: jax.Array
    full_min: jax.Array


def batch_vs_full_spectrum(
    loss_fn: Callable | hs.GGN | hs.EmpiricalFisher,
    params: PyTree,
    data: PyTree,
    *,
    key: jax.Array,
    batch_sizes: Sequence[int],
    num_draws: int = 4,
    num_iters: int = 30,
) -> SpectrumComparison:
    """Compare extremal eigenvalues of minibatch Hessians (or GGNs) with the full-data ones.

    Granziol et al. (2022) model the minibatch Hessian as the full-data Hessian plus a
    noise matrix whose variance falls as ``1/B``; its outliers then sit further out,
    ``|lambda(H_B)| > |lambda(H)|``, approaching the full-data values as ``B`` grows. Pass a
    :class:`~jaxdl.probes.hessian.GGN` as ``loss_fn`` for the Gauss-Newton version, which they treat alike.

    Args:
      loss_fn: a mean loss ``loss_fn(params, batch)``, or a GGN / EmpiricalFisher spec.
      params: any pytree of float arrays.
      data: the full dataset, every leaf with leading axis ``N``.
      key: PRNG key for the minibatch draws (without replacement) and Lanczos starts.
      batch_sizes: minibatch sizes, each in ``[1, N]`` (static).
      num_draws: random minibatches per size.
      num_iters: Lanczos steps per extremal eigenvalue.

    Returns:
      :class:`SpectrumComparison` ``(batch_sizes, batch_max, batch_min, full_max, full_min)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxdl.probes import batch_vs_full_spectrum
      >>> x = jax.random.normal(jax.random.key(0), (512, 8))
      >>> loss_fn = lambda w, batch: 0.5 * jnp.mean((batch[0] @ w - batch[1]) ** 2)  # H = x^T x / n
      >>> result = batch_vs_full_spectrum(
      ...     loss_fn, jnp.zeros(8), (x, jnp.zeros(512)), key=jax.random.key(1), batch_sizes=[16, 128]
      ... )
      >>> means = result.batch_max.mean(axis=1)  # one row of draws per batch size
      >>> bool(means[0] > means[1] > result.full_max)  # the smaller the batch, the sharper its extreme
      True
    """
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree.leaves(data)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"every leaf of data must share a leading example axis, got sizes {sizes}")
    n = int(sizes.pop() or 0)
    batch_sizes = tuple(int(b) for b in batch_sizes)
    if not batch_sizes or any(not 1 <= b <= n for b in batch_sizes):
        raise ValueError(f"batch_sizes must be non-empty ints in [1, {n}], got {batch_sizes}")
    if num_draws < 1:
        raise ValueError(f"num_draws must be a positive int, got {num_draws}")

    def extremes(batch, k):
        top = hs.top_eigenvalues(loss_fn, params, batch, key=k, num_iters=num_iters, tol=0.0)
        bottom = hs.top_eigenvalues(
            loss_fn, params, batch, key=k, num_iters=num_iters, tol=0.0, which="smallest"
        )
        return top.eigenvalues[0], bottom.eigenvalues[0]

    full_key, *size_keys = jax.random.split(key, len(batch_sizes) + 1)
    full_max, full_min = extremes(data, full_key)
    batch_max, batch_min = [], []
    for b, size_key in zip(batch_sizes, size_keys, strict=True):

        def one_draw(k, b=b):
            perm_key, eig_key = jax.random.split(k)
            idx = jax.random.permutation(perm_key, n)[:b]
            return extremes(jax.tree.map(lambda x: x[idx], data), eig_key)

        hi, lo = jax.lax.map(one_draw, jax.random.split(size_key, num_draws))
        batch_max.append(hi)
        batch_min.append(lo)
    return SpectrumComparison(
        jnp.asarray(batch_sizes), jnp.stack(batch_max), jnp.stack(batch_min), full_max, full_min
    )


class LearningRates(NamedTuple):
    """Learning rates predicted from the minibatch spectrum.

    Attributes:
      batch_sizes: ``(S,)`` the batch sizes asked for.
      learning_rates: ``(S,)`` the predicted (maximal stable) learning rates.
      curvature: ``(S,)`` the modelled sharpness ``lambda(B) = lambda_full + noise / B``.
      noise: the fitted noise coefficient ``nu``.
      critical_batch_size: ``nu / lambda_full``: below it the noise dominates and the scaling
        is linear (SGD) or square root (Adam); above it the rates saturate.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.probes.monitors import SpectrumComparison, lr_from_spectrum
      >>> # measured sharpness 12 at B = 8 and 4.5 at B = 32 over a full-data 2: lambda(B) = 2 + 80 / B
      >>> cmp = SpectrumComparison(jnp.array([8, 32]), jnp.array([[12.0], [4.5]]), None, jnp.array(2.0), None)
      >>> rates = lr_from_spectrum(cmp, [8, 80, 800])
      >>> float(rates.noise), float(rates.critical_batch_size)  # nu, and nu / lambda_full
      (80.0, 40.0)
      >>> [round(c, 4) for c in rates.curvature.tolist()]
      [12.0, 3.0, 2.1]
      >>> [round(r, 4) for r in rates.learning_rates.tolist()]  # 2 / lambda(B)
      [0.1667, 0.6667, 0.9524]
    """

    batch_sizes: jax.Array
    learning_rates: jax.Array
    curvature: jax.Array
    noise: jax.Array
    critical_batch_size: jax.Array


def lr_from_spectrum(
    comparison: SpectrumComparison,
    batch_sizes: Sequence[int] | jax.Array,
    *,
    optimizer: str = "sgd",
    base_batch_size: int | None = None,
    base_learning_rate: float | None = None,
) -> LearningRates:
    """Learning rate as a function of batch size from measured minibatch sharpness.

    The model (our reading of Granziol et al. 2022) is ``lambda(B) = lambda_full + nu / B``:
    the sharpness of the minibatch Hessian is the full-data sharpness plus a noise term that
    falls as ``1/B``; ``nu >= 0`` is fitted by least squares to the mean measured ``batch_max``.
    Then:

    - SGD: the largest stable step is ``2 / lambda(B)``; it grows linearly in ``B`` while
      ``nu / B`` dominates. With ``base_learning_rate`` at ``base_batch_size`` the rule is
      ``eta(B) = eta_0 * lambda(B_0) / lambda(B)``.
    - Adam: the step scales as the square root of the SGD ratio,
      ``eta(B) = eta_0 * sqrt(lambda(B_0) / lambda(B))`` (needs ``base_learning_rate``, since the
      preconditioner sets the absolute scale).

    Assumptions (the paper's): the loss is locally quadratic at the probed point, the
    minibatch noise is independent of the full-data Hessian with variance ``∝ 1/B`` (sampling
    with replacement, ``B << N``), and the top eigenvalue is an outlier above the noise bulk.
    Close to the full dataset the fitted ``1/B`` law overestimates the noise.

    Args:
      comparison: output of :func:`batch_vs_full_spectrum`.
      batch_sizes: the batch sizes to predict for.
      optimizer: ``"sgd"`` or ``"adam"``.
      base_batch_size, base_learning_rate: a known-good pair; required for ``"adam"``.

    >>> cmp = SpectrumComparison(jnp.array([8, 32]), jnp.array([[12.0], [4.5]]), None, 2.0, None)
    >>> res = lr_from_spectrum(cmp, [16, 32], optimizer="sgd")
    >>> float(res.noise), [round(x, 4) for x in res.learning_rates.tolist()]
    (80.0, [0.2857, 0.4444])
    """
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    if (base_batch_size is None) != (base_learning_rate is None):
        raise ValueError("base_batch_size and base_learning_rate must be given together")
    if optimizer == "adam" and base_learning_rate is None:
        raise ValueError("optimizer='adam' needs base_batch_size and base_learning_rate")
    if base_learning_rate is not None and base_learning_rate <= 0:
        raise ValueError(f"base_learning_rate must be positive, got {base_learning_rate}")
    sizes = jnp.asarray(batch_sizes, jnp.float32)
    if sizes.ndim != 1 or bool(jnp.any(sizes < 1)):
        raise ValueError(f"batch_sizes must be a 1-d sequence of positive sizes, got {batch_sizes}")

    measured_b = comparison.batch_sizes.astype(sizes.dtype)
    excess = jnp.mean(comparison.batch_max, axis=1) - comparison.full_max
    inv_b = 1.0 / measured_b
    noise = jnp.maximum(jnp.sum(excess * inv_b) / jnp.sum(inv_b**2), 0.0)
    curvature_at = lambda b: comparison.full_max + noise / b
    curvature = curvature_at(sizes)

    if base_learning_rate is None:
        rates = 2.0 / curvature
    else:
        ratio = curvature_at(jnp.asarray(base_batch_size, sizes.dtype)) / curvature
        rates = base_learning_rate * (ratio if optimizer == "sgd" else jnp.sqrt(ratio))
    return LearningRates(sizes, rates, curvature, noise, noise / comparison.full_max)
