"""Argument checks shared by the layer packages (`kan`, `ssm`): each raises a ValueError or TypeError that names
the argument and what was expected, before anything reaches XLA."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np


def _check_size(name: str, value: Any, minimum: int = 1) -> int:
    """A Python or NumPy integer >= minimum (not a bool), returned as int; ValueError naming the argument otherwise.

    >>> _check_size("grid_size", np.int64(3))
    3
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value)


def _check_float_dtype(name: str, value: Any, *, optional: bool = False) -> Any:
    """None (if optional) or a floating dtype, returned as a NumPy dtype; TypeError naming the argument otherwise.

    >>> _check_float_dtype("param_dtype", jnp.bfloat16)
    dtype(bfloat16)
    """
    if value is None and optional:
        return None
    try:
        dtype = jnp.dtype(value)
    except TypeError as error:
        raise TypeError(f"{name} must be a floating-point dtype, got {value!r}") from error
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point dtype such as jnp.float32, got {dtype}")
    return dtype
