"""The SDM (Similarity-Distance-Magnitude) output layer: activation, estimator, calibration, abstention.

Schmaltz, "Similarity-Distance-Magnitude Activations", arXiv:2509.12760 (the v2 "SDM estimator"),
following "Similarity-Distance-Magnitude Universal Verification", arXiv:2502.20167.
"""

from jaxdl.nn.sdm.activation import sdm_activation, sdm_log_loss, sdm_log_prob
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
from jaxdl.nn.sdm.neighbours import nearest_neighbours
from jaxdl.nn.sdm.similarity import ClassECDF, class_ecdf, distance_quantile, similarity_q
