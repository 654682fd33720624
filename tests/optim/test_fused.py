"""The fused update + apply steps against their optax chains (issue #13's exactness criterion)."""

import inspect
import subprocess
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxdl.optim import (
    diffgrad,
    fused_adam,
    fused_diffgrad,
    fused_lamb,
    fused_perp_adamw,
    fused_perp_sgd,
    lamb,
    perp_adamw,
    perp_sgd,
)

STEPS = 12
SCHEDULE = optax.linear_schedule(2e-2, 5e-3, transition_steps=8)
MASK = {"big": True, "b0": False, "b1": False, "scale": True, "v": True}

# name -> (fused, chain), same arguments; masks and a schedule where the method has them.
PAIRS = {
    "adamw": (
        lambda: fused_adam(SCHEDULE, weight_decay=0.1, mask=MASK),
        lambda: optax.adamw(SCHEDULE, weight_decay=0.1, mask=MASK),
    ),
    "adamw-pallas": (
        lambda: fused_adam(SCHEDULE, weight_decay=0.1, mask=MASK, kernel="pallas"),
        lambda: optax.adamw(SCHEDULE, weight_decay=0.1, mask=MASK),
    ),
    "diffgrad": (
        lambda: fused_diffgrad(SCHEDULE, weight_decay=0.1, weight_decay_mask=MASK),
        lambda: diffgrad(SCHEDULE, weight_decay=0.1, weight_decay_mask=MASK),
    ),
    "diffgrad-decoupled-pallas": (
        lambda: fused_diffgrad(1e-2, weight_decay=0.1, decoupled=True, kernel="pallas"),
        lambda: diffgrad(1e-2, weight_decay=0.1, decoupled=True),
    ),
    "perp_adamw": (
        lambda: fused_perp_adamw(SCHEDULE, weight_decay=0.05, mask=MASK),
        lambda: perp_adamw(SCHEDULE, weight_decay=0.05, mask=MASK),
    ),
    "perp_sgd": (lambda: fused_perp_sgd(1e-2, momentum=0.8), lambda: perp_sgd(1e-2, momentum=0.8)),
    "lamb": (
        lambda: fused_lamb(SCHEDULE, weight_decay=0.05, weight_decay_mask=MASK, trust_ratio_mask=MASK),
        lambda: lamb(SCHEDULE, weight_decay=0.05, weight_decay_mask=MASK, trust_ratio_mask=MASK),
    ),
}
parametrize_pairs = pytest.mark.parametrize("name", PAIRS)


@pytest.fixture(autouse=True)
def _interpret_pallas_on_cpu(monkeypatch):
    """Run kernel="pallas" in Pallas's interpreter here (off GPUs it would fall back to XLA)."""
    from jaxdl.optim import _pallas

    monkeypatch.setattr(_pallas, "INTERPRET_OFF_GPU", True)


def _params(dtype=jnp.float32):
    """One leaf above the 65,536-element grouping threshold and small leaves of several shapes."""
    keys = jax.random.split(jax.random.key(0), 5)
    shapes = {"big": (256, 300), "b0": (7,), "b1": (7,), "scale": (), "v": (2, 3)}
    return {
        k: jax.random.normal(key, s, jnp.float32).astype(dtype)
        for key, (k, s) in zip(keys, shapes.items(), strict=True)
    }


def _grads(params, step):
    return jax.tree.map(
        lambda p: jnp.cos(p.astype(jnp.float32) * (step + 1.0) + step).astype(p.dtype), params
    )


def _chain_step(tx):
    def step(params, grads, state):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step)


def _trajectories(name, dtype=jnp.float32, steps=STEPS):
    fused, chain = (make() for make in PAIRS[name])
    params = _params(dtype)
    a, sa, b, sb = params, fused.init(params), params, chain.init(params)
    fused_step, chain_step = jax.jit(fused.step), _chain_step(chain)
    for i in range(steps):
        a, sa = fused_step(a, _grads(a, i), sa)
        b, sb = chain_step(b, _grads(b, i), sb)
    return a, b


@parametrize_pairs
def test_fused_step_equals_the_chain_over_many_steps(name):
    a, b = _trajectories(name)
    # float32 rounding: the two differ only in the order of a few roundings per step.
    chex.assert_trees_all_close(a, b, rtol=2e-6, atol=2e-7)


