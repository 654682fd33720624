"""Hyperparameter defaults shared by each optimizer's optax alias and its fused step.

`jaxdl.optim.diffgrad` and `fused_diffgrad` (likewise lamb, perp_adamw) read their defaults from
one record here, so the two cannot drift apart (tests/optim/test_fused.py compares signatures).
"""

from __future__ import annotations

from typing import NamedTuple


class Hyper(NamedTuple):
    """Adam-style defaults: moment decays, epsilons, weight decay.

    Example:
      >>> from jaxdl.optim._defaults import LAMB
      >>> LAMB.eps, LAMB.weight_decay
      (1e-06, 0.0)
    """

    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    eps_root: float = 0.0
    weight_decay: float = 0.0


DIFFGRAD = Hyper()  # Dubey et al. 2020 (the authors' diffGrad_v2.py)
LAMB = Hyper(eps=1e-6)  # You et al. 2020, as optax.lamb
ADAMW = Hyper(weight_decay=1e-4)  # optax.adamw's defaults (⊥AdamW takes them)
