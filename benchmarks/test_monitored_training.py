"""Monitored training end to end: jaxdl's in-loop monitor against the same loop in PyTorch.

Two models, each trained for 1,000 SGD steps (momentum 0.9, softmax cross-entropy) with the
probes every 100 steps on a fixed probe batch: a 1.0M-parameter MLP (3072-300-300-10, ReLU,
batch 256) and the 0.24M-parameter CNN of ``benchmarks/test_hessian.py`` (3x3 convolutions
3-32-64-128-128, strides 1-2-2-2, global average pooling, a 128-10 head; batch 200 of 32x32x3).
The probes:

- sharpness: 20 Lanczos steps (jaxdl) vs PyHessian's power iteration with ``maxIter=20,
  tol=0`` (20 Hessian-vector products each); and jaxdl warm-started from the last record's top
  vector with ``WARM_ITERS`` steps;
- trace: 10 Hutchinson (Rademacher) probes in both (PyHessian ``trace(maxIter=10, tol=0)``);
- the top eigenvalue and condition number of the logit-averaged empirical NTK on 32 inputs
  (jaxdl ``empirical_ntk``, "auto"; PyTorch ``torch.func.vmap(jacrev)`` contracted with einsum,
  the method of the PyTorch NTK tutorial);
- NLM alignment cos(-g, θ) and the softmax-collapse fraction in both.

Loops timed (wall clock, from before compilation to the last result on the host):

1. jaxdl, unmonitored: ``jax.jit(step)`` called by Python at every step;
2. jaxdl, monitored in the step: the monitor under ``lax.cond`` inside the same jitted step;
3. jaxdl, monitored from the host: the unmonitored step, plus a jitted ``monitor.compute``
   called by Python every 100 steps (cold: 20 Lanczos steps; warm: ``WARM_ITERS`` steps from
   the last record's vector, the ``MonitorState`` threaded by Python);
4. jaxdl, chunks: ``monitored_steps`` (one record, then 100 steps in a ``lax.scan``) jitted,
   warm-started, against the same chunks without the record;
5. PyTorch eager + PyHessian (master, ``torch.linalg``) + ``torch.func``, same initial weights,
   batches and probe settings.

Compile time (``lower().compile()``) is reported apart from the loop time. TF32 matmuls are
enabled in PyTorch to match JAX's default float32 matmul precision on the GPU.

    PYHESSIAN_PATH=/path/to/PyHessian python benchmarks/test_monitored_training.py --out results/
    JAXDL_BENCH_SMALL=1 python -m pytest benchmarks/test_monitored_training.py   # tiny, CPU, JAX only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl.probes import monitored_steps, training_monitor

SMALL = os.environ.get("JAXDL_BENCH_SMALL") == "1"
# name -> (kind, layer sizes or conv channels + classes, batch, image side)
MODELS = {
    "mlp_1m": ("mlp", (3072, 300, 300, 10), 256, None),
    "cnn_240k": ("cnn", (3, 32, 64, 128, 128, 10), 200, 32),
}
if SMALL:
    MODELS = {"mlp_1m": ("mlp", (32, 16, 16, 10), 16, None), "cnn_240k": ("cnn", (3, 4, 4, 4, 4, 10), 8, 8)}
STEPS, EVERY = (20, 5) if SMALL else (1000, 100)
NUM_BATCHES, LR, MOMENTUM = 8, 0.01, 0.9
EIG_ITERS, WARM_ITERS, TRACE_SAMPLES, NTK_INPUTS = (4, 3, 2, 4) if SMALL else (20, 5, 10, 32)
REPEATS = 3
VARIANTS = ("unmonitored", "in_step", "from_host", "from_host_warm", "chunks_unmonitored", "chunks_warm")


def init_weights(name: str, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """He-normal weights and zero biases, as NumPy float32 (shared by both frameworks)."""
    kind, sizes, _, _ = MODELS[name]
    rng = np.random.default_rng(seed)
    if kind == "mlp":
        shapes = [(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    else:
        channels = sizes[:-1]
        shapes = [(3, 3, a, b) for a, b in zip(channels[:-1], channels[1:], strict=True)]
        shapes.append((channels[-1], sizes[-1]))
    return [
        (
            (rng.normal(size=shape) * np.sqrt(2.0 / np.prod(shape[:-1]))).astype(np.float32),
            np.zeros(shape[-1], np.float32),
        )
        for shape in shapes
    ]


def make_data(name: str, seed: int = 1):
    kind, sizes, batch, side = MODELS[name]
    rng = np.random.default_rng(seed)
    shape = (sizes[0],) if kind == "mlp" else (side, side, sizes[0])
    x = rng.normal(size=(NUM_BATCHES, batch, *shape)).astype(np.float32)
    y = rng.integers(0, sizes[-1], size=(NUM_BATCHES, batch)).astype(np.int32)
    return x, y


# ---- jaxdl ----------------------------------------------------------------------------------


def mlp_apply(params, x):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def cnn_apply(params, x):
    for i, (w, b) in enumerate(params[:-1]):
        stride = 1 if i == 0 else 2
        x = jax.lax.conv_general_dilated(
            x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        x = jax.nn.relu(x + b)
    w, b = params[-1]
    return x.mean(axis=(1, 2)) @ w + b


def jax_loops(name, weights, data, probe_times: bool = True) -> dict:
    apply_fn = mlp_apply if MODELS[name][0] == "mlp" else cnn_apply

    def loss_fn(params, batch):
        x, y = batch
        return optax.softmax_cross_entropy_with_integer_labels(apply_fn(params, x), y).mean()

    x_all, y_all = (jnp.asarray(a) for a in data)
    xs, ys = list(x_all), list(y_all)  # sliced once: no eager slicing inside the timed loops
    params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in weights]
    tx = optax.sgd(LR, momentum=MOMENTUM)
    probe_batch = (x_all[0], y_all[0])
    probe_loss = lambda p, _: loss_fn(p, probe_batch)
    options = dict(
        learning_rate=LR,
        every=EVERY,
        momentum=MOMENTUM,
        num_samples=TRACE_SAMPLES,
        logits_fn=lambda p, _: apply_fn(p, probe_batch[0]),
        apply_fn=apply_fn,
        ntk_inputs=x_all[0][:NTK_INPUTS],
    )
    monitor = training_monitor(probe_loss, num_iters=EIG_ITERS, **options)
    warm_monitor = training_monitor(probe_loss, num_iters=WARM_ITERS, **options)
    key = jax.random.key(0)

    def plain_step(step, params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, (x, y))
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def monitored(step, params, opt_state, x, y):
        record = monitor(step, params, None, jax.random.fold_in(key, step))
        return (*plain_step(step, params, opt_state, x, y), record)

    def probe(step, params):
        return monitor.compute(params, None, jax.random.fold_in(key, step), step=step)

    def warm_probe(step, params, state):
        return warm_monitor.compute(params, None, jax.random.fold_in(key, step), step=step, state=state)

    def scan_body(carry, batch):
        params, opt_state = carry
        params, opt_state, loss = plain_step(0, params, opt_state, *batch)
        return (params, opt_state), loss

    chunk = monitored_steps(scan_body, warm_monitor, lambda carry: carry[0])

    def warm_chunk(step, params, opt_state, state, batches):
        out = chunk((params, opt_state), batches, jax.random.fold_in(key, step), step=step, state=state)
        return (*out.carry, out.aux[-1], out.record, out.state)

    def plain_chunk(step, params, opt_state, state, batches):
        (params, opt_state), losses = jax.lax.scan(scan_body, (params, opt_state), batches)
        return params, opt_state, losses[-1]

    # the batches of a chunk of EVERY steps starting at step s: (s + i) % NUM_BATCHES
    offsets = sorted({(c * EVERY) % NUM_BATCHES for c in range(STEPS // EVERY)})
    indices = {offset: (offset + jnp.arange(EVERY)) % NUM_BATCHES for offset in offsets}
    chunk_batches = {offset: (x_all[idx], y_all[idx]) for offset, idx in indices.items()}

    results = {}
    steps = [jnp.asarray(s, jnp.int32) for s in range(STEPS)]
    for variant in VARIANTS:
        opt_state = tx.init(params)
        start = time.perf_counter()
        probe_compiled = state0 = None
        if variant.startswith("chunks"):
            fn = warm_chunk if variant == "chunks_warm" else plain_chunk
            state0 = warm_monitor.init(params)
            compiled = (
                jax.jit(fn, donate_argnums=(1, 2))
                .lower(steps[0], params, opt_state, state0, chunk_batches[0])
                .compile()
            )
        else:
            fn = monitored if variant == "in_step" else plain_step
            compiled = jax.jit(fn, donate_argnums=(1, 2)).lower(steps[0], params, opt_state, xs[0], ys[0])
            compiled = compiled.compile()
        step_compile_s = time.perf_counter() - start
        if variant == "from_host":
            probe_compiled = jax.jit(probe).lower(steps[0], params).compile()
        elif variant == "from_host_warm":
            state0 = warm_monitor.init(params)
            probe_compiled = jax.jit(warm_probe).lower(steps[0], params, state0).compile()
        compile_s = time.perf_counter() - start
        loops = []
        for _ in range(REPEATS):  # the same steps from the same start, timed REPEATS times
            p, opt_state, state = jax.tree.map(jnp.copy, params), tx.init(params), state0
            records = []
            loop_start = time.perf_counter()
            if variant.startswith("chunks"):
                for s in range(0, STEPS, EVERY):
                    out = compiled(steps[s], p, opt_state, state, chunk_batches[s % NUM_BATCHES])
                    p, opt_state = out[0], out[1]
                    if variant == "chunks_warm":
                        records.append(out[3])
                        state = out[4]
            else:
                for s in range(STEPS):
                    if probe_compiled is not None and s % EVERY == 0:
                        if variant == "from_host_warm":
                            record, state = probe_compiled(steps[s], p, state)
                        else:
                            record = probe_compiled(steps[s], p)
                        records.append(record)
                    out = compiled(steps[s], p, opt_state, xs[s % NUM_BATCHES], ys[s % NUM_BATCHES])
                    p, opt_state = out[0], out[1]
                    if variant == "in_step" and s % EVERY == 0:
                        records.append(out[3])
            jax.block_until_ready((p, records))
            loops.append(time.perf_counter() - loop_start)
        results[variant] = {
            "compile_s": compile_s,
            "step_compile_s": step_compile_s,
            "loop_s": float(np.median(loops)),
            "loops_s": loops,
            "end_to_end_s": compile_s + loops[0],
            "final_loss": float(out[2]),
            "sharpness": [float(r.sharpness) for r in records],
            "trace": [float(r.trace) for r in records],
            "ntk_max": [float(r.ntk_max_eigenvalue) for r in records],
        }
    if probe_times:
        COMPILE_S.clear()
        results["probes_ms"] = _jax_probe_times(monitor, warm_monitor, params, loss_fn, probe_batch, key)
        results["probes_compile_s"] = dict(COMPILE_S)
    return results


def _median_ms(fn, repeats: int = 11) -> float:
    jax.block_until_ready(fn())  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


COMPILE_S: dict = {}  # compile seconds of the programs _compiled built, by label


def _compiled(fn, *args, unroll_steps=None, squarings=None, label=None):
    """``jax.jit(fn)`` lowered and compiled now, with ``lanczos._UNROLL_STEPS`` or the number of
    squarings of the Ritz pair changed while tracing (for an A/B of those choices)."""
    from jaxdl.probes import lanczos as lz

    saved = lz._UNROLL_STEPS, lz._default_squarings
    if unroll_steps is not None:
        lz._UNROLL_STEPS = unroll_steps
    if squarings is not None:
        lz._default_squarings = lambda m, dtype: squarings
    try:
        jax.clear_caches()  # no traced or compiled piece reused: a cold compile, and the patch applies
        start = time.perf_counter()
        compiled = jax.jit(lambda *a: fn(*a)).lower(*args).compile()
        COMPILE_S[getattr(fn, "__name__", "fn") if label is None else label] = time.perf_counter() - start
        return compiled
    finally:
        lz._UNROLL_STEPS, lz._default_squarings = saved


def _jax_probe_times(monitor, warm_monitor, params, loss_fn, probe_batch, key) -> dict:
    """Steady-state time of each probe alone, jitted, at the monitor's settings, and the A/B of
    two choices of the record: Lanczos unrolled or a ``fori_loop``, NTK eigenvalues by squaring
    or by ``eigvalsh`` (cuSOLVER)."""
    from jaxdl.probes import empirical_ntk, hessian_trace
    from jaxdl.probes import lanczos as lz
    from jaxdl.probes.training_monitor import _sharpness

    loss = monitor.loss_fn
    state = warm_monitor.init(params)
    warm_fn = lambda p, k, st: _sharpness(loss, p, None, k, WARM_ITERS, st)
    state = state._replace(vector=jax.jit(warm_fn)(params, key, state)[1])  # a warm start
    eig = _compiled(
        lambda p, k: _sharpness(loss, p, None, k, EIG_ITERS, None)[0], params, key, label="sharpness"
    )
    warm = _compiled(warm_fn, params, key, state, label="sharpness, warm")
    warm_loop = _compiled(warm_fn, params, key, state, unroll_steps=0, label="sharpness, warm, fori_loop")
    warm_12 = _compiled(warm_fn, params, key, state, squarings=12, label="sharpness, warm, 12 squarings")
    trace = _compiled(
        lambda p, k: hessian_trace(loss, p, None, key=k, num_samples=TRACE_SAMPLES).trace,
        params,
        key,
        label="trace",
    )
    ntk_x, apply_fn = monitor.ntk_inputs, monitor.apply_fn
    ntk_only = _compiled(lambda p: empirical_ntk(apply_fn, p, ntk_x), params, label="ntk alone")
    ntk_eigvalsh = _compiled(
        lambda p: jnp.linalg.eigvalsh(empirical_ntk(apply_fn, p, ntk_x)), params, label="ntk + eigvalsh"
    )
    ntk_squaring = _compiled(
        lambda p: lz._extreme_eigenvalues(empirical_ntk(apply_fn, p, ntk_x)), params, label="ntk"
    )
    grad = _compiled(jax.grad(lambda p: loss_fn(p, probe_batch)), params, label="gradient")
    record_fn = lambda p, k, st: warm_monitor.compute(p, None, k, state=st)
    record = _compiled(record_fn, params, key, state, label="all, warm (monitor.compute)")
    record_loop = _compiled(record_fn, params, key, state, unroll_steps=0, label="all, warm, fori_loop")
    cold = _compiled(lambda p, k: monitor.compute(p, None, k), params, key, label="all (monitor.compute)")
    return {
        "gradient": _median_ms(lambda: grad(params)),
        "sharpness": _median_ms(lambda: eig(params, key)),
        "sharpness, warm": _median_ms(lambda: warm(params, key, state)),
        "sharpness, warm, fori_loop": _median_ms(lambda: warm_loop(params, key, state)),
        "sharpness, warm, 12 squarings": _median_ms(lambda: warm_12(params, key, state)),
        "trace": _median_ms(lambda: trace(params, key)),
        "ntk alone": _median_ms(lambda: ntk_only(params)),
        "ntk": _median_ms(lambda: ntk_squaring(params)),
        "ntk + eigvalsh": _median_ms(lambda: ntk_eigvalsh(params)),
        "all (monitor.compute)": _median_ms(lambda: cold(params, key)),
        "all, warm (monitor.compute)": _median_ms(lambda: record(params, key, state)),
        "all, warm, fori_loop": _median_ms(lambda: record_loop(params, key, state)),
    }


# ---- PyTorch + PyHessian + torch.func ---------------------------------------------------------


def torch_model(name, weights):
    """The same network in PyTorch, with jaxdl's weights (NCHW layout; SAME padding as in XLA)."""
    import torch

    kind, sizes, _, _ = MODELS[name]

    class CNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = torch.nn.ModuleList(
                torch.nn.Conv2d(w.shape[2], w.shape[3], 3, stride=1 if i == 0 else 2)
                for i, (w, _) in enumerate(weights[:-1])
            )
            self.head = torch.nn.Linear(*weights[-1][0].shape)

        def forward(self, x):
            for i, conv in enumerate(self.convs):
                # XLA's SAME: stride 1 pads 1 on each side; stride 2 on an even side pads (0, 1)
                x = torch.nn.functional.pad(x, (1, 1, 1, 1) if i == 0 else (0, 1, 0, 1))
                x = torch.relu(conv(x))
            return self.head(x.mean(dim=(2, 3)))

    if kind == "mlp":
        layers = []
        for i, (w, _) in enumerate(weights):
            layers.append(torch.nn.Linear(*w.shape))
            if i < len(weights) - 1:
                layers.append(torch.nn.ReLU())
        model = torch.nn.Sequential(*layers)
        linears = [m for m in model if isinstance(m, torch.nn.Linear)]
        pairs = [(lin.weight, w.T) for lin, (w, _) in zip(linears, weights, strict=True)]
        biases = [(lin.bias, b) for lin, (_, b) in zip(linears, weights, strict=True)]
    else:
        model = CNN()
        pairs = [(c.weight, w.transpose(3, 2, 0, 1)) for c, (w, _) in zip(model.convs, weights, strict=False)]
        pairs.append((model.head.weight, weights[-1][0].T))
        biases = [(c.bias, b) for c, (_, b) in zip(model.convs, weights, strict=False)]
        biases.append((model.head.bias, weights[-1][1]))
    with torch.no_grad():
        for param, value in pairs + biases:
            param.copy_(torch.from_numpy(np.ascontiguousarray(value)))
    return model


