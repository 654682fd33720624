"""Shared test setup: 8 simulated CPU devices, a device mesh, a float64 context and a seeded RNG.

XLA_FLAGS must be set before JAX initialises its backends, so this file sets it
before anything imports jax.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax.sharding import AxisType, Mesh  # noqa: E402

NUM_DEVICES = 8


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
