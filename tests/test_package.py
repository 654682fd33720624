import jax

import jaxdl


def test_eight_simulated_devices():
    assert jax.device_count() == 8


def test_version_is_a_string():
    assert isinstance(jaxdl.__version__, str)
