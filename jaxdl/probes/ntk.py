"""Empirical Neural Tangent Kernel of any JAX function (Jacot, Gabriel & Hongler, NeurIPS 2018, eq. 6).

Θ(x1, x2) = J(x1) J(x2)ᵀ with J = ∂f(θ, x)/∂θ, computed three ways as in Novak, Sohl-Dickstein &
Schoenholz, "Fast Finite Width Neural Tangent Kernel" (ICML 2022):

- "jacobian": per-example Jacobians, contracted leaf by leaf (§3.2; time N·O·[FP] + N²·O²·P).
- "ntvp": NTK-vector products Θv = J(x1)(J(x2)ᵀv) by a VJP then a JVP, one column at a time (§3.3;
  time N²·O·[FP]); no Jacobian is materialised.
- "structured": structured derivatives (§4): for a leaf that enters through one dense, conv or
  elementwise op, Θ_W is built from that op's cotangent and input, e.g. (G1 G2ᵀ) ⊙ (h1 · h2) for a dense
  layer; other leaves fall back to explicit Jacobians.

Output axes follow neural-tangents: `f(params, x)` maps a batch (N, ...) to outputs (N, *out); the kernel
has axes (N1, N2) then, for each output axis in order, the pair (d1, d2), except axes in `trace_axes`
(averaged over, i.e. Σ_o Θ_oo / O) and `diagonal_axes` (kept once).
"""

from __future__ import annotations

import functools
import math
import string
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxdl.probes import _cache
from jaxdl.probes import _ntk_structured as sd

__all__ = ["empirical_ntk", "empirical_ntk_fn", "ntk_fn_from_linen", "ntk_fn_from_nnx"]

_IMPLEMENTATIONS = ("auto", "jacobian", "ntvp", "structured")
# Elements of parameter-space vectors held at once by "ntvp" (one per basis vector in a chunk): 512 MiB.
_NTVP_CHUNK_ELEMENTS = 2**27


class _Layout(NamedTuple):
    """einsum letters for the (example, *output) axes of each side, and of the kernel."""

    lhs: str
    rhs: str
    result: str
    scale: float  # 1 / size of the traced output axes
    free: str  # letters no layout axis uses, for the rules' own axes


def _layout(out_shape: tuple[int, ...], trace_axes, diagonal_axes) -> _Layout:
    ndim = len(out_shape) + 1
    trace = {_normalize_axis(a, ndim, "trace_axes") for a in trace_axes}
    diagonal = {_normalize_axis(a, ndim, "diagonal_axes") for a in diagonal_axes}
    if 0 in trace:
        raise ValueError("trace_axes must not contain the batch axis 0; use diagonal_axes=(0,) instead")
    if trace & diagonal:
        raise ValueError(f"an axis cannot be both traced and diagonal, got {sorted(trace & diagonal)}")
    letters = iter(string.ascii_letters)
    lhs, rhs, result = "", "", ""
    for axis in range(ndim):
        a = next(letters)
        if axis in trace or axis in diagonal:
            lhs, rhs = lhs + a, rhs + a
            result += a if axis in diagonal else ""
        else:
            b = next(letters)
            lhs, rhs, result = lhs + a, rhs + b, result + a + b
    scale = 1.0 / math.prod(out_shape[a - 1] for a in trace)
    return _Layout(lhs, rhs, result, scale, "".join(letters))


def _normalize_axis(axis: int, ndim: int, name: str) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name} entry {axis} is out of range for outputs of rank {ndim}")
    return axis % ndim


# --------------------------------------------------------------------------- contractions


def _contract(j1, j2, layout: _Layout, precision):
    """Σ_p J1[n1, o1.., p] J2[n2, o2.., p] in the kernel layout; J has shape (N, *out, *param)."""
    rest = layout.free[: j1.ndim - len(layout.lhs)]
    spec = f"{layout.lhs}{rest},{layout.rhs}{rest}->{layout.result}"
    return jnp.einsum(spec, j1, j2, precision=precision)


