"""A fused update + apply step for Adam(W), diffGrad, ⊥AdamW, ⊥SGD and LAMB (an explicit opt-in).

An optax `GradientTransformation` returns one update per leaf and `optax.apply_updates` adds it
in a second pass, so a step costs at least one kernel per leaf and writes the update once more
than it needs to. On a network with hundreds of small bias and norm-scale leaves the step is then
bound by kernel launches, not by memory (jaxdl issue #13: 103.6M parameters in 217 leaves took
3.1 ms with `optax.adam` against 1.5 ms for PyTorch's fused CUDA Adam).

The fused path changes two things, and only these:

- **It applies the update itself.** `step(params, grads, state) -> (params, state)` reads p, g
  and the moments once and writes p and the moments once: the buffer floor of each method
  (Adam 7 parameter-sized buffers, diffGrad 9, ⊥AdamW 9, LAMB 10).
- **Its state no longer mirrors the parameter tree.** Leaves of at most 65,536 elements are
  concatenated, per dtype and mask value, into one flat buffer per moment, so all the small leaves
  of a bucket cost one kernel; a larger leaf keeps its own buffers, of its own shape (so
  sharded parameters keep sharded moments). `FusedState` is a NamedTuple of arrays: it jits,
  donates and round-trips through orbax like any optax state, but `optax.masked`,
  `optax.chain`, `inject_hyperparams` and state surgery by parameter path do not apply to it.
  Keep using the ordinary aliases (`jaxdl.optim.diffgrad`, `perp_adamw`, `lamb`, ...) for those.

Each step equals the corresponding optax chain followed by `optax.apply_updates` to float32
rounding (the same roundings to the parameters' and moments' dtypes, e.g. bf16), including masks
and learning-rate schedules. Hyperparameters may be traced (a vmapped learning-rate sweep works);
masks are pytrees of Python bools (or callables returning one) and fix the layout.

On a GPU, `kernel="pallas"` runs the whole step as a few Pallas (Triton) kernels, PyTorch's
`multi_tensor_apply` idea: each kernel updates up to 80 leaves and their moments in place, where
XLA writes every output leaf with a kernel of its own (one launch per small leaf, a ramp-up and
tail per large one). Adam and diffGrad are one such pass. ⊥AdamW and ⊥SGD add a first
multi-tensor kernel that reads g and w once and writes each block's partial sums (each block
centred on its own projection coefficient, so that nothing cancels: `_compensated.from_blocks`),
a few small XLA reductions turn them into per-leaf coefficients, and the pass projects each
gradient block inside the kernel; LAMB's first kernel updates the moments and sums ||p||^2 and
||r||^2 per block, its second applies the trust ratio. Measured on an H200 (device time, 103.6M
parameters): Adam 0.81 ms on 217 leaves (PyTorch's fused Adam 0.86 ms in the same run; the XLA
fused step 1.14 ms in an earlier one), 0.75 instead of 0.79 ms on 18 leaves (benchmarks/RESULTS.md,
"Optimizers", for the other steps). Every kernel boundary costs time (on 217 leaves 3 kernels a
pass beat 4 by 2% a step, and 4 beat 7 by 1-4%), each leaf's branch compile time: 11-19 s instead
of 2 s for Adam on 217 leaves, 23-33 s for ⊥AdamW. It changes no result beyond
float32 rounding, except on leaves whose projected gradient is round-off (scalars, gradients
exactly parallel to their weights: `perpgrad`), which it forms in another order. Off GPUs, and
for 64-bit leaves, it falls back to the XLA fusions, so the default stays `kernel="xla"`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl._typing import PyTree
from jaxdl.optim._checks import _concrete, check_adam, check_beta, check_leaves, check_nonnegative
from jaxdl.optim._compensated import BLOCK_SUMS, Projection, block_sums, from_blocks, projection, residual
from jaxdl.optim._defaults import ADAMW, DIFFGRAD, LAMB
from jaxdl.optim._grouping import GROUP_MAX_SIZE
from jaxdl.optim.perpgrad import _TINY


class FusedState(NamedTuple):
    """State of a fused optimizer: the step count and, per bucket of leaves, its moment buffers.

    `buffers[k]` holds the buffers of bucket k (e.g. (mu, nu) for Adam, (mu, nu, prev_grad) for
    diffGrad): one flat vector for a bucket of small leaves, the leaf's own shape for a large leaf.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.optim import fused_adam
      >>> opt = fused_adam(1e-3)
      >>> state = opt.init({"w": jnp.zeros((300, 300)), "b1": jnp.zeros(3), "b2": jnp.zeros(2)})
      >>> [tuple(x.shape for x in bufs) for bufs in state.buffers]  # w alone; b1, b2 concatenated
      [((5,), (5,)), ((300, 300), (300, 300))]
    """

    count: jax.Array  # type: ignore[assignment]  # (shadows tuple.count, as optax's states do)
    buffers: tuple[tuple[jax.Array, ...], ...]


class FusedOptimizer(NamedTuple):
    """`init(params) -> FusedState` and `step(params, grads, state) -> (params, state)`.

    `step` applies the update itself; jit it with the params and state donated.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxdl.optim import fused_diffgrad
      >>> opt = fused_diffgrad(0.1)
      >>> params = {"w": jnp.zeros(2)}
      >>> step = jax.jit(opt.step, donate_argnums=(0, 2))
      >>> state = opt.init(params)
      >>> for _ in range(300):
      ...     params, state = step(params, jax.grad(lambda p: jnp.sum((p["w"] - 3.0) ** 2))(params), state)
      >>> print(params["w"].round(2))
      [3. 3.]
    """

    init: Callable[[PyTree], FusedState]
    step: Callable[[PyTree, PyTree, FusedState], tuple[PyTree, FusedState]]


# ----------------------------------------------------------------------------------------------
# Layout: which leaves share a flat buffer.


class _Bucket(NamedTuple):
    members: tuple[int, ...]
    flat: bool  # concatenated small leaves (else one leaf in its own shape)
    decay: bool
    adapt: bool


def _mask_leaves(name: str, mask: Any, params: PyTree, default: bool) -> list[bool]:
    """The mask as one Python bool per parameter leaf (a prefix pytree or a callable)."""
    leaves, treedef_ = jax.tree.flatten(params)
    treedef: Any = treedef_
    if mask is None:
        return [default] * len(leaves)
    tree = mask(params) if callable(mask) else mask
    try:
        full = treedef.flatten_up_to(
            jax.tree.map(lambda m, p: jax.tree.map(lambda _: m, p), tree, params)
            if jax.tree.structure(tree) != treedef
            else tree
        )
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"{name} must be a pytree with the structure of params (or a prefix of it), or a "
            f"callable returning one; got structure {jax.tree.structure(tree)} for params of "
            f"structure {treedef}"
        ) from err
    out = []
    for m in full:
        if not isinstance(m, (bool, np.bool_)):
            raise TypeError(
                f"{name} must hold Python bools in the fused path (it fixes the layout), got {m!r}"
            )
        out.append(bool(m))
    return out


def _layout(leaves: list, decay: list[bool], adapt: list[bool]) -> list[_Bucket]:
    small: dict = {}
    buckets = []
    for i, x in enumerate(leaves):
        if x.size <= GROUP_MAX_SIZE:
            small.setdefault((jnp.dtype(x.dtype), decay[i], adapt[i]), []).append(i)
        else:
            buckets.append(_Bucket((i,), False, decay[i], adapt[i]))
    # Same-shaped leaves sit next to each other, so per-leaf values are rows of one 2-D view.
    by_shape = lambda i: (len(leaves[i].shape), leaves[i].shape)
    flat = [_Bucket(tuple(sorted(m, key=by_shape)), True, k[1], k[2]) for k, m in small.items()]
    return flat + buckets


def _gather(leaves: list, bucket: _Bucket, dtype=None) -> jax.Array:
    if not bucket.flat:
        x = leaves[bucket.members[0]]
    else:
        x = jnp.concatenate([jnp.ravel(leaves[i]) for i in bucket.members])
    return x if dtype is None else x.astype(dtype)


def _scatter(flat: jax.Array, bucket: _Bucket, like: list) -> list[tuple[int, jax.Array]]:
    if not bucket.flat:
        return [(bucket.members[0], flat)]
    out, start = [], 0
    for i in bucket.members:
        size = like[i].size
        out.append((i, flat[start : start + size].reshape(like[i].shape)))
        start += size
    return out


def _spans(bucket: _Bucket, like: list) -> list[tuple[int, int, int]]:
    """(start, rows, row size) of each run of same-shaped leaves in a bucket's flat buffer."""
    if not bucket.flat:
        return [(0, 1, like[bucket.members[0]].size)]
    return _runs([like[i].shape for i in bucket.members], [like[i].size for i in bucket.members])


