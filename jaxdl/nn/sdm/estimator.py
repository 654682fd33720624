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
from jaxdl.nn.sdm.index import ExemplarIndex, build_index
from jaxdl.nn.sdm.similarity import ClassECDF, distance_quantile, similarity_q

_INDEX_OPTIONS = ("compute_dtype", "precision", "mesh", "axis_name")


class ExemplarMemory(NamedTuple):
    """The training exemplars (the support set D_tr) searched for q and d.

    Attributes:
      vectors: ``[N, M]`` exemplar vectors h'_tr, as an `ExemplarIndex` (prepared once for search, as
        `fit_sdm` stores them) or a plain array (indexed on every search).
      labels: ``[N]`` int32 true labels y_tr (a label outside the classes, e.g. -99, never matches).
      predictions: ``[N]`` int32 predicted classes ŷ_tr = argmax z'_tr.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.nn.sdm import ExemplarMemory
      >>> logits = jnp.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])  # z'_tr of three training points
      >>> memory = ExemplarMemory(jnp.array([[0.0], [1.0], [2.0]]), jnp.array([0, 1, 1]), logits.argmax(1))
      >>> (memory.labels == memory.predictions).tolist()  # exemplar 2 is mispredicted: it never counts in q
      [True, True, False]
    """

    vectors: ExemplarIndex | jax.Array
    labels: jax.Array
    predictions: jax.Array


class CalibrationPoints(NamedTuple):
    """What Alg. 1 needs of the calibration set, kept so that α can change without refitting.

    Attributes:
      probs: ``[N, C]`` SDM outputs.
      q_prime: ``[N]`` rescaled similarities.
      labels: ``[N]`` true labels.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.nn.sdm import CalibrationPoints, calibrate_thresholds
      >>> points = CalibrationPoints(
      ...     probs=jnp.array([[0.99, 0.01], [0.02, 0.98], [0.6, 0.4], [0.3, 0.7]]),
      ...     q_prime=jnp.array([9.0, 8.0, 2.0, 3.0]),
      ...     labels=jnp.array([0, 1, 1, 0]),
      ... )
      >>> # α = 0.99: the class-1 point at q' >= 8 has 0.98 < 0.99, so no q'_min exists
      >>> [float(calibrate_thresholds(*points, alpha=alpha).q_min) for alpha in (0.9, 0.99)]
      [8.0, inf]
    """

    probs: jax.Array
    q_prime: jax.Array
    labels: jax.Array


class SDMState(NamedTuple):
    """Everything an SDM head needs at test time besides its weights.

    Example:
      >>> from jaxdl.nn.sdm import SDMState
      >>> from jaxdl.nn.sdm.head import _empty_state
      >>> state = _empty_state(hidden=4, num_classes=2)  # the state of an unfitted SDMHead
      >>> isinstance(state, SDMState), state.memory.vectors.shape, state.calibration_points.probs.shape
      (True, (0, 4), (0, 2))
    """

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

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.nn.sdm import ExemplarMemory, SDMCalibration, SDMState, class_ecdf, sdm_estimate
      >>> labels = jnp.array([0, 0, 1])
      >>> memory = ExemplarMemory(jnp.array([[0.0], [0.1], [5.0]]), labels, predictions=labels)
      >>> distance_ecdf = class_ecdf(jnp.array([0.5, 0.5]), jnp.array([0, 1]), 2)
      >>> q_prime_ecdf = class_ecdf(jnp.ones(202), jnp.arange(202) % 2, 2)  # n̂_c = 100, ε = 0.1358
      >>> cal = SDMCalibration(jnp.array(0.95), jnp.array(1.0), jnp.array([0.98, 0.98]), q_prime_ecdf)
      >>> state = SDMState(memory, distance_ecdf, None, cal)  # calibration points only serve calibrate()
      >>> out = sdm_estimate(jnp.array([[3.0, 0.0]]), jnp.array([[0.0]]), state, k=2)
      >>> # q = 2; d = 1 (distance 0 is below every calibration distance); SDM = softmax(z' d ln(2 + q))
      >>> # = [4^3, 1] / 65, and q' = min(2, 4^(64/65)) = 2
      >>> out.q.tolist(), out.d.tolist(), [round(p, 4) for p in out.probs[0].tolist()], out.q_prime.tolist()
      ([2], [1.0], [0.9846, 0.0154], [2.0])
      >>> # d_lower = 1 - 0.1358; 4^(3 d_lower) / (4^(3 d_lower) + 1) = 0.9732 falls below ψ = 0.98
      >>> round(out.d_lower.item(), 4), round(out.probs_lower[0, 0].item(), 4)
      (0.8642, 0.9732)
      >>> out.admitted.tolist(), out.admitted_lower.tolist()
      ([True], [False])
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
      **search_options: passed to `ExemplarIndex.search` (block sizes, ``approximate``); index options
        (``compute_dtype``, ``precision``, ``mesh``, ``axis_name``) index the exemplars anew for this call.

    Returns:
      ``(q [B] int32, nearest_distance [B], neighbours [B, k])``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.nn.sdm import ExemplarMemory, similarity_and_distance
      >>> # exemplars at 0, 1, 3, 10; the one at 10 has label 1 but was predicted 0
      >>> vectors = jnp.array([[0.0], [1.0], [3.0], [10.0]])
      >>> memory = ExemplarMemory(vectors, jnp.array([0, 0, 1, 1]), predictions=jnp.array([0, 0, 1, 0]))
      >>> queries, predictions = jnp.array([[0.5], [9.0]]), jnp.array([0, 1])
      >>> q, nearest, neighbours = similarity_and_distance(queries, predictions, memory, k=3)
      >>> neighbours.tolist()
      [[0, 1, 2], [3, 2, 1]]
      >>> # query 0 (ŷ = 0): exemplars 0, 1 match and 2 (ŷ_tr = 1) ends the run; query 1: exemplar 3 is wrong
      >>> q.tolist(), [round(v, 4) for v in nearest.tolist()]  # squared distances 0.5² and 1²
      ([2, 0], [0.25, 1.0])
    """
    index_options = {name: search_options.pop(name) for name in _INDEX_OPTIONS if name in search_options}
    index = memory.vectors
    if index_options or not isinstance(index, ExemplarIndex):
        index = build_index(index.exemplars if isinstance(index, ExemplarIndex) else index, **index_options)
    sq_distances, neighbours = index.search(exemplar_vectors, k, exclude=exclude, **search_options)
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
      **search_options: passed to `similarity_and_distance`.

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
