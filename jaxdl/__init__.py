"""jaxdl: building blocks from recent deep-learning papers for JAX.

Subpackages: `jaxdl.optim` (optax transformations), `jaxdl.nn` (Flax layers and
activations), `jaxdl.losses`, `jaxdl.probes` (NTK and Hessian probes), `jaxdl.data` (generators and tfds loaders),
`jaxdl.checkpoint` (orbax) and `jaxdl.parallel` (data-parallel training).
"""

from jaxdl import checkpoint, data, losses, nn, optim, parallel, probes

__version__ = "0.1.0.dev0"
