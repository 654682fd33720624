"""Argument checks shared by the optimizer aliases.

Hyperparameters may be traced (under `optax.inject_hyperparams` or `jax.vmap` over a
sweep), so only concrete Python/NumPy scalars are checked here; traced values pass through.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl._typing import PyTree


def _concrete(name: str, value: Any) -> float | None:
    """`value` as a float when it is a concrete scalar; None for tracers and schedules, which the
    checks below let through. Strings and arrays of more than one element are refused: a vector
    learning rate would silently scale each coordinate differently (vmap over a sweep instead)."""
    if callable(value):
        return None
    if isinstance(value, (str, bytes)) or not isinstance(
        value, (int, float, np.number, np.ndarray, jax.Array)
    ):
        raise TypeError(f"{name} must be a real number (or a schedule), got {value!r}")
    if np.ndim(value) != 0:
        raise ValueError(
            f"{name} must be a scalar, got shape {np.shape(value)} (for a sweep, jax.vmap over scalar values)"
        )
    try:
        return float(value)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return None


def _low_precision_hint(value: Any) -> str:
    dtype = getattr(value, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32:
        return (
            f" ({dtype} rounded it: optax.inject_hyperparams casts hyperparameters to the params' "
            "dtype; pass hyperparam_dtype=jnp.float32)"
        )
    return ""


def check_nonnegative(name: str, value: Any) -> None:
    x = _concrete(name, value)
    if x is not None and not (math.isfinite(x) and x >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def check_positive(name: str, value: Any) -> None:
    x = _concrete(name, value)
    if x is not None and not (math.isfinite(x) and x > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_beta(name: str, value: Any) -> None:
    x = _concrete(name, value)
    if x is not None and not 0 <= x < 1:
        raise ValueError(f"{name} must lie in [0, 1), got {value!r}{_low_precision_hint(value)}")


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


def check_leaves(
    grads: PyTree, params: PyTree | None, what: str = "params", name: str = "grads"
) -> tuple[list, list | None, Any]:
    """Flatten grads (and params) after checking them: same structure, same shapes, floating-point
    or complex dtypes. Python scalars (e.g. in lists) become arrays, as optax accepts them.
    Errors name the leaf as grads[...] / params[...]; `what` names what params stands for."""
    g_leaves, treedef_ = jax.tree.flatten(grads)
    treedef: Any = treedef_
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(grads)[0]]
    g_leaves = [jnp.asarray(x) for x in g_leaves]
    p_leaves = None
    if params is not None:
        p_tree: Any = jax.tree.structure(params)
        try:
            p_leaves = [jnp.asarray(x) for x in treedef.flatten_up_to(params)]
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"{name} must have the structure of {what}; got {name} {treedef} and {what} {p_tree}"
            ) from err
        if p_tree.num_leaves != len(g_leaves):
            raise ValueError(
                f"{name} must have the structure of {what}; got {name} {treedef} and {what} {p_tree}"
            )
        for path, g, p in zip(paths, g_leaves, p_leaves, strict=True):
            if g.shape != p.shape:
                raise ValueError(f"{name}{path} has shape {g.shape} but {what}{path} has shape {p.shape}")
    for label, leaves in ((name, g_leaves), (what, p_leaves)):
        for path, x in zip(paths, leaves or [], strict=False):
            if not jnp.issubdtype(x.dtype, jnp.inexact):
                raise TypeError(
                    f"{label}{path} has dtype {x.dtype}: the optimizers need floating-point (or complex) "
                    f"parameters and gradients (cast integer leaves, or mask them out of the tree)"
                )
    return g_leaves, p_leaves, treedef


def with_input_checks(tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """`tx` with `check_leaves` on its inputs: init refuses integer params, update refuses grads
    that do not match params. The state is `tx`'s own, unchanged."""

    def init_fn(params):
        leaves, treedef = jax.tree.flatten(params)
        check_leaves(params, None, name="params")
        return tx.init(treedef.unflatten([jnp.asarray(x) for x in leaves]))

    def update_fn(updates, state, params=None, **extra_args):
        g_leaves, p_leaves, treedef = check_leaves(updates, params)
        updates = treedef.unflatten(g_leaves)
        if p_leaves is not None:
            params = treedef.unflatten(p_leaves)
        return optax.with_extra_args_support(tx).update(updates, state, params, **extra_args)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
