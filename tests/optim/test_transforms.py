"""Every jaxdl optimizer under JAX's transforms, optax's wrappers, orbax, and bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxdl.optim import diffgrad, lamb, perp_adamw, perp_sgd

OPTIMIZERS = {
    "diffgrad": lambda lr=1e-2, **kw: diffgrad(lr, weight_decay=0.01, **kw),
    "diffgrad-decoupled": lambda lr=1e-2, **kw: diffgrad(lr, weight_decay=0.01, decoupled=True, **kw),
    "lamb": lambda lr=1e-2, **kw: lamb(lr, weight_decay=0.01, **kw),
    "perp_adamw": lambda lr=1e-2, **kw: perp_adamw(lr, **kw),
    "perp_sgd": lambda lr=1e-2, **kw: perp_sgd(lr, momentum=0.9, **kw),
}
ALIASES = {"diffgrad": diffgrad, "lamb": lamb, "perp_adamw": perp_adamw, "perp_sgd": perp_sgd}
parametrize_optimizers = pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())


def _params(key=0):
    k1, k2 = jax.random.split(jax.random.key(key))
    return {"w": jax.random.normal(k1, (8, 4)), "b": jax.random.normal(k2, (4,))}


def _grads(step):
    return jax.tree.map(lambda p: jnp.cos(p * (step + 1.0)), _params(100))


def _train(tx, params, steps, start=0, state=None):
    state = tx.init(params) if state is None else state
    for i in range(start, start + steps):
        updates, state = tx.update(_grads(i), state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def _lane(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def _step(tx):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


@parametrize_optimizers
def test_jit_equals_eager_without_retracing(make):
    tx = make()
    params, state = _params(), make().init(_params())
    traces = []

    def traced_step(*args):
        traces.append(1)
        return _step(tx)(*args)

    step = jax.jit(traced_step)
    eager = (params, state)
    for i in range(3):
        params, state = step(params, state, _grads(i))
        eager = _step(tx)(*eager, _grads(i))
    chex.assert_trees_all_close((params, state), eager, rtol=1e-6, atol=1e-7)
    assert len(traces) == 1, "the step was traced again: the state changed type or shape"


@parametrize_optimizers
def test_vmap_over_independent_states(make):
    tx = make()
    keys = jnp.arange(3)
    params = jax.vmap(_params)(keys)
    state = jax.vmap(tx.init)(params)
    grads = jax.vmap(lambda k: jax.tree.map(lambda p: jnp.cos(p * (k + 2.0)), _params(100)))(keys)
    batched, _ = jax.vmap(_step(tx))(params, state, grads)
    for i in range(3):
        single, _ = _step(tx)(_lane(params, i), tx.init(_params(i)), _lane(grads, i))
        chex.assert_trees_all_close(_lane(batched, i), single, rtol=1e-6, atol=1e-7)


@parametrize_optimizers
def test_pmap_with_pmean_equals_single_device(make):
    tx, n = make(), jax.device_count()
    params = _params()
    per_device_grads = jax.tree.map(
        lambda g: g[None] * jnp.linspace(0.5, 1.5, n).reshape(-1, *[1] * g.ndim), _grads(0)
    )
    mean_grads = jax.tree.map(lambda g: g.mean(0), per_device_grads)

    def step(params, state, grads):
        return _step(tx)(params, state, jax.lax.pmean(grads, "d"))

    replicate = lambda tree: jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *x.shape)), tree)
    out, _ = jax.pmap(step, axis_name="d")(replicate(params), replicate(tx.init(params)), per_device_grads)
    expected, _ = _step(tx)(params, tx.init(params), mean_grads)
    for i in range(n):
        chex.assert_trees_all_close(_lane(out, i), expected, rtol=1e-5, atol=1e-6)


@parametrize_optimizers
def test_sharded_jit_over_eight_devices(make, mesh):
    tx = make()
    params = {"w": jax.random.normal(jax.random.key(0), (16, 8)), "b": jnp.linspace(-1, 1, 8)}
    grads = jax.tree.map(lambda p: jnp.sin(3 * p), params)
    state = tx.init(params)
    sharded = NamedSharding(mesh, P("data"))
    place = lambda tree: jax.tree.map(
        lambda x: jax.device_put(x, sharded if x.ndim and x.shape[0] % 8 == 0 else NamedSharding(mesh, P())),
        tree,
    )
    out, new_state = jax.jit(_step(tx))(place(params), place(state), place(grads))
    expected, expected_state = _step(tx)(params, state, grads)
    chex.assert_trees_all_close((out, new_state), (expected, expected_state), rtol=1e-5, atol=1e-6)
    assert out["w"].sharding.is_equivalent_to(sharded, 2)


@pytest.mark.parametrize("name", ALIASES)
def test_inject_hyperparams_gives_identical_updates(name):
    alias = ALIASES[name]
    plain, injected = alias(1e-2), optax.inject_hyperparams(alias)(learning_rate=1e-2)
    a, _ = _train(plain, _params(), 3)
    b, state = _train(injected, _params(), 3)
    chex.assert_trees_all_close(a, b, rtol=1e-6, atol=1e-7)
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(1e-2)


@parametrize_optimizers
def test_learning_rate_schedule(make):
    schedule = optax.linear_schedule(1e-2, 0.0, transition_steps=2)
    params, _ = _train(make(schedule), _params(), 4)
    after_two, _ = _train(make(schedule), _params(), 2)
    chex.assert_trees_all_close(params, after_two)  # the rate is 0 from step 3 on


@parametrize_optimizers
def test_bf16_params_keep_their_dtype(make):
    tx = make()
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _params())
    updates, state = tx.update(
        jax.tree.map(lambda x: x.astype(jnp.bfloat16), _grads(0)), tx.init(params), params
    )
    chex.assert_trees_all_equal_dtypes(updates, params)
    chex.assert_trees_all_equal_dtypes(optax.apply_updates(params, updates), params)


@parametrize_optimizers
def test_donated_step_equals_the_undonated_step(make):
    tx = make()
    donating, plain = jax.jit(_step(tx), donate_argnums=(0, 1)), jax.jit(_step(tx))
    expected = (_params(), tx.init(_params()))
    donated = (_params(), tx.init(_params()))  # fresh buffers: these are consumed
    for i in range(2):
        expected = plain(*expected, _grads(i))
        donated = donating(*donated, _grads(i))
    jax.tree.map(np.testing.assert_array_equal, donated, expected)


@parametrize_optimizers
def test_orbax_round_trip_continues_bit_identically(make, tmp_path):
    tx = make()
    params, state = _train(tx, _params(), 3)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "ckpt", {"params": params, "opt_state": state})
    checkpointer.wait_until_finished()
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"params": params, "opt_state": state})
    restored = checkpointer.restore(tmp_path / "ckpt", target)
    assert jax.tree.structure(restored["opt_state"]) == jax.tree.structure(state)
    continued, _ = _train(tx, params, 3, start=3, state=state)
    resumed, _ = _train(tx, restored["params"], 3, start=3, state=restored["opt_state"])
    jax.tree.map(np.testing.assert_array_equal, continued, resumed)


def test_vmapped_learning_rate_sweep_equals_separate_runs():
    """Hyperparameters are traceable: one jitted step trains a model per learning rate."""
    rates = jnp.array([1e-3, 1e-2, 3e-2])
    make = optax.inject_hyperparams(diffgrad)
    tx = make(learning_rate=1e-3)
    params = _params()
    states = jax.vmap(lambda lr: make(learning_rate=lr).init(params))(rates)
    swept = jax.tree.map(lambda x: jnp.broadcast_to(x, (3, *x.shape)), params)
    step = jax.jit(jax.vmap(_step(tx), in_axes=(0, 0, None)))
    for i in range(4):
        swept, states = step(swept, states, _grads(i))
    for lane, lr in enumerate(rates):
        alone, _ = _train(diffgrad(float(lr)), params, 4)
        chex.assert_trees_all_close(_lane(swept, lane), alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALIASES)
@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [({"learning_rate": -0.1}, "learning_rate"), ({"learning_rate": float("nan")}, "learning_rate")],
)
def test_bad_learning_rate(name, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        ALIASES[name](**kwargs)


@pytest.mark.parametrize("name", ["diffgrad", "lamb", "perp_adamw"])
@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"b1": 1.0}, "b1"),
        ({"b1": -0.1}, "b1"),
        ({"b2": 1.5}, "b2"),
        ({"eps": 0.0}, "eps"),
        ({"eps": -1e-8}, "eps"),
    ],
)
def test_bad_adam_hyperparameters(name, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        ALIASES[name](1e-3, **kwargs)


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda mask: diffgrad(1e-3, weight_decay=0.1, weight_decay_mask=mask), "weight_decay_mask"),
        (lambda mask: lamb(1e-3, weight_decay=0.1, weight_decay_mask=mask), "weight_decay_mask"),
        (lambda mask: lamb(1e-3, trust_ratio_mask=mask), "trust_ratio_mask"),
        (lambda mask: perp_adamw(1e-3, mask=mask), "mask"),
    ],
)
def test_mismatched_mask_structure(make, argument):
    tx = make({"w": True, "c": False})  # params have "w" and "b"
    with pytest.raises(ValueError, match=argument):
        tx.update(_grads(0), tx.init(_params()), _params())


def test_negative_weight_decay_and_bad_momentum():
    with pytest.raises(ValueError, match="weight_decay"):
        diffgrad(1e-3, weight_decay=-1.0)
    with pytest.raises(ValueError, match="momentum"):
        perp_sgd(1e-3, momentum=1.0)
    with pytest.raises(ValueError, match="max_grad_norm"):
        lamb(1e-3, max_grad_norm=0.0)
    with pytest.raises(TypeError, match="renormalize"):
        perp_adamw(1e-3, renormalize="yes")
