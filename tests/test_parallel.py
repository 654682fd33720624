"""Tests for jaxdl.parallel: sharded and pmap data parallelism equal one-device training."""

import functools
import itertools
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxdl.optim
from jaxdl.data import ArraySource, Loader
from jaxdl.parallel import (
    TrainState,
    create_train_state,
    data_mesh,
    data_parallel,
    data_parallel_pmap,
    replicate,
    replicate_for_pmap,
    shard_batch,
    split_for_pmap,
    train_step,
    unreplicate,
)

OPTIMIZERS = {
    "optax.sgd": lambda: optax.sgd(0.1, momentum=0.9),
    "optax.adam": lambda: optax.adam(1e-2),
    "jaxdl.diffgrad": lambda: jaxdl.optim.diffgrad(1e-2),
    "jaxdl.lamb": lambda: jaxdl.optim.lamb(1e-2),
    "jaxdl.perp_adamw": lambda: jaxdl.optim.perp_adamw(1e-2),
    "jaxdl.perp_sgd": lambda: jaxdl.optim.perp_sgd(0.1),
}
STEPS, BATCH = 3, 32


def init_params(key):
    k1, k2 = jax.random.split(key)
    return {
        "hidden": {"w": jax.random.normal(k1, (6, 16)) / 6**0.5, "b": jnp.zeros(16)},
        "out": {"w": jax.random.normal(k2, (16, 4)) / 4.0, "b": jnp.zeros(4)},
    }


def classifier_loss(params, batch, key, *, dropout):
    h = jnp.tanh(batch["x"] @ params["hidden"]["w"] + params["hidden"]["b"])
    if dropout:  # the key enters the math, so sharded and one-device runs must draw the same mask
        h = h * jax.random.bernoulli(key, 0.8, h.shape) / 0.8
    logits = h @ params["out"]["w"] + params["out"]["b"]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
    return loss, {"accuracy": (logits.argmax(-1) == batch["y"]).mean()}


def batches(seed=0):
    rng = np.random.default_rng(seed)
    return [
        {"x": rng.normal(size=(BATCH, 6)).astype(np.float32), "y": rng.integers(0, 4, BATCH)}
        for _ in range(STEPS)
    ]


@functools.cache
def run_one_device(name, *, dropout):
    optimizer = OPTIMIZERS[name]()
    loss = lambda p, b, k: classifier_loss(p, b, k, dropout=dropout)
    step = jax.jit(train_step(loss, optimizer, has_aux=True))
    state = create_train_state(init_params(jax.random.key(1)), optimizer, jax.random.key(2))
    history = []
    for batch in batches():
        state, metrics = step(state, batch)
        history.append(metrics)
    return state, history


def assert_close(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-6), a, b)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "axis_type"),
    [(name, AxisType.Auto) for name in sorted(OPTIMIZERS)] + [("optax.adam", AxisType.Explicit)],
)
def test_sharded_equals_one_device(name, axis_type):
    optimizer = OPTIMIZERS[name]()
    mesh = data_mesh(axis_type=axis_type)
    assert mesh.shape["data"] == 8 and mesh.axis_types == (axis_type,)
    with jax.default_matmul_precision("highest"):
        expected_state, expected_history = run_one_device(name, dropout=True)
        loss = lambda p, b, k: classifier_loss(p, b, k, dropout=True)
        step = data_parallel(train_step(loss, optimizer, has_aux=True), mesh)
        state = replicate(
            create_train_state(init_params(jax.random.key(1)), optimizer, jax.random.key(2)), mesh
        )
        history = []
        for batch in batches():
            batch = shard_batch(batch, mesh)
            assert batch["x"].sharding.spec == P("data") and len(batch["x"].addressable_shards) == 8
            state, metrics = step(state, batch)
            history.append(metrics)
    for leaf in jax.tree.leaves(state.params):
        assert leaf.sharding.is_equivalent_to(NamedSharding(mesh, P()), leaf.ndim)
    assert int(state.step) == STEPS
    assert_close(state.params, expected_state.params)
    assert_close(state.opt_state, expected_state.opt_state)
    assert_close(history, expected_history)