def _runs(keys, sizes) -> list[tuple[int, int, int]]:
    """(start, rows, size) of each run of equal keys, for consecutive items of these sizes."""
    spans: list[tuple[int, int, int]] = []
    start, previous = 0, None
    for key, size in zip(keys, sizes, strict=True):
        if spans and key == previous:
            begin, rows, _ = spans[-1]
            spans[-1] = (begin, rows + 1, size)
        else:
            spans.append((start, 1, size))
        start, previous = start + size, key
    return spans


def _rows(x: jax.Array, spans: list[tuple[int, int, int]]) -> list[jax.Array]:
    """The bucket's buffer as one (rows, size) view per span: a row is a leaf."""
    flat = x.reshape(-1)
    return [flat[start : start + rows * size].reshape(rows, size) for start, rows, size in spans]


def _per_element(values: list[jax.Array], spans: list[tuple[int, int, int]], bucket: _Bucket) -> jax.Array:
    """Per-leaf values (one (rows,) vector per span) broadcast to the bucket's elements: a scalar
    for a lone leaf, else each row's value repeated over its leaf (a broadcast, no gather)."""
    if not bucket.flat:
        return values[0][0]
    parts = [
        jnp.broadcast_to(v[:, None], (rows, size)).reshape(-1)
        for v, (_, rows, size) in zip(values, spans, strict=True)
    ]
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts)


def _scalar(value: Any, count: jax.Array) -> jax.Array:
    """A hyperparameter or schedule value at `count` (optax's schedules see the count before
    this step's increment)."""
    return jnp.asarray(value(count) if callable(value) else value, jnp.float32)


