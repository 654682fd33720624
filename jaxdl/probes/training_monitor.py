"""An in-loop monitor: curvature, alignment and kernel probes every N steps of a jitted train step.

The train step calls the monitor at every step; it computes its probes only when
``step % every == 0`` (under ``lax.cond``, so the other steps run none of them) and always
returns a :class:`MonitorRecord` of fixed shape, NaN on the steps it skips. What it records:

- sharpness ``lambda_max(H)`` by Lanczos (the edge of stability: GD with step ``eta`` and
  heavy-ball momentum ``beta`` is stable along the sharpest direction iff
  ``lambda_max <= (2 + 2 beta) / eta``, and sharpness rises to that value and hovers there;
  Cohen et al., ICLR 2021) and its ratio to the threshold;
- the Hutchinson trace ``tr(H)`` and ``eta tr(H) / 2`` (linearly stable SGD minima satisfy
  ``tr(H) <= 2 / eta``; Wu & Su, ICML 2023, Thm. 3.3);
- the NLM alignment ``cos(-g, theta)`` (Prieto et al., ICLR 2025, Fig. 5), from
  :func:`jaxdl.optim.nlm_alignment`;
- the softmax-collapse fraction of the batch logits (Prieto et al. 2025, Def. 3), from
  :func:`jaxdl.losses.softmax_collapse_fraction`;
- the largest eigenvalue and the condition number of the empirical NTK on a fixed probe
  batch (Jacot et al. 2018; the kernel of :func:`jaxdl.probes.empirical_ntk`).

The monitor is a plain function of arrays: it compiles with the train step that calls it (once
per shapes) and composes with ``jax.jit``, :func:`jaxdl.parallel.data_parallel` (a sharded
batch makes its reductions all-reduces) and NNX models split into ``(graphdef, params)``.
Under ``jax.vmap`` a ``lax.cond`` on a batched step becomes a ``select`` that runs the probes at
every step: call :meth:`TrainingMonitor.compute` at host-chosen steps instead.

Two ways to keep the monitor cheap, both measured on an H200 (``benchmarks/RESULTS.md``,
1.0M-parameter MLP, 1,000 SGD steps, probes every 100 steps):

- :func:`monitored_steps`: one record, then ``every`` steps in a ``lax.scan``. XLA's GPU
  conditional reads its predicate on the host, so a step that contains the monitor under
  ``lax.cond`` waits for the device at every step; a scan has a static trip count and no
  conditional, and the host dispatches one program per chunk.
- Warm start: pass a :class:`MonitorState` (``monitor.init(params)``) and the sharpness's
  Lanczos starts from the last record's top Ritz vector, so a few steps (5 instead of 20)
  suffice once training has settled.

Inside a record, one ``jax.linearize`` of the gradient serves the gradient (its primal output)
and every Hessian-vector product (its tangent part); the sharpness uses the general Lanczos
path of :mod:`jaxdl.probes.lanczos` (raveled vector, static trip count, on a GPU straight-line
code for a few steps, Ritz pair by squaring), and the NTK's extreme eigenvalues come from
squaring too: no host synchronisation and no cuSOLVER call in a record. (Raveling concatenates the leaves:
parameters sharded across devices, as in model parallelism, would be gathered; data-parallel
replicated parameters are unaffected.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxdl._typing import PyTree
from jaxdl.probes import _operators as ops
from jaxdl.probes import lanczos as _lanczos
from jaxdl.probes import ntk as _ntk
from jaxdl.probes.curvature import _check_nonempty, _scalar

__all__ = [
    "MonitorRecord",
    "MonitorState",
    "MonitoredSteps",
    "TrainingMonitor",
    "monitored_steps",
    "training_monitor",
]


class MonitorRecord(NamedTuple):
    """What the monitor measured at one step (every field a scalar; NaN where not measured).

    Attributes:
      computed: bool, whether the probes ran at this step (``step % every == 0``).
      sharpness: ``lambda_max`` of the loss Hessian on the batch.
      sharpness_ratio: ``eta * lambda_max / (2 + 2 * momentum)``; above 1 is past the edge of stability.
      trace: Hutchinson estimate of ``tr(H)``.
      trace_ratio: ``eta * tr(H) / 2``; above 1 means SGD cannot stay at this point (Wu & Su 2023).
      nlm_alignment: ``cos(-g, theta)`` over all parameters.
      softmax_collapse: share of batch rows in Softmax Collapse.
      ntk_max_eigenvalue: largest eigenvalue of the empirical NTK on the probe inputs.
      ntk_condition_number: its ratio to the smallest (``inf`` when that is not positive).

    Example:
      >>> rec = training_monitor(lambda w, _: jnp.sum(w**2), learning_rate=0.1).empty(jnp.float32)
      >>> bool(rec.computed), bool(jnp.isnan(rec.sharpness))
      (False, True)
    """

    computed: jax.Array
    sharpness: jax.Array
    sharpness_ratio: jax.Array
    trace: jax.Array
    trace_ratio: jax.Array
    nlm_alignment: jax.Array
    softmax_collapse: jax.Array
    ntk_max_eigenvalue: jax.Array
    ntk_condition_number: jax.Array


class MonitorState(NamedTuple):
    """What a warm-started monitor carries from one record to the next.

    Attributes:
      vector: the top Ritz vector of the last record (a pytree like ``params``, unit norm), the
        next record's Lanczos start; all zeros before the first record, which then starts from
        a random vector.

    Example:
      >>> h = jnp.array([1.0, 2.0, 3.0, 3.5])  # H = diag(h)
      >>> monitor = training_monitor(lambda w, _: 0.5 * jnp.sum(h * w**2), learning_rate=0.1, num_iters=2)
      >>> probe = jax.jit(lambda state: monitor.compute(jnp.zeros(4), None, jax.random.key(0), state=state))
      >>> state = monitor.init(jnp.zeros(4))
      >>> state.vector.tolist()
      [0.0, 0.0, 0.0, 0.0]
      >>> for _ in range(40):  # two Lanczos steps per record, each from the last record's Ritz vector
      ...     record, state = probe(state)
      >>> round(float(record.sharpness), 4), [round(abs(x), 3) for x in state.vector.tolist()]  # lambda_max = 3.5
      (3.5, [0.0, 0.0, 0.0, 1.0])
    """

    vector: PyTree


class TrainingMonitor:
    """Probes of a training run, for a jitted train step to call at every step.

    Build it with :func:`training_monitor`; the attributes are its arguments.

    >>> loss = lambda w, x: 0.5 * jnp.sum(x * w**2)  # H = diag(x)
    >>> monitor = training_monitor(loss, learning_rate=0.5, every=2, num_iters=3)
    >>> records = [monitor(s, jnp.ones(3), jnp.array([1.0, 2.0, 3.0]), jax.random.key(s)) for s in range(3)]
    >>> [bool(r.computed) for r in records], round(float(records[0].sharpness), 4), round(float(records[0].sharpness_ratio), 4)
    ([True, False, True], 3.0, 0.75)
    """

    def __init__(
        self,
        loss_fn: Callable[[PyTree, PyTree], jax.Array],
        *,
        learning_rate: float | Callable[[jax.Array], jax.Array],
        every: int,
        momentum: float,
        num_iters: int,
        num_samples: int,
        logits_fn: Callable[[PyTree, PyTree], jax.Array] | None,
        apply_fn: Callable[[PyTree, jax.Array], jax.Array] | None,
        ntk_inputs: jax.Array | None,
        ntk_implementation: str,
    ):
        self.loss_fn = loss_fn
        self.learning_rate = learning_rate
        self.every = every
        self.momentum = momentum
        self.num_iters = num_iters
        self.num_samples = num_samples
        self.logits_fn = logits_fn
        self.apply_fn = apply_fn
        self.ntk_inputs = ntk_inputs
        self.ntk_implementation = ntk_implementation
        # the whole record, jitted once per input shapes; inlined when called inside the caller's jit
        self._record = jax.jit(lambda p, b, k, step, g, st: _record(self, p, b, k, step, g, st))

    def __call__(
        self,
        step: jax.Array | int,
        params: PyTree,
        batch: PyTree,
        key: jax.Array,
        *,
        grads: PyTree = None,
        state: MonitorState | None = None,
    ) -> Any:
        """The record of step ``step``: the probes when ``step % every == 0``, else NaNs.

        Args:
          step: the step counter (an int or a traced int scalar).
          params: the parameters the step starts from.
          batch: the batch the probes use (the current batch, or a fixed probe batch).
          key: PRNG key for the probes' random start vectors.
          grads: the step's gradient of ``loss_fn``, if the step has it (otherwise it is
            computed on probing steps only).
          state: a :class:`MonitorState` (from :meth:`init`) to warm-start the sharpness from the
            last record's top vector; then the call returns ``(record, state)``, the state
            unchanged on the steps that do not probe.

        Returns:
          A :class:`MonitorRecord`, or ``(MonitorRecord, MonitorState)`` when ``state`` is given.

        >>> monitor = training_monitor(lambda w, _: jnp.sum(w**2), learning_rate=0.1, every=10, num_iters=2)
        >>> round(float(monitor(10, jnp.ones(2), None, jax.random.key(0)).sharpness), 4)
        2.0
        """
        dtype = _float_dtype(params)
        return jax.lax.cond(
            jnp.asarray(step) % self.every == 0,
            lambda: self.compute(params, batch, key, step=step, grads=grads, state=state),
            lambda: self.empty(dtype) if state is None else (self.empty(dtype), state),
        )

    def init(self, params: PyTree) -> MonitorState:
        """The state before the first record: a zero vector (the first record starts at random).

        >>> monitor = training_monitor(lambda w, _: jnp.sum(w**2), learning_rate=0.1)
        >>> monitor.init({"w": jnp.ones(2)}).vector["w"].tolist()
        [0.0, 0.0]
        """
        _float_dtype(params)
        return MonitorState(jax.tree.map(jnp.zeros_like, params))

    def compute(
        self,
        params: PyTree,
        batch: PyTree,
        key: jax.Array,
        *,
        step: jax.Array | int = 0,
        grads: PyTree = None,
        state: MonitorState | None = None,
    ) -> Any:
        """Run every enabled probe now (no ``lax.cond``): for calls at host-chosen steps.

        The record is one program, jitted once per input shapes (eager calls reuse it; inside
        the caller's ``jax.jit`` it is traced into the caller's program). With ``state`` it returns
        ``(record, state)`` and starts Lanczos from ``state.vector`` (see :class:`MonitorState`).

        >>> monitor = training_monitor(lambda w, _: jnp.sum(w**2), learning_rate=0.5, num_iters=2)
        >>> round(float(monitor.compute(jnp.ones(2), None, jax.random.key(0)).sharpness_ratio), 4)  # 0.5 * 2 / 2
        0.5
        """
        if state is not None and not isinstance(state, MonitorState):
            raise TypeError(
                f"state must be a MonitorState (from monitor.init(params)) or None, got {state!r}"
            )
        _float_dtype(params)
        _check_nonempty(batch)
        return self._record(params, batch, key, jnp.asarray(step), grads, state)

    def empty(self, dtype: jax.typing.DTypeLike = jnp.float32) -> MonitorRecord:
        """The record of a step that does not probe: ``computed=False`` and NaN everywhere.

        >>> monitor = training_monitor(lambda w, _: jnp.sum(w**2), learning_rate=0.1)
        >>> [bool(jnp.isnan(v)) for v in monitor.empty()[1:3]]
        [True, True]
        """
        nan = jnp.full((), jnp.nan, dtype)
        return MonitorRecord(jnp.asarray(False), *([nan] * (len(MonitorRecord._fields) - 1)))


def training_monitor(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    *,
    learning_rate: float | Callable[[jax.Array], jax.Array],
    every: int = 100,
    momentum: float = 0.0,
    num_iters: int = 20,
    num_samples: int = 0,
    logits_fn: Callable[[PyTree, PyTree], jax.Array] | None = None,
    apply_fn: Callable[[PyTree, jax.Array], jax.Array] | None = None,
    ntk_inputs: jax.Array | None = None,
    ntk_implementation: str = "auto",
) -> TrainingMonitor:
    """A monitor that a jitted train step calls every step; it probes every ``every`` steps.

    Each probing step costs one linearisation of the gradient (a gradient; it also serves as the
    gradient when the step passes none), ``num_iters + num_samples`` tangent passes of it (the
    Hessian-vector products: the ``num_iters`` Lanczos ones in sequence, the trace's in one
    ``vmap``), a forward pass for the logits and one empirical NTK of the probe inputs. The
    monitor compiles as part of the train step that calls it, both branches of its ``lax.cond``
    in the one program; :meth:`TrainingMonitor.compute` called eagerly reuses one jitted record
    program (compiled once per shapes). On a GPU, see :func:`monitored_steps` and the warm start
    (:class:`MonitorState`) for the cheap ways to call it.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``, the mean training loss.
      learning_rate: ``eta``, a positive float or a schedule ``step -> eta`` (e.g. an optax schedule).
      every: probe when ``step % every == 0``.
      momentum: heavy-ball ``beta`` of the optimizer, for the threshold ``(2 + 2 beta) / eta``.
      num_iters: Lanczos steps for the sharpness (10-20 suffice for the top eigenvalue); 0 skips it.
      num_samples: Hutchinson probes for the trace; 0 (the default) skips it.
      logits_fn: ``logits_fn(params, batch) -> (..., classes)``, for the softmax-collapse fraction.
      apply_fn: ``apply_fn(params, x) -> (N, ...)``, a batch-wise model for the empirical NTK.
      ntk_inputs: the fixed probe inputs ``x`` of the NTK, shape ``(M, ...)``; its kernel is the
        ``(M, M)`` logit-averaged one (``trace_axes=(-1,)``).
      ntk_implementation: as in :func:`jaxdl.probes.empirical_ntk`.

    Returns:
      A :class:`TrainingMonitor`: ``monitor(step, params, batch, key, grads=None) -> MonitorRecord``.

    >>> import optax
    >>> loss = lambda w, b: 0.5 * jnp.mean((b[0] @ w - b[1]) ** 2)  # H = x^T x / n
    >>> x, y = jnp.array([[2.0, 0.0], [0.0, 1.0]]), jnp.array([1.0, 1.0])
    >>> monitor, tx = training_monitor(loss, learning_rate=0.4, every=5, num_iters=2), optax.sgd(0.4)
    >>> @jax.jit
    ... def step(s, w, opt_state):
    ...     grads = jax.grad(loss)(w, (x, y))
    ...     record = monitor(s, w, (x, y), jax.random.key(0), grads=grads)
    ...     updates, opt_state = tx.update(grads, opt_state)
    ...     return optax.apply_updates(w, updates), opt_state, record
    >>> w, opt_state, record = step(0, jnp.zeros(2), tx.init(jnp.zeros(2)))
    >>> round(float(record.sharpness), 4), round(float(record.sharpness_ratio), 4)  # lambda_max = 4 / 2; 0.4 * 2 / 2
    (2.0, 0.4)
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(params, batch), got {loss_fn!r}")
    if callable(learning_rate):
        pass
    elif (
        isinstance(learning_rate, bool) or not isinstance(learning_rate, int | float) or not learning_rate > 0
    ):
        raise ValueError(f"learning_rate must be a positive number or a schedule, got {learning_rate!r}")
    elif not math.isfinite(learning_rate):
        raise ValueError(f"learning_rate must be finite, got {learning_rate!r}")
    for name, value, minimum in (
        ("every", every, 1),
        ("num_iters", num_iters, 0),
        ("num_samples", num_samples, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if num_samples == 1:
        raise ValueError("num_samples must be 0 (no trace) or at least 2, got 1")
    if not isinstance(momentum, int | float) or not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}")
    for name, fn in (("logits_fn", logits_fn), ("apply_fn", apply_fn)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable or None, got {fn!r}")
    if (apply_fn is None) != (ntk_inputs is None):
        raise ValueError("apply_fn and ntk_inputs must be given together (both are needed for the NTK)")
    if ntk_inputs is not None and (not hasattr(ntk_inputs, "shape") or len(ntk_inputs.shape) < 1):
        raise ValueError(f"ntk_inputs must be an array with a leading example axis, got {ntk_inputs!r}")
    if ntk_implementation not in _ntk._IMPLEMENTATIONS:
        raise ValueError(
            f"ntk_implementation must be one of {_ntk._IMPLEMENTATIONS}, got {ntk_implementation!r}"
        )
    return TrainingMonitor(
        loss_fn,
        learning_rate=learning_rate,
        every=every,
        momentum=float(momentum),
        num_iters=num_iters,
        num_samples=num_samples,
        logits_fn=logits_fn,
        apply_fn=apply_fn,
        ntk_inputs=ntk_inputs,
        ntk_implementation=ntk_implementation,
    )


def _float_dtype(params: PyTree) -> Any:
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError("params must contain at least one array, got an empty pytree")
    return jnp.result_type(*leaves)


def _record(monitor: TrainingMonitor, params, batch, key, step, grads, state) -> Any:
    """The body of :meth:`TrainingMonitor.compute` (traced once per input shapes).

    One ``jax.linearize`` of the gradient serves every probe: the gradient is its primal output
    (when the step passes none), and each Hessian-vector product of the sharpness's Lanczos and
    of the trace's Hutchinson probes replays only its tangent (linear) part.
    """
    from jaxdl.losses import softmax_collapse_fraction
    from jaxdl.optim import nlm_alignment

    dtype = _float_dtype(params)
    nan = jnp.full((), jnp.nan, dtype)
    eta = monitor.learning_rate(step) if callable(monitor.learning_rate) else monitor.learning_rate
    eta = jnp.asarray(eta, dtype)
    eig_key, trace_key = jax.random.split(key)
    sharpness = sharpness_ratio = trace = trace_ratio = collapse = ntk_max = ntk_cond = nan
    gradient, hvp = jax.linearize(jax.grad(lambda p: _scalar(monitor.loss_fn(p, batch))), params)
    flat_hvp, ravel, unravel = ops.flat_operator(hvp, params)
    size = ops.tree_size(params)
    v0 = _start_vector(eig_key, size, dtype, ravel, state) if monitor.num_iters else None
    first = None
    if monitor.num_samples:
        # Hutchinson (the probes of hessian_trace: one Rademacher draw of P entries per key), the
        # products in one vmap together with Lanczos's first one, A v0
        probes = jax.vmap(lambda k: jax.random.rademacher(k, (size,), dtype))(
            jax.random.split(trace_key, monitor.num_samples)
        )
        # (only when Lanczos is unrolled: peeling the first step off a fori_loop would compile one
        # more copy of the HVP)
        block, batched = probes, False
        if v0 is not None and _lanczos._unrolls(min(monitor.num_iters, size), 0.0):
            block, batched = jnp.concatenate([v0[None], probes]), True
        products = jax.vmap(flat_hvp)(block)
        if batched:
            first, products = products[0], products[1:]
        trace = jnp.mean(jnp.sum(probes * products, axis=1))
        trace_ratio = eta * trace / 2.0
    if monitor.num_iters:
        sharpness, vector = _sharpness_from(flat_hvp, unravel, v0, monitor.num_iters, first)
        sharpness_ratio = eta * sharpness / (2.0 + 2.0 * monitor.momentum)
        if state is not None:
            state = MonitorState(vector)
    alignment = nlm_alignment(gradient if grads is None else grads, params).overall
    if monitor.logits_fn is not None:
        collapse = softmax_collapse_fraction(monitor.logits_fn(params, batch))
    if monitor.apply_fn is not None and monitor.ntk_inputs is not None:
        theta = _ntk.empirical_ntk(
            monitor.apply_fn, params, monitor.ntk_inputs, implementation=monitor.ntk_implementation
        )
        # both ends by squaring, not eigvalsh (a cuSOLVER call: 0.38 ms on an H200 for 32 x 32)
        smallest, ntk_max = _lanczos._extreme_eigenvalues(theta)
        ntk_cond = jnp.where(smallest > 0, ntk_max / jnp.where(smallest > 0, smallest, 1.0), jnp.inf)
    values = (sharpness, sharpness_ratio, trace, trace_ratio, alignment, collapse, ntk_max, ntk_cond)
    record = MonitorRecord(jnp.asarray(True), *(jnp.asarray(v, dtype) for v in values))
    return record if state is None else (record, state)


def _sharpness_from(flat_hvp, unravel, v0, num_iters: int, first=None) -> tuple[jax.Array, PyTree]:
    """``lambda_max`` by ``num_iters`` Lanczos steps from ``v0`` with the flat operator, and its Ritz vector.

    The general Lanczos path (:mod:`jaxdl.probes.lanczos`): the raveled vector, a static trip
    count (on a GPU straight-line code for a few steps), the Ritz pair by squaring. ``first`` is
    ``flat_hvp(v0)`` when it was computed already.
    """
    res = _lanczos._lanczos_flat(flat_hvp, v0, num_iters, first_product=first)
    top, s = _lanczos.largest_ritz_pair(res.alphas, res.betas)
    return top, unravel(jnp.matmul(s, res.basis[:-1], precision=jax.lax.Precision.HIGHEST))


def _sharpness(
    loss_fn: Callable, params: PyTree, batch: PyTree, key: jax.Array, num_iters: int, state: Any
) -> tuple[jax.Array, PyTree]:
    """The sharpness probe alone (its own linearisation), as the monitor computes it."""
    _, hvp = jax.linearize(jax.grad(lambda p: _scalar(loss_fn(p, batch))), params)
    flat_hvp, ravel, unravel = ops.flat_operator(hvp, params)
    v0 = _start_vector(key, ops.tree_size(params), _float_dtype(params), ravel, state)
    return _sharpness_from(flat_hvp, unravel, v0, num_iters)


def _start_vector(key, size: int, dtype, ravel, state) -> jax.Array:
    """Lanczos's flat start vector: the last record's Ritz vector with a warm ``state`` (random
    before the first record, when it is zero), else a normal draw."""
    v0 = jax.random.normal(key, (size,), dtype)
    if state is None:
        return v0
    previous = ravel(state.vector)
    return jnp.where(jnp.any(previous != 0), previous, v0)


class MonitoredSteps(NamedTuple):
    """The result of one chunk of :func:`monitored_steps`.

    Attributes:
      carry: the training state after the chunk's steps.
      record: the :class:`MonitorRecord` of the parameters the chunk started from.
      aux: the second output of ``train_step`` (e.g. the loss), stacked over the steps.
      state: the new :class:`MonitorState` (``None`` when the call passed none).

    Example:
      >>> run = monitored_steps(lambda w, x: (w - 0.1 * x, x), training_monitor(lambda w, _: jnp.sum(w**2), learning_rate=0.1, num_iters=2), lambda w: w)
      >>> out = run(jnp.ones(2), jnp.ones((3, 2)), jax.random.key(0))
      >>> [round(x, 4) for x in out.carry.tolist()], out.aux.shape, round(float(out.record.sharpness), 4)
      ([0.7, 0.7], (3, 2), 2.0)
    """

    carry: PyTree
    record: MonitorRecord
    aux: PyTree
    state: MonitorState | None


def monitored_steps(
    train_step: Callable[[PyTree, PyTree], tuple[PyTree, PyTree]],
    monitor: TrainingMonitor,
    params_fn: Callable[[PyTree], PyTree],
) -> Callable[..., MonitoredSteps]:
    """A chunk of training that records the monitor once, then runs its steps in one ``lax.scan``.

    The alternative to calling the monitor under ``lax.cond`` at every step: a chunk of
    ``every`` steps costs one record and a loop with a static trip count, so a GPU runs it
    without reading a predicate back on the host at any step (XLA's GPU conditional does, and a
    step containing one loses the asynchronous dispatch of the loop), and the host dispatches
    one program per chunk instead of one per step.

    Args:
      train_step: ``train_step(carry, batch) -> (carry, aux)``, a ``lax.scan`` body.
      monitor: a :class:`TrainingMonitor`.
      params_fn: ``params_fn(carry) -> params``, the parameters the monitor probes.

    Returns:
      ``run(carry, batches, key, *, step=0, probe_batch=None, state=None) -> MonitoredSteps``:
      records ``monitor.compute`` on ``params_fn(carry)`` with ``probe_batch`` (default: the
      first batch of the chunk) and the learning rate at ``step``, warm-started from ``state``
      if given, then scans ``train_step`` over the leading axis of ``batches``. Wrap it in
      ``jax.jit``: it compiles once per shapes of ``carry`` and ``batches``.

    >>> import optax
    >>> loss = lambda w, b: 0.5 * jnp.mean((b[0] @ w - b[1]) ** 2)  # H = x^T x / n
    >>> x, y = jnp.array([[2.0, 0.0], [0.0, 1.0]]), jnp.array([1.0, 1.0])
    >>> tx = optax.sgd(0.4)
    >>> def train_step(carry, batch):
    ...     w, opt_state = carry
    ...     value, grads = jax.value_and_grad(loss)(w, batch)
    ...     updates, opt_state = tx.update(grads, opt_state)
    ...     return (optax.apply_updates(w, updates), opt_state), value
    >>> monitor = training_monitor(loss, learning_rate=0.4, num_iters=2)
    >>> run = jax.jit(monitored_steps(train_step, monitor, lambda carry: carry[0]))
    >>> batches = (jnp.stack([x] * 5), jnp.stack([y] * 5))  # 5 steps per chunk
    >>> carry, state = (jnp.zeros(2), tx.init(jnp.zeros(2))), monitor.init(jnp.zeros(2))
    >>> for chunk in range(2):
    ...     carry, record, losses, state = run(carry, batches, jax.random.key(chunk), step=5 * chunk, state=state)
    >>> losses.shape, round(float(record.sharpness), 4)  # lambda_max = 4 / 2
    ((5,), 2.0)
    """
    if not callable(train_step):
        raise TypeError(f"train_step must be callable as train_step(carry, batch), got {train_step!r}")
    if not isinstance(monitor, TrainingMonitor):
        raise TypeError(f"monitor must be a TrainingMonitor (from training_monitor(...)), got {monitor!r}")
    if not callable(params_fn):
        raise TypeError(f"params_fn must be callable as params_fn(carry) -> params, got {params_fn!r}")

    def run(
        carry: PyTree,
        batches: PyTree,
        key: jax.Array,
        *,
        step: jax.Array | int = 0,
        probe_batch: PyTree = None,
        state: MonitorState | None = None,
    ) -> MonitoredSteps:
        lengths = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in jax.tree.leaves(batches)}
        if not lengths or None in lengths or len(lengths) > 1:
            raise ValueError(
                "batches must be a pytree of arrays with one common leading (step) axis, got leading "
                f"sizes {sorted(map(str, lengths))}"
            )
        if probe_batch is None:
            probe_batch = jax.tree.map(lambda x: x[0], batches)
        out = monitor.compute(params_fn(carry), probe_batch, key, step=step, state=state)
        record, new_state = out if state is not None else (out, None)
        carry, aux = jax.lax.scan(train_step, carry, batches)
        return MonitoredSteps(carry, record, aux, new_state)

    return run
