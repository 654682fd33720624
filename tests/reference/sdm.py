"""NumPy float64 reference for the SDM estimator, written from the equations of Schmaltz,
"Similarity-Distance-Magnitude Activations", arXiv:2509.12760 (Eq. 4-9, Alg. 1, App. A.4-A.5).

Deliberately naive: power form instead of a softmax, Python loops instead of vectorised search.
"""

from __future__ import annotations

import math

import numpy as np


def sdm_activation(z, q, d):
    """Eq. 6 in its power form: (2+q)^(d z_i) / sum_c (2+q)^(d z_c), one example."""
    z = np.asarray(z, np.float64)
    powers = (2.0 + q) ** (d * (z - z.max()))
    return powers / powers.sum()


def sdm_loss(z, y, q, d):
    """Eq. 7: -log_(2+q) SDM(z)_y, one example."""
    return -math.log(sdm_activation(z, q, d)[y]) / math.log(2.0 + q)


def knn(queries, exemplars, k, exclude=None):
    """Brute-force squared-L2 neighbours, nearest first, ties by index.

    A distance that is not finite (NaN or infinite vectors) counts as +inf; the excluded exemplar of
    a query (``exclude[b]``, out of range for none) ranks after every other, so it is never returned
    for ``k <= N - 1``.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        dist = ((queries[:, None, :].astype(np.float64) - exemplars[None, :, :]) ** 2).sum(-1)
    dist = np.where(np.isfinite(dist), dist, np.inf)
    excluded = np.zeros(dist.shape, bool)
    if exclude is not None:
        rows = np.nonzero((0 <= np.asarray(exclude)) & (np.asarray(exclude) < len(exemplars)))[0]
        excluded[rows, np.asarray(exclude)[rows]] = True
    index = np.stack(
        [np.lexsort((np.arange(len(exemplars)), d, x)) for d, x in zip(dist, excluded, strict=True)]
    )
    index = index[:, :k]
    return np.take_along_axis(dist, index, axis=1), index


def similarity_q(neighbours, predictions, exemplar_labels, exemplar_predictions):
    """Eq. 4: walk the neighbours until the first one that is not correctly predicted as ŷ."""
    q = np.zeros(len(neighbours), np.int64)
    for b, row in enumerate(neighbours):
        for n in row:
            if exemplar_labels[n] != exemplar_predictions[n] or exemplar_predictions[n] != predictions[b]:
                break
            q[b] += 1
    return q


def distance_quantile(x, class_distances):
    """Eq. 5 with the exclusive eCDF of App. A.4.2: min_c (1 - #{s in D_c : s < x} / |D_c|), empty → 0."""
    out = []
    for value in x:
        per_class = [1.0 - np.sum(np.asarray(s) < value) / len(s) if len(s) else 0.0 for s in class_distances]
        out.append(min(per_class))
    return np.asarray(out)


def rescaled_similarity(q, p_hat):
    """Eq. 8."""
    return np.minimum(q, (2.0 + np.asarray(q, np.float64)) ** p_hat)


def calibrate(probs, q_prime, labels, alpha):
    """Alg. 1: ascending unique non-OOD q' candidates; first whose class thresholds all reach alpha."""
    num_classes = probs.shape[1]
    non_ood = np.floor(q_prime) > 0
    for q_star in np.unique(q_prime[non_ood]):
        thresholds = np.zeros(num_classes)
        for c in range(num_classes):
            outputs = sorted(probs[(labels == c) & non_ood & (q_prime >= q_star), c])
            n = len(outputs)
            thresholds[c] = outputs[min(int((1 - alpha) * n), n - 1)] if n else 0.0
        if np.all(thresholds >= alpha):
            return float(q_star), thresholds
    return math.inf, np.zeros(num_classes)


def high_reliability(probs, q_prime, predictions, q_min, thresholds):
    """Eq. 9, one point at a time."""
    admitted = []
    for p, qp, y_hat in zip(probs, q_prime, predictions, strict=True):
        region = {c for c in range(len(p)) if p[c] >= thresholds[c]}
        admitted.append(math.floor(qp) > 0 and qp >= q_min and region == {y_hat})
    return np.asarray(admitted)


def dkw_epsilon(n, alpha):
    """App. A.5: sqrt(ln(2/(1-alpha)) / (2n)), 1 for n = 0."""
    return math.sqrt(math.log(2 / (1 - alpha)) / (2 * n)) if n > 0 else 1.0


def lower_distance(d, q_prime, labels_ca, q_prime_ca, num_classes, alpha):
    """App. A.5: n̂_c = #{class-c calibration q' < q'} capped at n_c - 1; d - max_c ε_c clipped to [0, 1]."""
    out = []
    for d_b, qp in zip(d, q_prime, strict=True):
        eps = []
        for c in range(num_classes):
            class_q = q_prime_ca[labels_ca == c]
            n_hat = min(int(np.sum(class_q < qp)), max(len(class_q) - 1, 0))
            eps.append(dkw_epsilon(n_hat, alpha))
        out.append(min(max(d_b - max(eps), 0.0), 1.0))
    return np.asarray(out)
