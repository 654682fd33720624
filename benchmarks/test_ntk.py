"""Empirical NTK: the three implementations (and "auto") side by side on an MLP, a ResNet-style CNN and a KAN.

Each group (one model) holds "jacobian", "ntvp", "structured" and "auto" on the same inputs: a full kernel
(trace_axes=(), shape (128, 128, 10, 10)) of a batch of 128 against itself, under jit, default precision.
Goal (issue 6): structured ≥ 30× faster than ntvp on the dense networks; auto within 20% of the best.

Anchors (reference probes.md §1.3): neural-tangents' notebook, FCN 3×2048 on a T4, 243 ms (Jacobian
contraction) / 81.4 ms (vector products) / 3.46 ms (structured); a 5.26M-parameter MLP 3072-1024×3-10 on an
H100, N = 64 full kernel: 35.4 ms (naive contraction), 13.8 ms (vector products), 0.32 ms (hand-written
layer-structured contraction). "mlp1024" is that MLP at N = 128.

extra_info: parameters, the cost model of Novak et al. (2022) for the implementation (N·O·3[FP] + N²O²P for
jacobian, N²·O·3[FP] for ntvp, N·O·3[FP] + N²O²·Σ layer widths for structured, with [FP] the forward FLOPs of
one example), XLA's FLOP count and temporary-buffer bytes of the compiled program, and the floor
model FLOPs / 495 TFLOP/s (H100 TF32 dense). "jacobian" on the wide MLPs is left out: its N·O·P Jacobians
(≥ 240 GB at width 4096) do not fit; it runs in 32-example tiles (batch_size) where it is included.

    pytest benchmarks/test_ntk.py --benchmark-group-by=group          (full size, for a GPU)
    JAXDL_BENCH_SMALL=1 pytest benchmarks/test_ntk.py -q              (tiny, runs on CPU)
"""

import itertools

import jax
import pytest
from flax import nnx

from benchmarks.common import SMALL
from jaxdl.nn.kan import KANLinear
from jaxdl.probes.ntk import _auto_choice, _layout, empirical_ntk, ntk_fn_from_nnx

BATCH = 8 if SMALL else 128
OUTPUTS = 10
ROUNDS = 2 if SMALL else 5
JACOBIAN_TILE = 4 if SMALL else 32
H100_FLOPS = 495e12


class MLP(nnx.Module):
    def __init__(self, sizes, *, rngs):
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(sizes)])

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)


class ResNet(nnx.Module):
    """A conv stem, two residual blocks (conv-relu-conv + identity), global average pool, dense head."""

    def __init__(self, channels, *, rngs):
        self.stem = nnx.Conv(3, channels, (3, 3), rngs=rngs)
        self.blocks = nnx.List(
            [nnx.List([nnx.Conv(channels, channels, (3, 3), rngs=rngs) for _ in range(2)]) for _ in range(2)]
        )
        self.head = nnx.Linear(channels, OUTPUTS, rngs=rngs)

    def __call__(self, x):
        x = jax.nn.relu(self.stem(x))
        for first, second in self.blocks:
            x = jax.nn.relu(x + second(jax.nn.relu(first(x))))
        return self.head(x.mean(axis=(1, 2)))


class KAN(nnx.Module):
    def __init__(self, sizes, *, rngs):
        self.layers = nnx.List([KANLinear(a, b, rngs=rngs) for a, b in itertools.pairwise(sizes)])

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


# name -> (model builder, per-example input shape, widths of the structured layers, include jacobian)
if SMALL:
    MODELS = {
        "mlp": (lambda r: MLP([16, 32, 32, 32, OUTPUTS], rngs=r), (16,), True),
        "resnet": (lambda r: ResNet(4, rngs=r), (8, 8, 3), True),
        "kan": (lambda r: KAN([8, 8, OUTPUTS], rngs=r), (8,), True),
    }
else:
    MODELS = {
        "mlp1024": (lambda r: MLP([3072, 1024, 1024, 1024, OUTPUTS], rngs=r), (3072,), True),
        "mlp4096": (lambda r: MLP([3072, 4096, 4096, 4096, OUTPUTS], rngs=r), (3072,), False),
        "mlp8192": (lambda r: MLP([3072, 8192, 8192, 8192, OUTPUTS], rngs=r), (3072,), False),
        "resnet": (lambda r: ResNet(32, rngs=r), (32, 32, 3), True),
        "kan": (lambda r: KAN([64, 256, OUTPUTS], rngs=r), (64,), True),
    }
IMPLEMENTATIONS = ("jacobian", "ntvp", "structured", "auto")
CASES = [(m, i) for m in MODELS for i in IMPLEMENTATIONS if i != "jacobian" or MODELS[m][2]]


def _cost_model(impl, forward, params, model, x) -> float:
    """Novak et al. (2022) cost models; conv layers use explicit per-layer Jacobians, so there the
    structured model is the Jacobian-contraction one."""
    n, o = x.shape[0], OUTPUTS
    jacobians = n * o * 3 * forward
    dense = [node for _, node in nnx.iter_graph(model) if isinstance(node, nnx.Linear | KANLinear)]
    has_conv = any(isinstance(node, nnx.Conv) for _, node in nnx.iter_graph(model))
    if impl == "jacobian" or (impl == "structured" and has_conv):
        return jacobians + n * n * o * o * params
    if impl == "ntvp":
        return n * n * o * 3 * forward
    return jacobians + n * n * o * o * sum(layer.out_features for layer in dense)


def _flops(compiled) -> float:
    """XLA's FLOP count of a compiled executable (NaN where the backend gives no analysis)."""
    analysis = compiled.cost_analysis() or {}
    if isinstance(analysis, list):  # older JAX: one dict per executable
        analysis = analysis[0] if analysis else {}
    return float(analysis.get("flops", float("nan")))


@pytest.mark.parametrize(("model_name", "impl"), CASES, ids=[f"{m}-{i}" for m, i in CASES])
def test_empirical_ntk(benchmark, model_name, impl):
    benchmark.group = f"ntk-{model_name}"
    build, shape, _ = MODELS[model_name]
    model = build(nnx.Rngs(0))
    f, params = ntk_fn_from_nnx(model)
    x = jax.random.normal(jax.random.key(1), (BATCH, *shape))
    batch_size = JACOBIAN_TILE if impl == "jacobian" else None
    kernel = jax.jit(
        lambda p, x: empirical_ntk(f, p, x, implementation=impl, trace_axes=(), batch_size=batch_size)
    )

    compiled = kernel.lower(params, x).compile()
    run = lambda: jax.block_until_ready(compiled(params, x))
    run()
    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1, iterations=1)

    num_params = sum(p.size for p in jax.tree.leaves(params))
    forward = _flops(jax.jit(f).lower(params, x[:1]).compile())
    chosen = _auto_choice(f, params, x[:1], _layout((OUTPUTS,), (), ())) if impl == "auto" else impl
    model_flops = _cost_model(chosen, forward, num_params, model, x)
    memory = compiled.memory_analysis()
    benchmark.extra_info.update(
        params=num_params,
        implementation=chosen,
        forward_flops_per_example=forward,
        model_flops=model_flops,
        xla_flops=_flops(compiled),
        temp_bytes=getattr(memory, "temp_size_in_bytes", None),
        floor_ms_h100=1e3 * model_flops / H100_FLOPS,
    )
    assert compiled(params, x).shape == (BATCH, BATCH, OUTPUTS, OUTPUTS)