def _check_params(params: PyTree, grads: PyTree | None) -> tuple[list, list, Any]:
    if grads is None:
        p_leaves, _, treedef = check_leaves(params, None, name="params")
        g_leaves = p_leaves
    else:
        g_leaves, p_leaves_or_none, treedef = check_leaves(grads, params)
        assert p_leaves_or_none is not None
        p_leaves = p_leaves_or_none
    for path, p in jax.tree_util.tree_flatten_with_path(params)[0]:
        if jnp.iscomplexobj(p):
            raise TypeError(
                f"params{jax.tree_util.keystr(path)} is complex: the fused steps take real parameters "
                "(use the optax aliases, e.g. jaxdl.optim.diffgrad, for complex ones)"
            )
    return p_leaves, g_leaves, treedef


# ----------------------------------------------------------------------------------------------
# The engine shared by every rule.


class _Pass(NamedTuple):
    """A rule that is one elementwise pass: `scalars(count)` gives the step's scalars and
    `body(bucket, g_dtype)` the function `(p, g, *buffers, *scalars) -> (p, *buffers)`."""

    scalars: Callable[[jax.Array], tuple]
    body: Callable[[_Bucket, Any], Callable]


def _pass_rule(pass_: _Pass, transform: Callable | None = None) -> Callable:
    """The bucket rule of an elementwise pass as XLA fusions (`transform(bucket, p, g)` first
    rewrites the bucket's gradient, e.g. ⊥Grad's projection)."""

    def rule(count, p_leaves, g_leaves, bucket, buffers):
        p, g = _gather(p_leaves, bucket), _gather(g_leaves, bucket)
        if transform is not None:
            g = transform(bucket, p_leaves, p, g).astype(g.dtype)
        p_new, *bufs = pass_.body(bucket, g.dtype)(p, g, *buffers, *pass_.scalars(count))
        return p_new, tuple(bufs)

    return rule


def _pallas_layout(buckets, p_leaves, state_buffers):
    """The leaves in kernel order (largest first: same-sized leaves are neighbours, and
    `_pallas.multi_tensor` gives every kernel some large ones), each leaf's bucket, and where its
    buffers sit in the flat storage arrays (its `where`)."""
    entries: list[tuple[int, int, list[tuple[int, int]]]] = []
    storage: list[jax.Array] = []
    for b, (bucket, bufs) in enumerate(zip(buckets, state_buffers, strict=True)):
        first, start = len(storage), 0
        storage += [x.reshape(-1) for x in bufs]
        for i in bucket.members:
            entries.append((i, b, [(first + n, start) for n in range(len(bufs))]))
            start += p_leaves[i].size
    entries.sort(key=lambda e: -p_leaves[e[0]].size)
    order, bucket_of, where = (list(x) for x in zip(*entries, strict=True))
    return order, bucket_of, where, storage


def _unflatten(order, new, n_leaves, state_buffers, storage):
    """New leaves back in tree order and the storage arrays back in each bucket's shapes."""
    new_leaves: list = [None] * n_leaves
    for i, leaf in zip(order, new, strict=True):
        new_leaves[i] = leaf
    new_buffers, at = [], 0
    for bufs in state_buffers:
        new_buffers.append(tuple(x.reshape(b.shape) for x, b in zip(storage[at:], bufs, strict=False)))
        at += len(bufs)
    return new_leaves, new_buffers


def _bodies(make: Callable, buckets, bucket_of, g_leaves) -> list[Callable]:
    """`make(bucket, gradient dtype)` once per bucket, listed per leaf in kernel order."""
    per_bucket = [make(b, jnp.result_type(*[g_leaves[i] for i in b.members])) for b in buckets]
    return [per_bucket[b] for b in bucket_of]


def _with_pallas(pass_: _Pass, count, p_leaves, g_leaves, buckets, state_buffers):
    """The pass over every bucket as Pallas kernels that each write many parameter leaves and
    moment buffers in place (`_pallas.multi_tensor`): new leaves, new buffers per bucket."""
    from jaxdl.optim import _pallas  # imported here: loading Pallas costs ~0.5 s

    order, bucket_of, where, storage = _pallas_layout(buckets, p_leaves, state_buffers)
    bodies = _bodies(pass_.body, buckets, bucket_of, g_leaves)
    leaves = [[p_leaves[i] for i in order], [g_leaves[i] for i in order]]
    out = _pallas.multi_tensor(bodies, leaves, storage, where, pass_.scalars(count))
    return _unflatten(order, out.leaves, len(p_leaves), state_buffers, out.storage)


def _leaf_sums(sums: jax.Array, blocks: tuple[int, ...]) -> list[list[jax.Array]]:
    """Block sums (n, blocks in all) as one (leaves, blocks) array per sum, per run of leaves
    with the same number of blocks."""
    return [
        [row[start : start + rows * size].reshape(rows, size) for row in sums]
        for start, rows, size in _runs(blocks, blocks)
    ]


