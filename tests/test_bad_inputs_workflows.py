"""The checkpoint/parallel rows of the bad-input catalogue (issue #15, shared/reference/bad-inputs.md,
group `data`: shard_batch, data_parallel, train_step, create_train_state, data_mesh, Checkpointer), one
case per row, plus the workflow edges the issue names: saving an existing step, restoring into another
dtype, and `replicate` followed by a donating step. Each raises the specific error naming the argument
before XLA sees it, or gives the right result."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.checkpoint import Checkpointer
from jaxdl.parallel import create_train_state, data_mesh, data_parallel, replicate, shard_batch, train_step


def mse(params, batch, key):
    return jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2)


@pytest.fixture(scope="module")
def step_8():
    """A donating data-parallel SGD step over the 8 simulated devices (built, and compiled, once)."""
    return data_parallel(train_step(mse, optax.sgd(0.1)), data_mesh())


def fresh_state():
    return create_train_state({"w": jnp.ones((3, 1))}, optax.sgd(0.1), jax.random.key(0))


def batch_of(rows):
    return {"x": np.ones((rows, 3), np.float32), "y": np.zeros((rows, 1), np.float32)}


# (id, call(tmp_path, step_8), error type, words the message must contain)
ERRORS = [
    (
        "shard_batch 12 rows over 8 devices",
        lambda tmp, step: shard_batch({"x": np.zeros((12, 3))}, data_mesh()),
        ValueError,
        "divisible by the 8 local devices of the mesh",
    ),
    (
        "shard_batch 0 rows",
        lambda tmp, step: shard_batch({"x": np.zeros((0, 3))}, data_mesh()),
        ValueError,
        "at least one row",
    ),
    (
        "data_parallel step on an empty batch (0 rows)",
        lambda tmp, step: step(replicate(fresh_state(), data_mesh()), batch_of(0)),
        ValueError,
        "batch['x'] needs a leading (batch) axis that is a positive multiple of the 8 devices",
    ),
    (
        "data_parallel step on 12 rows over 8 devices",
        lambda tmp, step: step(replicate(fresh_state(), data_mesh()), batch_of(12)),
        ValueError,
        "batch['x'] needs a leading (batch) axis",
    ),
    (
        "data_parallel axis_name not on the mesh",
        lambda tmp, step: data_parallel(train_step(mse, optax.sgd(0.1)), data_mesh(), axis_name="batch"),
        ValueError,
        "axis_name 'batch' is not an axis of the mesh",
    ),
    (
        "train_step(loss_fn='not callable')",
        lambda tmp, step: train_step("nope", optax.sgd(0.1)),
        TypeError,
        "loss_fn must be callable",
    ),
    (
        "train_step(optimizer=optax.sgd) (factory, not instance)",
        lambda tmp, step: train_step(mse, optax.sgd),
        TypeError,
        "optimizer must be an optax GradientTransformation",
    ),
    (
        "train_step with a loss returning a vector",
        lambda tmp, step: jax.jit(train_step(lambda p, b, k: b["x"] @ p["w"], optax.sgd(0.1)))(
            fresh_state(), batch_of(2)
        ),
        TypeError,
        "loss_fn must return a scalar loss (the mean over the batch), got shape (2, 1)",
    ),
    (
        "train_step with a loss returning (loss, aux) without has_aux",
        lambda tmp, step: jax.jit(train_step(lambda p, b, k: (mse(p, b, k), {}), optax.sgd(0.1)))(
            fresh_state(), batch_of(2)
        ),
        TypeError,
        "has_aux=True",
    ),
    (
        "train_step with a 2-arg loss_fn(params, batch)",
        lambda tmp, step: train_step(lambda p, b: mse(p, b, None), optax.sgd(0.1)),
        TypeError,
        "loss_fn must accept three positional arguments (params, batch, key)",
    ),
    (
        "create_train_state(key=0) int key",
        lambda tmp, step: create_train_state({"w": jnp.ones(2)}, optax.sgd(0.1), 0),
        TypeError,
        "key must be one PRNG key, jax.random.key(seed), got 0",
    ),
    (
        "create_train_state with a batch of keys",
        lambda tmp, step: create_train_state(
            {"w": jnp.ones(2)}, optax.sgd(0.1), jax.random.split(jax.random.key(0))
        ),
        TypeError,
        "key must be one PRNG key",
    ),
    (
        "create_train_state(optimizer=optax.adam) (factory)",
        lambda tmp, step: create_train_state({"w": jnp.ones(2)}, optax.adam, jax.random.key(0)),
        TypeError,
        "optimizer must be an optax GradientTransformation",
    ),
    ("data_mesh(devices=[])", lambda tmp, step: data_mesh([]), ValueError, "devices must be non-empty"),
    (
        "data_mesh(axis_type='explicit')",
        lambda tmp, step: data_mesh(axis_type="explicit"),
        TypeError,
        "axis_type must be a jax.sharding.AxisType",
    ),
    (
        "Checkpointer(max_to_keep=0)",
        lambda tmp, step: Checkpointer(tmp, max_to_keep=0),
        ValueError,
        "max_to_keep must be a positive integer or None, got 0",
    ),
    (
        "Checkpointer(save_interval_steps=0)",
        lambda tmp, step: Checkpointer(tmp, save_interval_steps=0),
        ValueError,
        "save_interval_steps must be a positive integer, got 0",
    ),
    (
        "Checkpointer.save(step=1.7) float step",
        lambda tmp, step: _with_checkpointer(tmp, lambda c: c.save(1.7, {"w": jnp.ones(2)})),
        TypeError,
        "step must be an integer",
    ),
    (
        "Checkpointer.save(step=True)",
        lambda tmp, step: _with_checkpointer(tmp, lambda c: c.save(True, {"w": jnp.ones(2)})),
        TypeError,
        "step must be an integer",
    ),
    (
        "Checkpointer.save on an existing step",
        lambda tmp, step: _with_checkpointer(
            tmp, lambda c: [c.save(3, {"w": jnp.ones(2)}) for _ in range(2)]
        ),
        ValueError,
        "step 3 is already saved",
    ),
    (
        "Checkpointer.save of a step older than the latest",
        lambda tmp, step: _with_checkpointer(tmp, lambda c: [c.save(s, {"w": jnp.ones(2)}) for s in (3, 2)]),
        ValueError,
        "step 2 is older than the latest saved step 3",
    ),
    (
        "Checkpointer.save of a pytree holding a Python str",
        lambda tmp, step: _with_checkpointer(tmp, lambda c: c.save(0, {"name": "run", "w": jnp.ones(2)})),
        ValueError,
        "'name'",  # orbax names the key
    ),
    (
        "Checkpointer.restore of a float32 checkpoint into a bfloat16 target",
        lambda tmp, step: _with_checkpointer(
            tmp, lambda c: (c.save(0, {"w": jnp.ones(2)}), c.restore({"w": jnp.ones(2, jnp.bfloat16)}))
        ),
        ValueError,
        "w: checkpoint has dtype float32, target bfloat16 (pass cast=True to convert)",
    ),
    (
        "Checkpointer.restore(step=1.5)",
        lambda tmp, step: _with_checkpointer(
            tmp, lambda c: (c.save(1, {"w": jnp.ones(2)}), c.restore({"w": jnp.ones(2)}, step=1.5))
        ),
        TypeError,
        "step must be an integer",
    ),
]


def _with_checkpointer(directory, body):
    with Checkpointer(directory) as ckpt:
        return body(ckpt)


@pytest.mark.parametrize(("call", "error", "words"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_refused_with_a_message_naming_the_argument(call, error, words, tmp_path, step_8):
    with pytest.raises(error) as info:
        call(tmp_path, step_8)
    assert words in str(info.value)


# --- accepted and right -------------------------------------------------------------------------------


def test_save_step_minus_one_is_accepted(tmp_path):
    # catalogue: accepted and fine (orbax allows negative steps); it restores as saved.
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.save(-1, {"w": jnp.arange(2.0)})
        assert ckpt.all_steps() == [-1]
        np.testing.assert_array_equal(ckpt.restore({"w": jnp.zeros(2)})["w"], [0.0, 1.0])


def test_save_accepts_the_state_step_array(tmp_path):
    state = fresh_state()._replace(step=jnp.array(5, jnp.int32))
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.save(state.step, state)
        assert ckpt.all_steps() == [5]


def test_restore_with_cast_converts_deliberately(tmp_path):
    weights = jnp.array([1.0, 1.0 + 2.0**-10, 3.0])  # the middle value is not a bfloat16
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(0, {"w": weights})
        restored = ckpt.restore({"w": jnp.zeros(3, jnp.bfloat16)}, cast=True)["w"]
    assert restored.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(restored, np.float32), [1.0, 1.0, 3.0])  # round to nearest


def test_legacy_uint32_key_is_accepted():
    state = create_train_state({"w": jnp.ones(2)}, optax.sgd(0.1), jax.random.PRNGKey(0))
    assert state.key.dtype == jnp.uint32 and state.key.shape == (2,)


def _host_copy(tree):
    unkey = lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
    return jax.tree.map(lambda x: np.array(unkey(x)), tree)


def test_replicate_then_donating_step_keeps_the_callers_arrays(step_8):
    state = fresh_state()
    before = _host_copy(state)
    new_state, metrics = step_8(replicate(state, data_mesh()), batch_of(8))
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(state))
    for got, want in zip(jax.tree.leaves(_host_copy(state)), jax.tree.leaves(before), strict=True):
        np.testing.assert_array_equal(got, want)
    # mean((x·w - y)²) with x = 1 (3 features), y = 0, w = 1: loss 9, gradient 2·3 = 6 per weight
    assert float(metrics["loss"]) == pytest.approx(9.0)
    np.testing.assert_allclose(new_state.params["w"], np.full((3, 1), 1.0 - 0.1 * 6.0), rtol=1e-6)
