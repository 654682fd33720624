"""Calibration and abstention of the SDM estimator (the v2 "canonical SDM estimator").

Schmaltz, "Similarity-Distance-Magnitude Activations", arXiv:2509.12760:

- Eq. 8, rescaled similarity: q' = min(q, (2+q)^SDM(z')_ŷ); floor(q') = 0 marks a point OOD.
- Alg. 1: on the calibration set, find the smallest q'_min for which every class threshold
  ψ_c = sorted(SDM(z')_c of non-OOD class-c points with q' >= q'_min)[min(int((1-α) n_c), n_c - 1)]
  is >= α; if none exists, q'_min = inf and everything is rejected.
- Eq. 9, the high-reliability (HR) rule: admit ŷ iff floor(q') > 0, q' >= q'_min and
  {c : SDM(z')_c >= ψ_c} = {ŷ}.
- App. A.5 Eq. 11-19, the conservative variant: n̂_c = #{class-c calibration points with q'_ca < q'},
  ε = max_c sqrt(ln(2/(1-α)) / (2 n̂_c)) (DKW with Massart's constant; 1 when n̂_c = 0), and the
  HR rule applied to the SDM output at d_lower = clip(d - ε, 0, 1).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.nn.sdm.activation import Q_OFFSET
from jaxdl.nn.sdm.similarity import ClassECDF, _searchsorted, class_ecdf


class SDMCalibration(NamedTuple):
    """The state Alg. 1 leaves for test time.

    Attributes:
      alpha: scalar target accuracy α.
      q_min: scalar q'_min (inf: nothing is admitted).
      thresholds: ``[C]`` per-class output thresholds ψ_c.
      q_prime_ecdf: per-class sorted q' of all calibration points, for the DKW sample sizes.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.nn.sdm import calibrate_thresholds
      >>> probs = jnp.array([[0.9, 0.1], [0.2, 0.8]])  # class 0 reaches only 0.9 < α = 0.95
      >>> cal = calibrate_thresholds(probs, jnp.array([5.0, 5.0]), jnp.array([0, 1]), alpha=0.95)
      >>> float(cal.q_min), cal.thresholds.tolist(), cal.q_prime_ecdf.counts.tolist()  # nothing admitted
      (inf, [0.0, 0.0], [1, 1])
    """

    alpha: jax.Array
    q_min: jax.Array
    thresholds: jax.Array
    q_prime_ecdf: ClassECDF


def rescaled_similarity(q: jax.Array, p_hat: jax.Array) -> jax.Array:
    """q' = min(q, (2+q)^p̂) ([ACT] Eq. 8), with p̂ = SDM(z')_ŷ the output at the predicted class.

    Args:
      q: ``[...]`` similarity.
      p_hat: ``[...]`` SDM output at the predicted class, in [1/C, 1].

    Returns:
      ``[...]`` q' in [0, q].

    >>> import jax.numpy as jnp
    >>> q_prime = rescaled_similarity(jnp.array([0.0, 1.0, 5.0]), jnp.array([0.9, 0.3, 0.8]))
    >>> [round(v, 4) for v in q_prime.tolist()]
    [0.0, 1.0, 4.7433]
    """
    q = jnp.asarray(q)
    return jnp.minimum(q, (Q_OFFSET + q) ** p_hat)


def _check_alpha(alpha, name: str) -> float:
    if not isinstance(alpha, (int, float)) or not 0.5 < alpha <= 1:
        raise ValueError(f"{name}: alpha must be a float in (0.5, 1], got {alpha!r}")
    return float(alpha)


def calibrate_thresholds(
    probs: jax.Array,
    q_prime: jax.Array,
    labels: jax.Array,
    alpha: float,
    *,
    candidates_per_step: int = 64,
) -> SDMCalibration:
    """Alg. 1 of [ACT]: the smallest q'_min, and thresholds ψ, that make every class reach α.

    Candidates are the non-OOD q' values in ascending order, scored ``candidates_per_step`` at a time
    until one passes. Costs O(#candidates · C · N).

    Args:
      probs: ``[N, C]`` SDM outputs of the calibration points.
      q_prime: ``[N]`` their rescaled similarity q'.
      labels: ``[N]`` true labels (points labelled outside ``[0, C)`` are ignored).
      alpha: target accuracy α in (0.5, 1] (a Python float).
      candidates_per_step: candidate q' values scored together.

    Returns:
      An `SDMCalibration`; ``q_min = inf`` and ``thresholds = 0`` when no candidate works.

    >>> import jax.numpy as jnp
    >>> probs = jnp.array([[0.99, 0.01], [0.02, 0.98], [0.6, 0.4], [0.3, 0.7]])
    >>> cal = calibrate_thresholds(probs, jnp.array([9.0, 8.0, 2.0, 3.0]), jnp.array([0, 1, 1, 0]), 0.9)
    >>> float(cal.q_min), [round(t, 2) for t in cal.thresholds.tolist()]
    (8.0, [0.99, 0.98])
    """
    alpha = _check_alpha(alpha, "calibrate_thresholds")
    probs, q_prime, labels = jnp.asarray(probs), jnp.asarray(q_prime), jnp.asarray(labels)
    if probs.ndim != 2:
        raise ValueError(f"calibrate_thresholds: probs must have shape [N, C], got {probs.shape}")
    num_points, num_classes = probs.shape
    if q_prime.shape != (num_points,) or labels.shape != (num_points,):
        raise ValueError(
            f"calibrate_thresholds: q_prime and labels must have shape [N] = ({num_points},), "
            f"got {q_prime.shape} and {labels.shape}"
        )
    # The order statistic's rank, in float64 on the host exactly as the reference computes it:
    # rank[n] = min(int((1 - α) n), n - 1).
    sizes = np.arange(num_points + 1)
    rank = jnp.asarray(np.minimum(((1.0 - alpha) * sizes).astype(np.int64), sizes - 1), jnp.int32)
    q_min, thresholds = _search_thresholds(
        probs, q_prime, labels, rank, alpha, min(candidates_per_step, num_points)
    )
    return SDMCalibration(
        alpha=jnp.asarray(alpha, probs.dtype),
        q_min=q_min,
        thresholds=thresholds,
        q_prime_ecdf=class_ecdf(q_prime, labels, num_classes),
    )


@functools.partial(jax.jit, static_argnums=(4, 5))
def _search_thresholds(probs, q_prime, labels, rank, alpha, step):
    num_points, num_classes = probs.shape
    in_class = (labels >= 0) & (labels < num_classes)
    non_ood = in_class & (jnp.floor(q_prime) > 0)
    true_output = jnp.take_along_axis(probs, jnp.clip(labels, 0, num_classes - 1)[:, None], axis=1)[:, 0]
    member = (labels[None, :] == jnp.arange(num_classes)[:, None]) & non_ood[None, :]
    outputs = jnp.where(member, true_output, jnp.inf)
    class_q_prime = jnp.where(member, q_prime, -jnp.inf)  # non-members never pass a filter

    def thresholds_at(q_star):
        keep = class_q_prime >= q_star
        count = jnp.sum(keep, axis=1)
        kept = jnp.sort(jnp.where(keep, outputs, jnp.inf), axis=1)
        psi = jnp.take_along_axis(kept, jnp.maximum(rank[count], 0)[:, None], axis=1)[:, 0]
        return jnp.maximum(jnp.where(count > 0, psi, 0), 0)

    candidates = jnp.sort(jnp.where(non_ood, q_prime, jnp.inf))
    candidates = jnp.pad(candidates, (0, -num_points % step), constant_values=jnp.inf).reshape(-1, step)

    def not_done(state):
        chunk, found, _ = state
        return ~found & (chunk < candidates.shape[0])

    def score_chunk(state):
        chunk, _, _ = state
        q_stars = candidates[chunk]
        psi = jax.vmap(thresholds_at)(q_stars)
        passes = jnp.all(psi >= alpha, axis=1) & jnp.isfinite(q_stars)
        first = jnp.argmax(passes)
        return chunk + 1, jnp.any(passes), (q_stars[first], psi[first])

    no_threshold = (jnp.asarray(jnp.inf, q_prime.dtype), jnp.zeros(num_classes, probs.dtype))
    _, found, best = jax.lax.while_loop(not_done, score_chunk, (0, False, no_threshold))
    return jax.tree.map(lambda a, b: jnp.where(found, a, b), best, no_threshold)


def high_reliability(
    probs: jax.Array, q_prime: jax.Array, predictions: jax.Array, calibration: SDMCalibration
) -> jax.Array:
    """The SDM_HR rule ([ACT] Eq. 9): admit iff floor(q') > 0, q' >= q'_min and {c: p_c >= ψ_c} = {ŷ}.

    Args:
      probs: ``[B, C]`` SDM outputs.
      q_prime: ``[B]`` rescaled similarity.
      predictions: ``[B]`` predicted class ŷ = argmax z'.
      calibration: from `calibrate_thresholds`.

    Returns:
      ``[B]`` bool, True where the prediction is admitted (False: abstain).

    >>> import jax.numpy as jnp
    >>> cal = SDMCalibration(jnp.array(0.9), jnp.array(3.0), jnp.array([0.9, 0.95]), None)
    >>> probs = jnp.array([[0.97, 0.03], [0.97, 0.03], [0.08, 0.92]])
    >>> high_reliability(probs, jnp.array([4.0, 2.0, 4.0]), jnp.array([0, 0, 1]), cal).tolist()
    [True, False, False]
    """
    over = probs >= calibration.thresholds
    predicted = jax.nn.one_hot(predictions, probs.shape[-1], dtype=bool)
    singleton = jnp.all(over == predicted, axis=-1)
    return (jnp.floor(q_prime) > 0) & (q_prime >= calibration.q_min) & singleton


def dkw_epsilon(sample_size: jax.Array, alpha: float | jax.Array) -> jax.Array:
    """ε = sqrt(ln(2/(1-α)) / (2n)) ([ACT] App. A.5, DKW with Massart's constant); 1 where n = 0.

    Args:
      sample_size: ``[...]`` effective sample sizes n.
      alpha: target accuracy α.

    Returns:
      ``[...]`` ε.

    >>> import jax.numpy as jnp
    >>> [round(e, 4) for e in dkw_epsilon(jnp.array([0, 100, 1000]), 0.95).tolist()]
    [1.0, 0.1358, 0.0429]
    """
    n = jnp.asarray(sample_size, jnp.result_type(float))
    epsilon = jnp.sqrt(jnp.log(2 / (1 - jnp.asarray(alpha, n.dtype))) / (2 * jnp.maximum(n, 1)))
    return jnp.where(n > 0, epsilon, 1.0)


def effective_sample_size(q_prime: jax.Array, q_prime_ecdf: ClassECDF) -> jax.Array:
    """n̂_c = #{class-c calibration points with q'_ca < q'}, at most n_c - 1 ([ACT] App. A.5 Eq. 11).

    Args:
      q_prime: ``[B]`` rescaled similarity of the queries.
      q_prime_ecdf: per-class sorted calibration q' (all points, OOD included).

    Returns:
      ``[B, C]`` int32 sample sizes.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.nn.sdm import class_ecdf, effective_sample_size
      >>> # calibration q': class 0 has 1, 2, 3, 4 and class 1 has 0.5, 10
      >>> ecdf = class_ecdf(jnp.array([1.0, 2.0, 3.0, 4.0, 0.5, 10.0]), jnp.array([0, 0, 0, 0, 1, 1]), 2)
      >>> # q' = 2.5: two class-0 and one class-1 values lie below; q' = 50: all do, capped at n_c - 1
      >>> effective_sample_size(jnp.array([0.0, 2.5, 50.0]), ecdf).tolist()
      [[0, 0], [2, 1], [3, 1]]
    """
    position = jax.vmap(lambda row: _searchsorted(row, q_prime))(q_prime_ecdf.values)
    return jnp.minimum(position, jnp.maximum(q_prime_ecdf.counts - 1, 0)[:, None]).T.astype(jnp.int32)


def lower_distance(d: jax.Array, q_prime: jax.Array, calibration: SDMCalibration) -> jax.Array:
    """d_lower = clip(d - ε, 0, 1) with ε = max_c ε_c(n̂_c) ([ACT] App. A.5 Eq. 11-19).

    Args:
      d: ``[B]`` distance quantile.
      q_prime: ``[B]`` rescaled similarity.
      calibration: from `calibrate_thresholds`.

    Returns:
      ``[B]`` the lower end of the DKW band on d.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.nn.sdm import SDMCalibration, class_ecdf, lower_distance
      >>> q_ca = jnp.concatenate([jnp.arange(101.0), jnp.arange(11.0)])  # 101 class-0, 11 class-1 points
      >>> ecdf = class_ecdf(q_ca, jnp.array([0] * 101 + [1] * 11), 2)
      >>> cal = SDMCalibration(jnp.array(0.95), jnp.array(1.0), jnp.array([0.95, 0.95]), ecdf)
      >>> # q' = 1000: n̂ = (100, 10), ε = max(ε(100), ε(10)) = max(0.1358, 0.4295); q' = 0: n̂ = 0, ε = 1
      >>> d_lower = lower_distance(jnp.array([0.9, 0.9, 0.3]), jnp.array([1000.0, 0.0, 1000.0]), cal)
      >>> [round(d, 4) for d in d_lower.tolist()]  # 0.9 - 0.4295, then clipped at 0
      [0.4705, 0.0, 0.0]
    """
    sizes = effective_sample_size(q_prime, calibration.q_prime_ecdf)
    epsilon = jnp.max(dkw_epsilon(sizes, calibration.alpha), axis=-1)
    return jnp.clip(d - epsilon.astype(d.dtype), 0, 1)
