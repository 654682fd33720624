"""Kolmogorov-Arnold layers: pure basis functions, grid machinery, and Flax NNX / Linen modules.

Pure functions: `bspline_basis`, `relu_kan_basis`, `af_kan_basis`, `rbf_basis`, `chebyshev_basis`,
`fourier_basis`, `rational`, `group_rational`, `kan_linear`, `gr_kan`, `af_kan_layer`, and the grid update
`update_grid` / `refine` (module `jaxdl.nn.kan.grid`). NNX modules: `KANLinear`, `KAN`, `GRKAN`, `KATMLP`,
`AFKAN`, `SelectableKAN`; Linen equivalents live in `jaxdl.nn.kan.linen`.

Naming: layers and their functional core `kan_linear` call the B-spline order `spline_order`; the basis-level
functions (`bspline_basis`, `uniform_knots`, `update_grid`, `refine`, ...) call it `order`. The Linen modules take
the NNX arguments minus the input width (inferred from x; NNX `out_features` is Linen `features`), with NNX's
`init` spelled `init_kind`.
"""

from jaxdl.nn.kan import grid, linen
from jaxdl.nn.kan.af_kan import (
    af_kan_basis,
    af_kan_layer,
    af_kan_phases,
    global_attention_reduce,
    l2_min_max_normalize,
)
from jaxdl.nn.kan.bspline import bspline_basis, uniform_knots
from jaxdl.nn.kan.chebyshev import chebyshev_basis
from jaxdl.nn.kan.fourier import fourier_basis
from jaxdl.nn.kan.grid import adaptive_knots, refine, refined_knots, resize_basis_axis, update_grid
from jaxdl.nn.kan.kan_linear import Basis, get_basis, kan_linear, spline_kernel_init
from jaxdl.nn.kan.layers import AFKAN, GRKAN, KAN, KATMLP, KANGrid, KANLinear, SelectableKAN, SelectionMask
from jaxdl.nn.kan.rational import fit_rational, gr_kan, group_rational, rational, rational_gain
from jaxdl.nn.kan.rbf import rbf_basis, rbf_centers
from jaxdl.nn.kan.relu_kan import relu_kan_basis, relu_kan_supports
from jaxdl.nn.kan.selectable import selection_mask, selection_weights

__all__ = [
    "AFKAN",
    "Basis",
    "GRKAN",
    "KAN",
    "KATMLP",
    "KANGrid",
    "KANLinear",
    "SelectableKAN",
    "SelectionMask",
    "adaptive_knots",
    "af_kan_basis",
    "af_kan_layer",
    "af_kan_phases",
    "bspline_basis",
    "chebyshev_basis",
    "fit_rational",
    "fourier_basis",
    "grid",
    "get_basis",
    "global_attention_reduce",
    "gr_kan",
    "group_rational",
    "kan_linear",
    "l2_min_max_normalize",
    "linen",
    "rational",
    "rational_gain",
    "rbf_basis",
    "rbf_centers",
    "refine",
    "refined_knots",
    "relu_kan_basis",
    "relu_kan_supports",
    "resize_basis_axis",
    "selection_mask",
    "selection_weights",
    "spline_kernel_init",
    "uniform_knots",
    "update_grid",
]
