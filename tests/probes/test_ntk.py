"""Tests of jaxdl.probes.ntk: closed forms, agreement of the three implementations, transforms, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdl.nn.kan import KANLinear
from jaxdl.nn.ssm import S4D
from jaxdl.probes import _ntk_structured as sd
from jaxdl.probes.ntk import _auto_choice, _layout, empirical_ntk, ntk_fn_from_linen, ntk_fn_from_nnx
from tests.reference.ntk import linear_ntk, two_layer_ntk

IMPLS = ("jacobian", "ntvp", "structured")


class MLP(nnx.Module):
    def __init__(self, sizes, *, rngs):
        self.layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        )

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = jnp.tanh(layer(x))
        return self.layers[-1](x)


class CNN(nnx.Module):
    """Two convs (one strided), a per-channel scale, a dense head: every structured rule appears."""

    def __init__(self, *, rngs):
        self.conv1 = nnx.Conv(2, 3, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(3, 2, (3, 3), strides=2, padding="VALID", rngs=rngs)
        self.scale = nnx.Param(1.0 + 0.1 * jax.random.normal(rngs.params(), (3,)))
        self.head = nnx.Linear(2 * 2 * 2, 3, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.conv1(x)) * self.scale[...]
        x = jnp.tanh(self.conv2(x))
        return self.head(x.reshape(x.shape[0], -1))


def _as(tree, dtype):
    return jax.tree.map(lambda a: a.astype(dtype), tree)


MODELS = ("mlp", "cnn", "kan", "s4d")


def _model(name):
    """A module from jaxdl or Flax and its per-example input shape."""
    if name == "mlp":
        return MLP((5, 16, 16, 3), rngs=nnx.Rngs(0)), (5,)
    if name == "kan":
        return KANLinear(3, 2, rngs=nnx.Rngs(0)), (3,)
    if name == "s4d":
        return S4D(2, state_size=4, rngs=nnx.Rngs(0)), (6, 2)
    return CNN(rngs=nnx.Rngs(0)), (6, 6, 2)


def _inputs(rng, n, shape, dtype):
    return jnp.asarray(rng.normal(size=(n, *shape)), dtype)


# --------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bias", [False, True])
def test_linear_model_is_gram_matrix(x64, rng, impl, bias):
    params = {"w": jnp.asarray(rng.normal(size=(4, 3)))}
    if bias:
        params["b"] = jnp.asarray(rng.normal(size=(3,)))
    f = lambda p, x: x @ p["w"] + p.get("b", 0.0)
    x1, x2 = rng.normal(size=(5, 4)), rng.normal(size=(3, 4))
    full = empirical_ntk(f, params, jnp.asarray(x1), jnp.asarray(x2), implementation=impl, trace_axes=())
    expected = linear_ntk(x1, x2, bias)
    np.testing.assert_allclose(full, expected[:, :, None, None] * np.eye(3), rtol=1e-12, atol=1e-12)
    mean = empirical_ntk(f, params, jnp.asarray(x1), jnp.asarray(x2), implementation=impl)
    np.testing.assert_allclose(mean, expected, rtol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_two_layer_network_matches_hand_formula(x64, rng, impl, activation):
    phi, dphi = {
        "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
        "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(float)),
    }[activation]
    jphi = {"tanh": jnp.tanh, "relu": jax.nn.relu}[activation]
    p = {k: rng.normal(size=s) for k, s in {"w": (3, 7), "b": (7,), "v": (7,), "c": ()}.items()}
    f = lambda q, x: (jphi(x @ q["w"] + q["b"]) @ q["v"] + q["c"])[:, None]
    x1, x2 = rng.normal(size=(4, 3)), rng.normal(size=(6, 3))
    theta = empirical_ntk(
        f, jax.tree.map(jnp.asarray, p), jnp.asarray(x1), jnp.asarray(x2), implementation=impl
    )
    expected = two_layer_ntk(p["w"], p["b"], p["v"], p["c"], x1, x2, phi, dphi)
    np.testing.assert_allclose(theta, expected, rtol=1e-11)


# --------------------------------------------------------------------------- implementations agree


@pytest.mark.parametrize(
    "model,axes",
    [(m, dict(trace_axes=())) for m in MODELS]
    + [("cnn", dict()), ("cnn", dict(trace_axes=(), diagonal_axes=(0,)))],
)
def test_implementations_agree_float64(x64, rng, model, axes):
    module, shape = _model(model)
    f, params = ntk_fn_from_nnx(module)
    params = _as(params, jnp.float64)
    x1 = _inputs(rng, 4, shape, jnp.float64)
    x2 = None if axes.get("diagonal_axes") else _inputs(rng, 3, shape, jnp.float64)
    kernels = [empirical_ntk(f, params, x1, x2, implementation=i, **axes) for i in IMPLS]
    for k in kernels[1:]:
        np.testing.assert_allclose(k, kernels[0], rtol=1e-10, atol=1e-10 * float(jnp.abs(kernels[0]).max()))


@pytest.mark.parametrize("model", MODELS)
def test_implementations_agree_float32(rng, model):
    module, shape = _model(model)
    f, params = ntk_fn_from_nnx(module)
    x1, x2 = _inputs(rng, 4, shape, jnp.float32), _inputs(rng, 5, shape, jnp.float32)
    with jax.default_matmul_precision("highest"):
        kernels = [empirical_ntk(f, params, x1, x2, implementation=i, trace_axes=()) for i in IMPLS]
    scale = float(jnp.abs(kernels[0]).max())
    for k in kernels[1:]:
        np.testing.assert_allclose(k, kernels[0], atol=1e-5 * scale)


@pytest.mark.parametrize("model", ["mlp", "cnn", "kan"])
def test_structured_rules_cover_every_leaf(model):
    """The structured path must really use its rules here, not fall back to Jacobians.

    KANLinear computes inside its own `jax.jit`, so this also checks that nested jits are inlined.
    """
    module, shape = _model(model)
    f, params = ntk_fn_from_nnx(module)
    leaves = jax.tree.leaves(params)
    closed = jax.make_jaxpr(lambda ls, x: f(jax.tree.unflatten(jax.tree.structure(params), ls), x))(
        leaves, jnp.zeros((1, *shape))
    )
    taps = sd.find_taps(sd.inline_jits(closed), len(leaves))
    assert sorted(t.leaf for t in taps) == list(range(len(leaves)))
    expected_kinds = {"mlp": {"dot", "add"}, "cnn": {"conv", "add", "mul", "dot"}, "kan": {"dot", "add"}}[
        model
    ]
    assert {t.kind for t in taps} == expected_kinds


@pytest.mark.parametrize("tokens,width", [(2, 32), (5, 4)])
def test_dense_over_tokens_both_contraction_orders(x64, rng, tokens, width):
    """A token-wise dense layer: (2, 32) takes the (G Gᵀ)⊙(h hᵀ) order, (5, 4) the explicit-Jacobian one."""
    params = {
        "w": jnp.asarray(rng.normal(size=(width, width))),
        "v": jnp.asarray(rng.normal(size=(width, 2))),
        "shared": jnp.asarray(rng.normal(size=(width,))),  # used twice: exercises the fallback
    }
    f = lambda p, x: (jnp.tanh(x @ p["w"] + p["shared"]).mean(axis=1) * p["shared"]) @ p["v"]
    x1, x2 = _inputs(rng, 3, (tokens, width), jnp.float64), _inputs(rng, 2, (tokens, width), jnp.float64)
    expected = empirical_ntk(f, params, x1, x2, implementation="jacobian", trace_axes=())
    got = empirical_ntk(f, params, x1, x2, implementation="structured", trace_axes=())
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_multi_axis_outputs_follow_neural_tangents_layout(x64, rng):
    """Outputs (N, T, K): trace over K, full over T gives (N1, N2, T, T) = mean_k of the full kernel."""
    params = {"w": jnp.asarray(rng.normal(size=(3, 4)))}
    f = lambda p, x: jnp.tanh(x @ p["w"])  # x: (N, T, 3)
    x1, x2 = _inputs(rng, 2, (5, 3), jnp.float64), _inputs(rng, 3, (5, 3), jnp.float64)
    full = empirical_ntk(f, params, x1, x2, implementation="jacobian", trace_axes=())
    assert full.shape == (2, 3, 5, 5, 4, 4)
    for impl in IMPLS:
        traced = empirical_ntk(f, params, x1, x2, implementation=impl)
        np.testing.assert_allclose(traced, jnp.einsum("abstkk->abst", full) / 4, rtol=1e-10)
        diag = empirical_ntk(f, params, x1, x2, implementation=impl, trace_axes=(), diagonal_axes=(1,))
        np.testing.assert_allclose(diag, jnp.einsum("abttkl->abtkl", full), rtol=1e-10)


def test_auto_picks_an_implementation_and_agrees(rng):
    module, shape = _model("cnn")
    f, params = ntk_fn_from_nnx(module)
    x = _inputs(rng, 3, shape, jnp.float32)
    assert _auto_choice(f, params, x[:1], _layout((3,), (-1,), ())) == "structured"
    # A function the rules cannot structure (weights through exp) goes to jacobian or ntvp.
    g = lambda p, x: jnp.tanh(x @ jnp.exp(p))
    p = jnp.zeros((5, 2))
    assert _auto_choice(g, p, jnp.ones((1, 5)), _layout((2,), (-1,), ())) in ("jacobian", "ntvp")
    with jax.default_matmul_precision("highest"):
        np.testing.assert_allclose(
            empirical_ntk(f, params, x), empirical_ntk(f, params, x, implementation="jacobian"), rtol=1e-5
        )


# --------------------------------------------------------------------------- adapters


def test_nnx_and_linen_adapters_agree(rng):
    class LinenMLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3, name="Dense_1")(jnp.tanh(nn.Dense(8, name="Dense_0")(x)))

    module = MLP((4, 8, 3), rngs=nnx.Rngs(1))
    f_nnx, p_nnx = ntk_fn_from_nnx(module)
    linen = LinenMLP()
    variables = {
        "params": {
            f"Dense_{i}": {"kernel": layer.kernel[...], "bias": layer.bias[...]}
            for i, layer in enumerate(module.layers)
        }
    }
    f_linen, p_linen = ntk_fn_from_linen(linen, variables)
    x = _inputs(rng, 5, (4,), jnp.float32)
    with jax.default_matmul_precision("highest"):
        np.testing.assert_allclose(
            empirical_ntk(f_nnx, p_nnx, x), empirical_ntk(f_linen, p_linen, x), rtol=1e-6
        )


# --------------------------------------------------------------------------- transforms, tiling, devices


@pytest.mark.parametrize("impl", IMPLS)
def test_jit_and_vmap_over_parameter_ensembles(x64, rng, impl):
    module, shape = _model("mlp")
    f, params = ntk_fn_from_nnx(module)
    params = _as(params, jnp.float64)
    x1, x2 = _inputs(rng, 3, shape, jnp.float64), _inputs(rng, 2, shape, jnp.float64)
    ntk = lambda p, a, b: empirical_ntk(f, p, a, b, implementation=impl)
    np.testing.assert_allclose(jax.jit(ntk)(params, x1, x2), ntk(params, x1, x2), rtol=1e-12)
    ensemble = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), params)
    stacked = jax.vmap(ntk, in_axes=(0, None, None))(ensemble, x1, x2)
    for i, scale in enumerate((1, 2)):
        member = jax.tree.map(lambda a, s=scale: s * a, params)
        np.testing.assert_allclose(stacked[i], ntk(member, x1, x2), rtol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("axes", [dict(trace_axes=()), dict(diagonal_axes=(0,))])
def test_blocked_and_sharded_equal_direct(x64, rng, mesh, impl, axes):
    module, shape = _model("mlp")
    f, params = ntk_fn_from_nnx(module)
    params = _as(params, jnp.float64)
    x1 = _inputs(rng, 7, shape, jnp.float64)
    x2 = None if axes.get("diagonal_axes") else _inputs(rng, 5, shape, jnp.float64)
    direct = empirical_ntk(f, params, x1, x2, implementation=impl, **axes)
    blocked = empirical_ntk(f, params, x1, x2, implementation=impl, batch_size=3, **axes)
    sharded = jax.jit(lambda p, a, b: empirical_ntk(f, p, a, b, implementation=impl, mesh=mesh, **axes))(
        params, x1, x2
    )
    both = empirical_ntk(f, params, x1, x2, implementation=impl, mesh=mesh, batch_size=2, **axes)
    for k in (blocked, sharded, both):
        assert k.shape == direct.shape
        np.testing.assert_allclose(k, direct, rtol=1e-10, atol=1e-12)


def test_explicit_axis_mesh_equals_direct(x64, rng):
    """jax.make_mesh's default Explicit axes: inputs are resharded, padding rows are dropped."""
    mesh = jax.make_mesh((8,), ("rows",), axis_types=(jax.sharding.AxisType.Explicit,))
    module, shape = _model("mlp")
    f, params = ntk_fn_from_nnx(module)
    params = _as(params, jnp.float64)
    x1, x2 = _inputs(rng, 10, shape, jnp.float64), _inputs(rng, 3, shape, jnp.float64)
    direct = empirical_ntk(f, params, x1, x2, implementation="structured")
    sharded = empirical_ntk(f, params, x1, x2, implementation="structured", mesh=mesh)
    np.testing.assert_allclose(sharded, direct, rtol=1e-12)