def _perp_with_pallas(pass_: _Pass, renormalize: bool) -> Callable:
    """⊥Grad, then the pass, as two rounds of multi-tensor Pallas kernels: one reading g and w for
    the per-leaf coefficients (`_compensated.block_sums`: each block's partial sums; a few small
    XLA reductions finish them, `_compensated.from_blocks`), then the pass, which projects and
    rescales each gradient block before its elementwise update. 2 + the pass's buffers."""

    def run(count, p_leaves, g_leaves, buckets, state_buffers):
        from jaxdl.optim import _pallas  # imported here: loading Pallas costs ~0.5 s

        order, bucket_of, where, storage = _pallas_layout(buckets, p_leaves, state_buffers)
        ps, gs = [p_leaves[i] for i in order], [g_leaves[i] for i in order]
        stats = _pallas.multi_tensor(
            [lambda w, g: block_sums(w, g, _TINY)] * len(order),
            [ps, gs],
            [],
            [[]] * len(order),
            [],
            n_sums=BLOCK_SUMS,
            write_leaves=False,
        )
        assert stats.sums is not None
        parts = [from_blocks(span, _TINY) for span in _leaf_sums(stats.sums, stats.blocks)]
        leaf = Projection(*(jnp.concatenate(x) for x in zip(*parts, strict=True)))
        scale = _rescaling(leaf.g_sq, leaf.perp_sq, jnp.float32) if renormalize else jnp.ones_like(leaf.g_sq)
        out = _pallas.multi_tensor(
            _bodies(lambda b, dtype: _projecting(pass_.body(b, dtype), dtype), buckets, bucket_of, g_leaves),
            [ps, gs],
            storage,
            where,
            pass_.scalars(count),
            leaf_scalars=jnp.stack([leaf.c_hi, leaf.c_lo, scale], axis=1),
        )
        return _unflatten(order, out.leaves, len(p_leaves), state_buffers, out.storage)

    return run


def _projecting(body: Callable, g_dtype) -> Callable:
    """`body(p, g, ...)` taking g - (c_hi + c_lo) p, rescaled, in place of g (three per-leaf
    scalars last): ⊥Grad inside the elementwise kernel, with `_projected`'s roundings."""

    def f(p, g, *rest):
        *others, c_hi, c_lo, scale = rest
        compute = jnp.promote_types(g.dtype, jnp.float32)
        g_perp = residual(g.astype(compute), p.astype(compute), c_hi, c_lo) * scale
        return body(p, g_perp.astype(g_dtype), *others)

    return f


def _kernels_run_here() -> bool:
    """Whether `kernel="pallas"` runs Pallas kernels here (a GPU, or the tests' interpreter);
    elsewhere the step takes the XLA path."""
    from jaxdl.optim import _pallas  # imported here: loading Pallas costs ~0.5 s

    return _pallas._use_kernel()


def _fused(
    n_buffers: int,
    buffer_dtypes: Callable[[Any], tuple],
    rule: Callable | _Pass,
    *,
    decay_mask: Any = None,
    adapt_mask: Any = None,
    name: str,
    kernel: str = "xla",
    pallas: Callable | None = None,
) -> FusedOptimizer:
    """`rule(count, p_leaves, g_leaves, bucket, buffers) -> (new flat p, new buffers)` per bucket,
    or an elementwise `_Pass`. With `kernel="pallas"`, where Pallas kernels run, the step is
    `pallas(count, p_leaves, g_leaves, buckets, state_buffers) -> (new leaves, new buffers)`
    instead (a `_Pass` defaults to `_with_pallas`), for leaves of at most 32 bits."""
    pass_ = rule if isinstance(rule, _Pass) else None
    bucket_rule = rule if pass_ is None else _pass_rule(pass_)
    if pallas is None and pass_ is not None:
        pallas = partial(_with_pallas, pass_)

    def masks(params):
        decay = _mask_leaves(
            "weight_decay_mask" if name != "perp_adamw" else "mask", decay_mask, params, True
        )
        adapt = _mask_leaves("trust_ratio_mask", adapt_mask, params, True)
        return decay, adapt

    def init(params):
        _check_params(params, None)
        leaves = [jnp.asarray(x) for x in jax.tree.leaves(params)]
        buckets = _layout(leaves, *masks(params))
        buffers = []
        for bucket in buckets:
            shape = (
                (sum(leaves[i].size for i in bucket.members),)
                if bucket.flat
                else leaves[bucket.members[0]].shape
            )
            dtypes = buffer_dtypes(leaves[bucket.members[0]].dtype)
            buffers.append(tuple(jnp.zeros(shape, d) for d in dtypes[:n_buffers]))
        return FusedState(jnp.zeros([], jnp.int32), tuple(buffers))

    def step(params, grads, state):
        p_leaves, g_leaves, treedef = _check_params(params, grads)
        buckets = _layout(p_leaves, *masks(params))
        if len(buckets) != len(state.buffers):
            raise ValueError(
                f"state was made for a different params layout ({len(state.buffers)} buckets, "
                f"these params give {len(buckets)}): call init(params) again"
            )
        narrow = all(jnp.dtype(x.dtype).itemsize <= 4 for x in p_leaves + g_leaves)
        if pallas is not None and kernel == "pallas" and narrow and _kernels_run_here():
            new_leaves, new_buffers = pallas(state.count, p_leaves, g_leaves, buckets, state.buffers)
        else:
            new_leaves, new_buffers = [None] * len(p_leaves), []
            for bucket, buffers in zip(buckets, state.buffers, strict=True):
                p_new, bufs = bucket_rule(state.count, p_leaves, g_leaves, bucket, buffers)
                new_buffers.append(tuple(bufs))
                for i, leaf in _scatter(p_new, bucket, p_leaves):
                    new_leaves[i] = leaf
        return treedef.unflatten(new_leaves), FusedState(
            optax.safe_increment(state.count), tuple(new_buffers)
        )

    return FusedOptimizer(init, step)


