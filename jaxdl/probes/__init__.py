"""Jit-compiled probes of any model: Neural Tangent Kernels and Hessians.

- `ntk`, `ntk_limits`: empirical NTK (Jacot et al. 2018; Novak et al. 2022), infinite-width
  NTK/NNGP kernels and the gradient-flow prediction of training (Lee et al. 2019).
- `hessian`, `lanczos`, `monitors`: Hessian/GGN/Fisher products, Lanczos eigenvalues,
  Hutchinson/Hutch++ traces, spectral density, and the stability and learning-rate monitors.
"""

from jaxdl.probes.hessian import (
    GGN,
    Batches,
    EigenResult,
    EmpiricalFisher,
    SpectralDensity,
    TraceResult,
    curvature_operator,
    density_from_ritz,
    fisher_vp,
    ggn_vp,
    hessian_trace,
    hvp,
    spectral_density,
    stack_batches,
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
from jaxdl.probes.ntk import empirical_ntk, ntk_fn_from_linen, ntk_fn_from_nnx
from jaxdl.probes.ntk_limits import (
    Kernels,
    MsePrediction,
    Spectrum,
    analytic_ntk,
    ntk_predict_mse,
    ntk_spectrum,
)
