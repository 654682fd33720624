"""State-space sequence layers: S4D, S5 and their perturb-then-diagonalize (PTD) variants.

- `hippo`: HiPPO-LegS, its NPLR form, S4D initialisations.
- `ptd`: perturb-then-diagonalize solver (runs once on the host in NumPy, cached).
- `modes`: the host-side initial modes of the S4D and S5 layers (cached, read-only).
- `kernels`: discretisation, Vandermonde kernel, FFT convolution, parallel scan, transfer function.
- `functional`: one validated config per layer (`S4DConfig`, `S5Config`), pure S4D / S5 init and forward maps
  over dicts of arrays.
- `layers` (Flax NNX) and `linen` (Flax Linen): `S4D`, `S5`, `SequenceModel`, both built on the same configs.
"""

from jaxdl.nn.ssm import functional, hippo, kernels, layers, linen, modes
from jaxdl.nn.ssm.functional import (
    S4DConfig,
    S5Config,
    s4d_apply,
    s4d_init_params,
    s4d_step,
    s5_apply,
    s5_init_params,
    s5_step,
    to_complex,
    to_pair,
)
from jaxdl.nn.ssm.hippo import hippo_legs, nplr_legs, s4d_init
from jaxdl.nn.ssm.kernels import (
    bidirectional_kernel,
    discretize,
    fft_conv,
    linear_recurrence,
    ssm_kernel,
    transfer_function,
)
from jaxdl.nn.ssm.layers import S4D, S5, SequenceModel
from jaxdl.nn.ssm.modes import s4d_modes, s5_block_modes
from jaxdl.nn.ssm.ptd import PTDResult, conjugate_half, kappa_gradient, ptd  # `ptd` is the function

__all__ = [
    "PTDResult",
    "S4D",
    "S4DConfig",
    "S5",
    "S5Config",
    "SequenceModel",
    "bidirectional_kernel",
    "conjugate_half",
    "discretize",
    "fft_conv",
    "functional",
    "hippo",
    "hippo_legs",
    "kappa_gradient",
    "kernels",
    "layers",
    "linear_recurrence",
    "linen",
    "modes",
    "nplr_legs",
    "ptd",
    "s4d_apply",
    "s4d_init",
    "s4d_init_params",
    "s4d_modes",
    "s4d_step",
    "s5_apply",
    "s5_block_modes",
    "s5_init_params",
    "s5_step",
    "ssm_kernel",
    "to_complex",
    "to_pair",
    "transfer_function",
]
