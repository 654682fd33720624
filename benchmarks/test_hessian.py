"""Hessian probes on a GPU: HVP and GGN-vp against one gradient, top eigenvalue, trace, SLQ density.

Models: a ~1M- and a ~25M-parameter MLP (3072 inputs, batch 256, softmax cross-entropy) and
a ~0.24M-parameter CNN at batch 200 (the size of PyHessian's ResNet-20 anchor). Every probe
sits beside its baseline, one jitted gradient of the same model and batch, and records
``cost_in_gradients`` comparisons in ``extra_info`` when the gradient ran first.

Anchors (probes.md §3.1, H100, ResNet-20 at batch 200): PyHessian 94 ms per HVP, 0.94 s for
the top eigenvalue, 9.9 s for a 100-probe trace, 25.5 s for a 100-step density. Goals: every
probe at least 10x faster than PyHessian on the same model, the HVP within 2.5x of a gradient.

    .venv/bin/python -m pytest benchmarks/test_hessian.py                      # full sizes (GPU)
    JAXDL_BENCH_SMALL=1 .venv/bin/python -m pytest benchmarks/test_hessian.py  # tiny, CPU
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.probes import hessian as hs

SMALL = os.environ.get("JAXDL_BENCH_SMALL") == "1"
KEY = jax.random.key(0)

# name -> (kind, layer sizes or conv channels, batch, image side)
MODELS = {
    "mlp_1m": ("mlp", (3072, 300, 300, 10), 256, None),
    "mlp_25m": ("mlp", (3072, 2900, 2900, 2900, 10), 256, None),
    "cnn_240k": ("cnn", (3, 32, 64, 128, 128, 10), 200, 32),
}
if SMALL:
    MODELS = {
        "mlp_1m": ("mlp", (32, 16, 16, 10), 16, None),
        "mlp_25m": ("mlp", (32, 24, 24, 24, 10), 16, None),
        "cnn_240k": ("cnn", (3, 4, 4, 4, 4, 10), 8, 8),
    }
TRACE_SAMPLES, DENSITY_RUNS, DENSITY_STEPS, EIG_ITERS = (10, 2, 8, 10) if SMALL else (100, 10, 90, 100)
ROUNDS = 2 if SMALL else 3
_GRAD_SECONDS: dict[str, float] = {}


def make_model(name):
    kind, sizes, batch_size, side = MODELS[name]
    keys = iter(jax.random.split(jax.random.key(1), 16))
    if kind == "mlp":
        params = [
            {"w": jax.random.normal(next(keys), (a, b)) / np.sqrt(a), "b": jnp.zeros(b)}
            for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        ]
        x = jax.random.normal(next(keys), (batch_size, sizes[0]))

        def apply_fn(params, batch):
            h = batch["x"]
            for layer in params[:-1]:
                h = jax.nn.relu(h @ layer["w"] + layer["b"])
            return h @ params[-1]["w"] + params[-1]["b"]

    else:
        channels, classes = sizes[:-1], sizes[-1]
        params = [
            {"w": jax.random.normal(next(keys), (3, 3, a, b)) / np.sqrt(9 * a), "b": jnp.zeros(b)}
            for a, b in zip(channels[:-1], channels[1:], strict=True)
        ]
        params.append(
            {"w": jax.random.normal(next(keys), (channels[-1], classes)) / 10.0, "b": jnp.zeros(classes)}
        )
        x = jax.random.normal(next(keys), (batch_size, side, side, channels[0]))

        def apply_fn(params, batch):
            h = batch["x"]
            for i, layer in enumerate(params[:-1]):
                stride = 2 if i > 0 else 1
                h = jax.lax.conv_general_dilated(
                    h, layer["w"], (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
                )
                h = jax.nn.relu(h + layer["b"])
            return h.mean(axis=(1, 2)) @ params[-1]["w"] + params[-1]["b"]

    batch = {"x": x, "y": jax.random.randint(next(keys), (batch_size,), 0, sizes[-1])}

    def ce(logits, batch):
        return jnp.mean(
            jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, batch["y"][:, None], 1)[:, 0]
        )

    loss_fn = lambda p, b: ce(apply_fn(p, b), b)
    return loss_fn, apply_fn, ce, params, batch


def num_params(params):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def probe_fns(loss_fn, apply_fn, ce):
    """name -> jitted f(params, batch, v_or_key): the gradient baseline and every probe."""
    return {
        "grad": jax.jit(lambda p, b, _: jax.grad(loss_fn)(p, b)),
        "hvp": jax.jit(lambda p, b, v: hs.hvp(loss_fn, p, b, v)),
        "ggn_vp": jax.jit(lambda p, b, v: hs.ggn_vp(apply_fn, ce, p, b, v)),
        "top1_lanczos": jax.jit(
            lambda p, b, k: hs.top_eigenvalues(loss_fn, p, b, key=k, num_iters=EIG_ITERS)
        ),
        "top1_power": jax.jit(
            lambda p, b, k: hs.top_eigenvalues(
                loss_fn, p, b, key=k, method="power", which="magnitude", num_iters=EIG_ITERS
            )
        ),
        "trace_hutchinson": jax.jit(
            lambda p, b, k: hs.hessian_trace(loss_fn, p, b, key=k, num_samples=TRACE_SAMPLES)
        ),
        "density_slq": jax.jit(
            lambda p, b, k: hs.spectral_density(
                loss_fn, p, b, key=k, num_runs=DENSITY_RUNS, lanczos_steps=DENSITY_STEPS
            )
        ),
    }


PROBES = ["grad", "hvp", "ggn_vp", "top1_lanczos", "top1_power", "trace_hutchinson", "density_slq"]
PYHESSIAN_ANCHOR_S = {"hvp": 0.094, "top1_power": 0.94, "trace_hutchinson": 9.9, "density_slq": 25.5}


@pytest.mark.parametrize("probe", PROBES)
@pytest.mark.parametrize("model", list(MODELS))
def test_hessian_probe(benchmark, model, probe):
    loss_fn, apply_fn, ce, params, batch = make_model(model)
    fn = probe_fns(loss_fn, apply_fn, ce)[probe]
    third = params if probe in ("grad", "hvp", "ggn_vp") else KEY
    run = lambda: jax.block_until_ready(fn(params, batch, third))
    result = run()  # compile outside the timed rounds
    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=0)  # the call above compiled and warmed it

    p = num_params(params)
    info = benchmark.extra_info
    info.update(model=model, params=p, batch=int(batch["x"].shape[0]), device=jax.devices()[0].device_kind)
    if benchmark.stats is None:  # --benchmark-disable
        return
    median = benchmark.stats.stats.median
    if probe == "grad":
        _GRAD_SECONDS[model] = median
    elif model in _GRAD_SECONDS:
        info["cost_in_gradients"] = median / _GRAD_SECONDS[model]
    if probe in ("top1_lanczos", "top1_power"):
        info["matvecs"] = int(result.num_matvecs)
        info["eigenvalue"] = float(result.eigenvalues[0])
    if probe == "top1_lanczos":
        # full reorthogonalisation reads the basis twice per pass, two passes: the byte floor per step
        info["reorth_bytes_per_step_at_m"] = f"16 * m * {p} bytes"
    if probe == "density_slq":
        info["basis_bytes"] = (DENSITY_STEPS + 1) * p * 4
    if model == "cnn_240k" and probe in PYHESSIAN_ANCHOR_S:
        info["pyhessian_resnet20_anchor_s"] = PYHESSIAN_ANCHOR_S[probe]
        info["speedup_vs_pyhessian_anchor"] = PYHESSIAN_ANCHOR_S[probe] / median


def extra_probe_fns(loss_fn):
    """The Lanczos variants timed before/after a change (``__main__`` below)."""
    probes = hs.hessian_probes(loss_fn)
    return {
        "top1_lanczos_20": jax.jit(
            lambda p, b, k: hs.top_eigenvalues(loss_fn, p, b, key=k, num_iters=20, tol=0.0)
        ),
        "top5_lanczos": jax.jit(
            lambda p, b, k: hs.top_eigenvalues(loss_fn, p, b, key=k, k=5, num_iters=EIG_ITERS)
        ),
        "probes_object_top1": lambda p, b, k: probes.top_eigenvalues(p, b, k, num_iters=EIG_ITERS),
    }


if __name__ == "__main__":
    # Time some probes in one process (first call = compile + run, then the median of 11):
    #   python benchmarks/test_hessian.py --models mlp_1m --probes top1_lanczos,density_slq --out r.json
    import argparse
    import json
    import time

    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="mlp_1m")
    parser.add_argument(
        "--probes", default="grad,top1_lanczos,top1_lanczos_20,top5_lanczos,probes_object_top1"
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = {"device": str(jax.devices()[0]), "jax": jax.__version__, "jaxdl": hs.__file__}
    for model in args.models.split(","):
        loss_fn, apply_fn, ce, params, batch = make_model(model)
        fns = {**probe_fns(loss_fn, apply_fn, ce), **extra_probe_fns(loss_fn)}
        for probe in args.probes.split(","):
            third = params if probe in ("grad", "hvp", "ggn_vp") else KEY
            start = time.perf_counter()
            result = jax.block_until_ready(fns[probe](params, batch, third))
            first = time.perf_counter() - start
            times = []
            for _ in range(11):
                start = time.perf_counter()
                jax.block_until_ready(fns[probe](params, batch, third))
                times.append(time.perf_counter() - start)
            entry = {"first_call_s": first, "median_ms": 1e3 * float(np.median(times))}
            if hasattr(result, "eigenvalues"):
                entry.update(
                    eigenvalues=np.asarray(result.eigenvalues).tolist(), matvecs=int(result.num_matvecs)
                )
            out[f"{model}/{probe}"] = entry
            print(model, probe, entry, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
