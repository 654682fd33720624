"""Tests for jaxdl.checkpoint: exact round trips, keep-last-k, async saves, layouts, exact resume."""

import os
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxdl.optim
from jaxdl.checkpoint import Checkpointer
from jaxdl.data import ArraySource, Loader
from jaxdl.parallel import (
    TrainState,
    create_train_state,
    data_mesh,
    data_parallel,
    replicate,
    shard_batch,
    train_step,
)

REPO = Path(__file__).resolve().parents[1]
OPTIMIZERS = {
    "optax.chain(clip, adamw)": lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2)),
    "jaxdl.diffgrad": lambda: jaxdl.optim.diffgrad(1e-2),
    "jaxdl.lamb": lambda: jaxdl.optim.lamb(1e-2),
    "jaxdl.perp_adamw": lambda: jaxdl.optim.perp_adamw(1e-2),
    "jaxdl.perp_sgd": lambda: jaxdl.optim.perp_sgd(0.1, momentum=0.9),
}


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert y.dtype == x.dtype
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# --- the workload of the exact-resume test; the fresh process imports it from here -----------------

RESUME_STEPS = 4  # N: the test compares 2N straight steps with N, save, restore elsewhere, N more


def resume_workload():
    """A dropout MLP trained with diffGrad on 8 devices from a shuffled loader: every source of state."""
    rng = np.random.default_rng(0)
    data = ArraySource({"x": rng.normal(size=(96, 5)).astype(np.float32), "y": rng.integers(0, 3, 96)})
    loader = Loader(data, batch_size=16, seed=1)  # 6 batches per epoch: 2N steps cross an epoch

    def loss_fn(params, batch, key):
        h = jax.nn.relu(batch["x"] @ params["w1"])
        h = h * jax.random.bernoulli(key, 0.75, h.shape) / 0.75
        logits = h @ params["w2"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    def make_state():
        k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
        params = {
            "w1": jax.random.normal(k1, (5, 32)) / 5**0.5,
            "w2": jax.random.normal(k2, (32, 3)) / 32**0.5,
        }
        return create_train_state(params, optimizer, k3)

    optimizer = jaxdl.optim.diffgrad(1e-2)
    mesh = data_mesh()
    step = data_parallel(train_step(loss_fn, optimizer), mesh)
    return loader, make_state, step, mesh


def train(state, num_steps, loader, step, mesh):
    batches = loader.stream(start_step=int(state.step))
    for _ in range(num_steps):
        state, _ = step(state, shard_batch(next(batches), mesh))
    return state


def resume_in_this_process(directory: str) -> None:
    """Restore the latest checkpoint, train N more steps, save the result as step 2N."""
    loader, make_state, step, mesh = resume_workload()
    with Checkpointer(directory) as ckpt:
        state = ckpt.restore(jax.eval_shape(make_state), sharding=NamedSharding(mesh, P()))
        ckpt.save(2 * RESUME_STEPS, train(state, RESUME_STEPS, loader, step, mesh))


@pytest.mark.slow
def test_exact_resume_in_a_fresh_process(tmp_path):
    loader, make_state, step, mesh = resume_workload()
    straight = train(replicate(make_state(), mesh), 2 * RESUME_STEPS, loader, step, mesh)
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(RESUME_STEPS, train(replicate(make_state(), mesh), RESUME_STEPS, loader, step, mesh))
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    code = (
        f"from tests.test_checkpoint import resume_in_this_process; resume_in_this_process({str(tmp_path)!r})"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.all_steps() == [RESUME_STEPS, 2 * RESUME_STEPS]
        resumed = ckpt.restore(straight)
    assert int(resumed.step) == 2 * RESUME_STEPS
    assert_trees_equal(resumed, straight)  # bit-identical: params, diffGrad moments, previous gradient, key


# --- round trips ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_train_state_round_trip_keeps_types(tmp_path, name):
    optimizer = OPTIMIZERS[name]()
    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
    state = create_train_state(params, optimizer, jax.random.key(7))
    grads = jax.tree.map(jnp.cos, params)
    updates, opt_state = optimizer.update(grads, state.opt_state, params)  # non-trivial moments
    state = state._replace(
        step=state.step + 1, params=optax.apply_updates(params, updates), opt_state=opt_state
    )
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, state)
        restored = ckpt.restore(jax.eval_shape(lambda: state))
    assert isinstance(restored, TrainState)
    for got, want in zip(
        jax.tree.leaves(restored.opt_state, is_leaf=lambda x: isinstance(x, tuple) and hasattr(x, "_fields")),
        jax.tree.leaves(state.opt_state, is_leaf=lambda x: isinstance(x, tuple) and hasattr(x, "_fields")),
        strict=True,
    ):
        assert type(got) is type(want)  # optax NamedTuples come back as themselves
    assert_trees_equal(restored, state)


def test_nnx_state_round_trip(tmp_path):
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.dense = nnx.Linear(3, 4, rngs=rngs)
            self.norm = nnx.BatchNorm(4, rngs=rngs)

        def __call__(self, x):
            return self.norm(self.dense(x))

    model = Net(nnx.Rngs(0))
    model(jnp.ones((5, 3)) * 2.0)  # training mode: moves the batch statistics off their init
    model.eval()
    x = jnp.linspace(-1, 1, 6).reshape(2, 3)
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(0, nnx.state(model))
        fresh = nnx.eval_shape(lambda: Net(nnx.Rngs(1)))
        restored = ckpt.restore(nnx.state(fresh))
    assert isinstance(restored, nnx.State)
    new_model = Net(nnx.Rngs(1))
    nnx.update(new_model, restored)
    new_model.eval()
    np.testing.assert_array_equal(new_model(x), model(x))


def test_linen_variables_round_trip(tmp_path):
    model = nn.Sequential([nn.Dense(4), nn.BatchNorm(use_running_average=False)])
    variables = model.init(jax.random.key(0), jnp.ones((2, 3)))
    _, updates = model.apply(variables, jnp.ones((5, 3)) * 3.0, mutable=["batch_stats"])
    variables = {**variables, **updates}
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(0, variables)
        restored = ckpt.restore(jax.eval_shape(model.init, jax.random.key(1), jnp.ones((2, 3))))
    assert_trees_equal(restored, variables)


# --- manager behaviour ------------------------------------------------------------------------------


def test_keeps_last_k_and_interval(tmp_path):
    state = {"x": jnp.zeros(2)}
    with Checkpointer(tmp_path / "k", max_to_keep=2) as ckpt:
        for step in range(5):
            assert ckpt.save(step, {"x": jnp.full(2, float(step))})
        assert ckpt.all_steps() == [3, 4] and ckpt.latest_step() == 4
        np.testing.assert_array_equal(ckpt.restore(state)["x"], [4.0, 4.0])
        np.testing.assert_array_equal(ckpt.restore(state, step=3)["x"], [3.0, 3.0])
    with Checkpointer(tmp_path / "i", max_to_keep=None, save_interval_steps=3) as ckpt:
        saved = [ckpt.save(step, state) for step in range(7)]
        assert saved == [True, False, False, True, False, False, True]
        assert ckpt.save(7, state, force=True)
        assert ckpt.all_steps() == [0, 3, 6, 7]


def test_async_save_survives_donation(tmp_path):
    state = {"w": jnp.arange(4.0)}
    expected = np.asarray(state["w"])
    bump = jax.jit(lambda s: {"w": s["w"] + 1.0}, donate_argnums=0)
    with Checkpointer(tmp_path, async_save=True) as ckpt:
        ckpt.save(0, state)
        state = bump(state)  # the saved buffers may be donated as soon as save returns
        ckpt.wait()
        np.testing.assert_array_equal(ckpt.restore(state)["w"], expected)


def test_restore_onto_another_layout(tmp_path, mesh):
    state = {"w": jnp.arange(16.0).reshape(8, 2), "b": jnp.ones(3)}
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(0, state)  # from one device
        replicated = ckpt.restore(state, sharding=NamedSharding(mesh, P()))
        target = {
            "w": jax.ShapeDtypeStruct((8, 2), jnp.float32, sharding=NamedSharding(mesh, P("data"))),
            "b": jax.ShapeDtypeStruct((3,), jnp.float32, sharding=NamedSharding(mesh, P())),
        }
        split = ckpt.restore(target)
    assert replicated["w"].sharding == NamedSharding(mesh, P()) and len(replicated["w"].devices()) == 8
    assert split["w"].sharding.spec == P("data") and split["w"].addressable_shards[0].data.shape == (1, 2)
    assert_trees_equal(replicated, state)
    assert_trees_equal(split, state)


# --- errors -----------------------------------------------------------------------------------------


def test_missing_checkpoint_errors(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(FileNotFoundError, match="no checkpoint in"):
            ckpt.restore({"x": jnp.zeros(2)})
        ckpt.save(3, {"x": jnp.zeros(2)})
        with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 5 .* saved steps: \[3\]"):
            ckpt.restore({"x": jnp.zeros(2)}, step=5)


def test_incompatible_target_errors(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(0, {"params": {"w": jnp.zeros((2, 3))}, "step": jnp.array(0)})
        with pytest.raises(ValueError, match=r"params/w: checkpoint has shape \(2, 3\), target \(3, 2\)"):
            ckpt.restore({"params": {"w": jnp.zeros((3, 2))}, "step": jnp.array(0)})
        with pytest.raises(
            ValueError, match="missing from the checkpoint: params/v(.|\n)*not in the target: params/w"
        ):
            ckpt.restore({"params": {"v": jnp.zeros((2, 3))}, "step": jnp.array(0)})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_to_keep": 0}, "max_to_keep must be"),
        ({"save_interval_steps": 0}, "save_interval_steps must be"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Checkpointer(tmp_path, **kwargs)
