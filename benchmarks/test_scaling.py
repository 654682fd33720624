"""Data-parallel scaling: one training step (forward, backward, Adam) on 1, 2, ... devices.

Strong scaling: the global batch is fixed, so with n devices each holds 1/n of it and the ideal step
time is t(1 device) / n; the gap is the gradient all-reduce plus launch overhead. Each case runs through
the sharded jit of `jaxdl.parallel.data_parallel` (Auto mesh axes) and, as the baseline for code
written the old way, through `jax.pmap` with `lax.pmean`. Two models:

* ``grokking_mlp``: the modular-addition network of the grokking experiments (two token embeddings
  concatenated, ReLU MLP, logits over p classes), scaled up to width 4096;
* ``kan``: a B-spline KAN (`jaxdl.nn.kan.KAN`, grid 5, order 3) regressing random targets.

``extra_info`` records the device count, global batch, parameter count and the matmul FLOPs of one step
(6 x batch x multiply-adds of the forward pass; the KAN counts its basis contraction), so the report can
put each median beside t(1)/n and beside FLOPs / (n x peak FLOP/s). Device counts are those available:
run on a 2-GPU machine for the 1 vs 2 comparison.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from benchmarks.common import SMALL
from jaxdl.nn.kan import KAN
from jaxdl.parallel import (
    create_train_state,
    data_mesh,
    data_parallel,
    data_parallel_pmap,
    replicate,
    replicate_for_pmap,
    shard_batch,
    split_for_pmap,
    train_step,
)

DEVICE_COUNTS = [n for n in (1, 2, 4, 8) if n <= jax.device_count()]
# Model sizes: full for an H100/H200, tiny for a CPU check.
MLP = {
    "modulus": 97,
    "embed": 16 if SMALL else 512,
    "width": 32 if SMALL else 4096,
    "batch": 64 if SMALL else 16384,
}
KAN_SIZE = {
    "widths": [8, 16, 4] if SMALL else [256, 1024, 1024, 16],
    "grid": 5,
    "order": 3,
    "batch": 64 if SMALL else 8192,
}


class ModularMLP(nnx.Module):
    """Embeds tokens a and b, concatenates them, two ReLU layers, logits over the modulus."""

    def __init__(self, modulus: int, embed: int, width: int, *, rngs: nnx.Rngs):
        self.embed = nnx.Embed(modulus, embed, rngs=rngs)
        self.hidden1 = nnx.Linear(2 * embed, width, rngs=rngs)
        self.hidden2 = nnx.Linear(width, width, rngs=rngs)
        self.out = nnx.Linear(width, modulus, rngs=rngs)

    def __call__(self, tokens):
        x = self.embed(tokens).reshape(tokens.shape[0], -1)
        return self.out(jax.nn.relu(self.hidden2(jax.nn.relu(self.hidden1(x)))))


def grokking_mlp():
    p, e, w, b = MLP["modulus"], MLP["embed"], MLP["width"], MLP["batch"]
    graphdef, params = nnx.split(ModularMLP(p, e, w, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, p, (b, 2)).astype(np.int32)
    batch = {"tokens": tokens, "label": (tokens.sum(1) % p).astype(np.int32)}

    def loss_fn(params, batch, key):
        logits = nnx.merge(graphdef, params)(batch["tokens"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

    flops = 6 * b * (2 * e * w + w * w + w * p)
    return params, batch, loss_fn, flops


def kan():
    widths, g, k, b = KAN_SIZE["widths"], KAN_SIZE["grid"], KAN_SIZE["order"], KAN_SIZE["batch"]
    graphdef, params = nnx.split(KAN(widths, grid_size=g, spline_order=k, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    batch = {
        "x": rng.uniform(-1, 1, (b, widths[0])).astype(np.float32),
        "y": rng.normal(size=(b, widths[-1])).astype(np.float32),
    }

    def loss_fn(params, batch, key):
        return jnp.mean((nnx.merge(graphdef, params)(batch["x"]) - batch["y"]) ** 2)

    # Per layer: spline contraction over D x (G + k) basis values and the residual base branch.
    flops = 6 * b * sum(d * n * (g + k + 1) for d, n in zip(widths[:-1], widths[1:], strict=True))
    return params, batch, loss_fn, flops


MODELS = {"grokking_mlp": grokking_mlp, "kan": kan}


@pytest.mark.parametrize("mode", ["sharded", "pmap"])
@pytest.mark.parametrize("devices", DEVICE_COUNTS)
@pytest.mark.parametrize("model", sorted(MODELS))
def test_train_step(benchmark, model, devices, mode):
    params, batch, loss_fn, flops = MODELS[model]()
    global_batch = len(next(iter(batch.values())))
    optimizer = optax.adam(1e-3)
    state = create_train_state(params, optimizer, jax.random.key(0))
    if mode == "sharded":
        mesh = data_mesh(jax.devices()[:devices])
        step = data_parallel(train_step(loss_fn, optimizer), mesh)
        carry = [replicate(state, mesh)]
        batch = shard_batch(batch, mesh)
    else:
        step = data_parallel_pmap(
            train_step(loss_fn, optimizer, axis_name="data"), devices=jax.devices()[:devices]
        )
        carry = [replicate_for_pmap(state, jax.devices()[:devices])]
        batch = jax.device_put(split_for_pmap(batch, devices), carry[0].step.sharding)

    def run():
        carry[0], metrics = step(carry[0], batch)
        jax.block_until_ready((carry[0], metrics))

    benchmark.group = f"scaling-{model}"
    benchmark.extra_info.update(
        model=model,
        mode=mode,
        devices=devices,
        global_batch=global_batch,
        params=sum(x.size for x in jax.tree.leaves(params)),
        flops_per_step=flops,
    )
    benchmark.pedantic(run, warmup_rounds=3, rounds=3 if SMALL else 30, iterations=1)
