"""Fourier basis (Xu et al. 2024, "FourierKAN-GCF", arXiv 2406.01034; GistNoesis FourierKAN):
phi(x) = sum_{k=1..K} a_k cos(k x) + b_k sin(k x). Periodic, so inputs never leave the grid.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

__all__ = ["fourier_basis"]


def fourier_basis(x: ArrayLike, num_frequencies: int) -> Array:
    """[cos(x), ..., cos(K x), sin(x), ..., sin(K x)].

    Args:
      x: inputs of shape (..., D).
      num_frequencies: K >= 1.

    Returns:
      Basis values of shape (..., D, 2K).

    >>> import jax.numpy as jnp
    >>> fourier_basis(jnp.array([0.0]), 2).tolist()
    [[1.0, 1.0, 0.0, 0.0]]
    """
    if num_frequencies < 1:
        raise ValueError(f"num_frequencies must be >= 1, got {num_frequencies}")
    x = jnp.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"x must have shape (..., D), got {x.shape}")
    kx = x[..., None] * jnp.arange(1, num_frequencies + 1, dtype=jnp.result_type(x, jnp.float32))
    return jnp.concatenate([jnp.cos(kx), jnp.sin(kx)], axis=-1)