def _jacobians(f, params, x):
    """Per-example Jacobians: a pytree like params, leaves of shape (N, *out, *leaf)."""
    per_example = lambda xi: jax.jacrev(lambda p: f(p, xi[None])[0])(params)
    return jax.vmap(per_example)(x)


def _jacobian_kernel(f, params, x1, x2, layout, precision):
    j1 = _jacobians(f, params, x1)
    j2 = j1 if x2 is None else _jacobians(f, params, x2)
    terms = jax.tree.leaves(jax.tree.map(lambda a, b: _contract(a, b, layout, precision), j1, j2))
    return sum(terms) * layout.scale


def _ntvp_kernel(f, params, x1, x2, layout, precision):
    x2 = x1 if x2 is None else x2
    out2, vjp2 = jax.vjp(lambda p: f(p, x2), params)
    _, jvp1 = jax.linearize(lambda p: f(p, x1), params)
    size = out2.size
    num_params = sum(leaf.size for leaf in jax.tree.leaves(params))
    chunk = max(1, min(size, _NTVP_CHUNK_ELEMENTS // max(num_params, 1)))

    def column(k):  # Θ(x1, x2) e_k for the k-th entry of f(x2)
        basis = jax.nn.one_hot(k, size, dtype=out2.dtype).reshape(out2.shape)
        (tangent,) = vjp2(basis)
        return jvp1(tangent)

    columns = jax.lax.map(column, jnp.arange(size), batch_size=chunk)  # (N2 * O, N1, *out)
    columns = columns.reshape(out2.shape + columns.shape[1:])
    spec = f"{layout.rhs}{layout.lhs}->{layout.result}"
    return jnp.einsum(spec, columns, precision=precision) * layout.scale


class _Factors(NamedTuple):
    cotangents: list  # per tap: (N, *out, *op_output)
    fallback: list  # per fallback leaf: (N, *out, *leaf)
    data: list  # per tap: (N, *data_operand)


def _structured_plan(f, params, example):
    leaves, treedef = jax.tree.flatten(params)
    f_flat = lambda leaves, x: f(jax.tree.unflatten(treedef, leaves), x)
    shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), (leaves, example))
    closed = sd.inline_jits(jax.make_jaxpr(f_flat)(*shapes))
    taps = sd.find_taps(closed, len(leaves))
    tapped = {t.leaf for t in taps}
    fallback = [i for i in range(len(leaves)) if i not in tapped]
    return closed, taps, fallback, leaves


def _structured_factors(f, params, x, plan) -> _Factors:
    closed, taps, fallback, leaves = plan
    eqns = closed.eqns

    def per_example(xi):
        def run(perturbations, fallback_leaves):
            args = list(leaves)
            for i, leaf in zip(fallback, fallback_leaves, strict=True):
                args[i] = leaf
            outs, recorded = sd.evaluate(closed, [*args, xi[None]], taps, perturbations)
            return outs[0][0], [r[1 - t.param_operand] for r, t in zip(recorded, taps, strict=True)]

        zeros = [
            jnp.zeros(eqns[t.eqn_index].outvars[0].aval.shape, eqns[t.eqn_index].outvars[0].aval.dtype)
            for t in taps
        ]
        out, vjp_fn, data = jax.vjp(run, zeros, [leaves[i] for i in fallback], has_aux=True)
        basis = jnp.eye(out.size, dtype=out.dtype).reshape(out.size, *out.shape)
        cotangents, fallback_jac = jax.vmap(vjp_fn)(basis)
        unflat = lambda a: a.reshape(out.shape + a.shape[1:])
        return _Factors([unflat(c) for c in cotangents], [unflat(j) for j in fallback_jac], data)

    return jax.vmap(per_example)(x)