def torch_loop(name, weights, data) -> dict:
    import torch
    from torch.func import functional_call, jacrev, vmap

    sys.path.insert(0, os.environ.get("PYHESSIAN_PATH", ""))
    from pyhessian import hessian as pyhessian

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True  # JAX's default f32 matmul precision on GPUs
    torch.backends.cudnn.allow_tf32 = True
    model = torch_model(name, weights).to(device)
    criterion = torch.nn.CrossEntropyLoss()
    x = data[0] if MODELS[name][0] == "mlp" else data[0].transpose(0, 1, 4, 2, 3)  # NHWC -> NCHW
    x_all = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    y_all = torch.from_numpy(data[1]).long().to(device)
    probe_x, probe_y = x_all[0], y_all[0]
    ntk_x = probe_x[:NTK_INPUTS]

    def ntk_top(model):
        params = {k: v.detach() for k, v in model.named_parameters()}

        def single(p, x):
            return functional_call(model, p, (x.unsqueeze(0),)).squeeze(0)

        jac = vmap(jacrev(single), (None, 0))(params, ntk_x)
        theta = sum(torch.einsum("naf,maf->nm", j.flatten(2), j.flatten(2)) for j in jac.values())
        eig = torch.linalg.eigvalsh(theta / MODELS[name][1][-1])
        return eig[-1].item(), (eig[-1] / eig[0]).item()

    def monitor(model, grads):
        comp = pyhessian(model, criterion, data=(probe_x, probe_y), cuda=device == "cuda")
        top, _ = comp.eigenvalues(maxIter=EIG_ITERS, tol=0.0, top_n=1)
        tr = float(np.mean(comp.trace(maxIter=TRACE_SAMPLES, tol=0.0)))
        model.zero_grad(set_to_none=True)
        model.train()
        ntk_max, ntk_cond = ntk_top(model)
        with torch.no_grad():
            flat_w = torch.cat([p.flatten() for p in model.parameters()])
            flat_g = torch.cat([g.flatten() for g in grads])
            nlm = (-(flat_g @ flat_w) / (flat_g.norm() * flat_w.norm())).item()
            logits = model(probe_x)
            collapse = (
                (torch.exp(logits - logits.max(-1, keepdim=True).values).sum(-1) == 1).float().mean().item()
            )
        return {
            "sharpness": top[0],
            "trace": tr,
            "ntk_max": ntk_max,
            "ntk_cond": ntk_cond,
            "nlm": nlm,
            "collapse": collapse,
        }

    def median_ms(fn, repeats=3):
        fn()
        times = []
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
        return 1e3 * float(np.median(times))

    def probe_grad():
        return torch.autograd.grad(criterion(model(probe_x), probe_y), list(model.parameters()))

    # CUDA context and kernels warmed up outside the timing (JAX's context is also up before its timing).
    warm = model(x_all[0]).sum()
    warm.backward()
    model.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()

    def train_once(opt):
        records = []
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for s in range(STEPS):
            x, y = x_all[s % NUM_BATCHES], y_all[s % NUM_BATCHES]
            if s % EVERY == 0:
                probe_loss = criterion(model(probe_x), probe_y)
                grads = torch.autograd.grad(probe_loss, list(model.parameters()))
                records.append(monitor(model, grads))
            opt.zero_grad(set_to_none=True)
            loss = criterion(model(x), y)
            loss.backward()
            opt.step()
        final_loss = loss.item()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, final_loss, records

    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    loops = []
    for _ in range(REPEATS):  # the same 1000 steps from the same start, timed REPEATS times
        model.load_state_dict(initial)
        loop_s, final_loss, records = train_once(
            torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        )
        loops.append(loop_s)
    probes_ms = {
        "gradient": median_ms(probe_grad),
        "sharpness": median_ms(
            lambda: pyhessian(model, criterion, data=(probe_x, probe_y), cuda=device == "cuda").eigenvalues(
                maxIter=EIG_ITERS, tol=0.0, top_n=1
            )
        ),
        "trace": median_ms(
            lambda: pyhessian(model, criterion, data=(probe_x, probe_y), cuda=device == "cuda").trace(
                maxIter=TRACE_SAMPLES, tol=0.0
            )
        ),
        "ntk": median_ms(lambda: ntk_top(model)),
        "all (monitor)": median_ms(lambda: monitor(model, probe_grad())),
    }
    return {
        "probes_ms": probes_ms,
        "loop_s": float(np.median(loops)),
        "loops_s": loops,
        "end_to_end_s": loops[0],
        "final_loss": final_loss,
        "sharpness": [r["sharpness"] for r in records],
        "trace": [r["trace"] for r in records],
        "ntk_max": [r["ntk_max"] for r in records],
        "device": device,
        "torch": torch.__version__,
    }


