"""Data-parallel training on many devices: one train step, run through `jax.sharding` or `jax.pmap`.

The training step is a pure function ``step(state, batch) -> (state, metrics)`` over a `TrainState`
(step, params, optimizer state, PRNG key), built by `train_step` from a loss function and any optax
`GradientTransformation` (jaxdl's or optax's). It runs three ways without changing the math:

* one device: ``jax.jit(step)``;
* many devices, sharded (recommended): `data_parallel` jits it over a one-axis `Mesh` from `data_mesh`,
  with the batch split along its leading axis (``NamedSharding(mesh, P("data"))``) and the state
  replicated (``P()``); XLA inserts the gradient all-reduce;
* many devices, ``pmap`` (for older code): `data_parallel_pmap`, where the step averages gradients
  itself with ``lax.pmean`` (``train_step(..., axis_name="data")``), state carries a leading device
  axis (`replicate_for_pmap`) and batches are split with `split_for_pmap`. In current JAX ``pmap`` is
  implemented with ``jit`` + ``shard_map``.

**Mesh axis type.** `data_mesh` uses ``AxisType.Auto`` by default, chosen on purpose over
``jax.make_mesh``'s own default (``Explicit``): with Auto axes the compiler propagates the batch
sharding through any model, while Explicit axes ("sharding in types") make some everyday ops fail to
trace until they are annotated. An ``nnx.Embed`` lookup with sharded token ids, for instance, raises
``ShardingTypeError: Use .at[...].get(out_sharding=)``. Models written for Explicit sharding can pass
``axis_type=AxisType.Explicit``; both are tested, and give the same numbers.

**Multi-host.** Call ``jax.distributed.initialize()`` first on every host (on Cloud TPU and SLURM it
needs no arguments; elsewhere pass ``coordinator_address``, ``num_processes`` and ``process_id``). Then
``jax.devices()`` spans all hosts, `data_mesh` covers them, `jaxdl.data.Loader` gives each process its
own rows of every global batch (it reads ``jax.process_index()``/``jax.process_count()``), and
`shard_batch` assembles the per-process NumPy rows into one global array. The code is the same on one
host, where `shard_batch` simply places the batch. (Tested with two CPU processes of four devices each,
joined by ``jax.distributed`` over gloo: they train exactly like one process with eight devices.)
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxdl._typing import Batch, Metrics, PRNGKey, PyTree

__all__ = [
    "TrainState",
    "create_train_state",
    "data_mesh",
    "data_parallel",
    "data_parallel_pmap",
    "replicate",
    "replicate_for_pmap",
    "shard_batch",
    "split_for_pmap",
    "train_step",
    "unreplicate",
]


class TrainState(NamedTuple):
    """Everything a training run needs to continue: saved and restored as one pytree.

    Attributes:
      step: int32 scalar, number of updates applied so far.
      params: any pytree of arrays (e.g. ``nnx.state(model, nnx.Param)`` or Linen ``variables["params"]``).
      opt_state: the optax state for ``params``.
      key: PRNG key; step ``s`` uses ``jax.random.fold_in(key, s)``, so randomness depends only on the
        step and a resumed run draws the same numbers.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxdl.parallel import TrainState
      >>> state = TrainState(jnp.zeros((), jnp.int32), {"w": jnp.ones(2)}, (), jax.random.key(0))
      >>> [leaf.shape for leaf in jax.tree.leaves(state)]  # one pytree: step, params, (empty) opt_state, key
      [(), (2,), ()]
      >>> int(state._replace(step=state.step + 1).step)
      1
    """

    step: jax.Array
    params: Any
    opt_state: Any
    key: jax.Array


def _check_key(key: Any, name: str = "key") -> None:
    """A typed PRNG key (``jax.random.key``) or a legacy ``uint32[2]`` key (``jax.random.PRNGKey``)."""
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) and jnp.ndim(key) == 0:
        return
    if dtype == jnp.uint32 and jnp.shape(key) == (2,):
        return
    raise TypeError(f"{name} must be one PRNG key, jax.random.key(seed), got {key!r}")


def create_train_state(params: PyTree, optimizer: optax.GradientTransformation, key: PRNGKey) -> TrainState:
    """A `TrainState` at step 0.

    Args:
      params: pytree of arrays.
      optimizer: an optax ``GradientTransformation``.
      key: one PRNG key, ``jax.random.key(seed)`` (a legacy ``jax.random.PRNGKey(seed)`` works too).

    Raises:
      TypeError: ``optimizer`` is not a ``GradientTransformation`` (e.g. the factory ``optax.sgd``
        itself), or ``key`` is not a single PRNG key (a plain integer seed such as ``0``).

    Example:
      >>> state = create_train_state({"w": jnp.ones(3)}, optax.sgd(0.1), jax.random.key(0))
      >>> int(state.step), state.params["w"].shape
      (0, (3,))
    """
    _check_optimizer(optimizer)
    _check_key(key)
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), key)


def _check_optimizer(optimizer: Any) -> None:
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(
            f"optimizer must be an optax GradientTransformation (e.g. optax.sgd(0.1)), got "
            f"{type(optimizer).__name__}"
        )


def _check_loss_fn(loss_fn: Any) -> None:
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(params, batch, key), got {loss_fn!r}")
    try:
        signature = inspect.signature(loss_fn)
    except (TypeError, ValueError):  # builtins and some C callables have no signature: trust them
        return
    try:
        signature.bind(None, None, None)
    except TypeError:
        raise TypeError(
            f"loss_fn must accept three positional arguments (params, batch, key), got the signature "
            f"{signature}; add an unused `key` argument if the loss needs no randomness"
        ) from None


def train_step(
    loss_fn: Callable[..., Any],
    optimizer: optax.GradientTransformation,
    *,
    axis_name: str | None = None,
    has_aux: bool = False,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """A pure training step: gradient of ``loss_fn``, one optimizer update.

    Args:
      loss_fn: ``loss_fn(params, batch, key) -> loss`` (a scalar, the mean over the batch), or
        ``-> (loss, aux)`` with a dict of scalar metrics ``aux`` when ``has_aux``.
      optimizer: any optax ``GradientTransformation``; it receives ``params`` in ``update``, as
        ⊥Grad-style optimizers need.
      axis_name: set inside ``pmap``/``shard_map`` over the batch: gradients, loss and metrics are
        averaged over this axis with ``lax.pmean`` (each device holds an equal share of the batch).
        Leave None for one device and for `data_parallel`, where the sharded jit averages by itself.
        Every device gets the same step key; fold in ``lax.axis_index(axis_name)`` in ``loss_fn`` for
        per-device randomness.
      has_aux: whether ``loss_fn`` returns ``(loss, aux)``.

    Raises:
      TypeError: ``loss_fn`` is not callable with ``(params, batch, key)``; ``optimizer`` is not a
        ``GradientTransformation``; when the step is traced, ``loss_fn`` returns a non-scalar loss.

    Returns:
      ``step(state, batch) -> (state, metrics)``, metrics ``{"loss": ..., **aux}``.

    ``state.params`` is what the loss differentiates; a model with other state (batch statistics)
    needs its own step of the same shape. To skip updates with non-finite gradients, wrap the
    optimizer in ``optax.apply_if_finite``.

    Example:
      >>> loss_fn = lambda p, batch, key: jnp.mean((batch["x"] @ p["w"] - batch["y"]) ** 2)
      >>> state = create_train_state({"w": jnp.zeros(2)}, optax.sgd(0.1), jax.random.key(0))
      >>> step = jax.jit(train_step(loss_fn, optax.sgd(0.1)))
      >>> state, metrics = step(state, {"x": jnp.eye(2), "y": jnp.array([1.0, -1.0])})
      >>> int(state.step), float(metrics["loss"]), state.params["w"].tolist()
      (1, 1.0, [0.10000000149011612, -0.10000000149011612])
    """
    _check_loss_fn(loss_fn)
    _check_optimizer(optimizer)

    def scalar_loss(params: PyTree, batch: Batch, key: PRNGKey) -> Any:
        out = loss_fn(params, batch, key)
        loss = out[0] if has_aux else out
        if isinstance(loss, tuple | list | dict):
            raise TypeError(
                f"loss_fn returned a {type(loss).__name__}: return a scalar loss, or (loss, aux) with "
                "has_aux=True"
            )
        if jnp.shape(loss) != ():  # shapes are static: this runs once, at trace time
            raise TypeError(
                f"loss_fn must return a scalar loss (the mean over the batch), got shape {jnp.shape(loss)}"
            )
        return out

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        key = jax.random.fold_in(state.key, state.step)
        grad_fn = jax.value_and_grad(scalar_loss, has_aux=has_aux)
        value, grads = grad_fn(state.params, batch, key)
        loss, aux = value if has_aux else (value, {})
        metrics = {"loss": loss, **aux}
        if axis_name is not None:
            grads, metrics = jax.lax.pmean((grads, metrics), axis_name)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(state.step + 1, params, opt_state, state.key), metrics

    return step


def data_mesh(
    devices: Sequence[jax.Device] | None = None,
    *,
    axis_name: str = "data",
    axis_type: AxisType = AxisType.Auto,
) -> Mesh:
    """A one-axis device mesh for data parallelism.

    Args:
      devices: the devices to use (default: all of ``jax.devices()``, across hosts).
      axis_name: name of the batch axis.
      axis_type: ``AxisType.Auto`` (default; the compiler propagates shardings) or ``AxisType.Explicit``
        (sharding in types; some ops then need ``out_sharding=`` annotations).

    Example:
      >>> dict(data_mesh(jax.devices()[:1]).shape)
      {'data': 1}
    """
    if not isinstance(axis_type, AxisType):
        raise TypeError(f"axis_type must be a jax.sharding.AxisType, got {axis_type!r}")
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices must be non-empty")
    return Mesh(np.asarray(devices), (axis_name,), axis_types=(axis_type,))


def shard_batch(batch: Batch, mesh: Mesh, *, axis_name: str = "data") -> Batch:
    """Place a host-local NumPy batch on ``mesh``, split along the leading (batch) axis.

    With several processes each passes its own rows (as `jaxdl.data.Loader` yields them) and gets back
    the global array of all processes' rows, in process order.

    Args:
      batch: pytree of arrays with a common leading dimension, a positive multiple of this process's
        devices.
      mesh: a mesh from `data_mesh`.
      axis_name: the mesh axis to split over.

    Raises:
      ValueError: a leaf is a scalar, has no rows, or its rows do not split evenly over the devices.

    Example:
      >>> x = shard_batch({"x": np.zeros((4, 3))}, data_mesh(jax.devices()[:1]))["x"]
      >>> x.shape, x.sharding.spec
      ((4, 3), P('data',))
    """
    sharding = NamedSharding(mesh, P(axis_name))
    local_devices = len(sharding.addressable_devices)

    def put(x: Any) -> jax.Array:
        x = np.asarray(x)
        if x.ndim == 0 or x.shape[0] == 0 or x.shape[0] % local_devices:
            raise ValueError(
                f"batch leaves need a leading axis divisible by the {local_devices} local devices of the "
                f"mesh (and at least one row), got shape {x.shape}"
            )
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree.map(put, batch)


@functools.lru_cache(maxsize=32)
def _copy_to(sharding: NamedSharding) -> Callable[[PyTree], PyTree]:
    """A jitted copy of a pytree onto ``sharding`` (one compilation per sharding and tree shapes)."""
    return jax.jit(lambda tree: jax.tree.map(jnp.copy, tree), out_shardings=sharding)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Copy every leaf of ``tree`` to all devices of ``mesh`` (``NamedSharding(mesh, P())``).

    The result never shares buffers with ``tree``: `data_parallel`'s step donates (deletes) the state
    it is given, and the caller's arrays must survive that. (``jax.device_put`` alone would reuse the
    input's buffer for the copy on its own device, so the donated step would delete the caller's
    ``params`` too.) Peak memory is briefly two copies per device.

    With several processes every process must pass the same values (e.g. parameters initialised from
    the same seed); each places its copy on its own devices.

    Example:
      >>> params = {"w": jnp.ones(2)}
      >>> replicated = replicate(params, data_mesh(jax.devices()[:1]))
      >>> replicated["w"].sharding.spec
      P()
      >>> replicated["w"].delete()  # as a donating step would
      >>> params["w"].is_deleted()  # the caller's array is untouched
      False
    """
    sharding = NamedSharding(mesh, P())
    if sharding.is_fully_addressable:
        return _copy_to(sharding)(jax.device_put(tree, sharding))

    def put(x: Any) -> jax.Array:  # several processes: each supplies its (identical) copy for its own devices
        if jax.dtypes.issubdtype(jnp.result_type(x), jax.dtypes.prng_key):
            return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, tree)