@pytest.mark.parametrize("name", ["adamw", "diffgrad", "perp_adamw", "lamb"])
def test_bf16_parameters(name):
    a, b = _trajectories(name, jnp.bfloat16, steps=4)
    chex.assert_trees_all_equal_dtypes(a, b)
    # The chain rounds every intermediate to bf16, the fused step once per buffer. After 4 steps
    # (lr 2e-2, entries up to ~4.3, bf16 ulp 2^-6 in [2, 4)), measured: 5-14% of the entries
    # differ, by at most 2^-6, and at most 0.2% by more than 2^-7.
    x, y = (np.concatenate([np.asarray(v, np.float32).ravel() for v in jax.tree.leaves(t)]) for t in (a, b))
    assert np.abs(x - y).max() <= 2**-6
    assert np.mean(np.abs(x - y) > 2**-7) <= 0.005


def test_small_leaves_share_one_flat_buffer_and_big_leaves_keep_their_shape():
    state = fused_adam(1e-2, weight_decay=0.1, mask=MASK).init(_params())
    shapes = [tuple(x.shape for x in buffers) for buffers in state.buffers]
    # Small decayed leaves (scale, v) and small undecayed leaves (b0, b1) form two flat buckets.
    assert sorted(shapes) == sorted([((14,), (14,)), ((7,), (7,)), ((256, 300), (256, 300))])


def test_donated_step_equals_the_undonated_step():
    fused = fused_diffgrad(1e-2, weight_decay=0.1)
    params = _params()
    plain = jax.jit(fused.step)(params, _grads(params, 0), fused.init(params))
    donated = jax.jit(fused.step, donate_argnums=(0, 2))(
        jax.tree.map(jnp.copy, params), _grads(params, 0), fused.init(params)
    )
    jax.tree.map(np.testing.assert_array_equal, donated, plain)


def test_compiles_once():
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, *_, **__: compiles.append(event) if event.endswith("backend_compile_duration") else None
    )
    fused = fused_perp_adamw(1e-2)
    step = jax.jit(fused.step)
    params, state = _params(), fused.init(_params())
    params, state = step(params, _grads(params, 0), state)
    before = len(compiles)
    for i in range(1, 4):
        params, state = step(params, _grads(params, i), state)
    assert len(compiles) == before


def test_vmapped_learning_rate_sweep_equals_separate_runs():
    rates = jnp.array([1e-3, 1e-2, 3e-2])
    params = _params()

    def run(lr):
        fused = fused_adam(lr)
        p, s = params, fused.init(params)
        for i in range(3):
            p, s = fused.step(p, _grads(params, i), s)
        return p

    swept = jax.jit(jax.vmap(run))(rates)
    for lane, lr in enumerate(rates):
        alone = jax.tree.map(lambda x, lane=lane: x[lane], swept)
        chex.assert_trees_all_close(alone, run(float(lr)), rtol=1e-6, atol=1e-7)


def test_sharded_over_eight_devices_equals_one_device(mesh):
    fused = fused_lamb(1e-2, weight_decay=0.05)
    params = _params()
    grads = _grads(params, 0)
    sharded = NamedSharding(mesh, P("data"))
    place = lambda tree: jax.tree.map(
        lambda x: jax.device_put(x, sharded if x.ndim and x.shape[0] % 8 == 0 else NamedSharding(mesh, P())),
        tree,
    )
    state = fused.init(params)
    out, new_state = jax.jit(fused.step)(place(params), place(grads), place(state))
    expected, expected_state = jax.jit(fused.step)(params, grads, state)
    chex.assert_trees_all_close((out, new_state), (expected, expected_state), rtol=1e-6, atol=1e-7)
    assert out["big"].sharding.is_equivalent_to(sharded, 2)