def _apply(p: jax.Array, update: jax.Array, g_dtype) -> jax.Array:
    """optax.apply_updates's roundings: the update in the gradient's dtype, added in p's dtype."""
    return (p + update.astype(g_dtype).astype(p.dtype)).astype(p.dtype)


def _bias_corrections(count, b1, b2):
    t = optax.safe_increment(count).astype(jnp.float32)
    return 1 - jnp.asarray(b1, jnp.float32) ** t, 1 - jnp.asarray(b2, jnp.float32) ** t


# ----------------------------------------------------------------------------------------------
# Adam(W), ⊥AdamW


def _adam_direction(g32, m, v, *, b1, b2, eps, eps_root, bc1, bc2, mu_dtype):
    """optax.scale_by_adam on one buffer: the new moments (in their dtypes) and m_hat/(sqrt(v_hat)+eps)."""
    m_new = ((1 - b1) * g32 + b1 * m.astype(jnp.float32)).astype(mu_dtype or m.dtype)
    v_new = ((1 - b2) * jnp.square(g32) + b2 * v.astype(jnp.float32)).astype(v.dtype)
    return m_new, v_new, _adam_ratio(m_new, v_new, bc1=bc1, bc2=bc2, eps=eps, eps_root=eps_root)


def _adam_ratio(m, v, *, bc1, bc2, eps, eps_root):
    """m_hat/(sqrt(v_hat)+eps) from the new moments, with optax's roundings."""
    m_hat = (m.astype(jnp.float32) / bc1).astype(m.dtype).astype(jnp.float32)
    v_hat = (v.astype(jnp.float32) / bc2).astype(v.dtype).astype(jnp.float32)
    return m_hat / (jnp.sqrt(v_hat + eps_root) + eps)


def _adamw_pass(learning_rate, b1, b2, eps, eps_root, weight_decay, mu_dtype) -> _Pass:
    def scalars(count):
        lr, wd = _scalar(learning_rate, count), _scalar(weight_decay, count)
        return (lr, wd, *_bias_corrections(count, b1, b2))

    def body(bucket, g_dtype):
        hyper = dict(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype)

        def f(p, g, m, v, lr, wd, bc1, bc2):
            m_new, v_new, u = _adam_direction(g.astype(jnp.float32), m, v, bc1=bc1, bc2=bc2, **hyper)
            u = u.astype(g_dtype).astype(jnp.float32)
            if bucket.decay:
                u = (u + wd * p.astype(jnp.float32)).astype(g_dtype).astype(jnp.float32)
            return _apply(p, -lr * u, g_dtype), m_new, v_new

        return f

    return _Pass(scalars, body)


def _projected(bucket, like, p, g, renormalize):
    """⊥Grad (perpgrad) on a bucket: per-leaf coefficients from one compensated reduction per
    run of same-shaped leaves, then g - c w and the rescaling in the elementwise pass."""
    compute = jnp.promote_types(g.dtype, jnp.float32)
    spans = _spans(bucket, like)
    stats = [
        projection(w_rows, g_rows, _TINY)
        for w_rows, g_rows in zip(
            _rows(p.astype(compute), spans), _rows(g.astype(compute), spans), strict=True
        )
    ]
    c_hi = _per_element([s.c_hi for s in stats], spans, bucket)
    c_lo = _per_element([s.c_lo for s in stats], spans, bucket)
    g_perp = residual(g.astype(compute), p.astype(compute), c_hi, c_lo)
    if renormalize:
        scale = [_rescaling(s.g_sq, s.perp_sq, compute) for s in stats]
        g_perp = g_perp * _per_element(scale, spans, bucket)
    return g_perp


def _rescaling(g_sq, perp_sq, compute):
    """||g|| / ||g_perp||, capped at eps^(-3/4) (`perpgrad`'s documented rule)."""
    cap_sq = float(jnp.finfo(compute).eps) ** -1.5
    return jnp.sqrt(g_sq) / (jnp.sqrt(jnp.maximum(perp_sq, g_sq / cap_sq)) + _TINY)


