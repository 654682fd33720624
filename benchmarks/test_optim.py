"""One jitted optimizer step (update + apply, donated buffers) on network-shaped pytrees.

Each step is memory-bound, so its floor is bytes moved / bandwidth. `copy` measures the
bandwidth in the same run (read one buffer, write one); `benchmarks/report.py` turns the
medians into ratios against that floor and against `optax.adam`. Buffers moved per step
(parameter-sized, float32): Adam 7 (p, g, m, v in; p, m, v out), diffGrad 9 (+ g_prev in and
out), ⊥AdamW 9 (Adam + a reduction pass reading g and w for the projection coefficients),
LAMB 10 (Adam + a second pass over m, v, p for the per-leaf trust ratio).
"""

import jax
import jax.numpy as jnp
import optax
import pytest

from benchmarks.common import SMALL
from jaxdl.optim import diffgrad, lamb, perp_adamw

# Name -> (optimizer, parameter-sized buffers moved per step).
OPTIMIZERS = {
    "optax.adam": (lambda: optax.adam(1e-3), 7),
    "optax.lamb": (lambda: optax.lamb(1e-3), 10),
    "jaxdl.diffgrad": (lambda: diffgrad(1e-3), 9),
    "jaxdl.perp_adamw": (lambda: perp_adamw(1e-3, weight_decay=0.0), 9),
    "jaxdl.lamb": (lambda: lamb(1e-3), 10),
}

# A few large matrices and a couple of hundred small vectors (biases, norm scales), like a network.
SIZES = {
    "1M": ([(480, 512)] * 4 + [(128,)] * 200),
    "100M": ([(2048, 2952)] * 17 + [(4096,)] * 200),
    # The same parameters with the small vectors stacked into one leaf, as scanned layers give.
    "100M-stacked": ([(2048, 2952)] * 17 + [(200, 4096)]),
}
if SMALL:
    SIZES = {"100M": [(64, 64)] * 2 + [(16,)] * 20}  # the 100M layout in miniature


def _tree(shapes, seed):
    keys = jax.random.split(jax.random.key(seed), len(shapes))
    return {
        f"p{i:03d}": jax.random.normal(k, s, jnp.float32)
        for i, (k, s) in enumerate(zip(keys, shapes, strict=True))
    }


def _num_params(shapes):
    return sum(int(jnp.prod(jnp.array(s))) for s in shapes)


def _donating_step(tx):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_step(benchmark, name, size):
    make, buffers = OPTIMIZERS[name]
    tx = make()
    shapes = SIZES[size]
    params, grads = _tree(shapes, 0), _tree(shapes, 1)
    carry = [params, jax.jit(tx.init)(params)]
    step = _donating_step(tx)

    def run():
        carry[0], carry[1] = step(*carry, grads)
        jax.block_until_ready(carry)

    benchmark.group = "optim"
    benchmark.extra_info.update(size=size, params=_num_params(shapes), buffers=buffers)
    benchmark.pedantic(run, warmup_rounds=3, rounds=50 if not SMALL else 3, iterations=1)


def test_copy_bandwidth(benchmark):
    """y = 2x with x donated, over 3.3 GB (8 x the 100M tree): the device's streaming bandwidth,
    large enough that dispatch overhead is negligible (at 0.4 GB it reads 30% low)."""
    n = 8 * _num_params(SIZES["100M"]) if not SMALL else 1 << 16
    scale = jax.jit(lambda x: x * 2.0, donate_argnums=0)
    carry = [jnp.ones((n,), jnp.float32)]

    def run():
        carry[0] = scale(carry[0])
        jax.block_until_ready(carry)

    benchmark.group = "optim"
    benchmark.extra_info.update(size="bandwidth", params=n, buffers=2)
    benchmark.pedantic(run, warmup_rounds=3, rounds=20 if not SMALL else 3, iterations=1)


@pytest.mark.parametrize("size", SIZES)
def test_torch_fused_adam(benchmark, size):
    """PyTorch's fused Adam on the same shapes: the peer the issue names (GPU only)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch peer timing needs CUDA")
    params = [torch.randn(s, device="cuda", requires_grad=True) for s in SIZES[size]]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = torch.optim.Adam(params, lr=1e-3, fused=True)

    def run():
        opt.step()
        torch.cuda.synchronize()

    benchmark.group = "optim"
    benchmark.extra_info.update(size=size, params=_num_params(SIZES[size]), buffers=7)
    benchmark.pedantic(run, warmup_rounds=3, rounds=50, iterations=1)
