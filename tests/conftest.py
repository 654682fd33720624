"""Shared test setup: 8 simulated CPU devices, a device mesh, a float64 context and a seeded RNG.

XLA_FLAGS must be set before JAX initialises its backends, so this file sets it
before anything imports jax.

XLA compilation is about two thirds of the suite's CPU time, so tests compile with
`jax_disable_most_optimizations` (XLA's LLVM backend at -O0 without its expensive passes; the HLO
passes, fusion included, are unchanged, and XLA:CPU uses no fast-math at any level, so results are
the same to rounding). It cuts the CPU time of compile-bound tests (examples, doctests) by a
quarter to a third. Tests that mostly execute, rather than compile, are marked `xla_optimized` and
compile at full optimisation. `JAX_DISABLE_MOST_OPTIMIZATIONS=0 pytest` runs every test optimised.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")  # inherited by subprocess tests

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax.sharding import AxisType, Mesh  # noqa: E402

NUM_DEVICES = 8


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: one worker per core this process may use, at most 4.

    Each worker is a separate process holding its own 8 simulated devices; XLA compilation, which
    dominates the suite, is single-threaded, so a worker per core roughly divides the wall time.
    More than 4 workers mostly duplicate the session fixtures (fitted heads, PTD solves).
    """
    return max(1, min(4, len(os.sched_getaffinity(0))))


def pytest_configure(config):
    if path := os.environ.get("JAXDL_TEST_TIMING"):
        from tests._timing import TimingPlugin

        config.pluginmanager.register(TimingPlugin(path), "jaxdl-timing")


@pytest.fixture(autouse=True)
def _xla_optimized(request):
    """Full XLA optimisation for tests marked `xla_optimized` (execution-bound: training loops)."""
    if request.node.get_closest_marker("xla_optimized") is None:
        yield
        return
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)


@pytest.fixture(scope="session")
def mesh() -> Mesh:
    """A one-axis mesh named "data" over the 8 simulated CPU devices (Auto axis type)."""
    devices = jax.devices()
    assert len(devices) == NUM_DEVICES, f"expected {NUM_DEVICES} CPU devices, got {len(devices)}"
    return jax.make_mesh((NUM_DEVICES,), ("data",), axis_types=(AxisType.Auto,))


@pytest.fixture
def x64():
    """Run the test body with float64 enabled."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
