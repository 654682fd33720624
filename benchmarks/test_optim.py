"""One jitted optimizer step (update + apply, donated buffers) on network-shaped pytrees.

Each step is memory-bound, so its floor is bytes moved / bandwidth. Two copies measure the
bandwidth in the same run (read one buffer, write one): a donated JAX `y = 2x` and torch's
in-place `mul_`, each over 3.3 GB. `benchmarks/report.py` turns the medians into ratios against
those floors and against torch's fused CUDA Adam (issue #13's peer). Buffers moved per step
(parameter-sized, float32): Adam 7 (p, g, m, v in; p, m, v out), diffGrad 9 (+ g_prev in and
out), ⊥AdamW 9 (Adam + a reduction pass reading g and w for the projection coefficients),
⊥SGD 7 (p, g, trace in; p, trace out; + the reduction reading g and w), LAMB 10 (Adam + a
second pass over m, v, p for the per-leaf trust ratio).

Every JAX case also records the first call (compile + one step) and the number of kernels in
the compiled step (fusions and custom calls).
"""

import importlib.util
import re
import time

import jax
import jax.numpy as jnp
import optax
import pytest

from benchmarks.common import SMALL
from jaxdl.optim import (
    diffgrad,
    fused_adam,
    fused_diffgrad,
    fused_lamb,
    fused_perp_adamw,
    fused_perp_sgd,
    lamb,
    perp_adamw,
)

# Name -> (optimizer, parameter-sized buffers moved per step). optax-style transformations.
OPTIMIZERS = {
    "optax.adam": (lambda: optax.adam(1e-3), 7),
    "jaxdl.diffgrad": (lambda: diffgrad(1e-3), 9),
    "jaxdl.perp_adamw": (lambda: perp_adamw(1e-3, weight_decay=0.0), 9),
    "jaxdl.lamb": (lambda: lamb(1e-3), 10),
}
# An earlier ⊥AdamW, for a same-run comparison when its source is on the path (not shipped).
if importlib.util.find_spec("old_perpgrad") is not None:
    OPTIMIZERS["perp_adamw@55726d1"] = (
        lambda: optax.chain(__import__("old_perpgrad").perpgrad(), optax.adamw(1e-3, weight_decay=0.0)),
        9,
    )

# The fused update + apply steps (`jaxdl.optim.fused`).
FUSED = {
    "fused_adam": (lambda: fused_adam(1e-3), 7),
    "fused_adam[pallas]": (lambda: fused_adam(1e-3, kernel="pallas"), 7),
    "fused_diffgrad": (lambda: fused_diffgrad(1e-3), 9),
    "fused_diffgrad[pallas]": (lambda: fused_diffgrad(1e-3, kernel="pallas"), 9),
    "fused_perp_adamw": (lambda: fused_perp_adamw(1e-3, weight_decay=0.0), 9),
    "fused_perp_adamw[pallas]": (lambda: fused_perp_adamw(1e-3, weight_decay=0.0, kernel="pallas"), 9),
    "fused_perp_sgd": (lambda: fused_perp_sgd(1e-3, momentum=0.9), 7),
    "fused_perp_sgd[pallas]": (lambda: fused_perp_sgd(1e-3, momentum=0.9, kernel="pallas"), 7),
    "fused_lamb": (lambda: fused_lamb(1e-3), 10),
    "fused_lamb[pallas]": (lambda: fused_lamb(1e-3, kernel="pallas"), 10),
}

# A few large matrices and a couple of hundred small vectors (biases, norm scales), like a network.
SIZES = {
    "100M": ([(2048, 2952)] * 17 + [(4096,)] * 200),
    # The same parameters with the small vectors stacked into one leaf, as scanned layers give.
    "100M-stacked": ([(2048, 2952)] * 17 + [(200, 4096)]),
}
if SMALL:
    SIZES = {"100M": [(300, 256)] * 2 + [(16,)] * 20}  # the 100M layout in miniature
ROUNDS = 3 if SMALL else 30


def _tree(shapes, seed):
    keys = jax.random.split(jax.random.key(seed), len(shapes))
    return {
        f"p{i:03d}": jax.random.normal(k, s, jnp.float32)
        for i, (k, s) in enumerate(zip(keys, shapes, strict=True))
    }


def _num_params(shapes):
    return sum(int(jnp.prod(jnp.array(s))) for s in shapes)


def _kernels(compiled) -> int:
    """Kernel launches in the compiled step: fusions and custom calls anywhere in the module (on
    GPUs they sit inside command-buffer computations, not in the entry computation)."""
    return len(re.findall(r"= \S+ (?:fusion|custom-call)\(", compiled.as_text()))