def data_parallel(
    step_fn: Callable[[TrainState, Batch], tuple[TrainState, Metrics]],
    mesh: Mesh,
    *,
    axis_name: str = "data",
    donate: bool = True,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """Jit ``step_fn`` for data parallelism over ``mesh``: batch sharded, state and metrics replicated.

    ``step_fn`` is written for one device (``train_step(..., axis_name=None)``); the compiler splits
    the batch computation over the mesh and all-reduces the gradients. The result equals the
    one-device step up to float summation order.

    Args:
      step_fn: ``step(state, batch) -> (state, metrics)``.
      mesh: from `data_mesh`.
      axis_name: the mesh axis the batch is split over.
      donate: donate the input state's buffers (the caller must not reuse the state it passed in;
        `replicate` copies, so the arrays it was given stay valid).

    Returns:
      The jitted step. Pass a state placed with `replicate` and a batch placed with `shard_batch` (or,
      on one host, NumPy arrays, which it places itself).

    Raises:
      ValueError: (on each call) a batch leaf has no rows, or rows that do not split evenly over the
        mesh axis; an empty batch would give a NaN loss.

    Example:
      >>> mesh = data_mesh(jax.devices()[:1])
      >>> loss_fn = lambda p, batch, key: jnp.mean((batch["x"] @ p["w"]) ** 2)
      >>> step = data_parallel(train_step(loss_fn, optax.sgd(0.1)), mesh)
      >>> state = replicate(create_train_state({"w": jnp.ones(2)}, optax.sgd(0.1), jax.random.key(0)), mesh)
      >>> state, metrics = step(state, shard_batch({"x": np.eye(2, dtype=np.float32)}, mesh))
      >>> float(metrics["loss"])
      1.0
    """
    if axis_name not in mesh.shape:
        raise ValueError(
            f"axis_name {axis_name!r} is not an axis of the mesh, whose axes are {mesh.axis_names}"
        )
    num_shards = mesh.shape[axis_name]
    replicated = NamedSharding(mesh, P())
    jitted = jax.jit(
        step_fn,
        in_shardings=(replicated, NamedSharding(mesh, P(axis_name))),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,) if donate else (),
    )

    @functools.wraps(step_fn)
    def run(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        for path, leaf in jax.tree_util.tree_flatten_with_path(batch)[0]:
            shape = jnp.shape(leaf)
            if not shape or shape[0] == 0 or shape[0] % num_shards:
                raise ValueError(
                    f"batch{jax.tree_util.keystr(path)} needs a leading (batch) axis that is a positive "
                    f"multiple of the {num_shards} devices on mesh axis {axis_name!r}, got shape {shape}"
                )
        with jax.set_mesh(mesh):  # with Explicit axes, shardings are typed against this mesh while tracing
            return jitted(state, batch)

    return run


def data_parallel_pmap(
    step_fn: Callable[[TrainState, Batch], tuple[TrainState, Metrics]],
    *,
    axis_name: str = "data",
    devices: Sequence[jax.Device] | None = None,
    donate: bool = True,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """``jax.pmap`` ``step_fn`` over ``devices``, for code written in the pmap style.

    ``step_fn`` must average gradients over ``axis_name`` itself: build it with
    ``train_step(..., axis_name=axis_name)``. Inputs and outputs carry a leading device axis: make the
    state with `replicate_for_pmap`, split each batch with `split_for_pmap`, read results with
    `unreplicate`.

    Example:
      >>> loss_fn = lambda p, batch, key: jnp.mean((batch["x"] @ p["w"]) ** 2)
      >>> devices = jax.devices()[:1]
      >>> step = data_parallel_pmap(train_step(loss_fn, optax.sgd(0.1), axis_name="data"), devices=devices)
      >>> state = create_train_state({"w": jnp.ones(2)}, optax.sgd(0.1), jax.random.key(0))
      >>> state, metrics = step(replicate_for_pmap(state, 1), split_for_pmap({"x": np.eye(2)}, 1))
      >>> float(unreplicate(metrics)["loss"])
      1.0
    """
    return jax.pmap(step_fn, axis_name=axis_name, devices=devices, donate_argnums=(0,) if donate else ())


def replicate_for_pmap(tree: PyTree, devices: int | Sequence[jax.Device] | None = None) -> PyTree:
    """One copy of every leaf per device, stacked along a new leading axis (the pmap layout).

    Args:
      tree: pytree of arrays (typed PRNG keys included), e.g. a `TrainState`.
      devices: the pmap devices, or how many of ``jax.local_devices()`` to use (default: all local).

    Returns:
      The tree with leaves ``(num_devices, *shape)``, copy ``i`` placed on device ``i``, so that
      ``pmap`` (with donation) accepts it whatever device the input was committed to.

    Example:
      >>> replicate_for_pmap({"w": jnp.ones(3)}, 1)["w"].shape
      (1, 3)
    """
    if devices is None or isinstance(devices, int | np.integer):
        device_list = jax.local_devices()[: devices or None]
    else:
        device_list = list(devices)
    sharding = NamedSharding(Mesh(np.asarray(device_list), ("devices",)), P("devices"))
    return jax.tree.map(
        lambda x: jax.device_put(jnp.broadcast_to(x, (len(device_list), *jnp.shape(x))), sharding), tree
    )


def split_for_pmap(batch: Batch, num_devices: int) -> Batch:
    """Reshape every leaf ``(B, ...)`` to ``(num_devices, B // num_devices, ...)``.

    Example:
      >>> split_for_pmap({"x": np.zeros((8, 3))}, 4)["x"].shape
      (4, 2, 3)
    """

    def split(x: Any) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim == 0 or x.shape[0] % num_devices:
            raise ValueError(
                f"batch leaves need a leading axis divisible by {num_devices}, got shape {x.shape}"
            )
        return x.reshape(num_devices, x.shape[0] // num_devices, *x.shape[1:])

    return jax.tree.map(split, batch)


def unreplicate(tree: PyTree) -> PyTree:
    """The first device's copy of every leaf of a pmap-layout tree.

    Example:
      >>> unreplicate({"w": jnp.ones((2, 3))})["w"].shape
      (3,)
    """
    return jax.tree.map(lambda x: x[0], tree)