def _structured_kernel(f, params, x1, x2, layout, precision):
    plan = _structured_plan(f, params, x1[:1])
    closed, taps, _, _ = plan
    s1 = _structured_factors(f, params, x1, plan)
    s2 = s1 if x2 is None else _structured_factors(f, params, x2, plan)
    n_out = len(layout.lhs) - 1
    kernel = sum(_contract(a, b, layout, precision) for a, b in zip(s1.fallback, s2.fallback, strict=True))
    for k, tap in enumerate(taps):
        eqn = closed.eqns[tap.eqn_index]
        g1, g2, h1, h2 = s1.cotangents[k], s2.cotangents[k], s1.data[k], s2.data[k]
        if tap.kind == "dot":
            kernel = kernel + _dot_term(eqn, tap, g1, g2, h1, h2, layout, precision)
        else:
            layer_jacobian = _conv_jacobian if tap.kind == "conv" else _elementwise_jacobian
            j1, j2 = layer_jacobian(eqn, tap, g1, h1, n_out), layer_jacobian(eqn, tap, g2, h2, n_out)
            kernel = kernel + _contract(j1, j2, layout, precision)
    return kernel * layout.scale


def _conv_jacobian(eqn, tap, g, h, n_out):
    """Per-layer conv kernel Jacobian (N, *out, *kernel), transposing the conv against its cotangent."""
    weight = jax.ShapeDtypeStruct(eqn.invars[1].aval.shape, eqn.invars[1].aval.dtype)
    per_output = lambda h, g: sd.conv_weight_jacobian(eqn, h, weight, g)
    for _ in range(n_out):
        per_output = jax.vmap(per_output, in_axes=(None, 0))
    return jax.vmap(per_output)(h, g)


def _elementwise_jacobian(eqn, tap, g, h, n_out):
    """Jacobian of a bias (add) or scale (mul) parameter: G (⊙ data), summed where it is broadcast."""
    param_shape = eqn.invars[tap.param_operand].aval.shape
    out_shape = eqn.outvars[0].aval.shape
    if tap.kind == "mul":
        g = g * jnp.expand_dims(h, tuple(range(1, 1 + n_out)))
    broadcast = [1 + n_out + d for d, (p, o) in enumerate(zip(param_shape, out_shape, strict=True)) if p != o]
    return g.sum(axis=tuple(broadcast))


def _dot_term(eqn, tap, g1, g2, h1, h2, layout, precision):
    """Θ of a weight used once as y = dot_general(h, W), from y's cotangents G and the data operand h."""
    (contract_lhs, contract_rhs), _ = eqn.params["dimension_numbers"]
    data_contract = contract_rhs if tap.param_operand == 0 else contract_lhs
    data_shape = eqn.invars[1 - tap.param_operand].aval.shape
    param_shape = eqn.invars[tap.param_operand].aval.shape
    param_contract = contract_lhs if tap.param_operand == 0 else contract_rhs
    data_free = [d for d in range(len(data_shape)) if d not in data_contract]
    param_free_size = math.prod(s for d, s in enumerate(param_shape) if d not in param_contract)

    letters = iter(layout.free)
    contract = {d: next(letters) for d in data_contract}
    s = "".join(next(letters) for _ in data_free)  # data free axes, x1 side
    t = "".join(next(letters) for _ in data_free)  # data free axes, x2 side
    j = "".join(next(letters) for _ in range(len(g1.shape) - len(layout.lhs) - len(data_free)))
    # y's axes are the lhs free axes then the rhs free axes (no batch axes: see _rule_kind).
    y1, y2 = (s + j, t + j) if tap.param_operand == 1 else (j + s, j + t)
    axes1 = {**contract, **dict(zip(data_free, s, strict=True))}
    axes2 = {**contract, **dict(zip(data_free, t, strict=True))}
    h_1 = "".join(axes1[d] for d in range(len(data_shape)))
    h_2 = "".join(axes2[d] for d in range(len(data_shape)))
    n1, n2 = layout.lhs[0], layout.rhs[0]
    n12 = n1 if n1 == n2 else n1 + n2

    # Pick the cheaper contraction order (the choice Novak et al. make per primitive, §4.2).
    num1, num2 = g1.shape[0], g2.shape[0]
    outputs = math.prod(g1.shape[1 : len(layout.lhs)])
    free = math.prod(data_shape[d] for d in data_free)
    contract_size = math.prod(data_shape[d] for d in data_contract)
    structured = num1 * num2 * free**2 * (outputs**2 * param_free_size + contract_size)
    explicit = (num1 + num2) * outputs * free * contract_size * param_free_size
    explicit += num1 * num2 * outputs**2 * contract_size * param_free_size
    if structured <= explicit:
        gram_g = jnp.einsum(
            f"{layout.lhs}{y1},{layout.rhs}{y2}->{layout.result}{s}{t}", g1, g2, precision=precision
        )
        gram_h = jnp.einsum(f"{n1}{h_1},{n2}{h_2}->{n12}{s}{t}", h1, h2, precision=precision)
        return jnp.einsum(
            f"{layout.result}{s}{t},{n12}{s}{t}->{layout.result}", gram_g, gram_h, precision=precision
        )
    weight = "".join(contract.values()) + j
    jac = lambda g, h, side, y, hs: jnp.einsum(
        f"{side}{y},{side[0]}{hs}->{side}{weight}", g, h, precision=precision
    )
    j1, j2 = jac(g1, h1, layout.lhs, y1, h_1), jac(g2, h2, layout.rhs, y2, h_2)
    return _contract(j1, j2, layout, precision)