def fused_adam(
    learning_rate: optax.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = ADAMW.b1,
    b2: jax.typing.ArrayLike = ADAMW.b2,
    eps: jax.typing.ArrayLike = ADAMW.eps,
    eps_root: jax.typing.ArrayLike = ADAMW.eps_root,
    mu_dtype: jax.typing.DTypeLike | None = None,
    weight_decay: optax.ScalarOrSchedule = 0.0,
    mask: Any = None,
    *,
    kernel: str = "xla",
) -> FusedOptimizer:
    """Adam (Kingma & Ba 2015, Alg. 1), or AdamW with `weight_decay` (Loshchilov & Hutter 2019),
    as one fused update + apply step per bucket of leaves.

    Equals `optax.adamw(learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask)`
    followed by `optax.apply_updates`, to float32 rounding (module docstring: what changes).
    `kernel="pallas"` runs the step as Pallas (Triton) kernels on GPUs, up to 80 leaves a kernel (XLA
    elsewhere; module docstring: when it pays).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.optim import fused_adam
      >>> opt = fused_adam(0.1)
      >>> params = {"w": jnp.array([1.0, -1.0])}
      >>> params, state = opt.step(params, {"w": jnp.array([0.5, -2.0])}, opt.init(params))
      >>> print(params["w"].round(4))  # the first Adam step moves every coordinate by lr
      [ 0.9 -0.9]
    """
    check_nonnegative("learning_rate", learning_rate)
    check_nonnegative("weight_decay", weight_decay)
    check_adam(b1, b2, eps, eps_root)
    _check_kernel(kernel)
    return _fused(
        2,
        lambda dtype: (mu_dtype or dtype, dtype),
        _adamw_pass(learning_rate, b1, b2, eps, eps_root, weight_decay, mu_dtype),
        decay_mask=mask,
        name="adam",
        kernel=kernel,
    )


def fused_perp_adamw(
    learning_rate: optax.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = ADAMW.b1,
    b2: jax.typing.ArrayLike = ADAMW.b2,
    eps: jax.typing.ArrayLike = ADAMW.eps,
    eps_root: jax.typing.ArrayLike = ADAMW.eps_root,
    mu_dtype: jax.typing.DTypeLike | None = None,
    weight_decay: optax.ScalarOrSchedule = ADAMW.weight_decay,
    mask: Any = None,
    *,
    renormalize: bool = True,
    kernel: str = "xla",
) -> FusedOptimizer:
    """⊥AdamW (Prieto et al., ICLR 2025) as a fused step: equals `jaxdl.optim.perp_adamw` followed
    by `optax.apply_updates`, to float32 rounding. One compensated reduction per leaf (small
    same-shaped leaves share it) and one elementwise pass per bucket: 9 buffers.
    `kernel="pallas"`: both as multi-tensor Pallas kernels on GPUs (module docstring).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.optim import fused_perp_adamw
      >>> opt = fused_perp_adamw(1e-2, weight_decay=0.0)
      >>> params = {"w": jnp.array([1.0, 0.0])}
      >>> params, _ = opt.step(params, {"w": jnp.array([3.0, 4.0])}, opt.init(params))
      >>> print(params["w"].round(4))  # the radial (first) coordinate is left alone
      [ 1.   -0.01]
    """
    check_nonnegative("learning_rate", learning_rate)
    check_nonnegative("weight_decay", weight_decay)
    check_adam(b1, b2, eps, eps_root)
    _check_kernel(kernel)
    if not isinstance(renormalize, bool):
        raise TypeError(f"renormalize must be a bool, got {renormalize!r}")
    pass_ = _adamw_pass(learning_rate, b1, b2, eps, eps_root, weight_decay, mu_dtype)
    return _fused(
        2,
        lambda dtype: (mu_dtype or dtype, dtype),
        _pass_rule(pass_, lambda bucket, like, p, g: _projected(bucket, like, p, g, renormalize)),
        decay_mask=mask,
        name="perp_adamw",
        kernel=kernel,
        pallas=_perp_with_pallas(pass_, renormalize),
    )


# ----------------------------------------------------------------------------------------------
# ⊥SGD


def fused_perp_sgd(
    learning_rate: optax.ScalarOrSchedule,
    momentum: jax.typing.ArrayLike | None = None,
    *,
    renormalize: bool = True,
    kernel: str = "xla",
) -> FusedOptimizer:
    """⊥SGD (Prieto et al., ICLR 2025) as a fused step: equals `jaxdl.optim.perp_sgd(learning_rate,
    momentum)` followed by `optax.apply_updates`, to float32 rounding (heavy-ball momentum
    t = g_perp + momentum * t, as `optax.trace`). One reduction over g and w, then one pass
    reading p, g, t and writing p, t: 7 buffers. With `momentum=None` (the default, as
    `perp_sgd`'s and `optax.sgd`'s) there is no trace: 5 buffers, and the state holds no
    buffers. At a concrete momentum 0 the trace is kept (it holds g_perp) but not read: 6
    buffers. `kernel="pallas"`: both as multi-tensor Pallas kernels on GPUs (module docstring).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.optim import fused_perp_sgd
      >>> opt = fused_perp_sgd(0.1)
      >>> params = {"w": jnp.array([1.0, 0.0])}
      >>> params, _ = opt.step(params, {"w": jnp.array([3.0, 4.0])}, opt.init(params))
      >>> print(params["w"])
      [ 1.  -0.5]
    """
    check_nonnegative("learning_rate", learning_rate)
    if momentum is not None:
        check_beta("momentum", momentum)
    _check_kernel(kernel)
    if not isinstance(renormalize, bool):
        raise TypeError(f"renormalize must be a bool, got {renormalize!r}")
    # A concrete 0 (or None) skips the trace's read: 0 * t is not 0 to XLA (t may be inf/NaN).
    no_read = momentum is None or _concrete("momentum", momentum) == 0

    def scalars(count):
        return (_scalar(learning_rate, count),)

    def body(bucket, g_dtype):
        def f(p, g_perp, *trace_and_lr):  # g_perp: the projected gradient, in the gradient's dtype
            *trace, lr = trace_and_lr
            t = (
                g_perp
                if no_read
                else (g_perp.astype(jnp.float32) + momentum * trace[0].astype(jnp.float32)).astype(g_dtype)
            )
            return _apply(p, -lr * t.astype(jnp.float32), g_dtype), *(t.astype(x.dtype) for x in trace)

        return f

    pass_ = _Pass(scalars, body)
    return _fused(
        0 if momentum is None else 1,
        lambda dtype: (dtype,),
        _pass_rule(pass_, lambda bucket, like, p, g: _projected(bucket, like, p, g, renormalize)),
        name="perp_sgd",
        kernel=kernel,
        pallas=_perp_with_pallas(pass_, renormalize),
    )


