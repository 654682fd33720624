import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxdl.nn.ssm import S4D, S5, SequenceModel
from jaxdl.nn.ssm import linen as ssm_linen

PTD_FAST = dict(steps=300)  # small PTD solves keep these tests quick; targets are tested in test_ptd.py


def _layer(kind, **kwargs):
    if kind == "s4d":
        return S4D(3, 8, rngs=nnx.Rngs(0), **kwargs)
    return S5(3, 8, 2, rngs=nnx.Rngs(0), **kwargs)


def _run_recurrent(layer, u, **step_kwargs):
    cache = layer.init_cache(u.shape[0])
    step = jax.jit(lambda u_t, cache, **kwargs: layer.step(u_t, cache, **kwargs))
    outputs = []
    for t in range(u.shape[1]):
        kwargs = {k: v[:, t] for k, v in step_kwargs.items()}
        y_t, cache = step(u[:, t], cache, **kwargs)
        outputs.append(y_t)
    return jnp.stack(outputs, axis=1)


@pytest.mark.parametrize(
    ("kind", "init", "method"),
    [("s4d", "legs", "zoh"), ("s4d", "ptd", "bilinear"), ("s5", "legs", "zoh"), ("s5", "ptd", "bilinear")],
)
def test_convolution_or_scan_equals_recurrent_mode(kind, init, method, rng):
    layer = _layer(kind, init=init, method=method, ptd_kwargs=PTD_FAST if init == "ptd" else None)
    u = jnp.asarray(rng.standard_normal((2, 12, 3)), jnp.float32)
    with jax.default_matmul_precision("highest"):
        np.testing.assert_allclose(layer(u), _run_recurrent(layer, u), rtol=1e-4, atol=1e-4)


def test_s5_per_token_steps_match_recurrent_mode(rng):
    layer = _layer("s5")
    u = jnp.asarray(rng.standard_normal((2, 10, 3)), jnp.float32)
    scale = jnp.asarray(rng.uniform(0.2, 5.0, (2, 10)), jnp.float32)
    with jax.default_matmul_precision("highest"):
        y = layer(u, step_scale=scale)
        np.testing.assert_allclose(y, _run_recurrent(layer, u, step_scale=scale), rtol=1e-4, atol=1e-4)
        assert not np.allclose(y, layer(u), atol=1e-3)  # the steps really enter


def test_s5_step_scale_rescales_delta(rng):
    layer = _layer("s5")
    u = jnp.asarray(rng.standard_normal((1, 10, 3)), jnp.float32)
    faster = _layer("s5")
    faster.log_step[...] = layer.log_step[...] + jnp.log(2.0)
    np.testing.assert_allclose(layer(u, step_scale=2.0), faster(u), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["s4d", "s5"])
def test_bidirectional_is_forward_plus_backward_on_the_reversed_sequence(kind, rng):
    both = _layer(kind, bidirectional=True)
    forward, backward = _layer(kind), _layer(kind)
    for name in both._names:
        value = both.params()[name]
        getattr(forward, name)[...] = value[:1] if name == "C" else value
        getattr(backward, name)[...] = value[1:] if name == "C" else value
    backward.D[...] = jnp.zeros_like(backward.D[...])  # D u is counted once
    u = jnp.asarray(rng.standard_normal((2, 12, 3)), jnp.float32)
    y = both(u)
    assert y.shape == u.shape
    with jax.default_matmul_precision("highest"):
        expected = forward(u) + jnp.flip(backward(jnp.flip(u, 1)), 1)
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="bidirectional"):
        both.step(u[:, 0], both.init_cache(2))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["s4d", "s5"])
def test_jit_vmap_and_eight_devices_agree(kind, mesh, rng):
    layer = _layer(kind)
    u = jnp.asarray(rng.standard_normal((8, 16, 3)), jnp.float32)
    with jax.default_matmul_precision("highest"):
        eager = layer(u)
        jitted = nnx.jit(lambda m, x: m(x))(layer, u)
        graphdef, state = nnx.split(layer)
        apply = lambda s, x: nnx.merge(graphdef, s)(x)
        mapped = jax.vmap(lambda x: apply(state, x[None])[0])(u)
        u_sharded = jax.device_put(u, NamedSharding(mesh, P("data")))
        sharded = jax.jit(apply)(state, u_sharded)
    for other in (jitted, mapped, sharded):
        np.testing.assert_allclose(other, eager, rtol=1e-5, atol=1e-5)
    assert len(sharded.sharding.device_set) == 8