@pytest.mark.slow
# Under pmap the optimizer runs on each device on gradients already averaged by pmean, so the
# optimizer does not meet the device axis: two of them (one with per-leaf reductions) suffice here;
# the sharded test above covers every optimizer, where the compiler does split the optimizer's work.
@pytest.mark.parametrize("name", ["optax.adam", "jaxdl.perp_adamw"])
def test_pmap_equals_one_device(name):
    optimizer = OPTIMIZERS[name]()
    n = jax.device_count()
    with jax.default_matmul_precision("highest"):
        expected_state, expected_history = run_one_device(name, dropout=False)
        loss = lambda p, b, k: classifier_loss(p, b, k, dropout=False)
        step = data_parallel_pmap(train_step(loss, optimizer, axis_name="data", has_aux=True))
        state = create_train_state(init_params(jax.random.key(1)), optimizer, jax.random.key(2))
        state = jax.device_put(state, jax.devices()[0])  # committed to one device, as a restored state is
        state = replicate_for_pmap(state, n)
        history = []
        for batch in batches():
            state, metrics = step(state, split_for_pmap(batch, n))
            history.append(unreplicate(metrics))
    # every device holds the same state
    jax.tree.map(lambda x: np.testing.assert_array_equal(x, np.broadcast_to(x[0], x.shape)), state.params)
    state = unreplicate(state)
    assert int(state.step) == STEPS
    assert_close(state.params, expected_state.params)
    assert_close(state.opt_state, expected_state.opt_state)
    assert_close(history, expected_history)


def test_step_closed_form_sgd():
    # Linear least squares: one SGD step is w - lr * 2/B * X^T (X w - y), by hand.
    rng = np.random.default_rng(0)
    x, y, w = rng.normal(size=(16, 3)), rng.normal(size=16), rng.normal(size=3)
    loss = lambda p, b, k: jnp.mean((b["x"] @ p - b["y"]) ** 2)
    mesh = data_mesh()
    with jax.enable_x64(True):
        state = replicate(create_train_state(jnp.asarray(w), optax.sgd(0.05), jax.random.key(0)), mesh)
        state, metrics = data_parallel(train_step(loss, optax.sgd(0.05)), mesh)(
            state, shard_batch({"x": x, "y": y}, mesh)
        )
        np.testing.assert_allclose(state.params, w - 0.05 * 2 / 16 * x.T @ (x @ w - y), rtol=1e-12)
        np.testing.assert_allclose(metrics["loss"], np.mean((x @ w - y) ** 2), rtol=1e-12)


def test_randomness_depends_on_step_only():
    # The loss returns a draw from the step key: fold_in(key, step) for the step being taken.
    loss = lambda p, b, k: jnp.sum(p) * 0 + jax.random.uniform(k)
    step = jax.jit(train_step(loss, optax.sgd(0.1)))
    state = create_train_state(jnp.zeros(2), optax.sgd(0.1), jax.random.key(5))
    draws = []
    for _ in range(3):
        state, metrics = step(state, None)
        draws.append(float(metrics["loss"]))
    expected = [float(jax.random.uniform(jax.random.fold_in(jax.random.key(5), s))) for s in range(3)]
    assert draws == expected and len(set(draws)) == 3


def test_train_state_is_a_pytree_of_four_fields():
    state = create_train_state({"w": jnp.ones(2)}, optax.adam(1e-3), jax.random.key(0))
    assert isinstance(state, TrainState) and state.step.dtype == jnp.int32
    assert jax.tree.structure(jax.tree.map(lambda x: 0, state)) == jax.tree.structure(state)