_KERNELS = {"jacobian": _jacobian_kernel, "ntvp": _ntvp_kernel, "structured": _structured_kernel}


# --------------------------------------------------------------------------- choosing an implementation


def _auto_choice(f, params, example, layout) -> str:
    """The "auto" rule: structured when its rules cover at least half of the parameters, since it then
    replaces most of the N²·O²·P contraction by N²·O²·(layer width); otherwise the cheaper of
    "jacobian" (N·O·3[FP] + N²·O²·P) and "ntvp" (N²·O·3[FP]) by those cost models, with [FP] the
    forward FLOPs of one example from XLA's cost analysis of the lowered (not compiled) forward pass.
    """
    closed, taps, fallback, leaves = _structured_plan(f, params, example)
    sizes = [leaf.size for leaf in leaves]
    if sum(sizes[t.leaf] for t in taps) >= sum(sizes) / 2:
        return "structured"
    shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), (params, example))
    try:
        forward = float(jax.jit(f).lower(*shapes).cost_analysis()["flops"])  # type: ignore[index]
    except Exception:  # no cost model on this backend: a dense network's 2 FLOPs per parameter
        forward = 2.0 * sum(sizes)
    outputs = math.prod(closed.outvars[0].aval.shape[1:])
    pair_outputs = outputs if len(layout.result) < 2 * len(layout.lhs) else outputs**2
    jacobian = 3 * outputs * forward + pair_outputs * sum(sizes)
    ntvp = 3 * outputs * forward * example.shape[0] * 2
    return "jacobian" if jacobian <= ntvp else "ntvp"


# --------------------------------------------------------------------------- tiling and devices


def _pad_rows(x, multiple: int):
    extra = -x.shape[0] % multiple
    if extra == 0:
        return x
    return jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)])  # repeat a real row: f stays finite


def _tiled(kernel_fn, params, x1, x2, batch_size: int, diagonal_batch: bool):
    """The kernel computed block by block (batch_size × batch_size) with lax.map, then reassembled."""
    n1, n2 = x1.shape[0], x2.shape[0]
    blocks = lambda x: _pad_rows(x, batch_size).reshape(-1, batch_size, *x.shape[1:])
    b1, b2 = blocks(x1), blocks(x2)
    if diagonal_batch:
        out = jax.lax.map(lambda ab: kernel_fn(params, *ab), (b1, b2))
        return out.reshape(-1, *out.shape[2:])[:n1]
    out = jax.lax.map(lambda a: jax.lax.map(lambda b: kernel_fn(params, a, b), b2), b1)
    out = jnp.swapaxes(out, 1, 2)  # (B1, bs, B2, bs, ...)
    out = out.reshape(out.shape[0] * batch_size, out.shape[2] * batch_size, *out.shape[4:])
    return out[:n1, :n2]


