"""Monitored training end to end: jaxdl's in-loop monitor against the same loop in PyTorch.

A 1.0M-parameter MLP (3072-300-300-10, ReLU, softmax cross-entropy, batch 256) trained for
1,000 SGD steps (momentum 0.9), with the probes every 100 steps on a fixed probe batch:

- sharpness: 20 Lanczos steps (jaxdl) vs PyHessian's power iteration with ``maxIter=20,
  tol=0`` (20 Hessian-vector products each);
- trace: 10 Hutchinson (Rademacher) probes in both (PyHessian ``trace(maxIter=10, tol=0)``);
- the top eigenvalue and condition number of the logit-averaged empirical NTK on 32 inputs
  (jaxdl ``empirical_ntk``, "auto"; PyTorch ``torch.func.vmap(jacrev)`` contracted with einsum,
  the method of the PyTorch NTK tutorial);
- NLM alignment cos(-g, θ) and the softmax-collapse fraction in both.

Loops timed (wall clock, from before compilation to the last result on the host):

1. jaxdl, unmonitored: ``jax.jit(step)``;
2. jaxdl, monitored in the step: the monitor under ``lax.cond`` inside the same jitted step;
3. jaxdl, monitored from the host: the unmonitored step, plus a jitted ``monitor.compute`` called
   by Python every 100 steps;
4. PyTorch eager + PyHessian (master, ``torch.linalg``) + ``torch.func``, same initial weights,
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

from jaxdl.probes import training_monitor

SMALL = os.environ.get("JAXDL_BENCH_SMALL") == "1"
SIZES = (32, 16, 16, 10) if SMALL else (3072, 300, 300, 10)
BATCH, STEPS, EVERY = (16, 20, 5) if SMALL else (256, 1000, 100)
NUM_BATCHES, LR, MOMENTUM = 8, 0.01, 0.9
EIG_ITERS, TRACE_SAMPLES, NTK_INPUTS = (4, 2, 4) if SMALL else (20, 10, 32)
REPEATS = 3


def init_weights(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """He-normal weights and zero biases, as NumPy float32 (shared by both frameworks)."""
    rng = np.random.default_rng(seed)
    return [
        ((rng.normal(size=(a, b)) * np.sqrt(2.0 / a)).astype(np.float32), np.zeros(b, np.float32))
        for a, b in zip(SIZES[:-1], SIZES[1:], strict=True)
    ]


def make_data(seed: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(NUM_BATCHES, BATCH, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], size=(NUM_BATCHES, BATCH)).astype(np.int32)
    return x, y


# ---- jaxdl ----------------------------------------------------------------------------------


def apply_fn(params, x):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def loss_fn(params, batch):
    x, y = batch
    return optax.softmax_cross_entropy_with_integer_labels(apply_fn(params, x), y).mean()


def jax_loops(weights, data) -> dict:
    x_all, y_all = (jnp.asarray(a) for a in data)
    xs, ys = list(x_all), list(y_all)  # sliced once: no eager slicing inside the timed loops
    params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in weights]
    tx = optax.sgd(LR, momentum=MOMENTUM)
    probe_batch = (x_all[0], y_all[0])
    monitor = training_monitor(
        lambda p, _: loss_fn(p, probe_batch),
        learning_rate=LR,
        every=EVERY,
        momentum=MOMENTUM,
        num_iters=EIG_ITERS,
        num_samples=TRACE_SAMPLES,
        logits_fn=lambda p, _: apply_fn(p, probe_batch[0]),
        apply_fn=apply_fn,
        ntk_inputs=x_all[0][:NTK_INPUTS],
    )
    key = jax.random.key(0)

    def plain_step(step, params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, (x, y))
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, grads

    def unmonitored(step, params, opt_state, x, y):
        params, opt_state, loss, _ = plain_step(step, params, opt_state, x, y)
        return params, opt_state, loss

    def monitored(step, params, opt_state, x, y):
        record = monitor(step, params, None, jax.random.fold_in(key, step))
        params, opt_state, loss, _ = plain_step(step, params, opt_state, x, y)
        return params, opt_state, loss, record

    def probe(step, params):
        return monitor.compute(params, None, jax.random.fold_in(key, step), step=step)

    results = {}
    steps = [jnp.asarray(s, jnp.int32) for s in range(STEPS)]
    for name in ("unmonitored", "monitored_in_step", "monitored_from_host"):
        step_fn = monitored if name == "monitored_in_step" else unmonitored
        opt_state = tx.init(params)
        start = time.perf_counter()
        compiled = jax.jit(step_fn, donate_argnums=(1, 2)).lower(
            steps[0], params, opt_state, x_all[0], y_all[0]
        )
        compiled = compiled.compile()
        compile_s = time.perf_counter() - start
        probe_compiled = None
        if name == "monitored_from_host":
            probe_compiled = jax.jit(probe).lower(steps[0], params).compile()
            compile_s = time.perf_counter() - start
        loops = []
        for _ in range(REPEATS):  # the same 1000 steps from the same start, timed REPEATS times
            p, opt_state = jax.tree.map(jnp.copy, params), tx.init(params)
            records = []
            loop_start = time.perf_counter()
            for s in range(STEPS):
                if probe_compiled is not None and s % EVERY == 0:
                    records.append(probe_compiled(steps[s], p))
                out = compiled(steps[s], p, opt_state, xs[s % NUM_BATCHES], ys[s % NUM_BATCHES])
                p, opt_state = out[0], out[1]
                if name == "monitored_in_step" and s % EVERY == 0:
                    records.append(out[3])
            jax.block_until_ready((p, records))
            loops.append(time.perf_counter() - loop_start)
        loop_s = float(np.median(loops))
        results[name] = {
            "compile_s": compile_s,
            "loop_s": loop_s,
            "loops_s": loops,
            "end_to_end_s": compile_s + loops[0],
            "final_loss": float(out[2]),
            "sharpness": [float(r.sharpness) for r in records],
            "trace": [float(r.trace) for r in records],
            "ntk_max": [float(r.ntk_max_eigenvalue) for r in records],
        }
    results["probes_ms"] = _jax_probe_times(monitor, params, probe_batch, x_all[0][:NTK_INPUTS], key)
    return results


def _median_ms(fn, repeats: int = 5) -> float:
    jax.block_until_ready(fn())  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def _jax_probe_times(monitor, params, probe_batch, ntk_x, key) -> dict:
    """Steady-state time of each probe alone, jitted, at the monitor's settings."""
    from jaxdl.probes import empirical_ntk, hessian_trace, top_eigenvalues

    loss = monitor.loss_fn
    eig = jax.jit(
        lambda p, k: top_eigenvalues(loss, p, None, key=k, num_iters=EIG_ITERS, tol=0.0).eigenvalues
    )
    trace = jax.jit(lambda p, k: hessian_trace(loss, p, None, key=k, num_samples=TRACE_SAMPLES).trace)
    ntk = jax.jit(lambda p: jnp.linalg.eigvalsh(empirical_ntk(apply_fn, p, ntk_x)))
    grad = jax.jit(jax.grad(lambda p: loss_fn(p, probe_batch)))
    compute = jax.jit(monitor.compute)
    return {
        "gradient": _median_ms(lambda: grad(params)),
        "sharpness": _median_ms(lambda: eig(params, key)),
        "trace": _median_ms(lambda: trace(params, key)),
        "ntk": _median_ms(lambda: ntk(params)),
        "all (monitor.compute)": _median_ms(lambda: compute(params, None, key)),
    }


