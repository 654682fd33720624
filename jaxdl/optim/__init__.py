"""Optax gradient transformations, one paper per file.

- `diffgrad.py`: diffGrad (Dubey et al., TNNLS 2020)
- `lamb.py`: LAMB (You et al., ICLR 2020)
- `perpgrad.py`: ⊥Grad and the NLM monitor (Prieto et al., ICLR 2025)
- `fused.py`: an opt-in fused update + apply step for Adam(W), diffGrad, ⊥AdamW, ⊥SGD and LAMB
"""

from jaxdl.optim.diffgrad import ScaleByDiffGradState, diffgrad, scale_by_diffgrad
from jaxdl.optim.fused import (
    FusedOptimizer,
    FusedState,
    fused_adam,
    fused_diffgrad,
    fused_lamb,
    fused_perp_adamw,
    fused_perp_sgd,
)
from jaxdl.optim.lamb import lamb
from jaxdl.optim.perpgrad import NLMAlignment, nlm_alignment, perp_adamw, perp_sgd, perpgrad

__all__ = [
    "FusedOptimizer",
    "FusedState",
    "NLMAlignment",
    "ScaleByDiffGradState",
    "diffgrad",
    "fused_adam",
    "fused_diffgrad",
    "fused_lamb",
    "fused_perp_adamw",
    "fused_perp_sgd",
    "lamb",
    "nlm_alignment",
    "perp_adamw",
    "perp_sgd",
    "perpgrad",
    "scale_by_diffgrad",
]
