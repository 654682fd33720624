"""Optax gradient transformations, one paper per file.

- `diffgrad.py`: diffGrad (Dubey et al., TNNLS 2020)
- `lamb.py`: LAMB (You et al., ICLR 2020)
- `perpgrad.py`: ⊥Grad and the NLM monitor (Prieto et al., ICLR 2025)
"""

from jaxdl.optim.diffgrad import ScaleByDiffGradState, diffgrad, scale_by_diffgrad
from jaxdl.optim.lamb import lamb
from jaxdl.optim.perpgrad import NLMAlignment, nlm_alignment, perp_adamw, perp_sgd, perpgrad