# ---- PyTorch + PyHessian + torch.func ---------------------------------------------------------


def torch_loop(weights, data) -> dict:
    import torch
    from torch.func import functional_call, jacrev, vmap

    sys.path.insert(0, os.environ.get("PYHESSIAN_PATH", ""))
    from pyhessian import hessian as pyhessian

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True  # JAX's default f32 matmul precision on GPUs
    torch.backends.cudnn.allow_tf32 = True
    layers = []
    for i, (w, b) in enumerate(weights):
        linear = torch.nn.Linear(*w.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w.T.copy()))
            linear.bias.copy_(torch.from_numpy(b))
        layers.append(linear)
        if i < len(weights) - 1:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers).to(device)
    criterion = torch.nn.CrossEntropyLoss()
    x_all = torch.from_numpy(data[0]).to(device)
    y_all = torch.from_numpy(data[1]).long().to(device)
    probe_x, probe_y = x_all[0], y_all[0]
    ntk_x = probe_x[:NTK_INPUTS]

    def ntk_top(model):
        params = {k: v.detach() for k, v in model.named_parameters()}

        def single(p, x):
            return functional_call(model, p, (x.unsqueeze(0),)).squeeze(0)

        jac = vmap(jacrev(single), (None, 0))(params, ntk_x)
        theta = sum(torch.einsum("naf,maf->nm", j.flatten(2), j.flatten(2)) for j in jac.values())
        eig = torch.linalg.eigvalsh(theta / SIZES[-1])
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