# ----------------------------------------------------------------------------------------------
# diffGrad


def fused_diffgrad(
    learning_rate: optax.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = DIFFGRAD.b1,
    b2: jax.typing.ArrayLike = DIFFGRAD.b2,
    eps: jax.typing.ArrayLike = DIFFGRAD.eps,
    weight_decay: optax.ScalarOrSchedule = DIFFGRAD.weight_decay,
    weight_decay_mask: Any = None,
    mu_dtype: jax.typing.DTypeLike | None = None,
    *,
    decoupled: bool = False,
    kernel: str = "xla",
) -> FusedOptimizer:
    """diffGrad (Dubey et al. 2020, eqs. 11-20) as a fused step: equals `jaxdl.optim.diffgrad`
    with the same arguments followed by `optax.apply_updates`, to float32 rounding. One
    elementwise pass per bucket reading p, g, m, v, g_prev and writing p, m, v, g_prev: 9 buffers.
    `kernel="pallas"`: as in `fused_adam`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.optim import fused_diffgrad
      >>> opt = fused_diffgrad(1e-3)
      >>> params = {"w": jnp.ones(3)}
      >>> params, _ = opt.step(params, {"w": jnp.ones(3)}, opt.init(params))
      >>> print((params["w"] - 1).round(6))  # lr * sigmoid(|0 - 1|)
      [-0.000731 -0.000731 -0.000731]
    """
    check_nonnegative("learning_rate", learning_rate)
    check_nonnegative("weight_decay", weight_decay)
    check_adam(b1, b2, eps)
    _check_kernel(kernel)

    def scalars(count):
        lr, wd = _scalar(learning_rate, count), _scalar(weight_decay, count)
        return (lr, wd, *_bias_corrections(count, b1, b2))

    def body(bucket, g_dtype):
        coupled = bucket.decay and not decoupled
        decay_after = bucket.decay and decoupled

        def f(p, g, m, v, g_prev, lr, wd, bc1, bc2):
            if coupled:  # add_decayed_weights before the rescaling, in the gradient's dtype
                g = (g.astype(jnp.float32) + wd * p.astype(jnp.float32)).astype(g_dtype)
            g32 = g.astype(jnp.float32)
            m_new = b1 * m.astype(jnp.float32) + (1 - b1) * g32
            v_new = b2 * v.astype(jnp.float32) + (1 - b2) * jnp.square(g32)
            xi = 1 / (1 + jnp.exp(-jnp.abs(g_prev.astype(jnp.float32) - g32)))  # sigmoid, >= 0.5
            u = (
                (jnp.sqrt(bc2) / bc1 * xi * m_new / (jnp.sqrt(v_new) + eps))
                .astype(g_dtype)
                .astype(jnp.float32)
            )
            if decay_after:
                u = (u + wd * p.astype(jnp.float32)).astype(g_dtype).astype(jnp.float32)
            remembered = jnp.where(jnp.isnan(g_prev), g_prev, g)
            return (
                _apply(p, -lr * u, g_dtype),
                m_new.astype(mu_dtype or m.dtype),
                v_new.astype(v.dtype),
                remembered.astype(g_prev.dtype),
            )

        return f

    return _fused(
        3,
        lambda dtype: (mu_dtype or dtype, dtype, dtype),
        _Pass(scalars, body),
        decay_mask=weight_decay_mask,
        name="diffgrad",
        kernel=kernel,
    )


# ----------------------------------------------------------------------------------------------
# LAMB


