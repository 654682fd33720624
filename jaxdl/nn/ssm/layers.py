"""Flax NNX layers: S4D / S4-PTD, S5 / S5-PTD and a stacked `SequenceModel`.

Thin shells over `jaxdl.nn.ssm.functional`; see there for the papers and equations. Inputs and
outputs are (batch, length, features). Recurrent inference is functional:
``cache = layer.init_cache(batch)`` then ``y_t, cache = layer.step(u_t, cache)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxdl.nn.ssm import functional as F

__all__ = ["S4D", "S5", "SequenceModel"]


class _SSM(nnx.Module):
    """Shared plumbing: parameters live as `nnx.Param` attributes named like the functional dict."""

    _names: tuple[str, ...] = ()

    def _set_params(self, params: dict) -> None:
        self._names = tuple(params)
        for name, value in params.items():
            setattr(self, name, nnx.Param(value))

    def params(self) -> dict:
        """The parameters as the plain dict that the functional core takes."""
        return {name: getattr(self, name)[...] for name in self._names}


class S4D(_SSM):
    """Diagonal state-space layer S4D, or S4-PTD with ``init="ptd"`` (S4D paper; PTD paper, Sec. 4).

    Each of the H channels runs its own diagonal SSM of state size N; training uses the
    convolution mode (Vandermonde kernel + FFT), inference can step token by token.

    Args:
      features: H, channels in and out.
      state_size: N (N/2 complex modes; "ptd" adds its real modes).
      init: "legs", "lin", "inv", "real" or "ptd".
      dt_min, dt_max: range of the log-uniform initial step Delta.
      bidirectional: add an anti-causal kernel (no recurrent steps then).
      method: "zoh" or "bilinear" discretisation.
      chunk_size: Vandermonde chunk length (memory knob, see `ssm_kernel`).
      ptd_kwargs: keyword arguments for `ptd` when init="ptd".
      rngs: `nnx.Rngs` with a "params" stream.

    >>> layer = S4D(4, state_size=8, rngs=nnx.Rngs(0))
    >>> layer(jnp.ones((2, 16, 4))).shape
    (2, 16, 4)
    """

    def __init__(
        self,
        features: int,
        state_size: int = 64,
        *,
        init: str = "legs",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        bidirectional: bool = False,
        method: str = "zoh",
        chunk_size: int | None = None,
        ptd_kwargs: dict | None = None,
        rngs: nnx.Rngs,
    ):
        if method not in ("zoh", "bilinear"):
            raise ValueError(f"method must be 'zoh' or 'bilinear', got {method!r}")
        self.features, self.state_size, self.bidirectional = features, state_size, bidirectional
        self.method, self.chunk_size = method, chunk_size
        self._set_params(
            F.s4d_init_params(
                rngs.params(),
                features,
                state_size,
                init=init,
                dt_min=dt_min,
                dt_max=dt_max,
                bidirectional=bidirectional,
                ptd_kwargs=ptd_kwargs,
            )
        )

    def __call__(self, u: jax.Array) -> jax.Array:
        """u: (batch, length, features) -> same shape."""
        return F.s4d_apply(self.params(), u, method=self.method, chunk_size=self.chunk_size)

    def init_cache(self, batch_size: int) -> jax.Array:
        """Zero recurrent state, complex (batch_size, features, modes)."""
        return jnp.zeros((batch_size, *self.imag.shape), jnp.complex64)

    def step(self, u_t: jax.Array, cache: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One token: u_t (batch, features) -> (y_t (batch, features), new cache)."""
        return F.s4d_step(self.params(), cache, u_t, method=self.method)


