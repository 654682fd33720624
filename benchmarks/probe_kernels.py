"""GPU probe (issue #13): can a Pallas kernel (Triton or Mosaic GPU) move bytes as fast as torch's?

One process, peers side by side: a donated 3.3 GB `y = 2x` and an Adam update over one flat
103.6M-element buffer, as plain XLA, Pallas Triton (block / warps / persistent loop swept),
Pallas Mosaic GPU (TMA-pipelined, `max_concurrent_steps` swept), torch `mul_` and torch fused Adam;
then the full fused steps on 217 and 18 leaves. Run: `python benchmarks/probe_kernels.py OUT.json
[SECTION ...]` (copy, adam, steps by default; device, layout, defaults, check, floor: issue #13's
device-time tables and checks; run E's `pallas` section and its leaves-in-runs-of-32 option were
removed after run J).
Not part of the pytest suites (it needs a Hopper GPU and torch).
"""

import json
import os
import re
import statistics
import sys
import time
import traceback

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax
import jax.numpy as jnp
import optax

try:
    import torch
except ImportError:  # PROBE_LOWER=1 on a machine without torch
    torch = None
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from jaxdl.optim import (
    _pallas,
    diffgrad,
    fused_adam,
    fused_diffgrad,
    fused_lamb,
    fused_perp_adamw,
    fused_perp_sgd,
    lamb,
    perp_adamw,
)

RESULTS: dict = {"versions": {}, "rows": []}
# PROBE_LOWER=1: only lower every case for CUDA with small sizes (a check on a machine without GPU).
LOWER_ONLY = os.environ.get("PROBE_LOWER") == "1"
N = 17 * 2048 * 2952 + 200 * 4096 if not LOWER_ONLY else 132 * 64 * 256 * 2  # 103,596,032
N_COPY = 8 * N
SMS = 132


def record(name, seconds, nbytes=None, **extra):
    row = {"name": name, "ms": seconds * 1e3, **extra}
    if nbytes:
        row["TB/s"] = nbytes / seconds / 1e12
    RESULTS["rows"].append(row)
    print(json.dumps(row), flush=True)
    save()


def save():
    """Write RESULTS now (a run cut short by its time limit keeps what it measured)."""
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump(RESULTS, f, indent=1)


