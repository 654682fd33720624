"""KAN layers vs equal-parameter MLPs: forward + backward (value_and_grad of a mean-square loss) under jit.

Cases (issue 3, sizes of the KAN-benchmarking comparison, reference kan.md Sec. 9.1), each beside its baseline
in the same benchmark group:
- "kan-*": two-layer nets 1000 -> 1000 -> 1 with KANLinear (B-spline G=6 k=3, RBF 9 centres, Chebyshev
  degree 8; 10 coefficients per edge with the SiLU base, about 10.0M parameters) vs an MLP 1000 -> 10000 -> 1
  (SiLU, 10.0M parameters). Goal: B-spline <= 3x the MLP.
- "katmlp-*": the KAT MLP block (GR-KAN 1024 -> 4096 -> 1024, 8 groups) vs a GELU MLP of the same widths.
  Goal: <= 1.5x the GELU MLP.
Batches 100 and 4096. extra_info holds the parameter count, the matmul FLOPs (6 per parameter per example for
forward + backward, basis evaluation not counted) and a roofline floor for an H100 (TF32 dense 495 TFLOP/s,
HBM 3.35 TB/s; bytes = parameters read twice and gradients written once, in float32).

    pytest benchmarks/test_kan.py --benchmark-group-by=group       (full size, for a GPU)
    JAXDL_BENCH_SMALL=1 pytest benchmarks/test_kan.py -q           (tiny, runs on CPU)
"""

import itertools

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from benchmarks.common import SMALL
from jaxdl.nn.kan import KATMLP, KANLinear

IN, HIDDEN_KAN, HIDDEN_MLP = (16, 16, 160) if SMALL else (1000, 1000, 10000)
D_MODEL, D_HIDDEN = (16, 64) if SMALL else (1024, 4096)
BATCHES = (4, 32) if SMALL else (100, 4096)
ROUNDS = 3 if SMALL else 50
H100_FLOPS, H100_BYTES_PER_S = 495e12, 3.35e12


class MLP(nnx.Module):
    def __init__(self, sizes, activation, *, rngs):
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(sizes)])
        self.activation = activation

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)


class TwoLayerKAN(nnx.Module):
    def __init__(self, basis, grid_size, *, rngs):
        self.first = KANLinear(IN, HIDDEN_KAN, basis=basis, grid_size=grid_size, rngs=rngs)
        self.second = KANLinear(HIDDEN_KAN, 1, basis=basis, grid_size=grid_size, rngs=rngs)

    def __call__(self, x):
        return self.second(self.first(x))


MODELS = {
    "kan": {
        "mlp_silu": lambda rngs: MLP([IN, HIDDEN_MLP, 1], jax.nn.silu, rngs=rngs),
        "kan_bspline": lambda rngs: TwoLayerKAN("bspline", 6, rngs=rngs),
        "kan_rbf": lambda rngs: TwoLayerKAN("rbf", 9, rngs=rngs),
        "kan_chebyshev": lambda rngs: TwoLayerKAN("chebyshev", 8, rngs=rngs),
    },
    "katmlp": {
        "mlp_gelu": lambda rngs: MLP([D_MODEL, D_HIDDEN, D_MODEL], jax.nn.gelu, rngs=rngs),
        "grkan": lambda rngs: KATMLP(D_MODEL, D_HIDDEN, rngs=rngs),
    },
}
CASES = [(family, name, batch) for family, models in MODELS.items() for name in models for batch in BATCHES]


@pytest.mark.parametrize(("family", "name", "batch"), CASES, ids=[f"{f}-{n}-b{b}" for f, n, b in CASES])
def test_forward_backward(benchmark, family, name, batch):
    benchmark.group = f"{family}-b{batch}"
    model = MODELS[family][name](nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    in_features = IN if family == "kan" else D_MODEL
    x = jax.random.normal(jax.random.key(1), (batch, in_features))

    @jax.jit
    def step(params, x):
        return jax.value_and_grad(lambda p: jnp.mean(nnx.merge(graphdef, p, rest)(x) ** 2))(params)

    run = lambda: jax.block_until_ready(step(params, x))
    run()  # compile outside the timed rounds
    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=2, iterations=1)

    num_params = sum(p.size for p in jax.tree.leaves(params))
    flops = 6 * num_params * batch
    bytes_moved = 3 * 4 * num_params
    benchmark.extra_info.update(
        params=num_params,
        matmul_flops=flops,
        floor_ms_h100=1e3 * max(flops / H100_FLOPS, bytes_moved / H100_BYTES_PER_S),
    )