@pytest.mark.parametrize("kind", ["s4d", "s5"])
def test_nnx_and_linen_give_the_same_output(kind, rng):
    layer = _layer(kind, init="ptd", bidirectional=True, ptd_kwargs=PTD_FAST)
    if kind == "s4d":
        linen_layer = ssm_linen.S4D(3, 8, init_kind="ptd", bidirectional=True, ptd_kwargs=PTD_FAST)
    else:
        linen_layer = ssm_linen.S5(3, 8, 2, init_kind="ptd", bidirectional=True, ptd_kwargs=PTD_FAST)
    u = jnp.asarray(rng.standard_normal((2, 10, 3)), jnp.float32)
    variables = linen_layer.init(jax.random.key(1), u)
    assert jax.tree.map(jnp.shape, variables["params"]) == jax.tree.map(jnp.shape, layer.params())
    np.testing.assert_allclose(
        linen_layer.apply({"params": layer.params()}, u), layer(u), rtol=1e-6, atol=1e-6
    )


def test_linen_recurrent_mode(rng):
    layer = ssm_linen.S4D(3, 8)
    u = jnp.asarray(rng.standard_normal((2, 10, 3)), jnp.float32)
    variables = layer.init(jax.random.key(0), u)
    cache = layer.apply(variables, 2, method="init_cache")
    outputs = []
    for t in range(10):
        y_t, cache = layer.apply(variables, u[:, t], cache, method="step")
        outputs.append(y_t)
    with jax.default_matmul_precision("highest"):
        np.testing.assert_allclose(jnp.stack(outputs, 1), layer.apply(variables, u), rtol=1e-4, atol=1e-4)


def test_parameters_are_real_float32_and_the_spectrum_stable():
    layers = [
        _layer("s4d"),
        _layer("s4d", init="ptd", ptd_kwargs=PTD_FAST),
        _layer("s5", init="ptd", ptd_kwargs=PTD_FAST),
    ]
    for layer in layers:
        leaves = jax.tree.leaves(nnx.state(layer, nnx.Param))
        assert len(leaves) == 6 and all(leaf.dtype == jnp.float32 for leaf in leaves)
    assert jnp.all(layers[2].Lambda_re[...] < 0)


@pytest.mark.parametrize("init", ["lin", "inv", "real", "legs"])
def test_s4d_layer_uses_the_s4d_init(init):
    from jaxdl.nn.ssm import s4d_init

    layer = S4D(2, 8, init=init, rngs=nnx.Rngs(0))
    Lambda, B = s4d_init(init, 8)
    np.testing.assert_allclose(-jnp.exp(layer.log_neg_real[...][0]), Lambda.real, rtol=1e-6)
    np.testing.assert_allclose(layer.imag[...][1], Lambda.imag, rtol=1e-6)
    np.testing.assert_allclose(layer.B[...][0, :, 0], B.real, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_sequence_model_trains(rng):
    import optax

    model = SequenceModel(2, 8, 3, layers=1, ssm_kwargs=dict(state_size=4), rngs=nnx.Rngs(0))
    x = jnp.asarray(rng.standard_normal((4, 16, 2)), jnp.float32)
    labels = jnp.array([0, 1, 2, 1])
    optimizer = nnx.Optimizer(model, optax.adam(3e-2), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer):
        loss_fn = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(x), labels).mean()
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(train_step(model, optimizer)) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]
    per_token = SequenceModel(
        2, 8, 3, layers=1, ssm="s5", ssm_kwargs=dict(state_size=4, blocks=1), pool=None, rngs=nnx.Rngs(0)
    )
    assert per_token(x).shape == (4, 16, 3)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: S4D(3, 7, rngs=nnx.Rngs(0)), "state_size must be even"),
        (lambda: S4D(3, 8, init="hippo", rngs=nnx.Rngs(0)), "init must be one of"),
        (lambda: S4D(0, 8, rngs=nnx.Rngs(0)), "features must be a positive integer"),
        (lambda: S4D(3, 8, dt_min=0.1, dt_max=0.01, rngs=nnx.Rngs(0)), "dt_min <= dt_max"),
        (lambda: S4D(3, 8, method="euler", rngs=nnx.Rngs(0)), "method must be"),
        (lambda: S5(3, 8, 3, rngs=nnx.Rngs(0)), "blocks must be a positive divisor"),
        (lambda: S5(3, 8, 2, init="lin", rngs=nnx.Rngs(0)), "init must be one of"),
        (lambda: SequenceModel(1, 4, 2, ssm="s6", rngs=nnx.Rngs(0)), "ssm must be one of"),
        (lambda: SequenceModel(1, 4, 2, pool="max", rngs=nnx.Rngs(0)), "pool must be"),
    ],
)
def test_bad_constructor_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize("kind", ["s4d", "s5"])
def test_wrong_feature_count_is_reported(kind):
    with pytest.raises(ValueError, match=r"u must have shape \(\.\.\., length, 3\)"):
        _layer(kind)(jnp.ones((2, 5, 4)))


@pytest.mark.parametrize("kind", ["s4d", "s5"])
def test_eager_calls_compile_once_per_shape(kind, rng):
    from tests.probes._compiles import compiles

    layer = _layer(kind)
    u = jnp.asarray(rng.standard_normal((2, 12, 3)), jnp.float32)
    others = [u + 1.0, 2.0 * u]
    layer(u)  # the first call compiles
    with compiles() as events:
        for other in others:
            layer(other)
    assert events == [], events