def test_bad_inputs():
    mesh = data_mesh()
    with pytest.raises(ValueError, match="divisible by the 8 local devices"):
        shard_batch({"x": np.zeros((12, 2))}, mesh)
    with pytest.raises(ValueError, match="divisible by 8"):
        split_for_pmap({"x": np.zeros((12, 2))}, 8)
    with pytest.raises(TypeError, match="axis_type must be a jax.sharding.AxisType"):
        data_mesh(axis_type="explicit")
    with pytest.raises(ValueError, match="devices must be non-empty"):
        data_mesh([])
    with pytest.raises(TypeError, match="optimizer must be an optax GradientTransformation"):
        train_step(lambda p, b, k: 0.0, "adam")
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        train_step(None, optax.sgd(0.1))


def test_default_auto_mesh_handles_embedding_lookups():
    # Why data_mesh defaults to Auto axes: a gather with sharded indices traces there, not under Explicit.
    table = jax.random.normal(jax.random.key(0), (11, 4))
    batch = {"tokens": np.arange(16) % 11}
    loss = lambda p, b, k: jnp.mean(jnp.take(p, b["tokens"], axis=0) ** 2)
    step = train_step(loss, optax.sgd(0.5))
    state = create_train_state(table, optax.sgd(0.5), jax.random.key(0))
    expected, _ = jax.jit(step)(state, batch)
    mesh = data_mesh()
    assert mesh.axis_types == (AxisType.Auto,)
    got, _ = data_parallel(step, mesh, donate=False)(replicate(state, mesh), shard_batch(batch, mesh))
    np.testing.assert_allclose(got.params, expected.params, rtol=1e-6)
    explicit = data_mesh(axis_type=AxisType.Explicit)
    with pytest.raises(Exception, match="out_sharding"):
        data_parallel(step, explicit, donate=False)(replicate(state, explicit), shard_batch(batch, explicit))


# --- two processes (multi-host on CPU) ----------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def train_from_loader(per_process_batch: int):
    """Three Adam steps on batches from a process-sharded Loader; returns host copies of params and losses."""
    rng = np.random.default_rng(3)
    source = ArraySource({"x": rng.normal(size=(200, 6)).astype(np.float32), "y": rng.integers(0, 4, 200)})
    loader = Loader(source, batch_size=per_process_batch, seed=0)  # this process's rows of every batch
    optimizer = optax.adam(1e-2)
    mesh = data_mesh()
    loss = lambda p, b, k: classifier_loss(p, b, k, dropout=True)
    step = data_parallel(train_step(loss, optimizer, has_aux=True), mesh)
    state = replicate(create_train_state(init_params(jax.random.key(1)), optimizer, jax.random.key(2)), mesh)
    losses = []
    for batch in itertools.islice(loader.stream(), STEPS):
        state, metrics = step(state, shard_batch(batch, mesh))
        losses.append(np.asarray(metrics["loss"].addressable_data(0)))
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), state.params), np.stack(losses)


def multihost_worker(process_id: int, port: int, out: str) -> None:
    """One of two processes with 4 CPU devices each, joined by jax.distributed (run in a subprocess)."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
    assert jax.process_count() == 2 and jax.device_count() == 8 and jax.local_device_count() == 4
    params, losses = train_from_loader(per_process_batch=8)
    np.savez(out, losses=losses, **{"/".join(k): v for k, v in _flatten(params).items()})
    jax.distributed.shutdown()


def _flatten(tree, prefix=()):
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _flatten(sub, (*prefix, key)).items()}
    return {prefix: tree}


@pytest.mark.slow
def test_two_processes_equal_one_process(tmp_path):
    with socket.socket() as sock:  # a free port for the coordinator
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"from tests.test_parallel import multihost_worker; "
                f"multihost_worker({i}, {port}, {str(tmp_path / f'p{i}.npz')!r})",
            ],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    expected_params, expected_losses = train_from_loader(per_process_batch=16)  # one process, 8 devices
    expected = {"/".join(k): v for k, v in _flatten(expected_params).items()}
    for i in range(2):
        got = np.load(tmp_path / f"p{i}.npz")
        np.testing.assert_allclose(got["losses"], expected_losses, rtol=2e-5)
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, rtol=2e-5, atol=2e-6)
