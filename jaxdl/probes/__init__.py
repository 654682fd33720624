"""Jit-compiled probes of any model: Neural Tangent Kernels, Hessians, and monitors for training loops.

- `ntk`, `ntk_limits`: empirical NTK (Jacot et al. 2018; Novak et al. 2022) as a factory compiled
  once per shapes (`empirical_ntk_fn`), infinite-width NTK/NNGP kernels and the gradient-flow
  prediction of training (Lee et al. 2019).
- `curvature`, `hessian`, `lanczos`: Hessian/GGN/Fisher products, Lanczos eigenvalues,
  Hutchinson/Hutch++ traces and spectral density, bound once to a loss by `hessian_probes`.
- `monitors`, `training_monitor`: stability and learning-rate monitors, and an in-loop monitor
  that a jitted train step calls every step (it probes every N steps under `lax.cond`).
"""

from jaxdl.probes.curvature import (
    GGN,
    Batches,
    EmpiricalFisher,
    curvature_operator,
    fisher_vp,
    ggn_vp,
    hvp,
    stack_batches,
)
from jaxdl.probes.hessian import (
    EigenResult,
    HessianProbes,
    SpectralDensity,
    TraceResult,
    density_from_ritz,
    hessian_probes,
    hessian_trace,
    spectral_density,
    top_eigenvalues,
)
from jaxdl.probes.lanczos import (  # the module keeps the name `lanczos`
    LanczosResult,
    ritz_pairs,
    ritz_vectors,
)
from jaxdl.probes.monitors import (
    LearningRates,
    SpectrumComparison,
    StabilityReport,
    batch_vs_full_spectrum,
    lr_from_spectrum,
    stability_report,
)
from jaxdl.probes.ntk import empirical_ntk, empirical_ntk_fn, ntk_fn_from_linen, ntk_fn_from_nnx
from jaxdl.probes.ntk_limits import (
    Kernels,
    MsePrediction,
    Spectrum,
    analytic_ntk,
    ntk_predict_mse,
    ntk_spectrum,
)
from jaxdl.probes.training_monitor import (
    MonitoredSteps,
    MonitorRecord,
    MonitorState,
    TrainingMonitor,
    monitored_steps,
    training_monitor,
)

__all__ = [
    "GGN",
    "Batches",
    "EigenResult",
    "EmpiricalFisher",
    "HessianProbes",
    "Kernels",
    "LanczosResult",
    "LearningRates",
    "MonitorRecord",
    "MonitorState",
    "MonitoredSteps",
    "MsePrediction",
    "SpectralDensity",
    "Spectrum",
    "SpectrumComparison",
    "StabilityReport",
    "TraceResult",
    "TrainingMonitor",
    "analytic_ntk",
    "batch_vs_full_spectrum",
    "curvature_operator",
    "density_from_ritz",
    "empirical_ntk",
    "empirical_ntk_fn",
    "fisher_vp",
    "ggn_vp",
    "hessian_probes",
    "hessian_trace",
    "hvp",
    "lr_from_spectrum",
    "monitored_steps",
    "ntk_fn_from_linen",
    "ntk_fn_from_nnx",
    "ntk_predict_mse",
    "ntk_spectrum",
    "ritz_pairs",
    "ritz_vectors",
    "spectral_density",
    "stability_report",
    "stack_batches",
    "top_eigenvalues",
    "training_monitor",
]