class S5(_SSM):
    """MIMO diagonal state-space layer S5, or S5-PTD with ``init="ptd"`` (S5 paper; PTD paper, Sec. 4).

    Args:
      features: H, channels in and out.
      state_size: P, real state size.
      blocks: J, HiPPO blocks (block size P / J; 16-32 suits PTD).
      init: "legs" or "ptd".
      dt_min, dt_max: range of the log-uniform initial step per mode.
      bidirectional: add a backward scan with its own C.
      method: "zoh" or "bilinear".
      ptd_kwargs: keyword arguments for `ptd` when init="ptd".
      rngs: `nnx.Rngs` with a "params" stream.

    >>> layer = S5(4, state_size=8, blocks=2, rngs=nnx.Rngs(0))
    >>> layer(jnp.ones((2, 16, 4))).shape
    (2, 16, 4)
    """

    def __init__(
        self,
        features: int,
        state_size: int = 64,
        blocks: int = 4,
        *,
        init: str = "legs",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        bidirectional: bool = False,
        method: str = "zoh",
        ptd_kwargs: dict | None = None,
        rngs: nnx.Rngs,
    ):
        if method not in ("zoh", "bilinear"):
            raise ValueError(f"method must be 'zoh' or 'bilinear', got {method!r}")
        self.features, self.state_size, self.bidirectional, self.method = (
            features,
            state_size,
            bidirectional,
            method,
        )
        self._set_params(
            F.s5_init_params(
                rngs.params(),
                features,
                state_size,
                blocks,
                init=init,
                dt_min=dt_min,
                dt_max=dt_max,
                bidirectional=bidirectional,
                ptd_kwargs=ptd_kwargs,
            )
        )

    def __call__(self, u: jax.Array, step_scale: jax.Array | float | None = None) -> jax.Array:
        """u: (batch, length, features) -> same shape; step_scale: scalar or (batch, length) factor on Delta."""
        return F.s5_apply(self.params(), u, step_scale=step_scale, method=self.method)

    def init_cache(self, batch_size: int) -> jax.Array:
        """Zero recurrent state, complex (batch_size, modes)."""
        return jnp.zeros((batch_size, *self.Lambda_re.shape), jnp.complex64)

    def step(self, u_t: jax.Array, cache: jax.Array, step_scale=None) -> tuple[jax.Array, jax.Array]:
        """One token: u_t (batch, features) -> (y_t (batch, features), new cache)."""
        return F.s5_step(self.params(), cache, u_t, step_scale=step_scale, method=self.method)


class SequenceModel(nnx.Module):
    """Encoder, `layers` residual SSM blocks, optional mean pooling, decoder.

    Each block is pre-norm: x + Dropout(GLU(GELU(SSM(LayerNorm(x))))), the layout of the S4 and S5
    reference models (S5 paper, App. B: "full_glu"-style output mixing).

    Args:
      in_features: input features per token.
      features: model width H.
      out_features: outputs (classes) per sequence or per token.
      layers: number of blocks.
      ssm: "s4d" or "s5".
      ssm_kwargs: keyword arguments for the SSM layer (state_size, init, bidirectional, ...).
      dropout: dropout rate after each block.
      pool: "mean" to average over length (sequence classification) or None (per-token output).
      residual: add the block input back (False gives x = block(x), as the PTD robustness model).
      rngs: `nnx.Rngs` with "params" (and "dropout" if dropout > 0).

    >>> model = SequenceModel(1, 8, 10, layers=2, ssm_kwargs=dict(state_size=4), rngs=nnx.Rngs(0))
    >>> model(jnp.ones((3, 32, 1))).shape
    (3, 10)
    """

    def __init__(
        self,
        in_features: int,
        features: int,
        out_features: int,
        *,
        layers: int = 4,
        ssm: str = "s4d",
        ssm_kwargs: dict | None = None,
        dropout: float = 0.0,
        pool: str | None = "mean",
        residual: bool = True,
        rngs: nnx.Rngs,
    ):
        ssm_types = {"s4d": S4D, "s5": S5}
        if ssm not in ssm_types:
            raise ValueError(f"ssm must be one of {tuple(ssm_types)}, got {ssm!r}")
        if pool not in ("mean", None):
            raise ValueError(f"pool must be 'mean' or None, got {pool!r}")
        if not isinstance(layers, int) or layers < 1:
            raise ValueError(f"layers must be a positive integer, got {layers!r}")
        self.pool, self.residual = pool, residual
        self.encoder = nnx.Linear(in_features, features, rngs=rngs)
        self.norms = nnx.List([nnx.LayerNorm(features, rngs=rngs) for _ in range(layers)])
        self.ssms = nnx.List(
            [ssm_types[ssm](features, **(ssm_kwargs or {}), rngs=rngs) for _ in range(layers)]
        )
        self.glus = nnx.List([nnx.Linear(features, 2 * features, rngs=rngs) for _ in range(layers)])
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.decoder = nnx.Linear(features, out_features, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (batch, length, in_features) -> (batch, out_features), or (batch, length, out_features)."""
        x = self.encoder(x)
        for norm, ssm, glu in zip(self.norms, self.ssms, self.glus, strict=True):
            z = jax.nn.gelu(ssm(norm(x)))
            z = self.dropout(jax.nn.glu(glu(z), axis=-1))
            x = x + z if self.residual else z
        if self.pool == "mean":
            x = jnp.mean(x, axis=1)
        return self.decoder(x)
