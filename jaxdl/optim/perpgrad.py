"""⊥Grad: keep only the part of the gradient orthogonal to the weights.

Prieto, Barsbey, Mediano, Birdal, "Grokking at the Edge of Numerical Stability", ICLR 2025
(arXiv:2501.04697), Definition 7, eqs. (11)-(12):

    grad_perp = grad - (<theta, grad> / <theta, theta>) theta

applied per parameter tensor and, as in the authors' `OrthoGrad` code, rescaled back to the
norm of the original gradient. Removing the radial component stops "naive loss minimisation"
(scaling the weights up to sharpen the logits, their Def. 5), which is what delays grokking.
The projection is applied to the gradient *before* the base optimizer, so e.g. Adam's moments
see projected gradients; the final Adam update is therefore not itself orthogonal to theta.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxdl.optim._checks import (
    check_adam,
    check_beta,
    check_leaves,
    check_nonnegative,
    checked_mask,
    with_input_checks,
)
from jaxdl.optim._compensated import Projection, projection, residual
from jaxdl.optim._defaults import ADAMW
from jaxdl.optim._grouping import same_shape_groups, stack

# Guards 0/0 for all-zero weights or gradients; representable in float32 and bfloat16, and the
# projection is always computed in at least float32 (it would flush to zero in float16).
_TINY = 1e-30


def _compute_dtype(g):
    return jnp.promote_types(g.dtype, jnp.float32)


def _as_real(x: jax.Array) -> jax.Array:
    """A complex leaf as real pairs (..., 2): C^n treated as R^2n, so the projection removes the
    component along w in the real inner product Re<w, g>, optax's convention for complex params."""
    return jnp.stack([x.real, x.imag], axis=-1) if jnp.iscomplexobj(x) else x


def _from_real(x: jax.Array, like: jax.Array) -> jax.Array:
    return jax.lax.complex(x[..., 0], x[..., 1]).astype(like.dtype) if jnp.iscomplexobj(like) else x


def _projections(grads: list, params: list) -> list[Projection]:
    """The ⊥Grad coefficients of every leaf (`_compensated.projection`), in at least float32;
    same-shaped small leaves share one reduction kernel (a 217-leaf perp_adamw step on an H100:
    504 -> 125 kernels)."""
    stats: list = [None] * len(grads)
    for members in same_shape_groups(grads, params):
        compute = _compute_dtype(grads[members[0]])
        rows = projection(stack(params, members, compute), stack(grads, members, compute), _TINY)
        for row, i in enumerate(members):
            stats[i] = Projection(*(x[row] for x in rows))
    return stats


def _perp_leaf(g, w, stats: Projection, renormalize):
    compute = _compute_dtype(g)
    # g - c w with c w formed exactly: g and c w nearly cancel when g is nearly parallel to w.
    g_perp = residual(g.astype(compute), w.astype(compute), stats.c_hi, stats.c_lo)
    if renormalize:
        # ||g_perp|| comes from compensated sums of the same single pass (`_compensated`), so it
        # is exact to a few eps at any angle. Within eps^(3/4) radians of w (3.7e-4 degrees in
        # float32) g is parallel to w up to the rounding of its own entries, and g_perp is that
        # rounding: the rescaling is capped at eps^(-3/4) there instead of amplifying it to
        # ||g|| as the authors' code does.
        cap_sq = float(jnp.finfo(compute).eps) ** -1.5
        perp_sq = jnp.maximum(stats.perp_sq, stats.g_sq / cap_sq)
        g_perp = g_perp * (jnp.sqrt(stats.g_sq) / (jnp.sqrt(perp_sq) + _TINY))
    return g_perp.astype(g.dtype)