def test_orbax_round_trip_continues_bit_identically(tmp_path):
    fused = fused_diffgrad(1e-2, weight_decay=0.1)
    step = jax.jit(fused.step)
    params, state = _params(), fused.init(_params())
    for i in range(2):
        params, state = step(params, _grads(params, i), state)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "ckpt", {"params": params, "state": state})
        checkpointer.wait_until_finished()
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"params": params, "state": state})
        restored = checkpointer.restore(tmp_path / "ckpt", target)
    assert isinstance(restored["state"], type(state))
    a, b = (params, state), (restored["params"], restored["state"])
    for i in range(2, 4):
        a, b = step(a[0], _grads(a[0], i), a[1]), step(b[0], _grads(b[0], i), b[1])
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_pallas_kernels_equal_xla(monkeypatch):
    # Interpreted on CPU: 1,500 elements (blocks of 512, the last partial), bf16 and float32
    # buckets, decayed and undecayed leaves, three leaves per kernel (so two kernels).
    from jaxdl.optim import _pallas

    monkeypatch.setattr(_pallas, "_LEAVES_PER_KERNEL", 3)
    monkeypatch.setattr(_pallas, "_LEAF_BLOCK", 512)
    params = {
        "w": jnp.linspace(-1.0, 1.0, 1500).reshape(30, 50),
        "b": jnp.ones(3),
        "c": jnp.linspace(0.5, 2.0, 7, dtype=jnp.bfloat16),
        "s": jnp.float32(0.3),
    }
    grads = jax.tree.map(lambda p: jnp.sin(7 * p), params)
    mask = {"w": True, "b": False, "c": True, "s": False}
    xla = fused_adam(1e-2, weight_decay=0.1, mask=mask)
    pallas = fused_adam(1e-2, weight_decay=0.1, mask=mask, kernel="pallas")
    a, b = (params, xla.init(params)), (params, pallas.init(params))
    xla_step, pallas_step = jax.jit(xla.step), jax.jit(pallas.step)
    for _ in range(2):
        a, b = xla_step(a[0], grads, a[1]), pallas_step(b[0], grads, b[1])
    # Equal up to one float32 rounding: XLA contracts a multiply-add (e.g. b1 m + (1 - b1) g)
    # into an FMA in one compilation and not in the other. Measured after two steps: a few % of
    # the entries of w and m differ, each by at most one ulp of the leaf's largest entry; the
    # bf16 entries are equal.
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if x.dtype == jnp.float32:
            x, y = np.asarray(x), np.asarray(y)
            assert np.abs(x - y).max(initial=0) <= np.spacing(np.abs(y).max(initial=0))
        else:
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
    ("fused", "chain"),
    [
        (fused_adam, optax.adam),
        (fused_diffgrad, diffgrad),
        (fused_perp_adamw, perp_adamw),
        (fused_perp_sgd, perp_sgd),
        (fused_lamb, lamb),
    ],
)
def test_fused_defaults_equal_the_chains(fused, chain):
    # Every argument the fused step shares with its optax alias has the same default.
    a, b = (inspect.signature(f).parameters for f in (fused, chain))
    shared = set(a) & set(b) - {"learning_rate"}
    assert len(shared) >= 1
    for name in shared:
        want = b[name].default
        if chain is perp_sgd and name == "momentum":
            want = 0.0  # optax.sgd's None (no momentum); the fused step keeps a zero-decay trace
        assert a[name].default == want, (fused.__name__, name)


def test_import_does_not_load_pallas():
    # Pallas is imported only when a kernel="pallas" step is traced (it costs ~0.5 s of import).
    code = "import sys, jaxdl.optim; print(any('pallas' in m for m in sys.modules))"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False"], out.stderr[-2000:]


def test_errors_name_the_argument():
    fused = fused_adam(1e-2)
    params = _params()
    state = fused.init(params)
    with pytest.raises(
        ValueError, match=r"grads\['b0'\] has shape \(3,\) but params\['b0'\] has shape \(7,\)"
    ):
        fused.step(params, {**_grads(params, 0), "b0": jnp.ones(3)}, state)
    with pytest.raises(ValueError, match="grads must have the structure of params"):
        fused.step(params, {k: v for k, v in _grads(params, 0).items() if k != "v"}, state)
    with pytest.raises(ValueError, match="different params layout"):
        fused.step({"w": jnp.ones(3)}, {"w": jnp.ones(3)}, state)
    with pytest.raises(ValueError, match="kernel"):
        fused_adam(1e-2, kernel="cuda")
    with pytest.raises(ValueError, match="weight_decay_mask"):
        fused_diffgrad(1e-2, weight_decay_mask={"x": True}).init(params)


def test_pallas_falls_back_to_xla_off_gpu(monkeypatch):
    from jaxdl.optim import _pallas

    monkeypatch.setattr(_pallas, "INTERPRET_OFF_GPU", False)
    params = {"w": jnp.linspace(-1.0, 1.0, 300), "b": jnp.ones(3)}
    grads = jax.tree.map(lambda p: jnp.sin(7 * p), params)
    pallas, xla = fused_diffgrad(1e-2, kernel="pallas"), fused_diffgrad(1e-2)
    if jax.default_backend() != "gpu":
        assert "pallas_call" not in str(jax.make_jaxpr(pallas.step)(params, grads, pallas.init(params)))
    a = jax.jit(pallas.step)(params, grads, pallas.init(params))
    b = jax.jit(xla.step)(params, grads, xla.init(params))
    jax.tree.map(np.testing.assert_array_equal, a, b)
