"""Accurate squared distances for the boundary of a k-nearest-neighbour list, in float32 arithmetic.

The search ranks exemplars by s = ||e||^2 - 2 q.e computed by one float32 GEMM; near the k-th
neighbour its rounding (about 1e-4 at 1,000 dims, scores near 2,000) can swap two neighbours whose
float64 distances differ by less, so about 1 in 50,000 boundary neighbours differs from a float64
brute force. Re-ranking the few candidates around the k-th by ||q - e||^2 computed to about float64
accuracy makes the list match float64. JAX's float64 is a global flag, so the accurate distance is
computed with error-free transformations in float32 (a double-float sum):

* q_i - e_i = s_i + t_i exactly (Knuth's TwoSum, Knuth TAOCP vol. 2 §4.2.2, Thm B);
* s_i = h_i + l_i with h_i the leading 12 significant bits (a bit mask) and l_i the rest, so that
  h_i^2, 2 h_i l_i and l_i^2 are exact float32 products (Dekker 1971, "A floating-point technique
  for extending the available precision", §5); 2 s_i t_i and l_i^2 are far below the target error;
* the terms are summed as (hi, lo) pairs with TwoSum (Dekker's double-length addition).

Every product is exact, so a compiler that fuses a product and a sum into an FMA gives the same
result. The relative error is about 2^-44, against 2^-24 for the plain float32 formula.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _two_sum(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(s, err)`` with ``s = fl(a + b)`` and ``a + b = s + err`` exactly (Knuth's TwoSum)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _split(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``x = hi + lo`` exactly, ``hi`` holding the leading 12 of float32's 24 significant bits."""
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    hi = jax.lax.bitcast_convert_type(bits & jnp.uint32(0xFFFFF000), jnp.float32)
    return hi, x - hi


def _add_pairs(x: tuple[jax.Array, jax.Array], y: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Double-float addition (hi, lo) + (hi, lo), renormalised."""
    s, err = _two_sum(x[0], y[0])
    err = err + (x[1] + y[1])
    hi = s + err
    return hi, err - (hi - s)


def accurate_sq_distances(queries: jax.Array, rows: jax.Array) -> tuple[jax.Array, jax.Array]:
    """||q_b - e_bw||^2 for ``queries [B, M]`` and ``rows [B, W, M]`` as a pair ``(hi [B, W], lo [B, W])``.

    ``hi + lo`` carries about 44 significant bits when the arithmetic is float32 (bfloat16 or float32
    inputs); float64 inputs are summed directly (``lo`` is 0). No gradient: callers stop it.

    >>> import jax.numpy as jnp
    >>> hi, lo = accurate_sq_distances(jnp.array([[1.0, 2.0]]), jnp.array([[[1.0, 2.0 + 2**-20]]]))
    >>> float(hi[0, 0]) == 2.0**-40, float(lo[0, 0])
    (True, 0.0)
    """
    dtype = jnp.promote_types(jnp.promote_types(queries.dtype, rows.dtype), jnp.float32)
    q = jax.lax.stop_gradient(queries).astype(dtype)[:, None, :]
    e = jax.lax.stop_gradient(rows).astype(dtype)
    if dtype != jnp.float32:
        diff = q - e
        sq = jnp.sum(diff * diff, axis=-1)
        return sq, jnp.zeros_like(sq)
    s, t = _two_sum(q, -e)
    head, tail = _split(s)
    hi, lo = _two_sum(head * head, 2 * head * tail)  # both products exact
    lo = lo + (tail * tail + 2 * s * t)
    zero = jnp.zeros((), dtype)
    return jax.lax.reduce((hi, lo), (zero, zero), _add_pairs, (2,))