def perpgrad(renormalize: bool = True) -> optax.GradientTransformation:
    """Project each gradient leaf onto the orthogonal complement of its parameter (eq. 12).

    Chain it *before* any optax optimizer: `optax.chain(perpgrad(), optax.adamw(1e-2))`.
    Stateless; needs `params` in `update`.

    Args:
      renormalize: rescale each projected leaf to the norm of the original gradient leaf (the
        authors' code does this; the paper's eq. 12 does not). ||g_perp|| is computed without
        cancellation (compensated sums in the same single pass), so the result follows the
        authors' rule evaluated in float64 to within 1e-3 relative at every angle down to
        0.01 degrees, in float32. Where a gradient is parallel to its weights up to the
        rounding of its own entries (within eps^(3/4) radians: 3.7e-4 degrees in float32, e.g.
        g = 3 * w, or any scalar leaf), g_perp is that rounding: the rescaling is then capped
        at eps^(-3/4) (1.6e5 in float32) and the leaf comes out far shorter than ||g||.

    Compiles into one reduction (per leaf, or per stack of same-shaped small leaves) and one
    elementwise pass. Shapes: any pytree; grads and params leaves of equal shapes.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.optim import perpgrad
      >>> tx, w = perpgrad(), {"w": jnp.array([1.0, 0.0])}
      >>> updates, _ = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(w), w)
      >>> print(updates["w"])
      [0. 5.]
    """
    if not isinstance(renormalize, bool):
        raise TypeError(f"renormalize must be a bool, got {renormalize!r}")

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("perpgrad needs the current params: call update(grads, state, params)")
        leaves, weights, treedef = check_leaves(updates, params)
        grads, weights = [_as_real(g) for g in leaves], [_as_real(w) for w in weights]
        stats = _projections(grads, weights)
        projected = [_perp_leaf(*leaf, renormalize) for leaf in zip(grads, weights, stats, strict=True)]
        return treedef.unflatten([_from_real(x, g) for x, g in zip(projected, leaves, strict=True)]), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def perp_adamw(
    learning_rate: optax.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = ADAMW.b1,
    b2: jax.typing.ArrayLike = ADAMW.b2,
    eps: jax.typing.ArrayLike = ADAMW.eps,
    eps_root: jax.typing.ArrayLike = ADAMW.eps_root,
    mu_dtype: Any = None,
    weight_decay: optax.ScalarOrSchedule = ADAMW.weight_decay,
    mask: Any = None,
    *,
    nesterov: bool = False,
    renormalize: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """⊥AdamW (Prieto et al. 2025): `perpgrad(renormalize)` chained before `optax.adamw`.

    Takes the arguments and defaults of `optax.adamw` (plus `renormalize`). The paper's grokking
    run is `perp_adamw(1e-2, weight_decay=0.0)`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.optim import perp_adamw
      >>> params = {"w": jnp.array([1.0, 0.0])}
      >>> tx = perp_adamw(1e-2, weight_decay=0.0)
      >>> updates, _ = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(params), params)
      >>> print(updates["w"].round(4))  # the radial (first) coordinate is left alone
      [-0.   -0.01]
    """
    check_nonnegative("learning_rate", learning_rate)
    check_nonnegative("weight_decay", weight_decay)
    check_adam(b1, b2, eps, eps_root)
    return with_input_checks(
        optax.chain(
            perpgrad(renormalize),
            optax.adamw(
                learning_rate,
                b1=b1,
                b2=b2,
                eps=eps,
                eps_root=eps_root,
                mu_dtype=mu_dtype,
                weight_decay=weight_decay,
                mask=checked_mask("mask", mask),
                nesterov=nesterov,
            ),
        )
    )


def perp_sgd(
    learning_rate: optax.ScalarOrSchedule,
    momentum: jax.typing.ArrayLike | None = None,
    nesterov: bool = False,
    accumulator_dtype: Any = None,
    *,
    renormalize: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """⊥SGD (Prieto et al. 2025): `perpgrad(renormalize)` chained before `optax.sgd`.

    Takes the arguments and defaults of `optax.sgd` (plus `renormalize`).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.optim import perp_sgd
      >>> params = {"w": jnp.array([1.0, 0.0])}
      >>> tx = perp_sgd(0.1)
      >>> updates, _ = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(params), params)
      >>> print(updates["w"])
      [-0.  -0.5]
    """
    check_nonnegative("learning_rate", learning_rate)
    if momentum is not None:
        check_beta("momentum", momentum)
    return with_input_checks(
        optax.chain(
            perpgrad(renormalize),
            optax.sgd(
                learning_rate, momentum=momentum, nesterov=nesterov, accumulator_dtype=accumulator_dtype
            ),
        )
    )


class NLMAlignment(NamedTuple):
    """Cosine between -grad and the weights: per leaf (a pytree of scalars) and over all leaves.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.optim import nlm_alignment
      >>> w = {"a": jnp.array([3.0, 4.0])}
      >>> nlm_alignment({"a": -2 * w["a"]}, w).overall.item()  # -g along w: pure weight scaling
      1.0
    """

    per_leaf: Any
    overall: jax.Array


def nlm_alignment(grads: optax.Updates, params: optax.Params) -> NLMAlignment:
    """How much of the descent direction is naive loss minimisation (Prieto et al. 2025, Fig. 5).

    cos(-g, theta) = -<g, theta> / (||g|| ||theta||), per leaf and for the whole model. It climbs
    towards 1 once the training accuracy saturates and the loss is lowered by scaling the
    weights up; ⊥Grad removes exactly this component. Zero when either norm is zero. Jit-able.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.optim import nlm_alignment
      >>> w = {"a": jnp.array([1.0, 0.0]), "b": jnp.array([0.0, 2.0])}
      >>> g = {"a": jnp.array([-2.0, 0.0]), "b": jnp.array([1.0, -1.0])}
      >>> result = nlm_alignment(g, w)
      >>> print(result.per_leaf["a"], result.per_leaf["b"].round(4), result.overall.round(4))
      1.0 0.7071 0.7303
    """

    def cosine(dot, g_sq, w_sq):
        denom = jnp.sqrt(g_sq * w_sq)
        return jnp.where(denom > 0, -dot / jnp.where(denom > 0, denom, 1.0), 0.0)

    leaves, weights, treedef = check_leaves(grads, params)
    assert weights is not None
    stats = _projections([_as_real(g) for g in leaves], [_as_real(w) for w in weights])
    per_leaf = treedef.unflatten([cosine(s.w_dot_g, s.g_sq, s.w_sq) for s in stats])
    dot, w_sq, g_sq = (
        sum(parts) for parts in zip(*((s.w_dot_g, s.w_sq, s.g_sq) for s in stats), strict=True)
    )
    return NLMAlignment(per_leaf, cosine(dot, g_sq, w_sq))
