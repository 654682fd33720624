"""Structured-derivative rules for the empirical NTK (Novak, Sohl-Dickstein & Schoenholz, ICML 2022, §4).

The NTK is a sum over parameter leaves, Θ = Σ_w J_w J_wᵀ. When a leaf W enters the network only through
one linear op y = op(h, W), its Jacobian factors through that op: J_W = (∂f/∂y) · (∂y/∂W), and ∂y/∂W is
fixed by the op's structure and its other input h. For a dense layer y = h W this gives (paper eq. 9)

    Θ_W(x1, x2) = (∂f/∂y(x1) ∂f/∂y(x2)ᵀ) ⊙ (h(x1) · h(x2)),

which never forms the O × P Jacobian. This file finds such ops in the jaxpr of `f`, and evaluates `f` with
a zero perturbation added to each op's output (so a VJP yields ∂f/∂y) while recording each op's other
input. Leaves used any other way fall back to explicit Jacobians.

Rules: `dot_general` (dense, einsum), `conv_general_dilated` (the per-layer Jacobian is rebuilt from the
layer's own cotangent and input), and elementwise `add` / `mul` by a parameter (bias, scale).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
from jax.extend import core as jex

# Ops through which a leaf passes unchanged up to a bijective relabelling of its entries: J_W Jᵀ_W is
# invariant under them, so the op's operand can stand in for the leaf itself.
_RELABEL_OPS = frozenset({"reshape", "transpose", "convert_element_type", "squeeze", "expand_dims", "copy"})


class _Var:
    """A variable of the inlined program: one per variable per inlined call, compared by identity."""

    __slots__ = ("aval",)

    def __init__(self, aval):
        self.aval = aval


class _Eqn(NamedTuple):
    primitive: Any
    params: dict
    invars: list
    outvars: list
    ctx: Any


class FlatJaxpr(NamedTuple):
    """A jaxpr with every nested `jit` call inlined, so parameters used inside jitted helpers are visible."""

    constvars: list
    consts: list
    invars: list
    outvars: list
    eqns: list


def inline_jits(closed: jex.ClosedJaxpr) -> FlatJaxpr:
    """Inline the `jit` calls of `closed` recursively (layers such as KANLinear jit their own math)."""
    constvars, consts, eqns = [], [], []

    def walk(jaxpr, env):
        atom = lambda v: v if isinstance(v, jex.Literal) else env[v]
        for eqn in jaxpr.eqns:
            ins = [atom(v) for v in eqn.invars]
            if eqn.primitive.name in ("jit", "pjit"):
                inner = eqn.params["jaxpr"]
                sub = dict(zip(inner.jaxpr.invars, ins, strict=True))
                for v, c in zip(inner.jaxpr.constvars, inner.consts, strict=True):
                    sub[v] = _Var(v.aval)
                    constvars.append(sub[v])
                    consts.append(c)
                walk(inner.jaxpr, sub)
                outs = [v if isinstance(v, jex.Literal) else sub[v] for v in inner.jaxpr.outvars]
            else:
                outs = [_Var(v.aval) for v in eqn.outvars]
                eqns.append(_Eqn(eqn.primitive, eqn.params, ins, outs, eqn.ctx))
            env.update(zip(eqn.outvars, outs, strict=True))

    env = {v: _Var(v.aval) for v in (*closed.jaxpr.constvars, *closed.jaxpr.invars)}
    constvars.extend(env[v] for v in closed.jaxpr.constvars)
    consts.extend(closed.consts)
    walk(closed.jaxpr, env)
    outvars = [v if isinstance(v, jex.Literal) else env[v] for v in closed.jaxpr.outvars]
    return FlatJaxpr(constvars, consts, [env[v] for v in closed.jaxpr.invars], outvars, eqns)


class Tap(NamedTuple):
    """One structured use of a parameter leaf: equation `eqn` of the traced jaxpr.

    kind: "dot", "conv", "add" or "mul"; `param_operand` is 0 or 1 (which input is the parameter).
    """

    eqn_index: int
    kind: str
    param_operand: int
    leaf: int


def _is_relabel(eqn) -> bool:
    name = eqn.primitive.name
    if name == "broadcast_in_dim":
        return math.prod(eqn.invars[0].aval.shape) == math.prod(eqn.outvars[0].aval.shape)
    return name in _RELABEL_OPS


def find_taps(jaxpr: FlatJaxpr, num_leaves: int) -> list[Tap]:
    """The structured uses of the first `num_leaves` input variables of `jaxpr` (the parameter leaves).

    A leaf qualifies when it reaches exactly one supported op through a chain of single-use relabelling
    ops, and nothing else touches it or its chain.
    """
    uses: dict = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if isinstance(v, _Var):
                uses.setdefault(v, []).append(i)
    outvars = {v for v in jaxpr.outvars if isinstance(v, _Var)}

    taps = []
    for leaf, var in enumerate(jaxpr.invars[:num_leaves]):
        while var not in outvars and len(uses.get(var, ())) == 1:
            eqn = jaxpr.eqns[uses[var][0]]
            if not _is_relabel(eqn):
                break
            var = eqn.outvars[0]
        if var in outvars or len(uses.get(var, ())) != 1:
            continue
        index = uses[var][0]
        eqn = jaxpr.eqns[index]
        if len(eqn.invars) != 2 or eqn.invars[0] is eqn.invars[1]:
            continue
        operand = 0 if eqn.invars[0] is var else 1
        kind = _rule_kind(eqn, operand)
        if kind is not None:
            taps.append(Tap(index, kind, operand, leaf))
    # An op with both operands parameters is left to the fallback (its rule assumes one data operand).
    counts: dict = {}
    for t in taps:
        counts[t.eqn_index] = counts.get(t.eqn_index, 0) + 1
    return [t for t in taps if counts[t.eqn_index] == 1]


def _rule_kind(eqn, operand: int) -> str | None:
    name = eqn.primitive.name
    out_shape = eqn.outvars[0].aval.shape
    if name == "dot_general":
        (_, _), (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"]
        return "dot" if not lhs_batch and not rhs_batch else None
    if name == "conv_general_dilated":
        grouped = eqn.params["feature_group_count"] != 1 or eqn.params["batch_group_count"] != 1
        return "conv" if operand == 1 and not grouped else None
    if name in ("add", "mul"):
        shape = eqn.invars[operand].aval.shape
        other = eqn.invars[1 - operand].aval.shape
        if tuple(other) == tuple(out_shape) and len(shape) == len(out_shape):
            return name
    return None


def evaluate(jaxpr: FlatJaxpr, args: Sequence, taps: Sequence[Tap], perturbations):
    """Evaluate `jaxpr` on `args`, adding `perturbations[k]` to the output of tap k.

    Returns (outputs, recorded) where recorded[k] holds the tapped op's inputs (data operand, parameter).
    """
    env: dict = {}

    def read(v):
        return v.val if isinstance(v, jex.Literal) else env[v]

    for v, x in zip(jaxpr.constvars, jaxpr.consts, strict=True):
        env[v] = x
    for v, x in zip(jaxpr.invars, args, strict=True):
        env[v] = x
    by_eqn = {t.eqn_index: k for k, t in enumerate(taps)}
    recorded: list[Any] = [None] * len(taps)
    for i, eqn in enumerate(jaxpr.eqns):
        invals = [read(v) for v in eqn.invars]
        with eqn.ctx.manager:
            outvals = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
        if not eqn.primitive.multiple_results:
            outvals = [outvals]
        k = by_eqn.get(i)
        if k is not None:
            recorded[k] = invals
            outvals = [outvals[0] + perturbations[k]]
        env.update(zip(eqn.outvars, outvals, strict=True))
    return [read(v) for v in jaxpr.outvars], recorded


def conv_weight_jacobian(eqn, data, weight, cotangent):
    """∂⟨cotangent, conv(data, W)⟩/∂W: the per-layer Jacobian row, from the layer's cotangent and input."""
    params = eqn.primitive.get_bind_params(eqn.params)
    conv = lambda w: eqn.primitive.bind(data, w, **params)
    (jac,) = jax.linear_transpose(conv, weight)(cotangent)
    return jac
