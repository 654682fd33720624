"""Chebyshev basis (SS et al. 2024, "Chebyshev Polynomial-Based Kolmogorov-Arnold Networks", arXiv 2405.07200; ChebyKAN):
T_n(tanh x), n = 0 .. degree. tanh maps the input into [-1, 1], where T_n(y) = cos(n arccos y).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

__all__ = ["chebyshev_basis"]


def chebyshev_basis(x: ArrayLike, degree: int) -> Array:
    """Chebyshev polynomials of the first kind of tanh(x): T_0 .. T_degree.

    Uses the recurrence T_{n+1}(y) = 2 y T_n(y) - T_{n-1}(y) rather than cos(n arccos y), whose derivative is
    infinite at y = +-1 (reached by tanh in float32 for |x| > 9).

    Args:
      x: inputs of shape (..., D).
      degree: highest degree, >= 0.

    Returns:
      Basis values of shape (..., D, degree + 1).

    >>> import jax.numpy as jnp
    >>> chebyshev_basis(jnp.array([jnp.arctanh(0.5)]), 3).round(4).tolist()
    [[1.0, 0.5, -0.5, -1.0]]
    """
    if degree < 0:
        raise ValueError(f"degree must be >= 0, got {degree}")
    x = jnp.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"x must have shape (..., D), got {x.shape}")
    y = jnp.tanh(x)
    terms = [jnp.ones_like(y), y]
    for _ in range(2, degree + 1):
        terms.append(2 * y * terms[-1] - terms[-2])
    return jnp.stack(terms[: degree + 1], axis=-1)