def median_time(fn, rounds=20, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def guarded(name, thunk):
    try:
        thunk()
    except Exception as err:  # noqa: BLE001 - a probe: report and go on
        msg = "".join(traceback.format_exception_only(err))[-600:]
        RESULTS["rows"].append({"name": name, "error": msg})
        print(f"FAILED {name}: {msg}", flush=True)


def jax_case(name, fn, args, nbytes, rounds=20, **extra):
    """Compile (timed), then time donated calls. `fn` returns a tuple like its arguments."""
    fn_tuple = lambda *a: tuple(fn(*a))
    if LOWER_ONLY:
        jax.jit(fn_tuple).trace(*args).lower(lowering_platforms=("cuda",))
        return print("lowered", name, flush=True)
    t = time.perf_counter()
    compiled = jax.jit(fn_tuple, donate_argnums=tuple(range(len(args)))).lower(*args).compile()
    carry = [compiled(*args)]
    jax.block_until_ready(carry)
    compile_s = time.perf_counter() - t

    def run():
        carry[0] = compiled(*carry[0])
        jax.block_until_ready(carry[0])

    record(name, median_time(run, rounds), nbytes, compile_s=round(compile_s, 2), **extra)


# ---------------------------------------------------------------------------------------------
# y = 2x


def triton_blocked(block, warps):
    def f(x):
        def kernel(x_ref, o_ref):
            o_ref[...] = x_ref[...] * 2.0

        spec = pl.BlockSpec((block,), lambda i: (i,))
        return (
            pl.pallas_call(
                kernel,
                out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
                grid=(pl.cdiv(x.shape[0], block),),
                in_specs=[spec],
                out_specs=spec,
                input_output_aliases={0: 0},
                compiler_params=pltriton.CompilerParams(num_warps=warps, num_stages=1),
            )(x),
        )

    return f


def mosaic_kernel(fn_body, n_in, n_out, rows_per_block, stages, cols=256):
    """plgpu.kernel, one block per SM, each running a TMA pipeline over its share of rows."""
    from jax.experimental.pallas import mosaic_gpu as plgpu

    def f(*xs):
        rows = xs[0].shape[0]
        steps = rows // (rows_per_block * SMS)

        def body(*refs):
            sm = jax.lax.axis_index("sm")
            spec = pl.BlockSpec((rows_per_block, cols), lambda j: (sm * steps + j, 0))

            def step(_, *smem):
                outs = fn_body(*[r[...] for r in smem[:n_in]])
                for r, v in zip(smem[n_in:], outs, strict=True):
                    r[...] = v

            plgpu.emit_pipeline(
                step,
                grid=(steps,),
                in_specs=[spec] * n_in,
                out_specs=[spec] * n_out,
                max_concurrent_steps=stages,
            )(*refs)

        out = [jax.ShapeDtypeStruct(xs[0].shape, xs[0].dtype)] * n_out
        return tuple(plgpu.kernel(body, out_type=out, grid=(SMS,), grid_names=("sm",))(*xs))

    return f


def floor_section():
    """The copies that give the floors: a donated JAX `y = 2x` and torch's `mul_` over 3.3 GB."""
    nbytes = 2 * 4 * N_COPY
    x = jnp.ones((N_COPY,), jnp.float32)
    jax_case("copy xla", lambda x: (x * 2.0,), (x,), nbytes)
    del x
    if not LOWER_ONLY:
        tx = torch.ones(N_COPY, device="cuda")
        sync = torch.cuda.synchronize
        record("copy torch mul_", median_time(lambda: (tx.mul_(2.0), sync())), nbytes)
        del tx
        torch.cuda.empty_cache()


def copy_section():
    """The floors' copies, then the same copy as Pallas kernels (Triton, Mosaic GPU)."""
    floor_section()
    nbytes = 2 * 4 * N_COPY
    for block, warps in [(256, 1), (512, 2), (512, 4), (1024, 2), (1024, 4), (1024, 8), (2048, 4)]:
        x = jnp.ones((N_COPY,), jnp.float32)
        name, f = f"copy triton b{block} w{warps}", triton_blocked(block, warps)
        guarded(name, lambda name=name, f=f, x=x: jax_case(name, f, (x,), nbytes))
    # Mosaic GPU: rows of 256 floats, trimmed to a multiple of SMS * rows_per_block.
    for rpb, stages in [(32, 2), (32, 3), (16, 4), (8, 6)]:
        rows = (N_COPY // 256) // (SMS * rpb) * (SMS * rpb)
        x = jnp.ones((rows, 256), jnp.float32)
        name = f"copy mosaic r{rpb} s{stages}"
        f = mosaic_kernel(lambda a: (a * 2.0,), 1, 1, rpb, stages)
        guarded(name, lambda name=name, f=f, x=x: jax_case(name, f, (x,), 2 * 4 * x.size))
        del x


# ---------------------------------------------------------------------------------------------
# Adam over one flat buffer: reads p, g, m, v; writes p, m, v.


def adam_body(p, g, m, v, *_):
    m = 0.9 * m + 0.1 * g
    v = 0.999 * v + 0.001 * g * g
    return p - 1e-3 * (m / 0.1) / (jnp.sqrt(v / 0.001) + 1e-8), m, v


def adam_body_rsqrt(p, g, m, v):
    """The same update with sqrt(x) as x * rsqrt(x) (Mosaic GPU lowers rsqrt, not sqrt)."""
    m = 0.9 * m + 0.1 * g
    v = 0.999 * v + 0.001 * g * g
    v_hat = v / 0.001
    return p - 1e-3 * (m / 0.1) / (v_hat * jax.lax.rsqrt(v_hat) + 1e-8), m, v


def adam_section():
    nbytes = 7 * 4 * N

    def fresh(shape=(N,)):
        k = jax.random.split(jax.random.key(0), 2)
        return (
            jax.random.normal(k[0], shape),
            jax.random.normal(k[1], shape),
            jnp.zeros(shape),
            jnp.zeros(shape),
        )

    def xla(p, g, m, v):
        p, m, v = adam_body(p, g, m, v)
        return p, g, m, v

    jax_case("adam xla", xla, fresh(), nbytes)
    for block, warps in [(512, 4), (1024, 4), (1024, 8), (2048, 4), (2048, 8)]:

        def tri(p, g, m, v, block=block, warps=warps):
            out = _pallas.multi_tensor(
                [adam_body], [[p], [g]], [m, v], [[(0, 0), (1, 0)]], [], block=block, num_warps=warps
            )
            return out.leaves[0], g, *out.storage

        name = f"adam triton multi_tensor b{block} w{warps}"
        guarded(name, lambda name=name, tri=tri: jax_case(name, tri, fresh(), nbytes))
    for rpb, stages in [(8, 2), (8, 3), (4, 4)]:
        rows = (N // 256) // (SMS * rpb) * (SMS * rpb)

        def mos(p, g, m, v, rpb=rpb, stages=stages):
            p, m, v = mosaic_kernel(adam_body_rsqrt, 4, 3, rpb, stages)(p, g, m, v)
            return p, g, m, v

        name = f"adam mosaic r{rpb} s{stages}"
        nb = 7 * 4 * rows * 256
        guarded(
            name, lambda name=name, mos=mos, rows=rows, nb=nb: jax_case(name, mos, fresh((rows, 256)), nb)
        )
    # torch fused Adam on one flat tensor of the same size
    if LOWER_ONLY:
        return
    tp = torch.randn(N, device="cuda", requires_grad=True)
    tp.grad = torch.randn_like(tp)
    opt = torch.optim.Adam([tp], lr=1e-3, fused=True)
    record(
        "adam torch fused (1 flat tensor)",
        median_time(lambda: (opt.step(), torch.cuda.synchronize())),
        nbytes,
    )
    torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# The fused steps on network-shaped trees.

SHAPES = {
    "217 leaves": [(2048, 2952)] * 17 + [(4096,)] * 200,
    "18 leaves": [(2048, 2952)] * 17 + [(200, 4096)],
}
if LOWER_ONLY:
    SHAPES = {"217 leaves": [(300, 256)] * 2 + [(4096,)] * 20, "18 leaves": [(300, 256)] * 2 + [(20, 4096)]}


def kernels(compiled) -> int:
    text = compiled.as_text()
    return len(re.findall(r"\b(?:fusion|custom-call)\(", text))


def pipelined(call, k=20, repeats=3):
    """Seconds per call with `k` calls in flight before one sync (host dispatch overlaps the
    device's work): the median of `repeats`."""
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        call(k)
        out.append((time.perf_counter() - t) / k)
    return statistics.median(out)


def tree(shapes, seed=0):
    keys = jax.random.split(jax.random.key(seed), len(shapes))
    return {f"p{i:03d}": jax.random.normal(k, s) for i, (k, s) in enumerate(zip(keys, shapes, strict=True))}


def setup(layout, make):
    """Parameters, gradients, the optimizer and `step(params, state, grads)` (update + apply)."""
    params = tree(SHAPES[layout])
    grads = jax.tree.map(lambda p: p * 0.01, params)
    opt = make()

    def step(p, s, g):
        if hasattr(opt, "step"):
            return opt.step(p, g, s)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    return params, grads, opt, step


def compile_first(fn, carry, grads):
    """Compile `fn(params, state, grads)` with params and state donated and take one step (timed
    together: the first call's cost); `carry` holds [params, state] and is updated."""
    t = time.perf_counter()
    compiled = jax.jit(fn, donate_argnums=(0, 1)).lower(*carry, grads).compile()
    carry[0], carry[1] = compiled(*carry, grads)
    jax.block_until_ready(carry)
    return compiled, time.perf_counter() - t


def step_case(name, layout, make, rounds=20):
    params, grads, opt, fn = setup(layout, make)
    carry = [params, jax.jit(opt.init)(params)]
    if LOWER_ONLY:
        _pallas.jax = _GpuJax
        text = jax.jit(fn).trace(*carry, grads).lower(lowering_platforms=("cuda",)).as_text()
        _pallas.jax = jax
        return print("lowered", name, layout, text.count("__gpu$xla.gpu.triton"), flush=True)
    compiled, compile_s = compile_first(fn, carry, grads)
    dispatch = []

    def run():
        t = time.perf_counter()
        carry[0], carry[1] = compiled(*carry, grads)
        dispatch.append(time.perf_counter() - t)
        jax.block_until_ready(carry)

    def run_k(k):
        for _ in range(k):
            carry[0], carry[1] = compiled(*carry, grads)
        jax.block_until_ready(carry)

    sync = median_time(run, rounds)
    record(
        f"{name} [{layout}]",
        sync,
        compile_s=round(compile_s, 2),
        kernels=kernels(compiled),
        pipelined_ms=pipelined(run_k) * 1e3,
        dispatch_ms=statistics.median(dispatch) * 1e3,
    )


def torch_step(layout, rounds=20):
    if LOWER_ONLY:
        return
    params = [torch.randn(s, device="cuda", requires_grad=True) for s in SHAPES[layout]]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = torch.optim.Adam(params, lr=1e-3, fused=True)

    def run_k(k):
        for _ in range(k):
            opt.step()
        torch.cuda.synchronize()

    sync = median_time(lambda: run_k(1), rounds)
    record(f"torch fused Adam [{layout}]", sync, pipelined_ms=pipelined(run_k) * 1e3)
    torch.cuda.empty_cache()


class _GpuJax:
    """`jax` as `_pallas` sees it, claiming a GPU backend (PROBE_LOWER=1: lower the kernels)."""

    def __getattr__(self, name):
        return getattr(jax, name)

    @staticmethod
    def default_backend():
        return "gpu"


_GpuJax = _GpuJax()


def with_leaves_per_kernel(k, make):
    def build():
        _pallas._LEAVES_PER_KERNEL = k
        return make()

    return build


STEPS_18 = [
    ("fused_adam xla", lambda: fused_adam(1e-3)),
    ("fused_adam pallas", lambda: fused_adam(1e-3, kernel="pallas")),
    ("fused_diffgrad xla", lambda: fused_diffgrad(1e-3)),
    ("fused_diffgrad pallas", lambda: fused_diffgrad(1e-3, kernel="pallas")),
    ("optax.adam", lambda: optax.adam(1e-3)),
    ("fused_perp_adamw", lambda: fused_perp_adamw(1e-3, weight_decay=0.0)),
    ("fused_perp_sgd", lambda: fused_perp_sgd(1e-3, momentum=0.9)),
    ("fused_lamb", lambda: fused_lamb(1e-3)),
    ("jaxdl.diffgrad (chain)", lambda: diffgrad(1e-3)),
    ("jaxdl.perp_adamw (chain)", lambda: perp_adamw(1e-3, weight_decay=0.0)),
    ("jaxdl.lamb (chain)", lambda: lamb(1e-3)),
]
STEPS_217 = [
    ("fused_adam xla", lambda: fused_adam(1e-3)),
    ("optax.adam", lambda: optax.adam(1e-3)),
    ("fused_diffgrad xla", lambda: fused_diffgrad(1e-3)),
    ("fused_adam pallas k16", with_leaves_per_kernel(16, lambda: fused_adam(1e-3, kernel="pallas"))),
    ("fused_adam pallas k32", with_leaves_per_kernel(32, lambda: fused_adam(1e-3, kernel="pallas"))),
    ("fused_diffgrad pallas k16", with_leaves_per_kernel(16, lambda: fused_diffgrad(1e-3, kernel="pallas"))),
    ("fused_perp_adamw", lambda: fused_perp_adamw(1e-3, weight_decay=0.0)),
    ("fused_lamb", lambda: fused_lamb(1e-3)),
    ("fused_perp_sgd", lambda: fused_perp_sgd(1e-3, momentum=0.9)),
    ("jaxdl.diffgrad (chain)", lambda: diffgrad(1e-3)),
    ("jaxdl.lamb (chain)", lambda: lamb(1e-3)),
    ("jaxdl.perp_adamw (chain)", lambda: perp_adamw(1e-3, weight_decay=0.0)),
]


def steps_section():
    for layout, cases in [("18 leaves", STEPS_18), ("217 leaves", STEPS_217)]:
        torch_step(layout)
        for name, make in cases:
            guarded(f"{name} [{layout}]", lambda n=name, m=make, lay=layout: step_case(n, lay, m))
        torch_step(layout)


LOOP = 20


def loop_case(name, layout, make, repeats=5):
    """Device time per step: LOOP steps inside one jitted fori_loop (no host dispatch between
    steps). An optimisation barrier at the top of each iteration keeps XLA from hoisting the
    gradient's loop-invariant terms. Also counts the kernels of the compiled loop (its body is
    one step; fusions and custom calls)."""
    params, grads, opt, one = setup(layout, make)

    def fn(p, s, g):
        def body(_, c):
            p, s, g = jax.lax.optimization_barrier(c)
            return (*one(p, s, g), g)

        p, s, _ = jax.lax.fori_loop(0, LOOP, body, (p, s, g))
        return p, s

    carry = [params, jax.jit(opt.init)(params)]
    if LOWER_ONLY:
        _pallas.jax = _GpuJax  # lower the kernels for CUDA (`_pallas` asks jax for the backend)
        text = jax.jit(fn).trace(*carry, grads).lower(lowering_platforms=("cuda",)).as_text()
        _pallas.jax = jax
        return print("lowered loop", name, layout, text.count("__gpu$xla.gpu.triton"), flush=True)
    compiled, compile_s = compile_first(fn, carry, grads)

    def run():
        carry[0], carry[1] = compiled(*carry, grads)
        jax.block_until_ready(carry)

    record(
        f"{name} [{layout}] device",
        median_time(run, repeats, 1) / LOOP,
        compile_s=round(compile_s, 2),
        kernels=kernels(compiled),
        pallas_kernels=compiled.as_text().count("__gpu$xla.gpu.triton"),
    )


def torch_graph(layout):
    """torch fused Adam (capturable) replayed from a CUDA graph of LOOP steps: device time."""
    if LOWER_ONLY:
        return
    params = [torch.randn(s, device="cuda", requires_grad=True) for s in SHAPES[layout]]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = torch.optim.Adam(params, lr=1e-3, fused=True, capturable=True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            opt.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(LOOP):
            opt.step()

    def run():
        graph.replay()
        torch.cuda.synchronize()

    record(f"torch fused Adam [{layout}] device (CUDA graph)", median_time(run, 5, 1) / LOOP)


def with_sum_kernel(block, warps, make):
    """`make` with the reducing kernels' block and warps set (`_pallas._SUM_BLOCK`, `_SUM_WARPS`)."""

    def build():
        _pallas._SUM_BLOCK, _pallas._SUM_WARPS = block, warps
        return make()

    return build


PERP_ADAMW = lambda kernel: lambda: fused_perp_adamw(1e-3, weight_decay=0.0, kernel=kernel)  # noqa: E731
PERP_SGD = lambda kernel: lambda: fused_perp_sgd(1e-3, momentum=0.9, kernel=kernel)  # noqa: E731
LAMB = lambda kernel: lambda: fused_lamb(1e-3, kernel=kernel)  # noqa: E731
DEVICE_CASES = [
    ("fused_adam pallas", with_leaves_per_kernel(32, lambda: fused_adam(1e-3, kernel="pallas"))),
    ("fused_perp_adamw xla", PERP_ADAMW("xla")),
    ("fused_perp_adamw pallas", with_sum_kernel(None, None, PERP_ADAMW("pallas"))),
    ("fused_perp_sgd xla", PERP_SGD("xla")),
    ("fused_perp_sgd pallas", with_sum_kernel(None, None, PERP_SGD("pallas"))),
    ("fused_lamb xla", LAMB("xla")),
    ("fused_lamb pallas", with_sum_kernel(None, None, LAMB("pallas"))),
]
# Stacked layout only (cheap to compile): the reducing kernels with larger blocks.
SUM_VARIANTS = [
    (f"{name} pallas, sums b{b} w{w}", with_sum_kernel(b, w, make("pallas")))
    for b, w in [(2048, 4), (2048, 8), (4096, 8)]
    for name, make in [("fused_perp_adamw", PERP_ADAMW), ("fused_lamb", LAMB)]
]


def ulps(a, b):
    """max |a - b| in ulps (of a's dtype) of b's largest entry."""
    eps = float(jnp.finfo(a.dtype).eps) if jnp.issubdtype(a.dtype, jnp.floating) else 1.0
    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    return float(jnp.max(jnp.abs(a - b), initial=0.0)) / (
        float(jnp.max(jnp.abs(b), initial=0.0)) * eps or 1.0
    )


def check_section():
    """kernel="pallas" against the XLA step on the GPU: 3 steps on a tree with ragged sizes, bf16
    leaves and a weight-decay mask; the largest difference in ulps (of its dtype) of each leaf's
    largest entry. The ⊥ steps' scalar leaf (p005) is round-off (`perpgrad`) and reported apart.
    Then ⊥Grad at small angles against the float64 rule, through the Pallas ⊥SGD step."""
    import numpy as np

    params = tree([(3000, 257), (5,), (1000,), (4097,), (31, 33), ()] + [(700,)] * 40, seed=1)
    params["p001"] = params["p001"].astype(jnp.bfloat16)
    params["p010"] = params["p010"].astype(jnp.bfloat16)
    mask = {k: i % 3 != 0 for i, k in enumerate(params)}
    makers = {
        "adam": lambda kernel: fused_adam(1e-2, weight_decay=0.1, mask=mask, kernel=kernel),
        "perp_adamw": lambda kernel: fused_perp_adamw(1e-2, weight_decay=0.1, mask=mask, kernel=kernel),
        "perp_sgd": lambda kernel: fused_perp_sgd(1e-2, momentum=0.8, kernel=kernel),
        "lamb": lambda kernel: fused_lamb(
            1e-2, weight_decay=0.1, weight_decay_mask=mask, trust_ratio_mask=mask, kernel=kernel
        ),
    }
    use_defaults()
    for name, make in makers.items():
        outs = []
        for kernel in ("xla", "pallas"):
            opt = make(kernel)
            p, s = params, opt.init(params)
            step = jax.jit(opt.step)
            for i in range(3):
                g = jax.tree.map(lambda x, i=i: jnp.cos(x.astype(jnp.float32) * (i + 1)).astype(x.dtype), p)
                p, s = step(p, g, s)
            outs.append((p, s))
        worst = max(ulps(outs[1][0][k], outs[0][0][k]) for k in params if k != "p005")
        worst_state = max(
            ulps(x, y) for x, y in zip(jax.tree.leaves(outs[1][1]), jax.tree.leaves(outs[0][1]), strict=True)
        )
        scalar = ulps(outs[1][0]["p005"], outs[0][0]["p005"])
        row = {"name": f"check {name} pallas vs xla", "params_ulps": worst, "state_ulps": worst_state}
        row["scalar_leaf_ulps"] = scalar
        RESULTS["rows"].append(row)
        print(json.dumps(row), flush=True)
    for n in (4096, 1 << 20):
        for degrees in (1.0, 0.1, 0.01):
            rng = np.random.default_rng(0)
            w = rng.normal(size=n) * 2.5
            u = rng.normal(size=n)
            u -= (u @ w) / (w @ w) * w
            angle = np.deg2rad(degrees)
            g = 3.0 * (np.cos(angle) * w / np.linalg.norm(w) + np.sin(angle) * u / np.linalg.norm(u))
            g, w = np.float32(g), np.float32(w)
            g64, w64 = g.astype(np.float64), w.astype(np.float64)
            expected = g64 - (w64 @ g64) / (w64 @ w64) * w64
            expected *= np.linalg.norm(g64) / np.linalg.norm(expected)
            row = {"name": f"check perp small angle n={n} {degrees} deg"}
            for kernel in ("xla", "pallas"):
                opt = fused_perp_sgd(1.0, momentum=0.0, kernel=kernel)
                state = opt.init({"w": jnp.asarray(w)})
                _, state = jax.jit(opt.step)({"w": jnp.asarray(w)}, {"w": jnp.asarray(g)}, state)
                got = np.asarray(state.buffers[0][0], np.float64).ravel()
                row[kernel] = float(np.linalg.norm(got - expected) / np.linalg.norm(expected))
            RESULTS["rows"].append(row)
            print(json.dumps(row), flush=True)
    save()


def device_section():
    for layout in ("217 leaves", "18 leaves"):
        guarded(f"torch graph [{layout}]", lambda lay=layout: torch_graph(lay))
        cases = DEVICE_CASES + (SUM_VARIANTS if layout == "18 leaves" else [])
        for name, make in cases:
            guarded(f"{name} [{layout}] device", lambda n=name, m=make, lay=layout: loop_case(n, lay, m))
        guarded(f"torch graph [{layout}]", lambda lay=layout: torch_graph(lay))


# The module's defaults (leaves a kernel, the reducing kernels' block and warps), before any
# section changes them.
DEFAULTS = (_pallas._LEAVES_PER_KERNEL, _pallas._SUM_BLOCK, _pallas._SUM_WARPS)


def use_defaults():
    _pallas._LEAVES_PER_KERNEL, _pallas._SUM_BLOCK, _pallas._SUM_WARPS = DEFAULTS


def leaves_a_kernel(per_kernel, make, sum_block=None, sum_warps=None):
    """`make` with `per_kernel` leaves a kernel (dealt round-robin, largest first) and the
    reducing kernels' block and warps (None: the elementwise kernels')."""

    def build():
        _pallas._LEAVES_PER_KERNEL = per_kernel
        _pallas._SUM_BLOCK, _pallas._SUM_WARPS = sum_block, sum_warps
        return make()

    return build


SGD = lambda: fused_perp_sgd(1e-3, momentum=0.9, kernel="pallas")  # noqa: E731
SGD_NONE = lambda: fused_perp_sgd(1e-3, momentum=None, kernel="pallas")  # noqa: E731
ADAM = lambda: fused_adam(1e-3, kernel="pallas")  # noqa: E731
DIFFGRAD = lambda: fused_diffgrad(1e-3, kernel="pallas")  # noqa: E731
DEFAULT_CASES = [
    (name, leaves_a_kernel(DEFAULTS[0], make, *DEFAULTS[1:]))
    for name, make in [
        ("fused_perp_sgd pallas, momentum None", SGD_NONE),
        ("fused_perp_sgd pallas", SGD),
        ("fused_lamb pallas", LAMB("pallas")),
        ("fused_perp_adamw pallas", PERP_ADAMW("pallas")),
        ("fused_diffgrad pallas", DIFFGRAD),
        ("fused_adam pallas", ADAM),
    ]
]
# Run I: ⊥SGD without momentum on 217 leaves, 3 kernels a pass (73 leaves each) and one block per
# small leaf in the reducing kernel (4,096 elements, 8 warps), beside run H's 64 leaves; then the
# other steps at 73. By importance (a run cut short keeps the first rows); 18 leaves fit one
# kernel either way.
LAYOUT_CASES = {
    "217 leaves": [
        ("fused_perp_sgd pallas, momentum None, k64", leaves_a_kernel(64, SGD_NONE)),
        ("fused_perp_sgd pallas, momentum None, k73", leaves_a_kernel(73, SGD_NONE)),
        ("fused_perp_sgd pallas, momentum None, k64 sums b4096 w8", leaves_a_kernel(64, SGD_NONE, 4096, 8)),
        ("fused_perp_sgd pallas, momentum None, k73 sums b4096 w8", leaves_a_kernel(73, SGD_NONE, 4096, 8)),
        ("fused_perp_sgd pallas, k73", leaves_a_kernel(73, SGD)),
        ("fused_adam pallas, k73", leaves_a_kernel(73, ADAM)),
        ("fused_perp_adamw pallas, k73", leaves_a_kernel(73, PERP_ADAMW("pallas"))),
        ("fused_lamb pallas, k73", leaves_a_kernel(73, LAMB("pallas"))),
    ],
}


def defaults_section():
    """Run J: every Pallas step at the module's defaults, 217 leaves then 18, torch's graph before
    and after each layout."""
    for layout in ("217 leaves", "18 leaves"):
        guarded(f"torch graph [{layout}]", lambda lay=layout: torch_graph(lay))
        for name, make in DEFAULT_CASES:
            guarded(f"{name} [{layout}] device", lambda n=name, m=make, lay=layout: loop_case(n, lay, m))
        guarded(f"torch graph [{layout}]", lambda lay=layout: torch_graph(lay))


def layout_section():
    """Runs G, H, I (issue #13, ⊥SGD on 217 leaves): leaves a kernel, with torch's graph before and
    after."""
    for layout, cases in LAYOUT_CASES.items():
        guarded(f"torch graph [{layout}]", lambda lay=layout: torch_graph(lay))
        for name, make in cases:
            guarded(f"{name} [{layout}] device", lambda n=name, m=make, lay=layout: loop_case(n, lay, m))
        guarded(f"torch graph [{layout}]", lambda lay=layout: torch_graph(lay))


if __name__ == "__main__":
    import flax

    triton = __import__("triton") if torch is not None else None
    RESULTS["versions"] = dict(
        jax=jax.__version__,
        optax=optax.__version__,
        flax=flax.__version__,
        torch=getattr(torch, "__version__", None),
        triton=getattr(triton, "__version__", None),
        device=jax.devices()[0].device_kind,
        when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )
    print(RESULTS["versions"], flush=True)
    sections = sys.argv[2:] or ["copy", "adam", "steps"]
    try:
        for section in sections:
            guarded(section, globals()[f"{section}_section"])
    finally:
        save()
