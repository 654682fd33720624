"""Forward+backward throughput of S4D / S4-PTD (Vandermonde kernel + FFT convolution) and
S5 / S5-PTD (parallel scan), beside the FFT-convolution floor of the same shape.

tokens/s = extra_info["tokens"] / median time. Full size: H = 256, N = 64, L in {1k, 4k, 16k},
batch * L = 64k tokens. JAXDL_BENCH_SMALL=1 uses tiny sizes for CPU.
"""

import os

import jax
import jax.numpy as jnp
import pytest

from jaxdl.nn.ssm import fft_conv, s4d_apply, s4d_init_params, s5_apply, s5_init_params

SMALL = os.environ.get("JAXDL_BENCH_SMALL") == "1"
H, N = (8, 8) if SMALL else (256, 64)
LENGTHS = (64, 256) if SMALL else (1024, 4096, 16384)
TOKENS = 512 if SMALL else 65536
S5_BLOCKS = 2 if SMALL else 4  # PTD blocks of 16 at full size (reference §2.4)
PTD_STEPS = 300 if SMALL else 4000


def _params(model, init):
    key = jax.random.key(0)
    ptd_kwargs = dict(steps=PTD_STEPS) if init == "ptd" else None
    if model == "s4d":
        return s4d_init_params(key, H, N, init=init, ptd_kwargs=ptd_kwargs)
    return s5_init_params(key, H, N, S5_BLOCKS, init=init, ptd_kwargs=ptd_kwargs)


def _forward_backward(apply):
    loss = lambda params, u: jnp.mean(apply(params, u) ** 2)
    return jax.jit(jax.grad(loss, argnums=(0, 1)))


def _run(benchmark, fn, args, **info):
    jax.block_until_ready(fn(*args))  # compile outside the timing
    benchmark.extra_info.update(info)
    benchmark.pedantic(lambda: jax.block_until_ready(fn(*args)), rounds=10, warmup_rounds=2)


@pytest.mark.parametrize("L", LENGTHS)
@pytest.mark.parametrize(
    ("model", "init"),
    [("s4d", "legs"), ("s4d", "ptd"), ("s5", "legs"), ("s5", "ptd")],
    ids=["S4D", "S4-PTD", "S5", "S5-PTD"],
)
def test_ssm_forward_backward(benchmark, model, init, L):
    batch = max(1, TOKENS // L)
    u = jax.random.normal(jax.random.key(1), (batch, L, H))
    apply = s4d_apply if model == "s4d" else s5_apply
    _run(benchmark, _forward_backward(apply), (_params(model, init), u), tokens=batch * L, H=H, N=N, L=L)


@pytest.mark.parametrize("L", LENGTHS)
def test_fft_conv_floor(benchmark, L):
    """Baseline: forward+backward of the FFT convolution alone with a given (H, L) kernel, the part of
    S4D that no kernel computation can avoid."""
    batch = max(1, TOKENS // L)
    u = jax.random.normal(jax.random.key(1), (batch, L, H))
    K = jax.random.normal(jax.random.key(2), (H, L)) / L
    apply = lambda K, u: fft_conv(u, K)
    _run(benchmark, _forward_backward(apply), (K, u), tokens=batch * L, H=H, L=L)
