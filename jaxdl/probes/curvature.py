"""Curvature operators: Hessian, generalised Gauss-Newton and empirical Fisher products.

A *curvature* is chosen by the object passed as ``loss_fn``: a plain
``loss_fn(params, batch) -> scalar`` means its Hessian; :class:`GGN` and
:class:`EmpiricalFisher` select the other two. A :class:`Batches` in place of ``batch``
averages the operator over stacked microbatches with ``lax.scan`` (a full-data Hessian
whose data do not fit in one step). The estimators built on these operators (top
eigenvalues, trace, spectral density) live in :mod:`jaxdl.probes.hessian`.

- Hessian-vector product, forward-over-reverse ``jvp(grad(L))`` (Pearlmutter 1994; the JAX
  autodiff cookbook): ``H v`` at about twice the cost of a gradient.
- Generalised Gauss-Newton product ``J^T H_l J v`` (Schraudolph 2002; Martens 2020, eq. 9):
  a ``jvp`` of the model, the loss Hessian in output space, a ``vjp`` back.
- Empirical Fisher product ``(1/N) sum_i g_i g_i^T v`` (Kunstner et al. 2019, eq. 3).

All functions here are plain (unjitted) functions of arrays: they trace their ``loss_fn`` on
every call, so call them inside your own ``jax.jit`` (or use
:func:`jaxdl.probes.hessian.hessian_probes`) when you call them repeatedly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl._typing import PyTree
from jaxdl.probes import _operators as ops

__all__ = [
    "GGN",
    "Batches",
    "EmpiricalFisher",
    "curvature_operator",
    "fisher_vp",
    "ggn_vp",
    "hvp",
    "stack_batches",
]


# ---- curvature specifications -----------------------------------------------------------------


class GGN(NamedTuple):
    """Select the generalised Gauss-Newton matrix ``J^T H_l J`` instead of the Hessian.

    Attributes:
      apply_fn: ``apply_fn(params, batch) -> outputs`` (any pytree of arrays).
      loss: ``loss(outputs, batch) -> scalar``; its Hessian in output space is ``H_l``.

    >>> spec = GGN(lambda w, b: b @ w, lambda out, b: 0.5 * jnp.mean(out**2))
    >>> x = jnp.diag(jnp.array([2.0, 1.0]))  # J = x, H_l = I / 2: J^T H_l J = diag(2, 0.5)
    >>> curvature_operator(spec, jnp.zeros(2), x)(jnp.ones(2)).tolist()
    [2.0, 0.5]
    """

    apply_fn: Callable[[PyTree, PyTree], PyTree]
    loss: Callable[[PyTree, PyTree], jax.Array]


class EmpiricalFisher(NamedTuple):
    """Select the empirical Fisher ``(1/N) sum_i g_i g_i^T`` (``g_i`` the per-example gradients).

    Attributes:
      per_example_loss_fn: ``per_example_loss_fn(params, batch) -> (N,)`` losses.

    >>> spec = EmpiricalFisher(lambda w, b: b @ w)
    >>> curvature_operator(spec, jnp.zeros(2), jnp.eye(2))(jnp.ones(2)).tolist()
    [0.5, 0.5]
    """

    per_example_loss_fn: Callable[[PyTree, PyTree], jax.Array]


class Batches(NamedTuple):
    """Microbatches stacked along a leading axis; probes average their operator over them.

    Every leaf of ``data`` has shape ``(num_batches, ...)``; the microbatches must have equal
    sizes so that the average of per-batch mean losses is the full-data mean loss.

    >>> loss = lambda w, b: 0.5 * jnp.mean((b["x"] @ w) ** 2)
    >>> data = Batches({"x": jnp.ones((2, 3, 2))})  # 2 microbatches of 3 examples
    >>> hvp(loss, jnp.zeros(2), data, jnp.array([1.0, 0.0])).tolist()
    [1.0, 1.0]
    """

    data: PyTree


def stack_batches(batches: Iterable[PyTree]) -> Batches:
    """Stack an iterable of equally shaped batches into a :class:`Batches` (on the host).

    >>> b = stack_batches([{"x": np.ones(3)}, {"x": np.zeros(3)}])
    >>> b.data["x"].shape
    (2, 3)
    """
    batches = list(batches)
    if not batches:
        raise ValueError("batches must contain at least one batch")
    return Batches(jax.tree.map(lambda *xs: np.stack(xs), *batches))


# ---- matrix-vector products -------------------------------------------------------------------


def hvp(loss_fn: Callable, params: PyTree, batch: PyTree, v: PyTree) -> PyTree:
    """Hessian-vector product ``H v`` of ``loss_fn(., batch)`` at ``params`` (forward-over-reverse).

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: any pytree of float arrays.
      batch: the data (any pytree), or :class:`Batches` to average over microbatches.
      v: a pytree with the structure and shapes of ``params``.

    Returns:
      ``H v``, shaped like ``params``.

    >>> A = jnp.array([[2.0, 1.0], [1.0, 3.0]])
    >>> hvp(lambda w, _: 0.5 * w @ A @ w, jnp.zeros(2), None, jnp.array([1.0, 0.0])).tolist()
    [2.0, 1.0]
    """
    _check_inputs(params, batch, v)
    return _mean_over_batches(lambda b: jax.jvp(jax.grad(lambda p: loss_fn(p, b)), (params,), (v,))[1], batch)


def ggn_vp(apply_fn: Callable, loss: Callable, params: PyTree, batch: PyTree, v: PyTree) -> PyTree:
    """Generalised Gauss-Newton product ``J^T H_l J v`` (Schraudolph 2002; Martens 2020, eq. 9).

    ``J`` is the Jacobian of ``apply_fn(., batch)`` at ``params`` and ``H_l`` the Hessian of
    ``loss(., batch)`` at the model outputs. It equals the Hessian for a model linear in its
    parameters and, for softmax cross-entropy or squared error, the Fisher information.

    Args:
      apply_fn: ``apply_fn(params, batch) -> outputs``.
      loss: ``loss(outputs, batch) -> scalar``.
      params, batch, v: as in :func:`hvp`.

    >>> X = jnp.array([[1.0, 0.0], [1.0, 2.0]])
    >>> mse = lambda out, b: 0.5 * jnp.mean(out**2)
    >>> ggn_vp(lambda w, b: X @ w, mse, jnp.zeros(2), None, jnp.array([1.0, 0.0])).tolist()
    [1.0, 1.0]
    """
    _check_inputs(params, batch, v)
    return _mean_over_batches(lambda b: _ggn_operator(apply_fn, loss, params, b)(v), batch)


def fisher_vp(per_example_loss_fn: Callable, params: PyTree, batch: PyTree, v: PyTree) -> PyTree:
    """Empirical Fisher product ``(1/N) sum_i g_i (g_i . v)`` without per-example gradients.

    With ``l(p)`` the vector of the ``N`` per-example losses and ``J_l`` its Jacobian, this is
    ``J_l^T (J_l v) / N`` (Kunstner, Balles & Hennig 2019, eq. 3): one ``jvp`` and one ``vjp``.

    Args:
      per_example_loss_fn: ``per_example_loss_fn(params, batch) -> (N,)``.
      params, batch, v: as in :func:`hvp`.

    >>> X = jnp.array([[1.0, 0.0], [0.0, 2.0]])
    >>> fisher_vp(lambda w, b: X @ w, jnp.zeros(2), None, jnp.array([1.0, 1.0])).tolist()
    [0.5, 2.0]
    """
    _check_inputs(params, batch, v)
    return _mean_over_batches(lambda b: _fisher_operator(per_example_loss_fn, params, b)(v), batch)


def curvature_operator(
    curvature: Callable | GGN | EmpiricalFisher, params: PyTree, batch: PyTree
) -> ops.Operator:
    """The matrix-free operator ``v -> C v`` for a curvature specification at ``params``.

    The forward (and backward) pass is linearised once here, so repeated products, as in
    Lanczos, replay only the linear part.

    Args:
      curvature: ``loss_fn(params, batch)`` (Hessian), :class:`GGN` or :class:`EmpiricalFisher`.
      params: any pytree of float arrays.
      batch: the data, or :class:`Batches`.

    >>> op = curvature_operator(lambda w, _: jnp.sum(w**2), jnp.ones(2), None)
    >>> op(jnp.array([1.0, 2.0])).tolist()
    [2.0, 4.0]
    """
    ops.check_float_leaves(params)
    if isinstance(batch, Batches):
        _check_batches(batch)
        return lambda v: _mean_over_batches(lambda b: _single_batch_operator(curvature, params, b)(v), batch)
    _check_nonempty(batch)
    return _single_batch_operator(curvature, params, batch)


def _single_batch_operator(curvature, params, batch) -> ops.Operator:
    if isinstance(curvature, GGN):
        return _ggn_operator(curvature.apply_fn, curvature.loss, params, batch)
    if isinstance(curvature, EmpiricalFisher):
        return _fisher_operator(curvature.per_example_loss_fn, params, batch)
    if callable(curvature):
        _, linear_hvp = jax.linearize(jax.grad(lambda p: _scalar(curvature(p, batch))), params)
        return lambda v: linear_hvp(_checked(v, params))
    raise TypeError(
        f"loss_fn must be a callable loss_fn(params, batch), GGN or EmpiricalFisher, got {type(curvature).__name__}"
    )


def _ggn_operator(apply_fn, loss, params, batch) -> ops.Operator:
    outputs, jvp_fn = jax.linearize(lambda p: apply_fn(p, batch), params)
    vjp_fn = jax.linear_transpose(jvp_fn, params)
    _, output_hvp = jax.linearize(jax.grad(lambda o: loss(o, batch)), outputs)
    return lambda v: vjp_fn(output_hvp(jvp_fn(_checked(v, params))))[0]


def _fisher_operator(per_example_loss_fn, params, batch) -> ops.Operator:
    losses, jvp_fn = jax.linearize(lambda p: per_example_loss_fn(p, batch), params)
    if jnp.ndim(losses) != 1:
        raise ValueError(
            f"per_example_loss_fn must return a vector of per-example losses, got shape {jnp.shape(losses)}"
        )
    vjp_fn = jax.linear_transpose(jvp_fn, params)
    return lambda v: vjp_fn(jvp_fn(_checked(v, params)) / losses.shape[0])[0]


def _mean_over_batches(fn: Callable[[PyTree], PyTree], batch: PyTree) -> PyTree:
    """``fn(batch)``, or the mean of ``fn`` over the microbatches of a :class:`Batches`."""
    if not isinstance(batch, Batches):
        return fn(batch)
    num = _check_batches(batch)

    def accumulate(total, microbatch):
        return jax.tree.map(jnp.add, total, fn(microbatch)), None

    first = fn(jax.tree.map(lambda x: x[0], batch.data))
    rest = jax.tree.map(lambda x: x[1:], batch.data)
    total, _ = jax.lax.scan(accumulate, first, rest)
    return jax.tree.map(lambda t: t / num, total)


def _scalar(loss: jax.Array) -> jax.Array:
    if jnp.shape(loss) != ():
        raise ValueError(
            f"loss_fn(params, batch) must return a scalar (the mean loss), got shape {jnp.shape(loss)}"
        )
    return loss


def _check_nonempty(batch: PyTree, axis: int = 0, name: str = "batch") -> None:
    """Refuse a batch with an empty example axis: its mean loss is 0/0 and every probe is garbage."""
    for path, x in jax.tree.leaves_with_path(batch):
        if jnp.ndim(x) > axis and jnp.shape(x)[axis] == 0:
            raise ValueError(
                f"{name}{jax.tree_util.keystr(path)} has no examples (shape {jnp.shape(x)}); "
                "probes need a non-empty batch"
            )


def _check_batches(batch: Batches) -> int:
    sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in jax.tree.leaves(batch.data)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"every leaf of Batches.data must have the same leading (microbatch) axis, got sizes {sizes}"
        )
    num = int(sizes.pop() or 0)
    if num < 1:
        raise ValueError("Batches.data must hold at least one microbatch")
    _check_nonempty(batch.data, axis=1, name="Batches.data")
    return num


def _check_inputs(params, batch, v) -> None:
    ops.check_float_leaves(params)
    ops.check_like(v, params)
    if not isinstance(batch, Batches):
        _check_nonempty(batch)


def _checked(v, params):
    ops.check_like(v, params)
    return v


def _curvature_parts(curvature: Any) -> tuple[str, tuple[Callable, ...]]:
    """The kind and the functions of a curvature specification (what the probe cache keys on)."""
    if isinstance(curvature, GGN):
        return "ggn", (curvature.apply_fn, curvature.loss)
    if isinstance(curvature, EmpiricalFisher):
        return "fisher", (curvature.per_example_loss_fn,)
    if callable(curvature):
        return "hessian", (curvature,)
    raise TypeError(
        f"loss_fn must be a callable loss_fn(params, batch), GGN or EmpiricalFisher, got {type(curvature).__name__}"
    )


def _curvature_from_parts(kind: str, functions: tuple[Callable, ...]) -> Any:
    if kind == "ggn":
        return GGN(*functions)
    if kind == "fisher":
        return EmpiricalFisher(*functions)
    return functions[0]
