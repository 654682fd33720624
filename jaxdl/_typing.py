"""Type aliases shared across jaxdl (import them from here; never redefine them locally).

``PyTree`` is ``Any`` on purpose: a pytree is any nesting of containers JAX knows how to flatten, which
the type system cannot express precisely, so the alias documents intent rather than constrains.

Example:
  >>> import jax.numpy as jnp
  >>> from jaxdl._typing import PyTree
  >>> params: PyTree = {"w": jnp.ones(2)}
  >>> sorted(params)
  ['w']
"""

from __future__ import annotations

from typing import Any

import jax
from jax.typing import ArrayLike, DTypeLike

__all__ = ["ArrayLike", "Batch", "DTypeLike", "Metrics", "PRNGKey", "PyTree", "Shape"]

PyTree = Any
"""Any nesting of lists, tuples, dicts, NamedTuples and registered nodes with array leaves."""

Batch = Any
"""A pytree of arrays sharing a leading (batch) axis."""

Metrics = dict[str, jax.Array]
"""Scalar metrics by name, as a training step returns them."""

PRNGKey = jax.Array
"""A typed PRNG key, ``jax.random.key(seed)`` (legacy ``uint32[2]`` keys are arrays too)."""

Shape = tuple[int, ...]
"""An array shape."""
