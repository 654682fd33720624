"""Flax Linen versions of `S4D` and `S5`: thin shells over `jaxdl.nn.ssm.functional`.

Parameter names and shapes equal the NNX layers', so ``{"params": nnx_layer.params()}`` is a valid
Linen variable dict. Papers and equations: see `jaxdl.nn.ssm.functional`.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from jaxdl.nn.ssm import functional as F

__all__ = ["S4D", "S5"]

_S4D_NAMES = ("log_neg_real", "imag", "B", "C", "D", "log_step")
_S5_NAMES = ("Lambda_re", "Lambda_im", "B", "C", "D", "log_step")


def _declare(module: nn.Module, names, make_all) -> dict:
    """Register each entry of the functional init dict as a Linen param.

    The dict is built once, at init, from the key of the first parameter; at apply time the stored
    values are used and nothing is computed.
    """
    built: dict = {}

    def init_fn(key, name):
        if not built:
            built.update(make_all(key))
        return built[name]

    return {name: module.param(name, init_fn, name) for name in names}


class S4D(nn.Module):
    """Linen S4D / S4-PTD; arguments as in `jaxdl.nn.ssm.S4D`, with `init` renamed `init_kind`.

    >>> import jax
    >>> layer = S4D(4, state_size=8)
    >>> variables = layer.init(jax.random.key(0), jnp.ones((2, 16, 4)))
    >>> layer.apply(variables, jnp.ones((2, 16, 4))).shape
    (2, 16, 4)
    """

    features: int
    state_size: int = 64
    init_kind: str = "legs"  # `init` is taken by Module.init
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    bidirectional: bool = False
    method: str = "zoh"
    chunk_size: int | None = None
    ptd_kwargs: dict | None = None

    def setup(self):
        self.ssm = _declare(
            self,
            _S4D_NAMES,
            lambda key: F.s4d_init_params(
                key,
                self.features,
                self.state_size,
                init=self.init_kind,
                dt_min=self.dt_min,
                dt_max=self.dt_max,
                bidirectional=self.bidirectional,
                ptd_kwargs=self.ptd_kwargs,
            ),
        )

    def __call__(self, u):
        """u: (batch, length, features) -> same shape."""
        return F.s4d_apply(self.ssm, u, method=self.method, chunk_size=self.chunk_size)

    def init_cache(self, batch_size: int):
        """Zero recurrent state, complex (batch_size, features, modes)."""
        return jnp.zeros((batch_size, *self.ssm["imag"].shape), jnp.complex64)

    def step(self, u_t, cache):
        """One token: u_t (batch, features) -> (y_t, new cache)."""
        return F.s4d_step(self.ssm, cache, u_t, method=self.method)


class S5(nn.Module):
    """Linen S5 / S5-PTD; arguments as in `jaxdl.nn.ssm.S5`, with `init` renamed `init_kind`.

    >>> import jax
    >>> layer = S5(4, state_size=8, blocks=2)
    >>> variables = layer.init(jax.random.key(0), jnp.ones((2, 16, 4)))
    >>> layer.apply(variables, jnp.ones((2, 16, 4))).shape
    (2, 16, 4)
    """

    features: int
    state_size: int = 64
    blocks: int = 4
    init_kind: str = "legs"  # `init` is taken by Module.init
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    bidirectional: bool = False
    method: str = "zoh"
    ptd_kwargs: dict | None = None

    def setup(self):
        self.ssm = _declare(
            self,
            _S5_NAMES,
            lambda key: F.s5_init_params(
                key,
                self.features,
                self.state_size,
                self.blocks,
                init=self.init_kind,
                dt_min=self.dt_min,
                dt_max=self.dt_max,
                bidirectional=self.bidirectional,
                ptd_kwargs=self.ptd_kwargs,
            ),
        )

    def __call__(self, u, step_scale=None):
        """u: (batch, length, features) -> same shape."""
        return F.s5_apply(self.ssm, u, step_scale=step_scale, method=self.method)

    def init_cache(self, batch_size: int):
        """Zero recurrent state, complex (batch_size, modes)."""
        return jnp.zeros((batch_size, *self.ssm["Lambda_re"].shape), jnp.complex64)

    def step(self, u_t, cache, step_scale=None):
        """One token: u_t (batch, features) -> (y_t, new cache)."""
        return F.s5_step(self.ssm, cache, u_t, step_scale=step_scale, method=self.method)