# --------------------------------------------------------------------------- errors


def test_bad_inputs_raise_clear_errors():
    f = lambda p, x: x @ p
    w, x = jnp.ones((3, 2)), jnp.ones((4, 3))
    with pytest.raises(ValueError, match="same per-example shape"):
        empirical_ntk(f, w, x, jnp.ones((4, 5)))
    with pytest.raises(TypeError, match="single array"):
        empirical_ntk(lambda p, x: (x @ p, x), w, x)
    with pytest.raises(ValueError, match="leading axis"):
        empirical_ntk(lambda p, x: (x @ p).sum(0), w, x)
    with pytest.raises(TypeError, match="floating-point"):
        empirical_ntk(lambda p, x: (x @ p).astype(jnp.int32), w, x)
    with pytest.raises(ValueError, match="implementation"):
        empirical_ntk(f, w, x, implementation="fast")
    with pytest.raises(ValueError, match="batch_size"):
        empirical_ntk(f, w, x, batch_size=0)
    with pytest.raises(ValueError, match="trace_axes"):
        empirical_ntk(f, w, x, trace_axes=(0,))
    with pytest.raises(ValueError, match="trace_axes entry 5"):
        empirical_ntk(f, w, x, trace_axes=(5,))
    with pytest.raises(ValueError, match="as many x2"):
        empirical_ntk(f, w, x, jnp.ones((2, 3)), diagonal_axes=(0,))
    with pytest.raises(TypeError, match="x1 must be an array"):
        empirical_ntk(f, w, [[1.0, 2.0, 3.0]])
    with pytest.raises(TypeError, match="mesh"):
        empirical_ntk(f, w, x, mesh="data")
    with pytest.raises(TypeError, match="nnx.Module"):
        ntk_fn_from_nnx(f)
    with pytest.raises(ValueError, match="'params'"):
        ntk_fn_from_linen(nn.Dense(2), {"batch_stats": {}})
