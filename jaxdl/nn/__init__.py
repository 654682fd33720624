"""Flax layers and activations, one paper family per subpackage.

- `jaxdl.nn.activations`: StableMax (Prieto et al., ICLR 2025)
- `jaxdl.nn.kan`: Kolmogorov-Arnold layers (KAN, ReLU-KAN, AF-KAN, S-KAN, GR-KAN/KAT)
- `jaxdl.nn.ssm`: state-space layers S4D, S5 and their PTD initialisation
- `jaxdl.nn.sdm`: the Similarity-Distance-Magnitude output layer (its checkpoint helpers `save_head` /
  `restore_head` live in `jaxdl.nn.sdm`)

Subpackages load on first use (a module-level `__getattr__`), so ``from jaxdl.nn import stablemax`` imports
neither the KAN, SSM nor SDM code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "AFKAN",
    "GRKAN",
    "KAN",
    "KATMLP",
    "KANLinear",
    "S4D",
    "S5",
    "SDMHead",
    "SelectableKAN",
    "SequenceModel",
    "activations",
    "fit_sdm",
    "kan",
    "log_stablemax",
    "nearest_neighbours",
    "sdm",
    "sdm_activation",
    "ssm",
    "stablemax",
]

_SUBMODULES = ("activations", "kan", "sdm", "ssm")
_HOME = {
    "log_stablemax": "activations",
    "stablemax": "activations",
    **dict.fromkeys(("AFKAN", "GRKAN", "KAN", "KATMLP", "KANLinear", "SelectableKAN"), "kan"),
    **dict.fromkeys(("SDMHead", "fit_sdm", "nearest_neighbours", "sdm_activation"), "sdm"),
    **dict.fromkeys(("S4D", "S5", "SequenceModel"), "ssm"),
}

if TYPE_CHECKING:
    from jaxdl.nn import activations, kan, sdm, ssm
    from jaxdl.nn.activations import log_stablemax, stablemax
    from jaxdl.nn.kan import AFKAN, GRKAN, KAN, KATMLP, KANLinear, SelectableKAN
    from jaxdl.nn.sdm import SDMHead, fit_sdm, nearest_neighbours, sdm_activation
    from jaxdl.nn.ssm import S4D, S5, SequenceModel


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"jaxdl.nn.{name}")
    if name in _HOME:
        value = getattr(importlib.import_module(f"jaxdl.nn.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jaxdl.nn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
