"""State-space sequence layers: S4D, S5 and their perturb-then-diagonalize (PTD) variants.

- `hippo`: HiPPO-LegS, its NPLR form, S4D initialisations.
- `ptd`: perturb-then-diagonalize solver (runs once on the host in NumPy, cached).
- `kernels`: discretisation, Vandermonde kernel, FFT convolution, parallel scan, transfer function.
- `functional`: pure S4D / S5 init and forward maps over dicts of arrays.
- `layers` (Flax NNX) and `linen` (Flax Linen): `S4D`, `S5`, `SequenceModel`.
"""

from jaxdl.nn.ssm.functional import (
    s4d_apply,
    s4d_init_params,
    s4d_step,
    s5_apply,
    s5_init_params,
    s5_step,
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
from jaxdl.nn.ssm.ptd import PTDResult, conjugate_half, ptd