def _measure(benchmark, name, step, carry, grads, size, shapes, buffers):
    """Compile (timed, with the first step), count kernels, then time donated steps."""
    start = time.perf_counter()
    compiled = step.lower(*carry, grads).compile()
    carry[0], carry[1] = compiled(*carry, grads)
    jax.block_until_ready(carry)
    first_call = time.perf_counter() - start

    def run():
        carry[0], carry[1] = compiled(*carry, grads)
        jax.block_until_ready(carry)

    benchmark.group = "optim"
    benchmark.extra_info.update(
        name=name,
        size=size,
        params=_num_params(shapes),
        buffers=buffers,
        kernels=_kernels(compiled),
        first_call_s=first_call,
    )
    benchmark.pedantic(run, warmup_rounds=3, rounds=ROUNDS, iterations=1)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_step(benchmark, name, size):
    make, buffers = OPTIMIZERS[name]
    tx = make()
    shapes = SIZES[size]
    params, grads = _tree(shapes, 0), _tree(shapes, 1)

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    carry = [params, jax.jit(tx.init)(params)]
    _measure(benchmark, name, jax.jit(step, donate_argnums=(0, 1)), carry, grads, size, shapes, buffers)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", FUSED)
def test_fused_step(benchmark, name, size):
    make, buffers = FUSED[name]
    opt = make()
    shapes = SIZES[size]
    params, grads = _tree(shapes, 0), _tree(shapes, 1)

    def step(params, state, grads):
        return opt.step(params, grads, state)

    carry = [params, jax.jit(opt.init)(params)]
    _measure(benchmark, name, jax.jit(step, donate_argnums=(0, 1)), carry, grads, size, shapes, buffers)


def _copy_size():
    return 8 * _num_params(SIZES["100M"]) if not SMALL else 1 << 16


def test_copy_bandwidth(benchmark):
    """y = 2x with x donated, over 3.3 GB (8 x the 100M tree): the device's streaming bandwidth,
    large enough that dispatch overhead is negligible (at 0.4 GB it reads 30% low)."""
    n = _copy_size()
    scale = jax.jit(lambda x: x * 2.0, donate_argnums=0)
    carry = [jnp.ones((n,), jnp.float32)]

    def run():
        carry[0] = scale(carry[0])
        jax.block_until_ready(carry)

    benchmark.group = "optim"
    benchmark.extra_info.update(size="bandwidth", params=n, buffers=2)
    benchmark.pedantic(run, warmup_rounds=3, rounds=20 if not SMALL else 3, iterations=1)


def _cuda_torch():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch peer timing needs CUDA")
    return torch


def test_torch_copy_bandwidth(benchmark):
    """torch's in-place x.mul_(2) over the same 3.3 GB: the byte floor as torch's kernels see it."""
    torch = _cuda_torch()
    x = torch.ones(_copy_size(), device="cuda")

    def run():
        x.mul_(2.0)
        torch.cuda.synchronize()

    benchmark.group = "optim"
    benchmark.extra_info.update(size="torch bandwidth", params=x.numel(), buffers=2)
    benchmark.pedantic(run, warmup_rounds=3, rounds=20, iterations=1)


TORCH_PEERS = {
    "torch fused Adam": (lambda torch, params: torch.optim.Adam(params, lr=1e-3, fused=True), 7),
    # torch-optimizer (jettify), the reference ports of diffGrad and LAMB: pure Python, optional.
    "torch-optimizer DiffGrad": (
        lambda torch, params: __import__("torch_optimizer").DiffGrad(params, lr=1e-3),
        9,
    ),
    "torch-optimizer Lamb": (lambda torch, params: __import__("torch_optimizer").Lamb(params, lr=1e-3), 10),
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", TORCH_PEERS)
def test_torch_peer(benchmark, name, size):
    """The PyTorch peers on the same shapes (GPU only)."""
    torch = _cuda_torch()
    if "torch-optimizer" in name and importlib.util.find_spec("torch_optimizer") is None:
        pytest.skip("torch-optimizer is not on the path")
    make, buffers = TORCH_PEERS[name]
    params = [torch.randn(s, device="cuda", requires_grad=True) for s in SIZES[size]]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = make(torch, params)

    def run():
        opt.step()
        torch.cuda.synchronize()

    benchmark.group = "optim"
    benchmark.extra_info.update(name=name, size=size, params=_num_params(SIZES[size]), buffers=buffers)
    benchmark.pedantic(run, warmup_rounds=3, rounds=ROUNDS, iterations=1)
