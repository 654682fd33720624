"""AF-KAN: activation-function-based KAN (Ta & Tran 2025, "AF-KAN: Activation Function-Based Kolmogorov-Arnold
Networks for Efficient Representation Learning", arXiv 2503.06112, Sec. 3).

For input x_d and basis i the two shifted activations a = act(x_d - s_i), b = act(e_i - x_d) are combined by a
function ("quad1" = (a b)^2 in the paper's best configuration), normalised, reduced over the basis axis by
global attention, layer-normalised, and mapped by a linear layer of act(z). The layer has about one weight per
edge, like an MLP.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from types import MappingProxyType

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike, DTypeLike

__all__ = ["af_kan_basis", "af_kan_layer", "af_kan_phases", "global_attention_reduce", "l2_min_max_normalize"]

_COMBINATIONS: Mapping[str, Callable[[Array, Array], Array]] = MappingProxyType(
    {
        "quad1": lambda a, b: (a * b) ** 2,
        "quad2": lambda a, b: a * b + a**2 + b**2,
        "sum": lambda a, b: a + b,
        "prod": lambda a, b: a * b,
        "sum_prod": lambda a, b: a + b + a * b,
        "cubic1": lambda a, b: (a + b) * (a**2 + b**2),
        "cubic2": lambda a, b: (a * b) ** 3,
    }
)


def af_kan_phases(grid_size: int, order: int) -> tuple[Array, Array]:
    """AF-KAN's initial starts and ends: s_i = (i - k)/G, e_i = s_i + (k + 1)/G, i = 0 .. G+k-1.

    >>> s, e = af_kan_phases(3, 3)
    >>> s.shape, float(e[0] - s[0])
    ((6,), 1.3333333730697632)
    """
    starts = np.arange(-order, grid_size) / grid_size
    return jnp.asarray(starts, jnp.float32), jnp.asarray(starts + (order + 1) / grid_size, jnp.float32)


def af_kan_basis(
    x: ArrayLike,
    starts: ArrayLike,
    ends: ArrayLike,
    *,
    activation: Callable[[Array], Array] = jax.nn.silu,
    combination: str = "quad1",
) -> Array:
    """AF-KAN basis f(act(x - s_i), act(e_i - x)) (AF-KAN Sec. 3, "function combinations").

    Args:
      x: inputs of shape (..., D).
      starts: s of shape (M,) shared by all inputs (or (D, M)).
      ends: e, same shape as `starts`.
      activation: the activation act (SiLU in the paper's best configuration).
      combination: one of "quad1" ((a b)^2, default), "quad2", "sum", "prod", "sum_prod", "cubic1", "cubic2".

    Returns:
      Basis values of shape (..., D, M).

    >>> import jax, jax.numpy as jnp
    >>> s, e = af_kan_phases(3, 3)
    >>> af_kan_basis(jnp.zeros((4, 2)), s, e).shape
    (4, 2, 6)
    """
    if combination not in _COMBINATIONS:
        raise ValueError(f"combination must be one of {sorted(_COMBINATIONS)}, got {combination!r}")
    x = jnp.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"x must have shape (..., D), got {x.shape}")
    x = x[..., None]
    starts, ends = jnp.asarray(starts), jnp.asarray(ends)
    return _COMBINATIONS[combination](activation(x - starts), activation(ends - x))


def l2_min_max_normalize(features: ArrayLike, eps: float = 1e-12) -> Array:
    """AF-KAN's "L2MM" normalisation, per example: divide by the L2 norm, then min-max scale to [0, 1].

    The reference code normalises the whole batch tensor at once, which makes an example's output depend on
    the rest of its batch; here each example (the last two axes) is normalised on its own.

    Args:
      features: shape (..., D, M).
      eps: guards the divisions for constant inputs.

    Returns:
      Same shape, each example scaled into [0, 1].

    >>> import jax.numpy as jnp
    >>> l2_min_max_normalize(jnp.array([[[1.0, 3.0]]])).tolist()
    [[[0.0, 1.0]]]
    """
    features = jnp.asarray(features)
    features = features / jnp.maximum(jnp.linalg.norm(features, axis=(-2, -1), keepdims=True), eps)
    low = features.min(axis=(-2, -1), keepdims=True)
    high = features.max(axis=(-2, -1), keepdims=True)
    return (features - low) / jnp.maximum(high - low, eps)


def global_attention_reduce(
    features: ArrayLike, score_kernel: ArrayLike, score_bias: ArrayLike, temperature: ArrayLike
) -> Array:
    """AF-KAN's "global_attn" reduction (D, M) -> (D,): z_d = w_d * sum_i features_{d,i}.

    Scores s_d = features_d . score_kernel + score_bias are turned into weights w = softmax(s / max(T, 1)) over
    the D inputs.

    Args:
      features: shape (..., D, M).
      score_kernel: shape (M,).
      score_bias: scalar.
      temperature: scalar T (the paper initialises it to sqrt(D)).

    Returns:
      Shape (..., D).

    >>> import jax.numpy as jnp
    >>> global_attention_reduce(jnp.ones((2, 3, 4)), jnp.zeros(4), 0.0, 1.0)[0].tolist()
    [1.3333333730697632, 1.3333333730697632, 1.3333333730697632]
    """
    features = jnp.asarray(features)
    scores = features @ score_kernel + score_bias
    weights = jax.nn.softmax(scores / jnp.maximum(temperature, 1.0), axis=-1)
    return features.sum(-1) * weights


def af_kan_layer(
    x: ArrayLike,
    params: dict,
    *,
    activation: Callable[[Array], Array] = jax.nn.silu,
    combination: str = "quad1",
    eps: float = 1e-5,
    dtype: DTypeLike | None = None,
) -> Array:
    """One AF-KAN layer: basis -> L2MM -> global attention -> LayerNorm -> act(z) @ kernel (AF-KAN Sec. 3).

    Everything up to act(z) runs in at least float32 (the normalisations divide by norms and ranges
    that bfloat16 would round coarsely); the final contraction runs in `dtype`.

    Args:
      x: inputs of shape (..., D).
      params: dict with "starts", "ends" (M,), "score_kernel" (M,), "score_bias" (), "temperature" (),
        "norm_scale", "norm_bias" (D,) and "kernel" (D, N).
      activation, combination: as in `af_kan_basis`.
      eps: LayerNorm epsilon.
      dtype: computation dtype of the final matmul (default: promoted from x and the kernel).

    Returns:
      Shape (..., N), in `dtype`.

    >>> import jax.numpy as jnp
    >>> s, e = af_kan_phases(3, 3)
    >>> p = dict(starts=s, ends=e, score_kernel=jnp.zeros(6), score_bias=0.0, temperature=1.0,
    ...          norm_scale=jnp.ones(2), norm_bias=jnp.zeros(2), kernel=jnp.ones((2, 5)))
    >>> af_kan_layer(jnp.ones((4, 2)), p).shape
    (4, 5)
    """
    if combination not in _COMBINATIONS:
        raise ValueError(f"combination must be one of {sorted(_COMBINATIONS)}, got {combination!r}")
    x = jnp.asarray(x)
    dtype = jnp.result_type(x, params["kernel"]) if dtype is None else jnp.dtype(dtype)
    return _af_kan_layer(x, params, activation, combination, eps, dtype)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _af_kan_layer(x, params, activation, combination, eps, dtype):
    features = af_kan_basis(
        x.astype(jnp.promote_types(x.dtype, jnp.float32)),
        params["starts"],
        params["ends"],
        activation=activation,
        combination=combination,
    )
    features = l2_min_max_normalize(features)
    z = global_attention_reduce(features, params["score_kernel"], params["score_bias"], params["temperature"])
    mean = z.mean(-1, keepdims=True)
    var = ((z - mean) ** 2).mean(-1, keepdims=True)
    z = (z - mean) * jax.lax.rsqrt(var + eps) * params["norm_scale"] + params["norm_bias"]
    return activation(z).astype(dtype) @ params["kernel"].astype(dtype)