def fused_lamb(
    learning_rate: optax.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = LAMB.b1,
    b2: jax.typing.ArrayLike = LAMB.b2,
    eps: jax.typing.ArrayLike = LAMB.eps,
    eps_root: jax.typing.ArrayLike = LAMB.eps_root,
    weight_decay: optax.ScalarOrSchedule = LAMB.weight_decay,
    weight_decay_mask: Any = None,
    trust_ratio_mask: Any = None,
    mu_dtype: jax.typing.DTypeLike | None = None,
    *,
    kernel: str = "xla",
) -> FusedOptimizer:
    """LAMB (You et al. 2020, Alg. 2) as a fused step: equals `jaxdl.optim.lamb` with the same
    arguments followed by `optax.apply_updates`, to float32 rounding. Two passes per bucket:
    the moments and the per-leaf norms (reads p, g, m, v; writes m, v), then the step (reads p, m,
    v; writes p): 10 buffers. (`max_grad_norm` is not offered: clip the gradients first.)
    `kernel="pallas"`: both passes as multi-tensor Pallas kernels on GPUs (module docstring).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.optim import fused_lamb
      >>> opt = fused_lamb(1e-2)
      >>> params = {"w": jnp.full((2, 2), 3.0)}
      >>> params, _ = opt.step(params, {"w": jnp.full((2, 2), 0.5)}, opt.init(params))
      >>> print(params["w"][0].round(4))  # lr * ||w|| / ||u|| * u
      [2.97 2.97]
    """
    check_nonnegative("learning_rate", learning_rate)
    check_nonnegative("weight_decay", weight_decay)
    check_adam(b1, b2, eps, eps_root)
    _check_kernel(kernel)

    hyper = dict(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype)

    def scalars(count):
        lr, wd = _scalar(learning_rate, count), _scalar(weight_decay, count)
        return (lr, wd, *_bias_corrections(count, b1, b2))

    def decayed(r, p, bucket, wd, g_dtype):
        r = r.astype(g_dtype).astype(jnp.float32)
        if bucket.decay:
            r = (r + wd * p.astype(jnp.float32)).astype(g_dtype).astype(jnp.float32)
        return r

    def rule(count, p_leaves, g_leaves, bucket, buffers):
        lr, wd, bc1, bc2 = scalars(count)
        p, g = _gather(p_leaves, bucket), _gather(g_leaves, bucket)
        g_dtype = g.dtype
        m, v = buffers
        m_new, v_new, r = _adam_direction(g.astype(jnp.float32), m, v, bc1=bc1, bc2=bc2, **hyper)
        r = decayed(r, p, bucket, wd, g_dtype)
        if bucket.adapt:
            spans = _spans(bucket, p_leaves)
            r_norms = [jnp.sqrt(jnp.sum(x * x, axis=1)) for x in _rows(r, spans)]
            p_norms = [jnp.sqrt(jnp.sum(x * x, axis=1)) for x in _rows(p.astype(jnp.float32), spans)]
            ratios = [_trust_ratio(pn, rn) for pn, rn in zip(p_norms, r_norms, strict=True)]
            r = (r * _per_element(ratios, spans, bucket)).astype(g_dtype).astype(jnp.float32)
        return _apply(p, -lr * r, g_dtype), (m_new, v_new)

    def moments_and_norms(bucket, g_dtype):  # pass 1: reads p, g, m, v; writes m, v
        def f(p, g, m, v, lr, wd, bc1, bc2):
            m_new, v_new, r = _adam_direction(g.astype(jnp.float32), m, v, bc1=bc1, bc2=bc2, **hyper)
            r, p32 = decayed(r, p, bucket, wd, g_dtype), p.astype(jnp.float32)
            return m_new, v_new, jnp.sum(p32 * p32), jnp.sum(r * r)

        return f

    def apply_step(bucket, g_dtype):  # pass 2: reads p, m, v; writes p
        def f(p, m, v, lr, wd, bc1, bc2, ratio):
            ratio_ = dict(bc1=bc1, bc2=bc2, eps=eps, eps_root=eps_root)
            r = decayed(_adam_ratio(m, v, **ratio_), p, bucket, wd, g_dtype)
            if bucket.adapt:
                r = (r * ratio).astype(g_dtype).astype(jnp.float32)
            return (_apply(p, -lr * r, g_dtype),)

        return f

    def pallas(count, p_leaves, g_leaves, buckets, state_buffers):
        from jaxdl.optim import _pallas  # imported here: loading Pallas costs ~0.5 s

        order, bucket_of, where, storage = _pallas_layout(buckets, p_leaves, state_buffers)
        ps, gs = [p_leaves[i] for i in order], [g_leaves[i] for i in order]
        step_scalars = scalars(count)
        first = _pallas.multi_tensor(
            _bodies(moments_and_norms, buckets, bucket_of, g_leaves),
            [ps, gs],
            storage,
            where,
            step_scalars,
            n_sums=2,
            write_leaves=False,
        )
        assert first.sums is not None
        spans = _leaf_sums(first.sums, first.blocks)
        p_sq, r_sq = (jnp.concatenate([jnp.sum(span[n], axis=1) for span in spans]) for n in (0, 1))
        ratio = _trust_ratio(jnp.sqrt(p_sq), jnp.sqrt(r_sq))
        second = _pallas.multi_tensor(
            _bodies(apply_step, buckets, bucket_of, g_leaves),
            [ps],
            first.storage,
            where,
            step_scalars,
            leaf_scalars=ratio[:, None],
            writes=[False] * len(storage),
        )
        return _unflatten(order, second.leaves, len(p_leaves), state_buffers, first.storage)

    return _fused(
        2,
        lambda dtype: (mu_dtype or dtype, dtype),
        rule,
        decay_mask=weight_decay_mask,
        adapt_mask=trust_ratio_mask,
        name="lamb",
        kernel=kernel,
        pallas=pallas,
    )


def _trust_ratio(p_norm, r_norm):
    """||p|| / ||r||, 1 where either is 0 (optax.scale_by_trust_ratio)."""
    return jnp.where((p_norm != 0) & (r_norm != 0), p_norm / jnp.where(r_norm != 0, r_norm, 1), 1.0)


def _check_kernel(kernel: str) -> None:
    if kernel not in ("xla", "pallas"):
        raise ValueError(f"kernel must be 'xla' or 'pallas', got {kernel!r}")
