"""jaxdl: building blocks from recent deep-learning papers for JAX.

Subpackages: `jaxdl.optim` (optax transformations), `jaxdl.nn` (Flax layers and activations),
`jaxdl.losses`, `jaxdl.probes` (NTK and Hessian probes), `jaxdl.data` (generators and tfds loaders),
`jaxdl.checkpoint` (orbax) and `jaxdl.parallel` (data-parallel training).

Subpackages load lazily, on first attribute access (a module-level ``__getattr__``, PEP 562): ``import
jaxdl.optim`` pays for optax only, never for Flax, orbax or TensorFlow Datasets, and ``import jaxdl``
alone imports none of them.

Example:
  >>> import jaxdl
  >>> callable(jaxdl.optim.diffgrad)  # `jaxdl.optim` is imported here, on first use
  True
  >>> "optim" in dir(jaxdl)
  True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0.dev0"  # the only place the version is written (pyproject reads it, via hatch)

__all__ = ["__version__", "checkpoint", "data", "losses", "nn", "optim", "parallel", "probes"]

_SUBMODULES = frozenset(__all__) - {"__version__"}

if TYPE_CHECKING:  # type checkers and IDEs see the subpackages as ordinary attributes
    from jaxdl import checkpoint, data, losses, nn, optim, parallel, probes


def __getattr__(name: str) -> object:
    """Import subpackage ``name`` on first access (``jaxdl.nn`` -> ``import jaxdl.nn``)."""
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module  # later accesses skip this function
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES))
