"""StableMax: a softmax whose scores grow linearly instead of exponentially.

Prieto, Barsbey, Mediano, Birdal, "Grokking at the Edge of Numerical Stability", ICLR 2025
(arXiv:2501.04697), Definition 4 and Proposition 1:

    StableMax(x)_i = s(x_i) / sum_j s(x_j),   s(x) = x + 1 (x >= 0),  1 / (1 - x) (x < 0)
                   = softmax(g(x))_i,         g(x) = log(1 + x) (x >= 0),  -log(1 - x) (x < 0)

Because s grows linearly, the largest logit cannot swamp the others in floating point, which
is the "Softmax Collapse" that stalls grokking. We compute through g and `log_softmax`, with
both branches of g fed only values that keep them finite ("double where"): the naive
`where(x < 0, 1 / (1 - x), x + 1)` gives NaN gradients in float32 at x = 1, and the one-where
form `where(x < 0, -log1p(-x), log1p(x))` gives NaN gradients at x = +-1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _stable_log_score(x: jax.Array) -> jax.Array:
    """g(x) = sign(x) log(1 + |x|), written so that the unselected branch never sees a value
    that makes its derivative overflow (and g'(0) = 1, unlike sign(x) * log1p(|x|))."""
    nonneg = x >= 0
    return jnp.where(nonneg, jnp.log1p(jnp.where(nonneg, x, 0)), -jnp.log1p(jnp.where(nonneg, 0, -x)))


def _float_input(x: jax.typing.ArrayLike, name: str) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {x.dtype}")
    return x


def log_stablemax(x: jax.typing.ArrayLike, axis: int = -1) -> jax.Array:
    """log StableMax(x) along `axis` (Prieto et al. 2025, Def. 4 / Prop. 1). Same shape as `x`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.nn import log_stablemax
      >>> [round(float(v), 4) for v in log_stablemax(jnp.array([1.0, -2.0, 0.5]))]
      [-0.6506, -2.4423, -0.9383]
    """
    return jax.nn.log_softmax(_stable_log_score(_float_input(x, "x")), axis=axis)


def stablemax(x: jax.typing.ArrayLike, axis: int = -1) -> jax.Array:
    """StableMax(x) along `axis` (Prieto et al. 2025, Def. 4): s(x_i) / sum_j s(x_j).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.nn import stablemax
      >>> [round(float(p), 4) for p in stablemax(jnp.array([1.0, -2.0, 0.5]))]  # s = [2, 1/3, 1.5]
      [0.5217, 0.087, 0.3913]
    """
    return jax.nn.softmax(_stable_log_score(_float_input(x, "x")), axis=axis)
