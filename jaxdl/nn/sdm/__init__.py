"""The SDM (Similarity-Distance-Magnitude) output layer: activation, estimator, calibration, abstention.

Schmaltz, "Similarity-Distance-Magnitude Activations", arXiv:2509.12760 (the v2 "SDM estimator"),
following "Similarity-Distance-Magnitude Universal Verification", arXiv:2502.20167. The loss,
`sdm_log_loss`, lives in `jaxdl.losses` and is importable from here too.
"""

from jaxdl.nn.sdm.activation import sdm_activation, sdm_log_prob
from jaxdl.nn.sdm.calibration import (
    SDMCalibration,
    calibrate_thresholds,
    dkw_epsilon,
    effective_sample_size,
    high_reliability,
    lower_distance,
    rescaled_similarity,
)
from jaxdl.nn.sdm.estimator import (
    CalibrationPoints,
    ExemplarMemory,
    SDMOutput,
    SDMState,
    sdm_estimate,
    similarity_and_distance,
)
from jaxdl.nn.sdm.fit import balanced_mean, fit_sdm
from jaxdl.nn.sdm.head import SDMHead, SDMMemory, restore_head, save_head
from jaxdl.nn.sdm.index import ExemplarIndex, build_index
from jaxdl.nn.sdm.neighbours import nearest_neighbours
from jaxdl.nn.sdm.similarity import ClassECDF, class_ecdf, distance_quantile, similarity_q

__all__ = [
    "CalibrationPoints",
    "ClassECDF",
    "ExemplarIndex",
    "ExemplarMemory",
    "SDMCalibration",
    "SDMHead",
    "SDMMemory",
    "SDMOutput",
    "SDMState",
    "balanced_mean",
    "build_index",
    "calibrate_thresholds",
    "class_ecdf",
    "distance_quantile",
    "dkw_epsilon",
    "effective_sample_size",
    "fit_sdm",
    "high_reliability",
    "lower_distance",
    "nearest_neighbours",
    "restore_head",
    "rescaled_similarity",
    "save_head",
    "sdm_activation",
    "sdm_estimate",
    "sdm_log_loss",
    "sdm_log_prob",
    "similarity_and_distance",
    "similarity_q",
]


def __getattr__(name: str):
    # jaxdl.losses imports this package's activation, so the loss is re-exported lazily (no import cycle).
    if name == "sdm_log_loss":
        from jaxdl.losses import sdm_log_loss

        return sdm_log_loss
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