def run(with_torch: bool = True) -> dict:
    weights, data = init_weights(), make_data()
    results = {
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "sizes": SIZES,
        "batch": BATCH,
        "steps": STEPS,
        "every": EVERY,
        "parameters": int(sum(w.size + b.size for w, b in weights)),
        "jaxdl": jax_loops(weights, data),
    }
    if with_torch:
        try:
            results["torch"] = torch_loop(weights, data)
        except Exception as error:  # keep jaxdl's figures when the peer fails; report why
            import traceback

            results["torch_error"] = f"{error!r}\n{traceback.format_exc()}"
    return results


def summarise(results: dict) -> str:
    j = results["jaxdl"]
    base = j["unmonitored"]
    lines = [
        f"device {results['device']}, jax {results['jax']}, {results['parameters']:,} parameters, "
        f"{results['steps']} steps, probes every {results['every']}",
        "| loop | compile | loop | end to end | loop / unmonitored loop |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in j.items():
        if name == "probes_ms":
            continue
        lines.append(
            f"| jaxdl {name} | {r['compile_s']:.2f} s | {r['loop_s']:.3f} s | {r['end_to_end_s']:.2f} s | "
            f"{r['loop_s'] / base['loop_s']:.3f} |"
        )
    if "torch_error" in results:
        lines.append("torch loop failed: " + results["torch_error"])
    if "torch" in results:
        t = results["torch"]
        lines.append(
            f"| torch + PyHessian + torch.func | — | {t['loop_s']:.3f} s | {t['end_to_end_s']:.2f} s | "
            f"{t['loop_s'] / base['loop_s']:.3f} |"
        )
        for name in ("monitored_in_step", "monitored_from_host"):
            lines.append(
                f"torch end to end / jaxdl {name} end to end: {t['end_to_end_s'] / j[name]['end_to_end_s']:.1f} x; "
                f"loops only: {t['loop_s'] / j[name]['loop_s']:.1f} x"
            )
        lines.append("| probe alone (steady state) | jaxdl | torch peer | torch / jaxdl |")
        lines.append("|---|---:|---:|---:|")
        for (name, jt), tt in zip(j["probes_ms"].items(), t["probes_ms"].values(), strict=True):
            lines.append(f"| {name} | {jt:.2f} ms | {tt:.2f} ms | {tt / jt:.1f} |")
        lines.append(f"sharpness jaxdl {j['monitored_in_step']['sharpness'][:3]} torch {t['sharpness'][:3]}")
        lines.append(f"trace jaxdl {j['monitored_in_step']['trace'][:3]} torch {t['trace'][:3]}")
        lines.append(f"ntk max jaxdl {j['monitored_in_step']['ntk_max'][:3]} torch {t['ntk_max'][:3]}")
    return "\n".join(lines)


def test_monitored_training_small():
    results = run(with_torch=False)
    j = results["jaxdl"]
    in_step, from_host = j["monitored_in_step"], j["monitored_from_host"]
    assert len(in_step["sharpness"]) == STEPS // EVERY
    np.testing.assert_allclose(in_step["sharpness"], from_host["sharpness"], rtol=1e-3)
    print(summarise(results))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument(
        "--cache-dir", default=None, help="JAX persistent compilation cache (a second run reuses it)"
    )
    parser.add_argument("--tag", default="", help="suffix of the output files")
    args = parser.parse_args()
    if args.cache_dir:
        jax.config.update("jax_compilation_cache_dir", args.cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    results = run(with_torch=not args.no_torch)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"monitored_training{args.tag}.json").write_text(json.dumps(results, indent=2, default=str))
    text = summarise(results)
    (args.out / f"monitored_training{args.tag}.md").write_text(text + "\n")
    print(text)
