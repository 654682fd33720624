"""jaxdl: building blocks from recent deep-learning papers for JAX.

Subpackages: `jaxdl.optim` (optax transformations), `jaxdl.nn` (Flax layers and
activations), `jaxdl.losses`, `jaxdl.probes` (NTK and Hessian probes), `jaxdl.data`.
"""

from jaxdl import data, losses, nn, optim, probes

__version__ = "0.1.0.dev0"
