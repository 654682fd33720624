"""Flax NNX modules for the KAN family, thin shells over the pure functions of this package.

- `KANLinear`, `KAN`: B-spline KAN (Liu et al. 2024) and the cheap bases (ReLU-KAN, RBF, Chebyshev, Fourier).
- `GRKAN`, `KATMLP`: group-rational KAN and the Kolmogorov-Arnold Transformer MLP block (Yang & Wang 2025).
- `AFKAN`: activation-function-based KAN (Ta & Tran 2025).
- `SelectableKAN`: activation-space selectable KAN (Yang et al. 2024).

Grids are `KANGrid` variables (not `nnx.Param`), so `nnx.Optimizer(model, tx, wrt=nnx.Param)` never touches them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax import Array

from jaxdl.nn.kan import grid as grid_lib
from jaxdl.nn.kan.af_kan import COMBINATIONS, af_kan_layer, af_kan_phases
from jaxdl.nn.kan.kan_linear import base_kernel_init, get_basis, kan_linear, knot_basis_fn, spline_kernel_init
from jaxdl.nn.kan.rational import fit_rational, gr_kan, rational_gain
from jaxdl.nn.kan.selectable import mix_outputs, selection_mask, selection_weights


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


def _check_features(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


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
      dtype: computation dtype (e.g. jnp.bfloat16); param_dtype: parameter dtype.
      rngs: `nnx.Rngs` with a "params" stream.

    Shapes: x (..., D) -> (..., N). Parameters: base_kernel (D, N), spline_kernel (D, M, N), bias (N,).

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
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        _check_features("in_features", in_features)
        _check_features("out_features", out_features)
        _check_features("grid_size", grid_size)
        spec = get_basis(basis)
        if not isinstance(spline_order, int) or spline_order < 0:
            raise ValueError(f"spline_order must be an int >= 0, got {spline_order!r}")
        if basis == "rbf" and grid_size < 2:
            raise ValueError(f"grid_size (number of RBF centres) must be >= 2, got {grid_size}")
        if not grid_range[0] < grid_range[1]:
            raise ValueError(f"grid_range must be (low, high) with low < high, got {grid_range}")
        self.in_features, self.out_features = in_features, out_features
        self.basis, self.grid_size, self.spline_order = basis, grid_size, spline_order
        self.base_activation, self.dtype = base_activation, dtype
        num_basis = spec.num_basis(grid_size, spline_order)
        grid = spec.init_grid(in_features, grid_size, spline_order, grid_range)
        self.grid = None if grid is None else KANGrid(grid.astype(param_dtype))
        self.spline_kernel = nnx.Param(
            spline_kernel_init(spline_init_scale)(
                rngs.params(), (in_features, num_basis, out_features), param_dtype
            )
        )
        self.base_kernel = (
            None
            if base_activation is None
            else nnx.Param(base_kernel_init(rngs.params(), (in_features, out_features), param_dtype))
        )
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype)) if use_bias else None

    def __call__(self, x: Array) -> Array:
        return kan_linear(
            x,
            self.spline_kernel[...],
            None if self.grid is None else self.grid[...],
            None if self.base_kernel is None else self.base_kernel[...],
            None if self.bias is None else self.bias[...],
            basis=self.basis,
            grid_size=self.grid_size,
            order=self.spline_order,
            base_activation=self.base_activation,
            dtype=self.dtype,
        )

    def _samples(self, x: Array) -> Array:
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., {self.in_features}), got {x.shape}")
        return x.reshape(-1, self.in_features).astype(jnp.promote_types(x.dtype, jnp.float32))

    def update_grid(self, x: Array, grid_eps: float = 0.02) -> None:
        """Move the knots to the quantiles of `x` (mixed with a uniform grid by `grid_eps`) and refit the
        coefficients by least squares so the layer's function on `x` is kept (KAN Sec. 2.2). In place; shapes
        do not change, so optimizer state stays valid.

        Args:
          x: samples of this layer's input, shape (..., D).
          grid_eps: weight of the uniform grid (0: pure quantiles; pykan default 0.02).
        """
        samples = self._samples(x)
        new_grid, new_coef = grid_lib.update_grid(
            knot_basis_fn(self.basis, self.spline_order),
            samples,
            self.grid[...],
            self.spline_kernel[...],
            self.spline_order,
            grid_eps,
        )
        self.grid[...] = new_grid.astype(self.grid[...].dtype)
        self.spline_kernel[...] = new_coef.astype(self.spline_kernel[...].dtype)

    def refine(self, x: Array, grid_size: int) -> None:
        """Grid extension to `grid_size` intervals, coefficients refit on `x` (KAN Sec. 2.4). In place.

        The spline kernel changes shape (D, G + k, N) -> (D, G' + k, N), so an optimizer must be rebuilt:
        `nnx.Optimizer(model, tx, wrt=nnx.Param)` again (reset), or carry Adam's moments over with
        `jaxdl.nn.kan.grid.resize_basis_axis(opt_state, G + k, G' + k)`. Jitted steps re-trace once.

        Args:
          x: samples of this layer's input, shape (..., D), at least G' + k of them.
          grid_size: G'.
        """
        _check_features("grid_size", grid_size)
        samples = self._samples(x)
        new_grid, new_coef = grid_lib.refine(
            knot_basis_fn(self.basis, self.spline_order),
            samples,
            self.grid[...],
            self.spline_kernel[...],
            self.spline_order,
            grid_size,
        )
        param_dtype = self.spline_kernel[...].dtype
        self.grid = KANGrid(new_grid.astype(self.grid[...].dtype))
        self.spline_kernel = nnx.Param(new_coef.astype(param_dtype))
        self.grid_size = grid_size


class KAN(nnx.Module):
    """A stack of `KANLinear` layers of widths `features` = [D, H_1, ..., N] (KAN Sec. 2.2, "deeper KANs").

    Args:
      features: layer widths, at least two.
      rngs: `nnx.Rngs`.
      **layer_kwargs: passed to every `KANLinear` (basis, grid_size, spline_order, ...).

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> model = KAN([2, 5, 1], grid_size=3, rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((7, 2))).shape
    (7, 1)
    """

    def __init__(self, features: Sequence[int], *, rngs: nnx.Rngs, **layer_kwargs):
        if len(features) < 2:
            raise ValueError(f"features needs at least an input and an output width, got {features!r}")
        self.layers = nnx.List(
            [
                KANLinear(d_in, d_out, rngs=rngs, **layer_kwargs)
                for d_in, d_out in itertools.pairwise(features)
            ]
        )

    def __call__(self, x: Array) -> Array:
        for layer in self.layers:
            x = layer(x)
        return x

    def update_grid(self, x: Array, grid_eps: float = 0.02) -> None:
        """Update every layer's grid on its own input activations, first layer first (pykan MultKAN)."""
        for layer in self.layers:
            layer.update_grid(x, grid_eps)
            x = layer(x)

    def refine(self, x: Array, grid_size: int) -> None:
        """Extend every layer's grid to `grid_size`, each refit on its own input activations."""
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
      init: "identity", "swish", "gelu", "tanh" or "relu".
      use_bias: add a bias (zeros). dtype / param_dtype: as in `KANLinear`.
      rngs: `nnx.Rngs`.

    Parameters: numerator (g, m + 1), denominator (g, n), kernel (D, N), bias (N,).

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
        dtype=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        _check_features("in_features", in_features)
        _check_features("out_features", out_features)
        _check_features("groups", groups)
        if in_features % groups:
            raise ValueError(f"in_features ({in_features}) must be divisible by groups ({groups})")
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

    def __call__(self, x: Array) -> Array:
        bias = None if self.bias is None else self.bias[...]
        return gr_kan(x, self.numerator[...], self.denominator[...], self.kernel[...], bias, dtype=self.dtype)


class KATMLP(nnx.Module):
    """The Kolmogorov-Arnold Transformer's MLP block: GR-KAN(identity) D -> H, then GR-KAN(swish) H -> N
    (KAT Sec. 4, x -> F_1 -> fc1 -> F_2 -> fc2). Drop-in for a transformer MLP.

    Args:
      in_features: D. hidden_features: H (default 4 D). out_features: N (default D).
      groups: rational groups in both layers. rngs: `nnx.Rngs`. **kwargs: passed to both `GRKAN`s.

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
        rngs: nnx.Rngs,
        **kwargs,
    ):
        hidden_features = hidden_features or 4 * in_features
        out_features = out_features or in_features
        self.fc1 = GRKAN(in_features, hidden_features, groups=groups, init="identity", rngs=rngs, **kwargs)
        self.fc2 = GRKAN(hidden_features, out_features, groups=groups, init="swish", rngs=rngs, **kwargs)

    def __call__(self, x: Array) -> Array:
        return self.fc2(self.fc1(x))


AF_KAN_PARAMS = (
    "starts",
    "ends",
    "score_kernel",
    "score_bias",
    "temperature",
    "norm_scale",
    "norm_bias",
    "kernel",
)


class AFKAN(nnx.Module):
    """AF-KAN layer in the paper's best configuration (Ta & Tran 2025, Sec. 3): basis act(x - s_i), act(e_i - x)
    combined by `combination`, L2-min-max normalised per example, reduced over the G + k basis functions by
    global attention, layer-normalised, then act(z) @ W.

    Args:
      in_features: D. out_features: N.
      grid_size: G (3). spline_order: k (3); M = G + k starts/ends, trainable and shared across inputs.
      activation: act (SiLU). combination: "quad1" ((a b)^2) or another of `af_kan.COMBINATIONS`.
      rngs: `nnx.Rngs`.

    Parameters: starts, ends, score_kernel (M,), score_bias, temperature (sqrt(D)), norm_scale, norm_bias (D,),
    kernel (D, N) ~ U(+-1/sqrt(D)).

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
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        _check_features("in_features", in_features)
        _check_features("out_features", out_features)
        _check_features("grid_size", grid_size)
        if combination not in COMBINATIONS:
            raise ValueError(f"combination must be one of {sorted(COMBINATIONS)}, got {combination!r}")
        self.activation, self.combination = activation, combination
        starts, ends = af_kan_phases(grid_size, spline_order)
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
        self.kernel = nnx.Param(base_kernel_init(rngs.params(), (in_features, out_features), param_dtype))

    def __call__(self, x: Array) -> Array:
        params = {name: getattr(self, name)[...] for name in AF_KAN_PARAMS}
        if x.ndim < 1 or x.shape[-1] != params["kernel"].shape[0]:
            raise ValueError(f"x must have shape (..., {params['kernel'].shape[0]}), got {x.shape}")
        return af_kan_layer(x, params, activation=self.activation, combination=self.combination)


class SelectableKAN(nnx.Module):
    """S-KAN layer (Yang et al. 2024, Sec. 3): each output node mixes a pool of KAN bases with learnable
    softmax weights; `select()` then fixes every node to its best basis and prunes unused bases.

    Training has the paper's phases: train everything (mixture), call `select()`, keep training the selected
    spaces. Each pool member is a `KANLinear` with the same in/out features.

    Args:
      in_features: D. out_features: N.
      bases: the pool, names accepted by `KANLinear(basis=...)`.
      rngs: `nnx.Rngs`. **layer_kwargs: passed to every pool member (grid_size, spline_order, ...).

    Parameters: `experts[p]` (KANLinear), `logits` (N, P); state: `mask` (N, P).

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
        bases: Sequence[str] = ("bspline", "rbf", "chebyshev", "fourier"),
        rngs: nnx.Rngs,
        **layer_kwargs,
    ):
        if not bases:
            raise ValueError("bases must name at least one basis")
        self.bases = tuple(bases)
        self.experts = nnx.List(
            [KANLinear(in_features, out_features, basis=b, rngs=rngs, **layer_kwargs) for b in self.bases]
        )
        self.logits = nnx.Param(jnp.zeros((out_features, len(self.bases))))
        self.mask = SelectionMask(jnp.ones((out_features, len(self.bases))))

    def weights(self) -> Array:
        """Current mixing weights (N, P)."""
        return selection_weights(self.logits[...], self.mask[...])

    def __call__(self, x: Array) -> Array:
        outputs = jnp.stack([expert(x) for expert in self.experts])
        return mix_outputs(outputs, self.weights())

    def select(self) -> None:
        """Fix each node to its largest-logit basis, then drop bases no node uses (S-KAN's pruning phase)."""
        mask = selection_mask(jnp.where(self.mask[...] > 0, self.logits[...], -jnp.inf))
        keep = [p for p in range(len(self.bases)) if bool(mask[:, p].any())]
        self.bases = tuple(self.bases[p] for p in keep)
        self.experts = nnx.List([self.experts[p] for p in keep])
        self.logits = nnx.Param(self.logits[...][:, keep])
        self.mask = SelectionMask(mask[:, keep])
