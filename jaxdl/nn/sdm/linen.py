"""Flax Linen version of `SDMHead`, over the same pure functions.

Schmaltz, "Similarity-Distance-Magnitude Activations", arXiv:2509.12760, §3.1 and App. A.4: scalar
standardisation, Dense → exemplar vector h', Dense → logits z'. In Linen the exemplar memory and
calibration (an `SDMState`) are passed to `SDMHead.predict` explicitly; `from_nnx` converts a fitted
NNX head into Linen variables plus its state.
"""

from __future__ import annotations

from typing import cast

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import nnx

from jaxdl.nn.sdm import head as nnx_head
from jaxdl.nn.sdm.estimator import SDMOutput, SDMState, sdm_estimate


class SDMHead(nn.Module):
    """Linen SDM output layer: ``(logits [B, C], exemplar vectors [B, hidden])`` from features ``[B, D]``.

    The scalar standardisation (mean, std) lives in the ``"sdm_stats"`` collection.

    Attributes:
      num_classes: C.
      hidden: M, the size of the exemplar vector (1000 in the paper).
      k: neighbours searched in `predict`, the cap on q.

    >>> import jax, jax.numpy as jnp
    >>> model = SDMHead(num_classes=3, hidden=16)
    >>> variables = model.init(jax.random.key(0), jnp.ones((2, 8)))
    >>> [a.shape for a in model.apply(variables, jnp.ones((2, 8)))]
    [(2, 3), (2, 16)]
    """

    num_classes: int
    hidden: int = 1000
    k: int = nnx_head.DEFAULT_K

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        standardization = self.variable("sdm_stats", "standardization", lambda: jnp.array([0.0, 1.0]))
        mean, std = standardization.value
        exemplar_vectors = nn.Dense(self.hidden, name="exemplar")((x - mean) / std)
        return nn.Dense(self.num_classes, name="classifier")(exemplar_vectors), exemplar_vectors

    def predict(self, x: jax.Array, state: SDMState, **search_options) -> SDMOutput:
        """The SDM estimator (`sdm_estimate`) for ``x`` given a fitted ``state``; use with ``method=``."""
        logits, exemplar_vectors = self(x)
        k = min(self.k, state.memory.vectors.shape[0])
        return sdm_estimate(logits, exemplar_vectors, state, k=k, **search_options)


def from_nnx(head: nnx_head.SDMHead) -> tuple[SDMHead, dict, SDMState]:
    """The Linen module, variables and state equivalent to an NNX `jaxdl.nn.sdm.SDMHead`.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> head = nnx_head.SDMHead(8, 3, hidden=16, rngs=nnx.Rngs(0))
    >>> model, variables, _ = from_nnx(head)
    >>> bool(jnp.allclose(model.apply(variables, jnp.ones((2, 8)))[0], head(jnp.ones((2, 8)))[0]))
    True
    """
    params = {
        name: {"kernel": layer.kernel[...], "bias": cast(nnx.Param, layer.bias)[...]}  # SDMHead has biases
        for name, layer in (("exemplar", head.exemplar), ("classifier", head.classifier))
    }
    variables = {"params": params, "sdm_stats": {"standardization": head.standardization[...]}}
    model = SDMHead(num_classes=head.num_classes, hidden=head.hidden, k=head.k)
    return model, variables, head.state.get_value()