def _check_inputs(f, params, x1, x2):
    for name, x in (("x1", x1), ("x2", x2)):
        if x is not None and not (hasattr(x, "shape") and hasattr(x, "dtype")):
            raise TypeError(f"{name} must be an array with a leading batch axis, got {type(x).__name__}")
        if x is not None and x.ndim < 1:
            raise ValueError(f"{name} must have a leading batch axis, got shape {x.shape}")
        if x is not None and x.shape[0] == 0:
            raise ValueError(f"{name} must hold at least one example, got shape {x.shape}")
    if x2 is not None and x1.shape[1:] != x2.shape[1:]:
        raise ValueError(f"x1 and x2 must have the same per-example shape, got {x1.shape} and {x2.shape}")
    shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), (params, x1))
    out = jax.eval_shape(f, *shapes)
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise TypeError(f"f(params, x) must return a single array, got {jax.tree.structure(out)}")
    if out.ndim < 1 or out.shape[0] != x1.shape[0]:
        raise ValueError(
            f"f(params, x) must map a batch of {x1.shape[0]} inputs to outputs with that leading axis, "
            f"got output shape {out.shape}"
        )
    if not jnp.issubdtype(out.dtype, jnp.inexact):
        raise TypeError(f"f(params, x) must return floating-point outputs, got {out.dtype}")
    return out.shape[1:]


def empirical_ntk_fn(
    f: Callable[[Any, jax.Array], jax.Array],
    *,
    trace_axes: Sequence[int] = (-1,),
    diagonal_axes: Sequence[int] = (),
    implementation: str = "auto",
    batch_size: int | None = None,
    precision: jax.lax.Precision | str | None = None,
    mesh: Mesh | None = None,
) -> Callable[..., jax.Array]:
    """A jitted kernel function ``ntk(params, x1, x2=None)`` for the empirical NTK of ``f``.

    The factory of neural-tangents' ``empirical_ntk_fn`` (Novak et al. 2022), with the
    arguments of :func:`empirical_ntk`. The returned function compiles once per input shapes
    and dtypes (the "auto" choice of implementation is made then, so it is cached by shapes
    too); later calls with the same shapes compile nothing. Inside the caller's ``jax.jit`` it
    is traced into the caller's program, with traced ``params`` and inputs.

    Returns:
      ``ntk(params, x1, x2=None) -> Θ``, as :func:`empirical_ntk` (``x2=None`` means ``x1``).

    >>> import jax.numpy as jnp
    >>> ntk = empirical_ntk_fn(lambda w, x: x @ w, implementation="jacobian")
    >>> x = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    >>> ntk(jnp.ones((2, 3)), x)  # x1 · x2ᵀ
    Array([[ 5., 11.],
           [11., 25.]], dtype=float32)
    """
    options = _ntk_options(trace_axes, diagonal_axes, implementation, batch_size, precision, mesh)
    return _build_ntk(lambda: (f,), options)


