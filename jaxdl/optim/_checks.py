"""Argument checks shared by the optimizer aliases.

Hyperparameters may be traced (under `optax.inject_hyperparams` or `jax.vmap` over a
sweep), so only concrete Python/NumPy scalars are checked here; traced values pass through.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax


def _concrete(value: Any) -> float | None:
    """`value` as a float when it is a concrete scalar; None for tracers, schedules and arrays,
    which every check below lets through."""
    if callable(value):
        return None
    try:
        return float(value)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return None


def check_nonnegative(name: str, value: Any) -> None:
    x = _concrete(value)
    if x is not None and not (math.isfinite(x) and x >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def check_positive(name: str, value: Any) -> None:
    x = _concrete(value)
    if x is not None and not (math.isfinite(x) and x > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_beta(name: str, value: Any) -> None:
    x = _concrete(value)
    if x is not None and not 0 <= x < 1:
        raise ValueError(f"{name} must lie in [0, 1), got {value!r}")


def check_adam(b1: Any, b2: Any, eps: Any, eps_root: Any = 0.0) -> None:
    """The moment decays in [0, 1), eps > 0 and eps_root >= 0 of an Adam-family transform."""
    check_beta("b1", b1)
    check_beta("b2", b2)
    check_positive("eps", eps)
    check_nonnegative("eps_root", eps_root)


def checked_mask(name: str, mask: Any) -> Callable[[Any], Any] | None:
    """Wrap a mask (a pytree of bools or a callable params -> pytree) so that a mask whose
    structure is not a prefix of the params' raises a ValueError naming `name`."""
    if mask is None:
        return None

    def resolve(params):
        tree = mask(params) if callable(mask) else mask
        try:
            jax.tree.map(lambda m, _: m, tree, params)
        except ValueError as err:
            raise ValueError(
                f"{name} must be a pytree with the structure of params (or a prefix of it), "
                f"or a callable returning one; got structure {jax.tree.structure(tree)} "
                f"for params of structure {jax.tree.structure(params)}"
            ) from err
        return tree

    return resolve
