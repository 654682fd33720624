"""Flax NNX layers: S4D / S4-PTD, S5 / S5-PTD and a stacked `SequenceModel`.

Thin shells over `jaxdl.nn.ssm.functional`: each layer builds one `S4DConfig` / `S5Config` (the same one the
Linen layers in `jaxdl.nn.ssm.linen` build) and keeps the parameters as `nnx.Param` attributes named like
the functional dict. See `functional` for the papers and equations. Inputs and outputs are
(batch, length, features). Recurrent inference is functional:
``cache = layer.init_cache(batch)`` then ``y_t, cache = layer.step(u_t, cache)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import ArrayLike, DTypeLike

from jaxdl.nn.ssm.functional import S4DConfig, S5Config

__all__ = ["S4D", "S5", "SequenceModel"]


class _SSM(nnx.Module):
    """Shared plumbing: parameters live as `nnx.Param` attributes named like the functional dict."""

    _names: tuple[str, ...] = ()
    config: Any

    def _set_params(self, params: Mapping[str, jax.Array]) -> None:
        self._names = tuple(params)
        for name, value in params.items():
            setattr(self, name, nnx.Param(value))

    def params(self) -> dict[str, jax.Array]:
        """The parameters as the plain dict that the functional core takes."""
        return {name: getattr(self, name)[...] for name in self._names}

    @property
    def features(self) -> int:
        """H, channels in and out."""
        return self.config.features

    @property
    def state_size(self) -> int:
        """The real state size."""
        return self.config.state_size

    @property
    def bidirectional(self) -> bool:
        """Whether an anti-causal part is added (no recurrent steps then)."""
        return self.config.bidirectional

    @property
    def method(self) -> str:
        """The discretisation, "zoh" or "bilinear"."""
        return self.config.method

    def init_cache(self, batch_size: int) -> jax.Array:
        """Zero recurrent state, complex (batch_size, features, modes) for S4D or (batch_size, modes) for S5,
        complex128 if the layer computes in float64, else complex64."""
        return self.config.init_cache(self.params(), batch_size)


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
      dtype: output dtype (None: the input's floating dtype; int input gives float32). The FFT runs in at least
        float32, so bfloat16 and integer inputs work.
      param_dtype: parameter dtype.
      debug: check inputs for NaN/inf and report the first one (convolution mode is not causal for
        non-finite values; see `s4d_apply`). Under `jax.jit` wrap the call in `checkify.checkify`.
      rngs: `nnx.Rngs` with a "params" stream.

    Refuses at construction what `S4DConfig` refuses (e.g. ``chunk_size=0``, ``dt_max=inf``).

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
        ptd_kwargs: Mapping[str, Any] | None = None,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        debug: bool = False,
        rngs: nnx.Rngs,
    ):
        self.config = S4DConfig(
            features,
            state_size,
            init=init,
            dt_min=dt_min,
            dt_max=dt_max,
            bidirectional=bidirectional,
            method=method,
            chunk_size=chunk_size,
            ptd_kwargs=ptd_kwargs,
            dtype=dtype,
            param_dtype=param_dtype,
            debug=debug,
        )
        self._set_params(self.config.init_params(rngs.params()))

    def __call__(self, u: ArrayLike) -> jax.Array:
        """u: (batch, length, features) -> same shape."""
        return self.config.apply(self.params(), u)

    def step(self, u_t: ArrayLike, cache: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One token: u_t (batch, features) -> (y_t (batch, features), new cache)."""
        return self.config.step(self.params(), cache, u_t)


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
      dtype: output dtype (None: the input's floating dtype); the scan runs in at least complex64.
      param_dtype: parameter dtype.
      rngs: `nnx.Rngs` with a "params" stream.

    Refuses at construction what `S5Config` refuses.

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
        ptd_kwargs: Mapping[str, Any] | None = None,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.config = S5Config(
            features,
            state_size,
            blocks,
            init=init,
            dt_min=dt_min,
            dt_max=dt_max,
            bidirectional=bidirectional,
            method=method,
            ptd_kwargs=ptd_kwargs,
            dtype=dtype,
            param_dtype=param_dtype,
        )
        self._set_params(self.config.init_params(rngs.params()))

    def __call__(self, u: ArrayLike, step_scale: ArrayLike | None = None) -> jax.Array:
        """u: (batch, length, features) -> same shape; step_scale: scalar or (batch, length) factor on Delta."""
        return self.config.apply(self.params(), u, step_scale)

    def step(
        self, u_t: ArrayLike, cache: jax.Array, step_scale: ArrayLike | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """One token: u_t (batch, features) -> (y_t (batch, features), new cache)."""
        return self.config.step(self.params(), cache, u_t, step_scale)


_SSM_TYPES: dict[str, type[S4D] | type[S5]] = {"s4d": S4D, "s5": S5}


def _check_sequence_model(layers: Any, ssm: str, dropout: Any, pool: Any) -> None:
    """The checks the NNX and Linen `SequenceModel` share."""
    if ssm not in _SSM_TYPES:
        raise ValueError(f"ssm must be one of {tuple(_SSM_TYPES)}, got {ssm!r}")
    if pool not in ("mean", None):
        raise ValueError(f"pool must be 'mean' or None, got {pool!r}")
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise ValueError(f"layers must be a positive integer, got {layers!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a rate in [0, 1), got {dropout!r}")


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
      dropout: dropout rate after each block, in [0, 1).
      pool: "mean" to average over length (sequence classification) or None (per-token output).
      residual: add the block input back (False gives x = block(x), as the PTD robustness model).
      rngs: `nnx.Rngs` with "params" (and "dropout" if dropout > 0).

    Refuses at construction: an unknown `ssm` or `pool`, ``layers < 1``, a dropout rate outside [0, 1), and
    whatever the SSM layer refuses of `ssm_kwargs`.

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
        ssm_kwargs: Mapping[str, Any] | None = None,
        dropout: float = 0.0,
        pool: str | None = "mean",
        residual: bool = True,
        rngs: nnx.Rngs,
    ):
        _check_sequence_model(layers, ssm, dropout, pool)
        self.pool, self.residual = pool, residual
        self.encoder = nnx.Linear(in_features, features, rngs=rngs)
        self.norms = nnx.List([nnx.LayerNorm(features, rngs=rngs) for _ in range(layers)])
        self.ssms = nnx.List(
            [_SSM_TYPES[ssm](features, **(ssm_kwargs or {}), rngs=rngs) for _ in range(layers)]
        )
        self.glus = nnx.List([nnx.Linear(features, 2 * features, rngs=rngs) for _ in range(layers)])
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.decoder = nnx.Linear(features, out_features, rngs=rngs)

    def __call__(self, x: ArrayLike) -> jax.Array:
        """x: (batch, length, in_features) -> (batch, out_features), or (batch, length, out_features)."""
        x = self.encoder(jnp.asarray(x))
        for norm, ssm, glu in zip(self.norms, self.ssms, self.glus, strict=True):
            z = jax.nn.gelu(ssm(norm(x)))
            z = self.dropout(jax.nn.glu(glu(z), axis=-1))
            x = x + z if self.residual else z
        if self.pool == "mean":
            x = jnp.mean(x, axis=1)
        return self.decoder(x)