def empirical_ntk(
    f: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    x1: jax.Array,
    x2: jax.Array | None = None,
    *,
    implementation: str = "auto",
    trace_axes: Sequence[int] = (-1,),
    diagonal_axes: Sequence[int] = (),
    batch_size: int | None = None,
    mesh: Mesh | None = None,
    precision: jax.lax.Precision | str | None = None,
) -> jax.Array:
    """The empirical NTK Θ(x1, x2) = J(x1) J(x2)ᵀ of `f` at `params` (Jacot et al. 2018, eq. 6).

    `f` must be a batch-wise map (example i of the output depends only on example i of the input), as
    neural-tangents' ``vmap_axes=0`` assumes: no train-mode BatchNorm or cross-example attention.

    Args:
      f: ``f(params, x) -> (N, *out)`` for inputs ``x`` of shape (N, ...); see `ntk_fn_from_nnx` and
        `ntk_fn_from_linen` for Flax models.
      params: any pytree of float arrays (the θ of J = ∂f/∂θ).
      x1: inputs, shape (N1, ...).
      x2: inputs, shape (N2, ...) with the same per-example shape; None means x1 (and reuses work).
      implementation: "jacobian", "ntvp", "structured" or "auto" (Novak et al. 2022). "auto" picks
        structured when its dense/conv/elementwise rules cover at least half the parameters, else the
        cheaper of jacobian (N·O·3[FP] + N²O²P) and ntvp (N²·O·3[FP]), with [FP] the forward FLOPs of
        one example from XLA's cost analysis; the choice is made at trace time from shapes only.
      trace_axes: output axes averaged over (the mean of the diagonal, as neural-tangents does);
        default (-1,) averages over logits; () gives the full kernel.
      diagonal_axes: output axes of which only the diagonal is kept; (0,) gives per-example kernels and
        needs N1 == N2.
      batch_size: compute the kernel in blocks of batch_size × batch_size examples (lax.map), so large
        kernels fit in memory; inputs are padded to a multiple of it.
      mesh: spread the rows of the kernel over the devices of this mesh (jax.shard_map over all its
        axes; params and x2 are replicated). Auto and Explicit axis types both work.
      precision: matmul precision of the kernel contractions.

    Returns:
      Θ with shape (N1, N2, *pairs), where each non-traced, non-diagonal output axis of size d appears
      as (d, d) in order; e.g. (N1, N2) by default and (N1, N2, O, O) for ``trace_axes=()``.

    Compiles once per ``f`` object, options and input shapes: the kernel functions of
    :func:`empirical_ntk_fn` are cached by ``(f, options)`` with ``f`` held weakly, so repeated
    calls with the same ``f`` compile nothing, and a new ``lambda`` per call compiles each time
    but does not leak. Inside the caller's ``jax.jit`` it is traced into the caller's program.

    >>> import jax.numpy as jnp
    >>> f = lambda w, x: x @ w
    >>> x = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    >>> empirical_ntk(f, jnp.ones((2, 3)), x, implementation="structured")  # x1 · x2ᵀ
    Array([[ 5., 11.],
           [11., 25.]], dtype=float32)
    """
    options = _ntk_options(trace_axes, diagonal_axes, implementation, batch_size, precision, mesh)
    ntk = _cache.cached((f,), ("empirical_ntk", options), lambda resolve: _build_ntk(resolve, options))
    return ntk(params, x1, x2)


class _NtkOptions(NamedTuple):
    trace_axes: tuple[int, ...]
    diagonal_axes: tuple[int, ...]
    implementation: str
    batch_size: int | None
    precision: Any
    mesh: Mesh | None


def _ntk_options(trace_axes, diagonal_axes, implementation, batch_size, precision, mesh) -> _NtkOptions:
    if implementation not in _IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {_IMPLEMENTATIONS}, got {implementation!r}")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    if mesh is not None and not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    for name, axes in (("trace_axes", trace_axes), ("diagonal_axes", diagonal_axes)):
        if not all(isinstance(a, int) and not isinstance(a, bool) for a in tuple(axes)):
            raise TypeError(f"{name} must be a sequence of ints, got {axes!r}")
    if isinstance(precision, list):
        precision = tuple(precision)
    return _NtkOptions(tuple(trace_axes), tuple(diagonal_axes), implementation, batch_size, precision, mesh)


