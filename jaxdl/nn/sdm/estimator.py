"""The SDM estimator at test time: q, d, the SDM output, q', and the HR admission rule.

Schmaltz, "Similarity-Distance-Magnitude Activations", arXiv:2509.12760, §3.1-3.2 and App. A.5:
given the logits z' and exemplar vector h' of each query, search the training exemplars (h'_tr, y_tr,
ŷ_tr) for q (Eq. 4) and d (Eq. 5), form SDM(z') (Eq. 6) and q' (Eq. 8), and admit ŷ = argmax z' by
the SDM_HR rule (Eq. 9) and by its conservative DKW variant SDM_HR^lower (App. A.5).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxdl.nn.sdm.activation import sdm_activation
from jaxdl.nn.sdm.calibration import SDMCalibration, high_reliability, lower_distance, rescaled_similarity
from jaxdl.nn.sdm.neighbours import nearest_neighbours
from jaxdl.nn.sdm.similarity import ClassECDF, distance_quantile, similarity_q


class ExemplarMemory(NamedTuple):
    """The training exemplars (the support set D_tr) searched for q and d.

    Attributes:
      vectors: ``[N, M]`` exemplar vectors h'_tr.
      labels: ``[N]`` int32 true labels y_tr (a label outside the classes, e.g. -99, never matches).
      predictions: ``[N]`` int32 predicted classes ŷ_tr = argmax z'_tr.
    """

    vectors: jax.Array
    labels: jax.Array
    predictions: jax.Array


class CalibrationPoints(NamedTuple):
    """What Alg. 1 needs of the calibration set, kept so that α can change without refitting.

    Attributes:
      probs: ``[N, C]`` SDM outputs.
      q_prime: ``[N]`` rescaled similarities.
      labels: ``[N]`` true labels.
    """

    probs: jax.Array
    q_prime: jax.Array
    labels: jax.Array


class SDMState(NamedTuple):
    """Everything an SDM head needs at test time besides its weights."""

    memory: ExemplarMemory
    distance_ecdf: ClassECDF
    calibration_points: CalibrationPoints
    calibration: SDMCalibration


class SDMOutput(NamedTuple):
    """The SDM estimator's answer for a batch of B queries (C classes, k neighbours).

    Attributes:
      probs: ``[B, C]`` SDM(z').
      q: ``[B]`` similarity (int32).
      q_prime: ``[B]`` rescaled similarity q'.
      d: ``[B]`` distance quantile.
      prediction: ``[B]`` ŷ = argmax z'.
      admitted: ``[B]`` bool, the SDM_HR rule.
      probs_lower: ``[B, C]`` SDM output at d_lower (the DKW band's lower end).
      q_prime_lower: ``[B]`` q' from ``probs_lower``.
      d_lower: ``[B]``.
      admitted_lower: ``[B]`` bool, the conservative SDM_HR^lower rule (recommended by [ACT]).
      neighbours: ``[B, k]`` indices of the nearest training exemplars, nearest first.
      nearest_distance: ``[B]`` squared L2 distance to the nearest exemplar.
    """

    probs: jax.Array
    q: jax.Array
    q_prime: jax.Array
    d: jax.Array
    prediction: jax.Array
    admitted: jax.Array
    probs_lower: jax.Array
    q_prime_lower: jax.Array
    d_lower: jax.Array
    admitted_lower: jax.Array
    neighbours: jax.Array
    nearest_distance: jax.Array


def similarity_and_distance(
    exemplar_vectors: jax.Array,
    predictions: jax.Array,
    memory: ExemplarMemory,
    k: int,
    *,
    exclude: jax.Array | None = None,
    **search_options,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """q and the nearest squared distance of each query against the memory ([ACT] Eq. 4-5).

    Args:
      exemplar_vectors: ``[B, M]`` query exemplar vectors h'.
      predictions: ``[B]`` their predicted classes.
      memory: the training exemplars.
      k: neighbours searched, the cap on q.
      exclude: optional ``[B]`` memory row of each query to skip (training points).
      **search_options: passed to `nearest_neighbours` (block sizes, ``compute_dtype``, ``mesh``).

    Returns:
      ``(q [B] int32, nearest_distance [B], neighbours [B, k])``.
    """
    sq_distances, neighbours = nearest_neighbours(
        exemplar_vectors, memory.vectors, k, exclude=exclude, **search_options
    )
    q = similarity_q(neighbours, predictions, memory.labels, memory.predictions)
    return q, sq_distances[:, 0], neighbours


def sdm_estimate(
    logits: jax.Array, exemplar_vectors: jax.Array, state: SDMState, *, k: int, **search_options
) -> SDMOutput:
    """The calibrated SDM estimator: outputs, q, q', d and both admission rules for a batch.

    Args:
      logits: ``[B, C]`` adaptor logits z'.
      exemplar_vectors: ``[B, M]`` adaptor exemplar vectors h'.
      state: memory, distance eCDFs and calibration of a fitted head.
      k: neighbours searched (at most the memory size).
      **search_options: passed to `nearest_neighbours`.

    Returns:
      An `SDMOutput`.

    >>> import jax.numpy as jnp
    >>> from jaxdl.nn.sdm.calibration import calibrate_thresholds
    >>> from jaxdl.nn.sdm.similarity import class_ecdf
    >>> memory = ExemplarMemory(jnp.array([[0.0], [0.1], [5.0], [5.1]]), jnp.array([0, 0, 1, 1]), jnp.array([0, 0, 1, 1]))
    >>> ecdf = class_ecdf(jnp.array([0.01, 0.02, 0.01, 0.02]), jnp.array([0, 0, 1, 1]), 2)
    >>> points = CalibrationPoints(jnp.array([[0.99, 0.01], [0.01, 0.99]]), jnp.array([2.0, 2.0]), jnp.array([0, 1]))
    >>> state = SDMState(memory, ecdf, points, calibrate_thresholds(*points, alpha=0.9))
    >>> out = sdm_estimate(jnp.array([[4.0, -4.0], [4.0, -4.0]]), jnp.array([[0.05], [50.0]]), state, k=2)
    >>> out.q.tolist(), out.d.tolist(), out.admitted.tolist()
    ([2, 0], [1.0, 0.0], [True, False])
    """
    if logits.ndim != 2 or exemplar_vectors.ndim != 2 or logits.shape[0] != exemplar_vectors.shape[0]:
        raise ValueError(
            f"sdm_estimate: logits [B, C] and exemplar_vectors [B, M] must share B, got {logits.shape} "
            f"and {exemplar_vectors.shape}"
        )
    prediction = jnp.argmax(logits, axis=-1)
    q, nearest_distance, neighbours = similarity_and_distance(
        exemplar_vectors, prediction, state.memory, k, **search_options
    )
    q_float = q.astype(logits.dtype)
    d = distance_quantile(nearest_distance, state.distance_ecdf).astype(logits.dtype)
    calibration = state.calibration

    def outputs_at(distance):
        probs = sdm_activation(logits, q_float, distance)
        p_hat = jnp.take_along_axis(probs, prediction[:, None], axis=1)[:, 0]
        q_prime = rescaled_similarity(q_float, p_hat)
        return probs, q_prime, high_reliability(probs, q_prime, prediction, calibration)

    probs, q_prime, admitted = outputs_at(d)
    d_lower = lower_distance(d, q_prime, calibration)
    probs_lower, q_prime_lower, admitted_lower = outputs_at(d_lower)
    return SDMOutput(
        probs=probs,
        q=q,
        q_prime=q_prime,
        d=d,
        prediction=prediction,
        admitted=admitted,
        probs_lower=probs_lower,
        q_prime_lower=q_prime_lower,
        d_lower=d_lower,
        admitted_lower=admitted_lower,
        neighbours=neighbours,
        nearest_distance=nearest_distance,
    )
