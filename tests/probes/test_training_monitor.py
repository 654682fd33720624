"""The in-loop training monitor: dense references, lax.cond inside a jitted step, 8 devices."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from jaxdl.parallel import create_train_state, data_mesh, data_parallel, replicate, shard_batch, train_step
from jaxdl.probes import MonitorRecord, MonitorState, monitored_steps, training_monitor
from tests.probes._compiles import compiles
from tests.reference import hessian as ref

CLASSES = 3


def apply(p, x):
    return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]


def loss(p, batch):
    return optax.softmax_cross_entropy_with_integer_labels(apply(p, batch["x"]), batch["y"]).mean()


def make(dtype, n=16, d=4, width=5, seed=0):
    k = jax.random.split(jax.random.key(seed), 5)
    params = {
        "w1": jax.random.normal(k[0], (d, width), dtype) / np.sqrt(d),
        "b1": 0.1 * jax.random.normal(k[1], (width,), dtype),
        "w2": 2.0 * jax.random.normal(k[2], (width, CLASSES), dtype) / np.sqrt(width),
    }
    batch = {"x": jax.random.normal(k[3], (n, d), dtype), "y": jax.random.randint(k[4], (n,), 0, CLASSES)}
    return params, batch


def test_record_matches_dense_references(x64):
    params, batch = make(jnp.float64)
    flat, unravel = ravel_pytree(params)
    size = flat.size  # 45: Lanczos with as many steps is exact
    eta, momentum, samples = 0.3, 0.5, 64
    scale = 40.0  # sharp logits, so some rows collapse even in float64
    monitor = training_monitor(
        loss,
        learning_rate=eta,
        momentum=momentum,
        num_iters=size,
        num_samples=samples,
        logits_fn=lambda p, b: scale * apply(p, b["x"]),
        apply_fn=apply,
        ntk_inputs=batch["x"][:6],
    )
    record = monitor.compute(params, batch, jax.random.key(0))

    h = np.asarray(jax.hessian(lambda f: loss(unravel(f), batch))(flat))
    lam = np.linalg.eigvalsh(h)[-1]
    np.testing.assert_allclose(record.sharpness, lam, rtol=1e-9)
    np.testing.assert_allclose(record.sharpness_ratio, eta * lam / (2 + 2 * momentum), rtol=1e-9)
    se = ref.hutchinson_rademacher_std(h) / np.sqrt(samples)
    assert abs(float(record.trace) - np.trace(h)) < 4 * se
    assert float(record.trace_ratio) == pytest.approx(eta * float(record.trace) / 2, rel=1e-12)

    g = np.asarray(jax.grad(lambda f: loss(unravel(f), batch))(flat))
    cosine = -g @ np.asarray(flat) / (np.linalg.norm(g) * np.linalg.norm(flat))
    np.testing.assert_allclose(record.nlm_alignment, cosine, rtol=1e-9)

    z = scale * np.asarray(apply(params, batch["x"]))
    collapsed = np.mean(np.sum(np.exp(z - z.max(-1, keepdims=True)), -1) == 1.0)
    assert 0 < collapsed < 1
    np.testing.assert_allclose(record.softmax_collapse, collapsed)

    jac = np.asarray(jax.jacobian(lambda f: apply(unravel(f), batch["x"][:6]))(flat))  # (6, C, P)
    theta = np.einsum("ncp,mcp->nm", jac, jac) / CLASSES  # mean over logits, as trace_axes=(-1,)
    eig = np.linalg.eigvalsh(theta)
    np.testing.assert_allclose(record.ntk_max_eigenvalue, eig[-1], rtol=1e-9)
    np.testing.assert_allclose(record.ntk_condition_number, eig[-1] / eig[0], rtol=1e-6)
    assert bool(record.computed)


def test_probes_every_n_steps_inside_one_compiled_step():
    params, batch = make(jnp.float32)
    tx = optax.sgd(0.1)
    monitor = training_monitor(loss, learning_rate=0.1, every=3, num_iters=6, num_samples=4)

    @jax.jit
    def step(s, p, opt_state, key):
        grads = jax.grad(loss)(p, batch)
        record = monitor(s, p, batch, key, grads=grads)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(p, updates), opt_state, record

    opt_state, key, records, history = tx.init(params), jax.random.key(1), [], []
    steps = [jnp.asarray(s, jnp.int32) for s in range(5)]
    p = params
    step(steps[0], p, opt_state, key)  # compile
    with compiles() as events:
        for s in steps:
            history.append(p)
            p, opt_state, record = step(s, p, opt_state, key)
            records.append(record)
    assert not events
    assert [bool(r.computed) for r in records] == [True, False, False, True, False]
    for r in (records[1], records[2], records[4]):
        assert all(bool(jnp.isnan(v)) for v in r[1:])
    eager = monitor.compute(history[3], batch, key, step=3)  # the same probes, not under jit
    for name, a, b in zip(MonitorRecord._fields, records[3], eager, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, err_msg=name)


def test_same_record_on_eight_devices_as_on_one_with_an_nnx_model(mesh):
    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(4, 8, rngs=rngs)
            self.l2 = nnx.Linear(8, CLASSES, rngs=rngs)

        def __call__(self, x):
            return self.l2(jnp.tanh(self.l1(x)))

    graphdef, params = nnx.split(MLP(nnx.Rngs(0)), nnx.Param)
    logits = lambda p, b: nnx.merge(graphdef, p)(b["x"])
    mean_loss = lambda p, b: optax.softmax_cross_entropy_with_integer_labels(logits(p, b), b["y"]).mean()
    monitor = training_monitor(
        mean_loss,
        learning_rate=0.05,
        every=2,
        num_iters=8,
        num_samples=4,
        logits_fn=logits,
        apply_fn=lambda p, x: nnx.merge(graphdef, p)(x),
        ntk_inputs=jnp.linspace(-1.0, 1.0, 20).reshape(5, 4),
    )
    tx = optax.sgd(0.05)
    base = train_step(lambda p, b, key: mean_loss(p, b), tx)

    def step(state, batch):
        record = monitor(state.step, state.params, batch, state.key)
        state, metrics = base(state, batch)
        return state, {**metrics, "monitor": record}

    rng = np.random.default_rng(0)
    batch = {"x": rng.normal(size=(32, 4)).astype(np.float32), "y": rng.integers(0, CLASSES, 32)}
    results = []
    with jax.default_matmul_precision("highest"):
        for m in (mesh, data_mesh(jax.devices()[:1])):
            run = data_parallel(step, m, donate=False)  # replicate() may alias params (issue 15)
            state = replicate(create_train_state(params, tx, jax.random.key(2)), m)
            records = []
            for _ in range(3):
                state, metrics = run(state, shard_batch(batch, m))
                records.append(jax.device_get(metrics["monitor"]))
            results.append(records)
    assert isinstance(results[0][0], MonitorRecord)
    assert [bool(r.computed) for r in results[0]] == [True, False, True]
    for multi, single in zip(*results, strict=True):
        for name, a, b in zip(MonitorRecord._fields, multi, single, strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-4, err_msg=name)


def test_warm_start_converges_to_dense_eigvalsh(x64):
    """Four Lanczos steps per record, each started from the last Ritz vector: restarted Lanczos."""
    params, batch = make(jnp.float64)
    flat, unravel = ravel_pytree(params)
    eigenvalues, vectors = np.linalg.eigh(
        np.asarray(jax.jit(jax.hessian(lambda f: loss(unravel(f), batch)))(flat))
    )
    monitor = training_monitor(loss, learning_rate=0.1, num_iters=4)
    warm = jax.jit(lambda p, k, state: monitor.compute(p, batch, k, state=state))
    state = monitor.init(params)
    assert isinstance(state, MonitorState) and not np.any(ravel_pytree(state.vector)[0])
    for i in range(30):
        record, state = warm(params, jax.random.key(i), state)
        if i == 0:
            first = float(record.sharpness)  # 4 steps from a random start
    np.testing.assert_allclose(record.sharpness, eigenvalues[-1], rtol=1e-10)
    top = np.asarray(ravel_pytree(state.vector)[0])
    np.testing.assert_allclose(abs(top @ vectors[:, -1]), 1.0, rtol=1e-8)  # the top eigenvector
    np.testing.assert_allclose(np.linalg.norm(top), 1.0, rtol=1e-12)
    assert abs(first - eigenvalues[-1]) > 1e-3 * eigenvalues[-1]  # the warm start is what converges


def test_monitored_steps_match_the_step_by_step_loop_and_compile_once():
    params, batch = make(jnp.float32)
    tx = optax.sgd(0.1)
    monitor = training_monitor(loss, learning_rate=0.1, every=3, num_iters=5)

    def train_step(carry, b):
        p, opt_state = carry
        value, grads = jax.value_and_grad(loss)(p, b)
        updates, opt_state = tx.update(grads, opt_state)
        return (optax.apply_updates(p, updates), opt_state), value

    run = monitored_steps(train_step, monitor, lambda carry: carry[0])
    jitted = jax.jit(run)
    batches = jax.tree.map(lambda x: jnp.stack([x] * 3), batch)  # 3 steps per chunk
    carry, state, key = (params, tx.init(params)), monitor.init(params), jax.random.key(3)
    out = jitted(carry, batches, key, step=0, state=state)
    with compiles() as events:
        again = jitted(out.carry, batches, key, step=3, state=out.state)
    assert not events  # the second chunk reuses the program

    # the same as the monitor under lax.cond inside a step, warm state threaded through the steps
    @jax.jit
    def step(s, carry, state):
        record, state = monitor(s, carry[0], batch, key, state=state)
        carry, value = train_step(carry, batch)
        return carry, state, record, value

    c, st, records, losses = carry, state, [], []
    for s in range(6):
        c, st, record, value = step(jnp.asarray(s), c, st)
        records.append(record)
        losses.append(value)
    assert [bool(r.computed) for r in records] == [True, False, False, True, False, False]
    np.testing.assert_allclose(np.concatenate([out.aux, again.aux]), losses, rtol=1e-6)
    for name, a, b in zip(MonitorRecord._fields, again.record, records[3], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, err_msg=name)
    np.testing.assert_allclose(ravel_pytree(again.state.vector)[0], ravel_pytree(st.vector)[0], atol=1e-4)
    with pytest.raises(ValueError, match="one common leading"):
        run(carry, {"x": batches["x"], "y": batch["y"]}, key)
    with pytest.raises(TypeError, match="state must be a MonitorState"):
        monitor.compute(params, batch, key, state=(1,))


def test_bad_arguments():
    with pytest.raises(ValueError, match="learning_rate must be a positive"):
        training_monitor(loss, learning_rate=-1.0)
    with pytest.raises(ValueError, match="every must be an int >= 1"):
        training_monitor(loss, learning_rate=0.1, every=0)
    with pytest.raises(ValueError, match="num_samples must be 0"):
        training_monitor(loss, learning_rate=0.1, num_samples=1)
    with pytest.raises(ValueError, match="apply_fn and ntk_inputs"):
        training_monitor(loss, learning_rate=0.1, apply_fn=apply)
    with pytest.raises(ValueError, match="momentum must lie"):
        training_monitor(loss, learning_rate=0.1, momentum=1.0)
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        training_monitor("ce", learning_rate=0.1)


def test_gpu_program_form_gives_the_same_record(monkeypatch):
    """On a GPU the record is straight-line code (unrolled warm Lanczos, its first HVP batched with
    the trace's, unrolled squarings); on a CPU, loops. Both forms, here on the CPU, agree."""
    from jaxdl.probes import lanczos as lz

    params, batch = make(jnp.float32)
    key = jax.random.key(4)
    options = dict(learning_rate=0.1, num_iters=4, num_samples=3)  # the NTK's squarings: same code
    records = []
    for backends in (("cpu",), ()):
        monkeypatch.setattr(lz, "_LOOP_BACKENDS", backends)
        monitor = training_monitor(loss, **options)  # a fresh monitor: its record traces anew
        state = monitor.init(params)
        state = monitor.compute(params, batch, key, state=state)[1]
        records.append(monitor.compute(params, batch, key, state=state))
    (loop_record, loop_state), (line_record, line_state) = records
    for name, a, b in zip(MonitorRecord._fields, loop_record, line_record, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, err_msg=name)
    np.testing.assert_allclose(
        ravel_pytree(loop_state.vector)[0], ravel_pytree(line_state.vector)[0], atol=1e-5
    )