def _build_ntk(resolve: Callable[[], tuple[Callable, ...]], options: _NtkOptions) -> Callable[..., jax.Array]:
    """The jitted kernel function; ``resolve()`` gives ``(f,)`` at trace time."""
    mesh, batch_size = options.mesh, options.batch_size

    def ntk(params, x1, x2=None):
        (f,) = resolve()
        out_shape = _check_inputs(f, params, x1, x2)
        layout = _layout(out_shape, options.trace_axes, options.diagonal_axes)
        diagonal_batch = layout.lhs[0] == layout.rhs[0]
        if diagonal_batch and x2 is not None and x2.shape[0] != x1.shape[0]:
            raise ValueError(
                f"diagonal_axes=(0,) needs as many x2 as x1 examples, got {x2.shape[0]} and {x1.shape[0]}"
            )
        implementation = options.implementation
        if implementation == "auto":
            implementation = _auto_choice(f, params, x1[:1], layout)
        kernel = functools.partial(_KERNELS[implementation], f, layout=layout, precision=options.precision)

        def rows(params, a, b):
            if batch_size is None:
                return kernel(params, a, b)
            return _tiled(kernel, params, a, a if b is None else b, batch_size, diagonal_batch)

        if mesh is None:
            return rows(params, x1, x2)
        x2 = x1 if x2 is None else x2
        axes = P(mesh.axis_names)
        n1 = x1.shape[0]
        multiple = mesh.size * (batch_size or 1)
        x1 = _pad_rows(x1, multiple)
        x2 = _pad_rows(x2, multiple) if diagonal_batch else x2
        # check_vma=False: the structured path replays a jaxpr traced outside the shard_map, whose
        # equations mix replicated parameters with device-varying inputs.
        specs = (P(), axes, axes if diagonal_batch else P())
        sharded = jax.shard_map(rows, mesh=mesh, in_specs=specs, out_specs=axes, check_vma=False)
        if AxisType.Explicit not in mesh.axis_types:
            return sharded(params, x1, x2)[:n1]
        # Explicit meshes want inputs laid out as in_specs, and a sharding for the slice that drops padding.
        place = lambda x, spec: jax.sharding.reshard(x, NamedSharding(mesh, spec))
        return place(sharded(params, place(x1, specs[1]), place(x2, specs[2])), P())[:n1]

    return jax.jit(ntk)


# --------------------------------------------------------------------------- Flax adapters


def ntk_fn_from_nnx(module) -> tuple[Callable, Any]:
    """Split a Flax NNX module into ``(f, params)`` for `empirical_ntk`.

    ``params`` is the module's `nnx.Param` state; every other variable (batch statistics, caches) is
    held fixed. Put the module in eval mode first if it has dropout or BatchNorm.

    For a module whose only variables are parameters, ``f`` is the same function object for every
    module of the same structure (one per `nnx.GraphDef`), so calling this again in a training
    loop and passing ``f`` to `empirical_ntk` compiles nothing new. With other variables, ``f``
    closes over their current values and is new on each call (and so compiles again): build it once
    when they do not change.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> f, params = ntk_fn_from_nnx(nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
    >>> empirical_ntk(f, params, jnp.ones((4, 3))).shape
    (4, 4)
    """
    from flax import nnx

    if not isinstance(module, nnx.Module):
        raise TypeError(f"module must be a flax.nnx.Module, got {type(module).__name__}")
    graphdef, params, *others = nnx.split(module, nnx.Param, ...)
    rest = others[0]
    if not jax.tree.leaves(rest):
        return _nnx_apply(graphdef), params
    return (lambda p, x: nnx.merge(graphdef, p, rest)(x)), params


@functools.lru_cache(maxsize=64)
def _nnx_apply(graphdef) -> Callable:
    """One ``f(params, x)`` per module structure, so `empirical_ntk`'s cache (keyed by ``f``) hits."""
    from flax import nnx

    def f(params, x):
        return nnx.merge(graphdef, params)(x)

    return f


def ntk_fn_from_linen(module, variables) -> tuple[Callable, Any]:
    """Wrap a Flax Linen module and its variables into ``(f, params)`` for `empirical_ntk`.

    ``params`` is ``variables["params"]``; the other collections are held fixed.

    >>> import jax, jax.numpy as jnp
    >>> import flax.linen as nn
    >>> dense = nn.Dense(2)
    >>> variables = dense.init(jax.random.key(0), jnp.ones((1, 3)))
    >>> f, params = ntk_fn_from_linen(dense, variables)
    >>> empirical_ntk(f, params, jnp.ones((4, 3))).shape
    (4, 4)
    """
    import flax.linen as nn

    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a flax.linen.Module, got {type(module).__name__}")
    if "params" not in variables:
        raise ValueError(f"variables must hold a 'params' collection, got {list(variables)}")
    rest = {k: v for k, v in variables.items() if k != "params"}
    return (lambda p, x: module.apply({"params": p, **rest}, x)), variables["params"]
