"""Flax Linen equivalents of the KAN modules, over the same pure functions and checks as the NNX modules in
`layers.py`.

Same arguments and defaults as the NNX modules, with two rules: input widths are inferred from x (as
`flax.linen.Dense` does), so NNX's `in_features` is dropped and its `out_features` is `features` here (NNX
``KAN([D, H, N])`` is Linen ``KAN((H, N))``); and NNX's `init` is `init_kind` here, since `init` is a Linen
`Module` method (the SSM layers follow the same rule). tests/nn/test_nnx_linen_parity.py checks both rules for
every layer. Arguments are checked at construction, as in NNX.

Parameters live in "params" under the NNX attribute names; grids live in the "kan_grid" collection, so an
optimizer over "params" never touches them. Grid update is a method (apply with `mutable=True`); grid
extension changes shapes and is the pure function `refine_variables`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike, DTypeLike

from jaxdl.nn._checks import _check_float_dtype, _check_size
from jaxdl.nn.kan import grid as grid_lib
from jaxdl.nn.kan.af_kan import af_kan_layer, af_kan_phases
from jaxdl.nn.kan.kan_linear import (
    _base_kernel_init,
    _check_kan_linear_args,
    _knot_basis_fn,
    get_basis,
    kan_linear,
    spline_kernel_init,
)
from jaxdl.nn.kan.layers import _DEFAULT_POOL, _check_af_kan_args, _check_pool
from jaxdl.nn.kan.rational import _check_rational_args, fit_rational, gr_kan, rational_gain
from jaxdl.nn.kan.selectable import _mix_outputs, selection_weights

__all__ = ["AFKAN", "GRKAN", "KAN", "KATMLP", "KANLinear", "SelectableKAN", "refine_variables"]


def _check_input(x: Array, name: str) -> None:
    if x.ndim < 1:
        raise ValueError(f"{name}: x must have shape (..., in_features), got {x.shape}")


class KANLinear(nn.Module):
    """Linen `KANLinear` (KAN Sec. 2.2); see `jaxdl.nn.kan.KANLinear` for the arguments (`features` is NNX's
    `out_features`). Refuses at construction what the NNX layer refuses.

    >>> import jax, jax.numpy as jnp
    >>> layer = KANLinear(4)
    >>> variables = layer.init(jax.random.key(0), jnp.ones((2, 3)))
    >>> sorted(variables), layer.apply(variables, jnp.ones((2, 3))).shape
    (['kan_grid', 'params'], (2, 4))
    """

    features: int
    basis: str = "bspline"
    grid_size: int = 5
    spline_order: int = 3
    grid_range: tuple[float, float] = (-1.0, 1.0)
    base_activation: Callable[[Array], Array] | None = jax.nn.silu
    use_bias: bool = True
    spline_init_scale: float = 0.1
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_size("features", self.features)
        _check_kan_linear_args(
            self.basis, self.grid_size, self.spline_order, self.grid_range, self.dtype, self.param_dtype
        )

    def _grid(self, in_features: int) -> Any:
        spec = get_basis(self.basis)
        low, high = map(float, self.grid_range)
        grid_range = (low, high)
        if spec.init_grid(1, self.grid_size, self.spline_order, grid_range, self.param_dtype) is None:
            return None
        init = lambda: spec.init_grid(
            in_features, self.grid_size, self.spline_order, grid_range, self.param_dtype
        )
        return self.variable("kan_grid", "grid", init)

    @nn.compact
    def __call__(self, x: ArrayLike) -> Array:
        x = jnp.asarray(x)
        _check_input(x, "KANLinear")
        in_features = x.shape[-1]
        num_basis = get_basis(self.basis).num_basis(self.grid_size, self.spline_order)
        grid = self._grid(in_features)
        spline_kernel = self.param(
            "spline_kernel",
            spline_kernel_init(self.spline_init_scale),
            (in_features, num_basis, self.features),
            self.param_dtype,
        )
        base_kernel = None
        if self.base_activation is not None:
            base_kernel = self.param(
                "base_kernel", _base_kernel_init, (in_features, self.features), self.param_dtype
            )
        bias = (
            self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        return kan_linear(
            x,
            spline_kernel,
            None if grid is None else grid.value,
            base_kernel,
            bias,
            basis=self.basis,
            grid_size=self.grid_size,
            spline_order=self.spline_order,
            base_activation=self.base_activation,
            dtype=self.dtype,
        )

    def update_grid(self, x: ArrayLike, grid_eps: float = 0.02) -> None:
        """Grid update (KAN Sec. 2.2). Use `layer.apply(variables, x, method="update_grid", mutable=True)`.

        Non-finite samples are ignored; refuses what the NNX `KANLinear.update_grid` refuses.

        >>> import jax, jax.numpy as jnp
        >>> layer = KANLinear(1, grid_size=3)
        >>> x = jnp.linspace(-1, 1, 30).reshape(15, 2)
        >>> _, new = layer.apply(layer.init(jax.random.key(0), x), x, method="update_grid", mutable=True)
        >>> new["kan_grid"]["grid"].shape
        (2, 10)
        """
        basis_fn = _knot_basis_fn(self.basis, self.spline_order)
        x = jnp.asarray(x)
        knots: Array = self.get_variable("kan_grid", "grid")
        coef: Array = self.get_variable("params", "spline_kernel")
        if x.ndim < 1 or x.shape[-1] != knots.shape[0]:
            raise ValueError(f"x must have shape (..., {knots.shape[0]}), got {x.shape}")
        samples = x.reshape(-1, x.shape[-1]).astype(jnp.promote_types(x.dtype, jnp.float32))
        new_knots, new_coef = grid_lib.update_grid(
            basis_fn, samples, knots, coef, self.spline_order, grid_eps
        )
        self.put_variable("kan_grid", "grid", new_knots.astype(knots.dtype))
        self.put_variable("params", "spline_kernel", new_coef.astype(coef.dtype))


def refine_variables(
    layer: KANLinear, variables: dict, x: ArrayLike, grid_size: int
) -> tuple[KANLinear, dict]:
    """Grid extension for a Linen `KANLinear` (KAN Sec. 2.4): a clone with `grid_size` and its variables.

    Args:
      layer: the module. variables: its variables. x: samples of its input (..., D), at least
        grid_size + spline_order of them. grid_size: G'.

    Returns:
      (new module, new variables). Rebuild the optimizer state for "params" (see `KANLinear.refine` in NNX).

    Refuses what the NNX `KANLinear.refine` refuses.

    >>> import jax, jax.numpy as jnp
    >>> layer = KANLinear(2, grid_size=3)
    >>> x = jnp.linspace(-1, 1, 40).reshape(20, 2)
    >>> layer, variables = refine_variables(layer, layer.init(jax.random.key(0), x), x, 6)
    >>> variables["params"]["spline_kernel"].shape
    (2, 9, 2)
    """
    basis_fn = _knot_basis_fn(layer.basis, layer.spline_order)
    grid_size = _check_size("grid_size", grid_size)
    knots = variables["kan_grid"]["grid"]
    coef = variables["params"]["spline_kernel"]
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[-1] != knots.shape[0]:
        raise ValueError(f"x must have shape (..., {knots.shape[0]}), got {x.shape}")
    samples = x.reshape(-1, x.shape[-1]).astype(jnp.promote_types(x.dtype, jnp.float32))
    new_knots, new_coef = grid_lib.refine(basis_fn, samples, knots, coef, layer.spline_order, grid_size)
    params = {**variables["params"], "spline_kernel": new_coef.astype(coef.dtype)}
    new_variables = {**variables, "params": params, "kan_grid": {"grid": new_knots.astype(knots.dtype)}}
    return layer.clone(grid_size=grid_size), new_variables


class KAN(nn.Module):
    """Linen `KAN`: `KANLinear` layers of widths `features` (the input width comes from x, so NNX
    ``KAN([D, H, N])`` is ``KAN((H, N))`` here); the other arguments as in `jaxdl.nn.kan.KAN`.

    >>> import jax, jax.numpy as jnp
    >>> model = KAN((5, 1), grid_size=3)
    >>> model.apply(model.init(jax.random.key(0), jnp.ones((2, 2))), jnp.ones((2, 2))).shape
    (2, 1)
    """

    features: Sequence[int]
    basis: str = "bspline"
    grid_size: int = 5
    spline_order: int = 3
    grid_range: tuple[float, float] = (-1.0, 1.0)
    base_activation: Callable[[Array], Array] | None = jax.nn.silu
    use_bias: bool = True
    spline_init_scale: float = 0.1
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.features) < 1:
            raise ValueError(f"features needs at least an output width, got {self.features!r}")
        for i, width in enumerate(self.features):
            _check_size(f"features[{i}]", width)
        _check_kan_linear_args(
            self.basis, self.grid_size, self.spline_order, self.grid_range, self.dtype, self.param_dtype
        )

    @nn.compact
    def __call__(self, x: ArrayLike) -> Array:
        x = jnp.asarray(x)
        for i, width in enumerate(self.features):
            x = KANLinear(
                width,
                basis=self.basis,
                grid_size=self.grid_size,
                spline_order=self.spline_order,
                grid_range=self.grid_range,
                base_activation=self.base_activation,
                use_bias=self.use_bias,
                spline_init_scale=self.spline_init_scale,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"layers_{i}",
            )(x)
        return x


class GRKAN(nn.Module):
    """Linen `GRKAN` (KAT Sec. 4); see `jaxdl.nn.kan.GRKAN`. NNX's `init` is `init_kind` here (Linen modules
    already have an `init` method). Refuses at construction what the NNX layer refuses, except the divisibility
    of the input width by `groups`, checked when x arrives.

    >>> import jax, jax.numpy as jnp
    >>> layer = GRKAN(4, init_kind="swish")
    >>> layer.apply(layer.init(jax.random.key(0), jnp.ones((2, 16))), jnp.ones((2, 16))).shape
    (2, 4)
    """

    features: int
    groups: int = 8
    num_order: int = 5
    den_order: int = 4
    init_kind: str = "identity"  # `init` is taken by Module.init
    use_bias: bool = True
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_size("features", self.features)
        _check_rational_args(0, self.groups, self.num_order, self.den_order, self.init_kind, "init_kind")
        _check_float_dtype("dtype", self.dtype, optional=True)
        _check_float_dtype("param_dtype", self.param_dtype)

    @nn.compact
    def __call__(self, x: ArrayLike) -> Array:
        x = jnp.asarray(x)
        _check_input(x, "GRKAN")
        in_features = x.shape[-1]
        _check_rational_args(
            in_features, self.groups, self.num_order, self.den_order, self.init_kind, "init_kind"
        )
        numerator, denominator = fit_rational(self.init_kind, self.num_order, self.den_order)
        std = (rational_gain(numerator, denominator) / in_features) ** 0.5
        tile = lambda coef: lambda key: jnp.tile(jnp.asarray(coef, self.param_dtype), (self.groups, 1))
        a = self.param("numerator", tile(numerator))
        b = self.param("denominator", tile(denominator))
        kernel = self.param(
            "kernel", nn.initializers.normal(std), (in_features, self.features), self.param_dtype
        )
        bias = (
            self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        return gr_kan(x, a, b, kernel, bias, dtype=self.dtype)


class KATMLP(nn.Module):
    """Linen `KATMLP`: GR-KAN(identity) to `hidden_features` (default 4 D), then GR-KAN(swish) to `out_features`
    (default D) (KAT Sec. 4); the other arguments as in `jaxdl.nn.kan.KATMLP`.

    >>> import jax, jax.numpy as jnp
    >>> block = KATMLP(64)
    >>> block.apply(block.init(jax.random.key(0), jnp.ones((2, 16))), jnp.ones((2, 16))).shape
    (2, 16)
    """

    hidden_features: int | None = None
    out_features: int | None = None
    groups: int = 8
    num_order: int = 5
    den_order: int = 4
    use_bias: bool = True
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: ArrayLike) -> Array:
        x = jnp.asarray(x)
        _check_input(x, "KATMLP")
        kwargs: dict[str, Any] = dict(
            groups=self.groups,
            num_order=self.num_order,
            den_order=self.den_order,
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        in_features = x.shape[-1]
        x = GRKAN(self.hidden_features or 4 * in_features, init_kind="identity", name="fc1", **kwargs)(x)
        return GRKAN(self.out_features or in_features, init_kind="swish", name="fc2", **kwargs)(x)


class AFKAN(nn.Module):
    """Linen `AFKAN` (AF-KAN Sec. 3); see `jaxdl.nn.kan.AFKAN`. Refuses at construction what the NNX layer
    refuses.

    >>> import jax, jax.numpy as jnp
    >>> layer = AFKAN(2)
    >>> layer.apply(layer.init(jax.random.key(0), jnp.ones((3, 6))), jnp.ones((3, 6))).shape
    (3, 2)
    """

    features: int
    grid_size: int = 3
    spline_order: int = 3
    activation: Callable[[Array], Array] = jax.nn.silu
    combination: str = "quad1"
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_size("features", self.features)
        _check_af_kan_args(self.grid_size, self.spline_order, self.combination, self.dtype, self.param_dtype)

    @nn.compact
    def __call__(self, x: ArrayLike) -> Array:
        x = jnp.asarray(x)
        _check_input(x, "AFKAN")
        in_features = x.shape[-1]
        starts, ends = af_kan_phases(self.grid_size, self.spline_order)
        num_basis, dtype = starts.shape[0], self.param_dtype
        bound = num_basis**-0.5
        params = {
            "starts": self.param("starts", lambda key: starts.astype(dtype)),
            "ends": self.param("ends", lambda key: ends.astype(dtype)),
            "score_kernel": self.param(
                "score_kernel", lambda key: jax.random.uniform(key, (num_basis,), dtype, -bound, bound)
            ),
            "score_bias": self.param("score_bias", nn.initializers.zeros, (), dtype),
            "temperature": self.param("temperature", lambda key: jnp.asarray(in_features**0.5, dtype)),
            "norm_scale": self.param("norm_scale", nn.initializers.ones, (in_features,), dtype),
            "norm_bias": self.param("norm_bias", nn.initializers.zeros, (in_features,), dtype),
            "kernel": self.param("kernel", _base_kernel_init, (in_features, self.features), dtype),
        }
        return af_kan_layer(
            x, params, activation=self.activation, combination=self.combination, dtype=self.dtype
        )


class SelectableKAN(nn.Module):
    """Linen `SelectableKAN` (S-KAN Sec. 3): pool members `experts_{p}`, params "logits" (N, P), and the
    selection mask in the "kan_selection" collection; arguments as in `jaxdl.nn.kan.SelectableKAN`. Select by
    setting the mask to `jaxdl.nn.kan.selection_mask(logits)`.

    >>> import jax, jax.numpy as jnp
    >>> layer = SelectableKAN(2)
    >>> layer.apply(layer.init(jax.random.key(0), jnp.ones((4, 3))), jnp.ones((4, 3))).shape
    (4, 2)
    """

    features: int
    bases: Sequence[str] = _DEFAULT_POOL
    grid_size: int = 5
    spline_order: int = 3
    grid_range: tuple[float, float] = (-1.0, 1.0)
    base_activation: Callable[[Array], Array] | None = jax.nn.silu
    use_bias: bool = True
    spline_init_scale: float = 0.1
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_size("features", self.features)
        _check_pool(self.bases)
        for basis in self.bases:
            _check_kan_linear_args(
                basis, self.grid_size, self.spline_order, self.grid_range, self.dtype, self.param_dtype
            )

    @nn.compact
    def __call__(self, x: ArrayLike) -> Array:
        x = jnp.asarray(x)
        _check_input(x, "SelectableKAN")
        num_bases = len(self.bases)
        experts = [
            KANLinear(
                self.features,
                basis=b,
                grid_size=self.grid_size,
                spline_order=self.spline_order,
                grid_range=self.grid_range,
                base_activation=self.base_activation,
                use_bias=self.use_bias,
                spline_init_scale=self.spline_init_scale,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"experts_{p}",
            )
            for p, b in enumerate(self.bases)
        ]
        shape = (self.features, num_bases)
        logits = self.param("logits", nn.initializers.zeros, shape, self.param_dtype)
        mask = self.variable("kan_selection", "mask", lambda: jnp.ones(shape, self.param_dtype))
        outputs = jnp.stack([expert(x) for expert in experts])
        return _mix_outputs(outputs, selection_weights(logits, mask.value))
