"""Flax NNX modules for the KAN family, thin shells over the pure functions of this package.

- `KANLinear`, `KAN`: B-spline KAN (Liu et al. 2024) and the cheap bases (ReLU-KAN, RBF, Chebyshev, Fourier).
- `GRKAN`, `KATMLP`: group-rational KAN and the Kolmogorov-Arnold Transformer MLP block (Yang & Wang 2025).
- `AFKAN`: activation-function-based KAN (Ta & Tran 2025).
- `SelectableKAN`: activation-space selectable KAN (Yang et al. 2024).

Grids are `KANGrid` variables (not `nnx.Param`), so `nnx.Optimizer(model, tx, wrt=nnx.Param)` never touches them.
Grids and RBF centres are built in `param_dtype` (float64 knots under x64, not float32 ones cast up).

Every module has a Linen twin in `jaxdl.nn.kan.linen` with the same arguments and defaults, except that Linen
infers input widths from x (as `flax.linen.Dense` does: NNX `in_features` is dropped and `out_features` is
Linen's `features`; NNX ``KAN([D, H, N])`` is Linen ``KAN((H, N))``) and that NNX's `init` is Linen's
`init_kind` (`init` is a Linen `Module` method). tests/nn/test_nnx_linen_parity.py keeps them in step.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax import Array
from jax.typing import ArrayLike, DTypeLike

from jaxdl.nn._checks import _check_float_dtype, _check_size
from jaxdl.nn.kan import grid as grid_lib
from jaxdl.nn.kan.af_kan import _COMBINATIONS, af_kan_layer, af_kan_phases
from jaxdl.nn.kan.kan_linear import (
    _base_kernel_init,
    _check_kan_linear_args,
    _knot_basis_fn,
    get_basis,
    kan_linear,
    spline_kernel_init,
)
from jaxdl.nn.kan.rational import _check_rational_args, fit_rational, gr_kan, rational_gain
from jaxdl.nn.kan.selectable import _mix_outputs, selection_mask, selection_weights

__all__ = ["AFKAN", "GRKAN", "KAN", "KANGrid", "KANLinear", "KATMLP", "SelectableKAN", "SelectionMask"]


class KANGrid(nnx.Variable):
    """Non-trainable grid of a KAN layer: knots (D, G + 2k + 1) or RBF centres (D, G).

    Example:
      >>> from flax import nnx
      >>> from jaxdl.nn.kan.layers import KANGrid, KANLinear
      >>> layer = KANLinear(2, 1, grid_size=4, spline_order=1, rngs=nnx.Rngs(0))
      >>> layer.grid[...].shape, layer.grid[...][0].tolist()  # 4 intervals on [-1, 1], k = 1 knot per side
      ((2, 7), [-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5])
      >>> list(nnx.state(layer, KANGrid).keys()), sorted(nnx.state(layer, nnx.Param).keys())  # not a Param
      (['grid'], ['base_kernel', 'bias', 'spline_kernel'])
    """


class SelectionMask(nnx.Variable):
    """Non-trainable 0/1 mask (N, P) of the bases each `SelectableKAN` node may use.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxdl.nn.kan.layers import SelectableKAN
      >>> layer = SelectableKAN(3, 2, rngs=nnx.Rngs(0))  # 2 nodes, pool of 4 bases: every basis allowed
      >>> layer.bases, layer.mask[...].tolist()
      (('bspline', 'rbf', 'chebyshev', 'fourier'), [[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
      >>> layer.logits[...] = jnp.array([[0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
      >>> layer.select()  # node 0 keeps rbf, node 1 fourier; the unused bases are pruned
      >>> layer.bases, layer.mask[...].tolist()
      (('rbf', 'fourier'), [[1.0, 0.0], [0.0, 1.0]])
    """


def _samples(x: ArrayLike, in_features: int) -> Array:
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[-1] != in_features:
        raise ValueError(f"x must have shape (..., {in_features}), got {x.shape}")
    return x.reshape(-1, in_features).astype(jnp.promote_types(x.dtype, jnp.float32))


class KANLinear(nnx.Module):
    """A Kolmogorov-Arnold layer: y_j = sum_d w_b,dj b(x_d) + sum_{d,m} c_dmj B_m(x_d) + bias_j (KAN Sec. 2.2).

    Computed as one contraction of the basis features with the coefficients (efficient-kan form; see
    `kan_linear`). Drop-in for `nnx.Linear`.

    Args:
      in_features: D. out_features: N.
      basis: "bspline" (default), "relu" (ReLU-KAN), "rbf" (FastKAN), "chebyshev" or "fourier".
      grid_size: G; see `get_basis` for its meaning per basis.
      spline_order: k (B-spline order; support width k + 1 intervals for "relu").
      grid_range: initial grid interval (low, high).
      base_activation: b of the residual branch (SiLU); None removes the branch.
      use_bias: add a bias (zeros).
      spline_init_scale: coefficients start as N(0, scale^2) / sqrt(D).
      dtype: computation dtype (e.g. jnp.bfloat16); param_dtype: parameter and grid dtype.
      rngs: `nnx.Rngs` with a "params" stream.

    Shapes: x (..., D) -> (..., N). Parameters: base_kernel (D, N), spline_kernel (D, M, N), bias (N,).

    Refuses at construction (ValueError, naming the argument): non-positive sizes, spline_order < 0, an unknown
    basis, fewer than 2 RBF centres, a grid_range that is not finite (low, high) with low < high; (TypeError)
    a dtype or param_dtype that is not floating. Non-finite inputs give non-finite outputs in their own rows.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> layer = KANLinear(3, 4, rngs=nnx.Rngs(0))
    >>> layer(jnp.ones((2, 3))).shape
    (2, 4)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        basis: str = "bspline",
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: tuple[float, float] = (-1.0, 1.0),
        base_activation: Callable[[Array], Array] | None = jax.nn.silu,
        use_bias: bool = True,
        spline_init_scale: float = 0.1,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        in_features = _check_size("in_features", in_features)
        out_features = _check_size("out_features", out_features)
        _check_kan_linear_args(basis, grid_size, spline_order, grid_range, dtype, param_dtype)
        grid_size, spline_order = int(grid_size), int(spline_order)
        spec = get_basis(basis)
        self.in_features, self.out_features = in_features, out_features
        self.basis, self.grid_size, self.spline_order = basis, grid_size, spline_order
        self.base_activation, self.dtype = base_activation, dtype
        num_basis = spec.num_basis(grid_size, spline_order)
        low, high = map(float, grid_range)
        grid = spec.init_grid(in_features, grid_size, spline_order, (low, high), param_dtype)
        self.grid = None if grid is None else KANGrid(grid)
        self.spline_kernel = nnx.Param(
            spline_kernel_init(spline_init_scale)(
                rngs.params(), (in_features, num_basis, out_features), param_dtype
            )
        )
        self.base_kernel = (
            None
            if base_activation is None
            else nnx.Param(_base_kernel_init(rngs.params(), (in_features, out_features), param_dtype))
        )
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype)) if use_bias else None

    def __call__(self, x: ArrayLike) -> Array:
        return kan_linear(
            x,
            self.spline_kernel[...],
            None if self.grid is None else self.grid[...],
            None if self.base_kernel is None else self.base_kernel[...],
            None if self.bias is None else self.bias[...],
            basis=self.basis,
            grid_size=self.grid_size,
            spline_order=self.spline_order,
            base_activation=self.base_activation,
            dtype=self.dtype,
        )

    def _knots(self) -> Array:
        basis_fn = _knot_basis_fn(self.basis, self.spline_order)  # refuses grid-free bases
        del basis_fn
        assert self.grid is not None  # every knot-based basis has a grid
        return self.grid[...]

    def update_grid(self, x: ArrayLike, grid_eps: float = 0.02) -> None:
        """Move the knots to the quantiles of `x` (mixed with a uniform grid by `grid_eps`) and refit the
        coefficients by least squares so the layer's function on `x` is kept (KAN Sec. 2.2). In place; shapes
        do not change, so optimizer state stays valid.

        Non-finite samples are ignored (see `jaxdl.nn.kan.grid.update_grid`). Refuses (ValueError): a
        grid-free basis, x not (..., D), an empty x, and (eagerly) an input with no finite sample.

        Args:
          x: samples of this layer's input, shape (..., D).
          grid_eps: weight of the uniform grid (0: pure quantiles; pykan default 0.02).

        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> layer = KANLinear(1, 1, grid_size=2, spline_order=1, rngs=nnx.Rngs(0))
        >>> layer.update_grid(jnp.array([[0.0], [1.0], [jnp.nan], [3.0]]), grid_eps=0.0)  # the NaN is ignored
        >>> layer.grid[...][0].tolist()
        [-1.5, 0.0, 1.0, 3.0, 4.5]
        """
        knots = self._knots()
        new_grid, new_coef = grid_lib.update_grid(
            _knot_basis_fn(self.basis, self.spline_order),
            _samples(x, self.in_features),
            knots,
            self.spline_kernel[...],
            self.spline_order,
            grid_eps,
        )
        self.grid[...] = new_grid.astype(knots.dtype)  # type: ignore[index]
        self.spline_kernel[...] = new_coef.astype(self.spline_kernel[...].dtype)

    def refine(self, x: ArrayLike, grid_size: int) -> None:
        """Grid extension to `grid_size` intervals, coefficients refit on `x` (KAN Sec. 2.4). In place.

        The spline kernel changes shape (D, G + k, N) -> (D, G' + k, N), so an optimizer must be rebuilt:
        `nnx.Optimizer(model, tx, wrt=nnx.Param)` again (reset), or carry Adam's moments over with
        `jaxdl.nn.kan.grid.resize_basis_axis(opt_state, G + k, G' + k)`. Jitted steps re-trace once.

        Refuses (ValueError): a grid-free basis, grid_size < 1, x not (..., D), and fewer than G' + k samples
        (the least-squares minimum; non-finite samples do not count).

        Args:
          x: samples of this layer's input, shape (..., D), at least G' + k of them.
          grid_size: G'.

        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> layer = KANLinear(1, 1, grid_size=3, rngs=nnx.Rngs(0))
        >>> layer.refine(jnp.linspace(-1, 1, 50)[:, None], 6)
        >>> layer.spline_kernel[...].shape
        (1, 9, 1)
        """
        knots = self._knots()
        grid_size = _check_size("grid_size", grid_size)
        new_grid, new_coef = grid_lib.refine(
            _knot_basis_fn(self.basis, self.spline_order),
            _samples(x, self.in_features),
            knots,
            self.spline_kernel[...],
            self.spline_order,
            grid_size,
        )
        param_dtype = self.spline_kernel[...].dtype
        self.grid = KANGrid(new_grid.astype(knots.dtype))
        self.spline_kernel = nnx.Param(new_coef.astype(param_dtype))
        self.grid_size = grid_size


class KAN(nnx.Module):
    """A stack of `KANLinear` layers of widths `features` = [D, H_1, ..., N] (KAN Sec. 2.2, "deeper KANs").

    Args:
      features: layer widths including the input width D, at least two (the Linen `KAN` takes
        ``features[1:]`` and infers D from x).
      basis: passed to every `KANLinear`, as are grid_size, spline_order, grid_range,
        base_activation, use_bias, spline_init_scale, dtype and param_dtype.
      rngs: `nnx.Rngs`.

    Refuses what `KANLinear` refuses, and fewer than two widths (ValueError).

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> model = KAN([2, 5, 1], grid_size=3, rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((7, 2))).shape
    (7, 1)
    """

    def __init__(
        self,
        features: Sequence[int],
        *,
        basis: str = "bspline",
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: tuple[float, float] = (-1.0, 1.0),
        base_activation: Callable[[Array], Array] | None = jax.nn.silu,
        use_bias: bool = True,
        spline_init_scale: float = 0.1,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if len(features) < 2:
            raise ValueError(f"features needs at least an input and an output width, got {features!r}")
        for i, width in enumerate(features):
            _check_size(f"features[{i}]", width)
        layer_kwargs: dict[str, Any] = dict(
            basis=basis,
            grid_size=grid_size,
            spline_order=spline_order,
            grid_range=grid_range,
            base_activation=base_activation,
            use_bias=use_bias,
            spline_init_scale=spline_init_scale,
            dtype=dtype,
            param_dtype=param_dtype,
        )
        self.layers = nnx.List(
            [
                KANLinear(d_in, d_out, rngs=rngs, **layer_kwargs)
                for d_in, d_out in itertools.pairwise(features)
            ]
        )

    def __call__(self, x: ArrayLike) -> Array:
        x = jnp.asarray(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def update_grid(self, x: ArrayLike, grid_eps: float = 0.02) -> None:
        """Update every layer's grid on its own input activations, first layer first (pykan MultKAN).

        Non-finite samples are ignored; refuses what `KANLinear.update_grid` refuses.

        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> model = KAN([2, 3, 1], grid_size=3, rngs=nnx.Rngs(0))
        >>> model.update_grid(jnp.linspace(-1, 1, 40).reshape(20, 2))
        >>> model.layers[1].grid[...].shape
        (3, 10)
        """
        x = jnp.asarray(x)
        for layer in self.layers:
            layer.update_grid(x, grid_eps)
            x = layer(x)

    def refine(self, x: ArrayLike, grid_size: int) -> None:
        """Extend every layer's grid to `grid_size`, each refit on its own input activations.

        Refuses what `KANLinear.refine` refuses (e.g. fewer than grid_size + spline_order samples), before any
        layer changes.

        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> model = KAN([2, 3, 1], grid_size=3, rngs=nnx.Rngs(0))
        >>> model.refine(jnp.linspace(-1, 1, 40).reshape(20, 2), 6)
        >>> model.layers[0].spline_kernel[...].shape
        (2, 9, 3)
        """
        x = jnp.asarray(x)
        for layer in self.layers:
            y = layer(x)
            layer.refine(x, grid_size)
            x = y


class GRKAN(nnx.Module):
    """Group-rational KAN layer y = F_g(x) @ W + b (Kolmogorov-Arnold Transformer, Yang & Wang 2025, Sec. 4).

    F is P(x)/(1 + sum |b_q||x|^q) with one (a, b) per group of D / groups channels, initialised by a
    least-squares fit to `init` in that same form (`fit_rational`). W ~ N(0, gain / D) with the
    variance-preserving gain = 1 / E[F(x)^2], x ~ N(0, 1) (KAT Sec. 4.3; 1 for "identity", 2.81 for "swish").

    Args:
      in_features: D, divisible by `groups`. out_features: N.
      groups: g (KAT: 8). num_order: m (5). den_order: n (4).
      init: "identity", "swish", "gelu", "tanh" or "relu" (Linen: `init_kind`).
      use_bias: add a bias (zeros). dtype / param_dtype: as in `KANLinear`.
      rngs: `nnx.Rngs`.

    Parameters: numerator (g, m + 1), denominator (g, n), kernel (D, N), bias (N,).

    Refuses at construction (ValueError): non-positive sizes, D not divisible by groups, an unknown init,
    num_order < 1 or den_order < 0; (TypeError) non-floating dtype / param_dtype.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> GRKAN(16, 4, init="swish", rngs=nnx.Rngs(0))(jnp.ones((2, 16))).shape
    (2, 4)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        groups: int = 8,
        num_order: int = 5,
        den_order: int = 4,
        init: str = "identity",
        use_bias: bool = True,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        in_features = _check_size("in_features", in_features)
        out_features = _check_size("out_features", out_features)
        _check_rational_args(in_features, groups, num_order, den_order, init, "init")
        _check_float_dtype("dtype", dtype, optional=True)
        _check_float_dtype("param_dtype", param_dtype)
        numerator, denominator = fit_rational(init, num_order, den_order)
        gain = rational_gain(numerator, denominator)
        self.dtype = dtype
        self.numerator = nnx.Param(jnp.tile(jnp.asarray(numerator, param_dtype), (groups, 1)))
        self.denominator = nnx.Param(jnp.tile(jnp.asarray(denominator, param_dtype), (groups, 1)))
        std = (gain / in_features) ** 0.5
        self.kernel = nnx.Param(
            std * jax.random.normal(rngs.params(), (in_features, out_features), param_dtype)
        )
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype)) if use_bias else None

    def __call__(self, x: ArrayLike) -> Array:
        bias = None if self.bias is None else self.bias[...]
        return gr_kan(x, self.numerator[...], self.denominator[...], self.kernel[...], bias, dtype=self.dtype)


class KATMLP(nnx.Module):
    """The Kolmogorov-Arnold Transformer's MLP block: GR-KAN(identity) D -> H, then GR-KAN(swish) H -> N
    (KAT Sec. 4, x -> F_1 -> fc1 -> F_2 -> fc2). Drop-in for a transformer MLP.

    Args:
      in_features: D. hidden_features: H (default 4 D). out_features: N (default D).
      groups, num_order, den_order, use_bias, dtype, param_dtype: passed to both `GRKAN`s.
      rngs: `nnx.Rngs`.

    Refuses what `GRKAN` refuses.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> KATMLP(16, rngs=nnx.Rngs(0))(jnp.ones((2, 5, 16))).shape
    (2, 5, 16)
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        *,
        groups: int = 8,
        num_order: int = 5,
        den_order: int = 4,
        use_bias: bool = True,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        in_features = _check_size("in_features", in_features)
        hidden_features = hidden_features or 4 * in_features
        out_features = out_features or in_features
        kwargs: dict[str, Any] = dict(
            groups=groups,
            num_order=num_order,
            den_order=den_order,
            use_bias=use_bias,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.fc1 = GRKAN(in_features, hidden_features, init="identity", **kwargs)
        self.fc2 = GRKAN(hidden_features, out_features, init="swish", **kwargs)

    def __call__(self, x: ArrayLike) -> Array:
        return self.fc2(self.fc1(x))


_AF_KAN_PARAMS = (
    "starts",
    "ends",
    "score_kernel",
    "score_bias",
    "temperature",
    "norm_scale",
    "norm_bias",
    "kernel",
)


def _check_af_kan_args(
    grid_size: Any, spline_order: Any, combination: str, dtype: Any, param_dtype: Any
) -> None:
    """The checks the NNX and Linen `AFKAN` share."""
    _check_size("grid_size", grid_size)
    _check_size("spline_order", spline_order, minimum=0)
    if combination not in _COMBINATIONS:
        raise ValueError(f"combination must be one of {sorted(_COMBINATIONS)}, got {combination!r}")
    _check_float_dtype("dtype", dtype, optional=True)
    _check_float_dtype("param_dtype", param_dtype)


class AFKAN(nnx.Module):
    """AF-KAN layer in the paper's best configuration (Ta & Tran 2025, Sec. 3): basis act(x - s_i), act(e_i - x)
    combined by `combination`, L2-min-max normalised per example, reduced over the G + k basis functions by
    global attention, layer-normalised, then act(z) @ W.

    Args:
      in_features: D. out_features: N.
      grid_size: G (3). spline_order: k (3); M = G + k starts/ends, trainable and shared across inputs.
      activation: act (SiLU). combination: "quad1" ((a b)^2), "quad2", "sum", "prod", "sum_prod", "cubic1" or
        "cubic2".
      dtype: computation dtype of the final matmul (e.g. jnp.bfloat16; the basis, normalisations and
        attention run in at least float32). param_dtype: parameter dtype.
      rngs: `nnx.Rngs`.

    Parameters: starts, ends, score_kernel (M,), score_bias, temperature (sqrt(D)), norm_scale, norm_bias (D,),
    kernel (D, N) ~ U(+-1/sqrt(D)). score_bias is kept for parity with the authors' ``nn.Linear(M, 1)``:
    it shifts every score alike, so the softmax ignores it and its gradient is exactly zero.

    Refuses at construction (ValueError): non-positive sizes, spline_order < 0, an unknown combination;
    (TypeError) a non-floating dtype or param_dtype.

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> AFKAN(6, 2, rngs=nnx.Rngs(0))(jnp.ones((3, 6))).shape
    (3, 2)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        grid_size: int = 3,
        spline_order: int = 3,
        activation: Callable[[Array], Array] = jax.nn.silu,
        combination: str = "quad1",
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        in_features = _check_size("in_features", in_features)
        out_features = _check_size("out_features", out_features)
        _check_af_kan_args(grid_size, spline_order, combination, dtype, param_dtype)
        self.activation, self.combination, self.dtype = activation, combination, dtype
        starts, ends = af_kan_phases(int(grid_size), int(spline_order))
        num_basis = starts.shape[0]
        self.starts = nnx.Param(starts.astype(param_dtype))
        self.ends = nnx.Param(ends.astype(param_dtype))
        bound = num_basis**-0.5
        self.score_kernel = nnx.Param(
            jax.random.uniform(rngs.params(), (num_basis,), param_dtype, -bound, bound)
        )
        self.score_bias = nnx.Param(jnp.zeros((), param_dtype))
        self.temperature = nnx.Param(jnp.asarray(in_features**0.5, param_dtype))
        self.norm_scale = nnx.Param(jnp.ones((in_features,), param_dtype))
        self.norm_bias = nnx.Param(jnp.zeros((in_features,), param_dtype))
        self.kernel = nnx.Param(_base_kernel_init(rngs.params(), (in_features, out_features), param_dtype))

    def __call__(self, x: ArrayLike) -> Array:
        x = jnp.asarray(x)
        params = {name: getattr(self, name)[...] for name in _AF_KAN_PARAMS}
        if x.ndim < 1 or x.shape[-1] != params["kernel"].shape[0]:
            raise ValueError(f"x must have shape (..., {params['kernel'].shape[0]}), got {x.shape}")
        return af_kan_layer(
            x, params, activation=self.activation, combination=self.combination, dtype=self.dtype
        )


_DEFAULT_POOL = ("bspline", "rbf", "chebyshev", "fourier")


def _check_pool(bases: Sequence[str]) -> tuple[str, ...]:
    if isinstance(bases, str) or not bases:
        raise ValueError(f"bases must name at least one basis (a sequence of names), got {bases!r}")
    for name in bases:
        get_basis(name)
    return tuple(bases)


class SelectableKAN(nnx.Module):
    """S-KAN layer (Yang et al. 2024, Sec. 3): each output node mixes a pool of KAN bases with learnable
    softmax weights; `select()` then fixes every node to its best basis and prunes unused bases.

    Training has the paper's phases: train everything (mixture), call `select()`, keep training the selected
    spaces. Each pool member is a `KANLinear` with the same in/out features.

    Args:
      in_features: D. out_features: N.
      bases: the pool, names accepted by `KANLinear(basis=...)`.
      grid_size, spline_order, grid_range, base_activation, use_bias, spline_init_scale, dtype, param_dtype:
        passed to every pool member; `logits` and `mask` are kept in param_dtype too.
      rngs: `nnx.Rngs`.

    Parameters: `experts[p]` (KANLinear), `logits` (N, P); state: `mask` (N, P).

    Refuses what `KANLinear` refuses, and an empty pool (ValueError).

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> layer = SelectableKAN(3, 2, rngs=nnx.Rngs(0))
    >>> layer(jnp.ones((4, 3))).shape
    (4, 2)
    >>> layer.select(); len(layer.experts) <= 4
    True
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bases: Sequence[str] = _DEFAULT_POOL,
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: tuple[float, float] = (-1.0, 1.0),
        base_activation: Callable[[Array], Array] | None = jax.nn.silu,
        use_bias: bool = True,
        spline_init_scale: float = 0.1,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.bases = _check_pool(bases)
        out_features = _check_size("out_features", out_features)
        layer_kwargs: dict[str, Any] = dict(
            grid_size=grid_size,
            spline_order=spline_order,
            grid_range=grid_range,
            base_activation=base_activation,
            use_bias=use_bias,
            spline_init_scale=spline_init_scale,
            dtype=dtype,
            param_dtype=param_dtype,
        )
        self.experts = nnx.List(
            [KANLinear(in_features, out_features, basis=b, rngs=rngs, **layer_kwargs) for b in self.bases]
        )
        self.logits = nnx.Param(jnp.zeros((out_features, len(self.bases)), param_dtype))
        self.mask = SelectionMask(jnp.ones((out_features, len(self.bases)), param_dtype))

    def weights(self) -> Array:
        """Current mixing weights (N, P).

        >>> from flax import nnx
        >>> SelectableKAN(3, 2, bases=("rbf", "fourier"), rngs=nnx.Rngs(0)).weights().tolist()
        [[0.5, 0.5], [0.5, 0.5]]
        """
        return selection_weights(self.logits[...], self.mask[...])

    def __call__(self, x: ArrayLike) -> Array:
        outputs = jnp.stack([expert(x) for expert in self.experts])
        return _mix_outputs(outputs, self.weights())

    def select(self) -> None:
        """Fix each node to its largest-logit basis, then drop bases no node uses (S-KAN's pruning phase).

        >>> from flax import nnx
        >>> layer = SelectableKAN(3, 2, bases=("rbf", "fourier"), rngs=nnx.Rngs(0))
        >>> layer.logits[...] = layer.logits[...].at[:, 1].set(1.0)
        >>> layer.select(); layer.bases
        ('fourier',)
        """
        mask = selection_mask(jnp.where(self.mask[...] > 0, self.logits[...], -jnp.inf))
        keep = [p for p in range(len(self.bases)) if bool(mask[:, p].any())]
        self.bases = tuple(self.bases[p] for p in keep)
        self.experts = nnx.List([self.experts[p] for p in keep])
        self.logits = nnx.Param(self.logits[...][:, keep])
        self.mask = SelectionMask(mask[:, keep].astype(self.logits[...].dtype))