def run(with_torch: bool = True, probe_times: bool = True, models=tuple(MODELS), on_model=None) -> dict:
    """Every loop of every model in ``models``; ``on_model(results)`` after each (partial results)."""
    results = {
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "steps": STEPS,
        "every": EVERY,
        "eig_iters": EIG_ITERS,
        "warm_iters": WARM_ITERS,
    }
    for name in models:
        weights, data = init_weights(name), make_data(name)
        entry = {
            "model": MODELS[name],
            "parameters": int(sum(w.size + b.size for w, b in weights)),
            "jaxdl": jax_loops(name, weights, data, probe_times),
        }
        print(name, "jaxdl done", flush=True)
        results[name] = entry
        if on_model is not None:
            on_model(results)
        if with_torch:
            try:
                entry["torch"] = torch_loop(name, weights, data)
            except Exception as error:  # keep jaxdl's figures when the peer fails; report why
                import traceback

                entry["torch_error"] = f"{error!r}\n{traceback.format_exc()}"
        results[name] = entry
        print(summarise_model(name, entry), flush=True)
        if on_model is not None:
            on_model(results)
    return results


def summarise_model(name: str, entry: dict) -> str:
    j = entry["jaxdl"]
    base, chunk_base = j["unmonitored"], j["chunks_unmonitored"]
    lines = [
        f"{name}: {entry['parameters']:,} parameters",
        "| loop | compile | loop | end to end | loop / unmonitored | loop / unmonitored chunks |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for variant, r in j.items():
        if variant.startswith("probes") or not isinstance(r, dict):
            continue
        lines.append(
            f"| jaxdl {variant} | {r['compile_s']:.2f} s | {r['loop_s']:.4f} s | {r['end_to_end_s']:.2f} s | "
            f"{r['loop_s'] / base['loop_s']:.3f} | {r['loop_s'] / chunk_base['loop_s']:.3f} |"
        )
    records = STEPS // EVERY
    extra_ms = 1e3 * (j["chunks_warm"]["loop_s"] - chunk_base["loop_s"]) / records
    lines.append(
        f"monitoring overhead (chunks): {j['chunks_warm']['loop_s'] / chunk_base['loop_s'] - 1:+.1%}, "
        f"{extra_ms:.3f} ms a record against {1e3 * chunk_base['loop_s'] / records:.3f} ms of {EVERY} steps"
    )
    cold = np.asarray(j.get("from_host", j.get("in_step", {})).get("sharpness", []))
    for variant in ("from_host_warm", "chunks_warm", "in_step"):
        if variant not in j or not cold.size:
            continue
        rel = np.abs(np.asarray(j[variant]["sharpness"]) - cold) / np.abs(cold)
        lines.append(
            f"sharpness {variant} vs cold 20 from host: max rel diff {rel.max():.2e}, all {rel.round(5)}"
        )
    if "torch_error" in entry:
        lines.append("torch loop failed: " + entry["torch_error"])
    if "torch" in entry:
        t = entry["torch"]
        lines.append(
            f"| torch + PyHessian + torch.func | — | {t['loop_s']:.4f} s | {t['end_to_end_s']:.2f} s | "
            f"{t['loop_s'] / base['loop_s']:.3f} | |"
        )
        for variant in ("in_step", "from_host", "from_host_warm", "chunks_warm"):
            lines.append(
                f"torch / jaxdl {variant}: end to end {t['end_to_end_s'] / j[variant]['end_to_end_s']:.2f} x; "
                f"loops {t['loop_s'] / j[variant]['loop_s']:.2f} x"
            )
        lines.append(f"sharpness jaxdl {j['from_host']['sharpness'][:3]} torch {t['sharpness'][:3]}")
        lines.append(f"trace jaxdl {j['from_host']['trace'][:3]} torch {t['trace'][:3]}")
        lines.append(f"ntk max jaxdl {j['from_host']['ntk_max'][:3]} torch {t['ntk_max'][:3]}")
        lines.append(f"final loss jaxdl {j['unmonitored']['final_loss']:.5f} torch {t['final_loss']:.5f}")
    if "probes_compile_s" in j:
        lines.append(
            "compile (s) of the probes alone: "
            + ", ".join(f"{k}: {v:.2f}" for k, v in j["probes_compile_s"].items())
        )
    if "probes_ms" in j:
        peer = entry.get("torch", {}).get("probes_ms", {})
        lines.append("| probe alone (steady state) | jaxdl | torch peer | torch / jaxdl |")
        lines.append("|---|---:|---:|---:|")
        for probe, jt in j["probes_ms"].items():
            tt = peer.get(probe.replace("monitor.compute", "monitor"))
            lines.append(
                f"| {probe} | {jt:.3f} ms | " + (f"{tt:.2f} ms | {tt / jt:.1f} |" if tt else "— | — |")
            )
    return "\n".join(lines)


def summarise(results: dict) -> str:
    lines = [
        f"device {results['device']}, jax {results['jax']}, {results['steps']} steps, probes every "
        f"{results['every']}, Lanczos {results['eig_iters']} steps cold / {results['warm_iters']} warm"
    ]
    lines += [summarise_model(name, results[name]) for name in MODELS if name in results]
    return "\n".join(lines)


def test_monitored_training_small():
    results = run(with_torch=False)
    for name in MODELS:
        j = results[name]["jaxdl"]
        cold = j["from_host"]["sharpness"]
        assert len(cold) == STEPS // EVERY
        np.testing.assert_allclose(j["in_step"]["sharpness"], cold, rtol=1e-3)
        assert j["chunks_warm"]["sharpness"] == j["from_host_warm"]["sharpness"] or np.allclose(
            j["chunks_warm"]["sharpness"], j["from_host_warm"]["sharpness"], rtol=1e-3
        )
        np.testing.assert_allclose(j["chunks_warm"]["final_loss"], j["unmonitored"]["final_loss"], rtol=1e-4)
    print(summarise(results))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument(
        "--cache-dir", default=None, help="JAX persistent compilation cache (a second run reuses it)"
    )
    parser.add_argument("--tag", default="", help="suffix of the output files")
    parser.add_argument("--no-probe-times", action="store_true", help="skip the probe-alone timings")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeats", type=int, default=REPEATS, help="timed loops per variant")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="loops to time")
    args = parser.parse_args()
    REPEATS = args.repeats
    VARIANTS = tuple(args.variants.split(","))
    if args.cache_dir:
        jax.config.update("jax_compilation_cache_dir", args.cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    args.out.mkdir(parents=True, exist_ok=True)

    def write(results):
        (args.out / f"monitored_training{args.tag}.json").write_text(
            json.dumps(results, indent=2, default=str)
        )

    results = run(
        with_torch=not args.no_torch,
        probe_times=not args.no_probe_times,
        models=args.models.split(","),
        on_model=write,
    )
    text = summarise(results)
    (args.out / f"monitored_training{args.tag}.md").write_text(text + "\n")
    print(text)
