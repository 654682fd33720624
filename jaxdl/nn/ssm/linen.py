"""Flax Linen versions of `S4D`, `S5` and `SequenceModel`: thin shells over `jaxdl.nn.ssm.functional`.

Each Linen layer builds the same `S4DConfig` / `S5Config` as its NNX twin, so hyperparameters, defaults and
checks cannot drift (tests/nn/test_nnx_linen_parity.py compares the signatures). One naming rule for
arguments that clash with a Linen `Module` method: NNX's `init` is `init_kind` here (every Linen KAN and SSM
layer). Parameter names and shapes equal the NNX layers', so ``{"params": nnx_layer.params()}`` is a valid
Linen variable dict. Papers and equations: see `jaxdl.nn.ssm.functional`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.typing import ArrayLike, DTypeLike

from jaxdl.nn.ssm.functional import S4DConfig, S5Config
from jaxdl.nn.ssm.layers import _check_sequence_model

__all__ = ["S4D", "S5", "SequenceModel"]

_S4D_NAMES = ("log_neg_real", "imag", "B", "C", "D", "log_step")
_S5_NAMES = ("Lambda_re", "Lambda_im", "B", "C", "D", "log_step")


def _declare(module: nn.Module, names: tuple[str, ...], make_all: Callable[[jax.Array], dict]) -> dict:
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
    """Linen S4D / S4-PTD; arguments as in `jaxdl.nn.ssm.S4D` (`init` is `init_kind`), checked at construction.

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
    ptd_kwargs: Mapping[str, Any] | None = None
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32
    debug: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.config  # noqa: B018  (validates at construction)

    @property
    def config(self) -> S4DConfig:
        """The validated hyperparameters, shared with the NNX layer."""
        return S4DConfig(
            self.features,
            self.state_size,
            init=self.init_kind,
            dt_min=self.dt_min,
            dt_max=self.dt_max,
            bidirectional=self.bidirectional,
            method=self.method,
            chunk_size=self.chunk_size,
            ptd_kwargs=self.ptd_kwargs,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            debug=self.debug,
        )

    def setup(self) -> None:
        self.ssm = _declare(self, _S4D_NAMES, self.config.init_params)

    def __call__(self, u: ArrayLike) -> jax.Array:
        """u: (batch, length, features) -> same shape."""
        return self.config.apply(self.ssm, u)

    def init_cache(self, batch_size: int) -> jax.Array:
        """Zero recurrent state, complex (batch_size, features, modes)."""
        return self.config.init_cache(self.ssm, batch_size)

    def step(self, u_t: ArrayLike, cache: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One token: u_t (batch, features) -> (y_t, new cache)."""
        return self.config.step(self.ssm, cache, u_t)


class S5(nn.Module):
    """Linen S5 / S5-PTD; arguments as in `jaxdl.nn.ssm.S5` (`init` is `init_kind`), checked at construction.

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
    ptd_kwargs: Mapping[str, Any] | None = None
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    def __post_init__(self) -> None:
        super().__post_init__()
        self.config  # noqa: B018  (validates at construction)

    @property
    def config(self) -> S5Config:
        """The validated hyperparameters, shared with the NNX layer."""
        return S5Config(
            self.features,
            self.state_size,
            self.blocks,
            init=self.init_kind,
            dt_min=self.dt_min,
            dt_max=self.dt_max,
            bidirectional=self.bidirectional,
            method=self.method,
            ptd_kwargs=self.ptd_kwargs,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )

    def setup(self) -> None:
        self.ssm = _declare(self, _S5_NAMES, self.config.init_params)

    def __call__(self, u: ArrayLike, step_scale: ArrayLike | None = None) -> jax.Array:
        """u: (batch, length, features) -> same shape."""
        return self.config.apply(self.ssm, u, step_scale)

    def init_cache(self, batch_size: int) -> jax.Array:
        """Zero recurrent state, complex (batch_size, modes)."""
        return self.config.init_cache(self.ssm, batch_size)

    def step(
        self, u_t: ArrayLike, cache: jax.Array, step_scale: ArrayLike | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """One token: u_t (batch, features) -> (y_t, new cache)."""
        return self.config.step(self.ssm, cache, u_t, step_scale)


class SequenceModel(nn.Module):
    """Linen `SequenceModel`; arguments as in `jaxdl.nn.ssm.SequenceModel` without `in_features` (inferred from
    x, as `flax.linen.Dense` does), checked at construction. Submodules are named like the NNX lists'
    entries (`norms_0`, `ssms_0`, `glus_0`, ...). Dropout is active when called with ``deterministic=False``
    (pass a "dropout" rng).

    >>> import jax
    >>> model = SequenceModel(8, 10, layers=2, ssm_kwargs=dict(state_size=4))
    >>> x = jnp.ones((3, 32, 1))
    >>> model.apply(model.init(jax.random.key(0), x), x).shape
    (3, 10)
    """

    features: int
    out_features: int
    layers: int = 4
    ssm: str = "s4d"
    ssm_kwargs: Mapping[str, Any] | None = None
    dropout: float = 0.0
    pool: str | None = "mean"
    residual: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_sequence_model(self.layers, self.ssm, self.dropout, self.pool)

    @nn.compact
    def __call__(self, x: ArrayLike, deterministic: bool = True) -> jax.Array:
        """x: (batch, length, in_features) -> (batch, out_features), or (batch, length, out_features)."""
        kwargs = dict(self.ssm_kwargs or {})
        if "init" in kwargs:  # the NNX spelling, accepted in ssm_kwargs so both shells take the same dict
            kwargs["init_kind"] = kwargs.pop("init")
        ssm_type = {"s4d": S4D, "s5": S5}[self.ssm]
        x = nn.Dense(self.features, name="encoder")(jnp.asarray(x))
        for i in range(self.layers):
            z = nn.LayerNorm(name=f"norms_{i}")(x)
            z = jax.nn.gelu(ssm_type(self.features, **kwargs, name=f"ssms_{i}")(z))
            z = jax.nn.glu(nn.Dense(2 * self.features, name=f"glus_{i}")(z), axis=-1)
            z = nn.Dropout(self.dropout, deterministic=deterministic)(z)
            x = x + z if self.residual else z
        if self.pool == "mean":
            x = jnp.mean(x, axis=1)
        return nn.Dense(self.out_features, name="decoder")(x)
