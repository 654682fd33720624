import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxdl.losses import softmax_collapse_fraction, stablemax_cross_entropy
from tests.reference.optimizers import stablemax as stablemax_reference

# One compiled program per shape instead of op-by-op dispatch (the test box is a loaded 2-core CPU).
stce = jax.jit(stablemax_cross_entropy)
stce_grad = jax.jit(jax.grad(lambda z, y: stablemax_cross_entropy(z, y).sum()))


def test_worked_example(x64):
    # Values computed by hand from Def. 4: s = [2, 1/3, 1.5], p_0 = 2 / (23/6) = 12/23.
    logits, labels = jnp.array([[1.0, -2.0, 0.5]]), jnp.array([0])
    loss = stce(logits, labels)
    np.testing.assert_allclose(loss, [-np.log(12 / 23)], rtol=1e-12)
    np.testing.assert_allclose(loss, [0.6505875661], rtol=1e-9)
    grad = stce_grad(logits, labels)
    np.testing.assert_allclose(grad, [[-0.23913043, 0.02898551, 0.26086957]], rtol=1e-6)


def test_matches_numpy_reference(x64, rng):
    logits = rng.normal(scale=4.0, size=(10, 7))
    labels = rng.integers(0, 7, size=10)
    expected = -np.log(stablemax_reference(logits)[np.arange(10), labels])
    np.testing.assert_allclose(stce(logits, labels), expected, rtol=1e-12)


def test_float32_gradients_finite_at_one_and_zero():
    logits = jnp.array([[1.0, 0.0, -1.0, 2.0]], jnp.float32)
    grad = stce_grad(logits, jnp.array([1]))
    assert bool(jnp.all(jnp.isfinite(grad)))


def test_batched_shapes_jit_and_sharding(mesh, rng):
    logits = jnp.asarray(rng.normal(size=(8, 3, 5)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 5, size=(8, 3)))
    p = stablemax_reference(np.asarray(logits, np.float64))
    expected = -np.log(np.take_along_axis(p, np.asarray(labels)[..., None], -1)[..., 0])
    loss = stce(logits, labels)
    assert loss.shape == (8, 3)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(
        jax.jit(jax.vmap(stablemax_cross_entropy))(logits, labels), expected, rtol=1e-6
    )
    put = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))
    np.testing.assert_allclose(stce(put(logits), put(labels)), expected, rtol=1e-6)


def test_bad_labels():
    logits = jnp.zeros((4, 3))
    with pytest.raises(ValueError, match="labels must have shape"):
        stablemax_cross_entropy(logits, jnp.zeros((3,), jnp.int32))
    with pytest.raises(TypeError, match="labels must be integer"):
        stablemax_cross_entropy(logits, jnp.zeros((4,)))


def test_softmax_collapse_fraction():
    # float32 absorbs exp(-17) ~ 4e-8 < 2^-24 when added to 1; exp(-10) ~ 4.5e-5 survives.
    logits = jnp.array([[0.0, 17.0, 17.0 - 20.0], [0.0, 10.0, 0.0], [5.0, 5.0, 5.0], [-30.0, 0.0, -40.0]])
    assert float(softmax_collapse_fraction(logits)) == 0.5
    assert float(jax.jit(softmax_collapse_fraction)(logits)) == 0.5


def test_softmax_collapse_depends_on_dtype(x64):
    logits = jnp.array([[0.0, 17.0]])
    assert float(softmax_collapse_fraction(logits.astype(jnp.float32))) == 1.0
    assert float(softmax_collapse_fraction(logits.astype(jnp.float64))) == 0.0


def _stce_grad_reference(logits, label):
    """dL/dz of StCE in float64 from Def. 4, with the correct class's term written without
    cancellation: dL/dz_j = s'(z_j)/S for j != y and -s'(z_y) (S - s_y)/(S s_y) for j = y."""
    s = np.where(logits >= 0, logits + 1.0, 1.0 / (1.0 - np.minimum(logits, 0.0)))
    ds = np.where(logits >= 0, 1.0, 1.0 / (1.0 - np.minimum(logits, 0.0)) ** 2)
    total, others = s.sum(), np.delete(s, label).sum()
    grad = ds / total
    grad[label] = -ds[label] * others / (total * s[label])
    return grad


# The regime of late StableMax training on (a + b) mod 113, measured on an H200 at lr 1e-2:
# the largest logit passes 1e5 around step 25k and 1e6 around step 35k, while the wrong classes'
# logits sit far below zero. There the float32 loss loses the correct class's gradient (it is
# 1 - p_y, formed from p_y ~ 1 - 1e-6), the float64 loss keeps it.
LATE_LOGITS = np.array([1e6] + [-50.0] * 112)


def test_float64_loss_keeps_the_gradient_float32_loses():
    logits, labels = jnp.asarray(LATE_LOGITS[None], jnp.float32), jnp.array([0])
    expected = _stce_grad_reference(LATE_LOGITS, 0)
    grad = lambda dtype: jax.jit(jax.grad(lambda z: stablemax_cross_entropy(z, labels, dtype=dtype).sum()))(
        logits
    )[0]
    g64, g32 = grad(jnp.float64), grad(None)
    assert g64.dtype == jnp.float32  # computed in float64, returned in the logits' dtype
    np.testing.assert_allclose(g64, expected, rtol=1e-6)
    assert abs(g32[0] / expected[0] - 1) > 0.1  # float32: the correct class's gradient is off by 24%
    np.testing.assert_allclose(g32[1:], expected[1:], rtol=1e-5)  # the wrong classes' are fine


def test_float64_loss_same_under_jit_vmap_and_sharding(mesh, rng):
    logits = jnp.asarray(rng.normal(scale=3.0, size=(8, 5)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 5, size=8))
    expected = -np.log(stablemax_reference(np.asarray(logits, np.float64))[np.arange(8), labels])
    ref_grad = np.stack(
        [_stce_grad_reference(np.asarray(z, np.float64), int(y)) for z, y in zip(logits, labels, strict=True)]
    )

    @jax.jit
    def both(z, y):
        fn = lambda z, y: stablemax_cross_entropy(z, y, dtype=jnp.float64)
        per_row = jax.vmap(fn)(z[:, None], y[:, None])[:, 0]
        return fn(z, y), per_row, jax.grad(lambda z: fn(z, y).sum())(z)

    put = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))
    for args in ((logits, labels), (put(logits), put(labels))):
        loss, per_row, grad = both(*args)
        np.testing.assert_allclose(loss, expected, rtol=1e-7)
        np.testing.assert_allclose(per_row, expected, rtol=1e-7)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-6, atol=1e-9)


def test_float64_loss_with_x64_on(x64):
    logits = jnp.asarray(LATE_LOGITS[None])  # float64 under the fixture
    loss = stce(logits, jnp.array([0]))
    assert loss.dtype == jnp.float64
    others = (1.0 / 51.0) * 112
    np.testing.assert_allclose(
        loss, [np.log1p(others / (1e6 + 1))], rtol=2e-9
    )  # lse - g_y cancels 13.8 - 13.8


def test_adam_eps_freezes_late_stablemax_training():
    # The other half of the cause: late in training the weights' gradients are ~1e-11 (Adam's
    # second moment measured at ~2e-21 at step 30k), so optax's default eps = 1e-8 dominates
    # sqrt(nu) and Adam's step shrinks ~1000-fold; the authors' eps = 1e-25 keeps it at ~lr.
    import optax

    grads = {"w": jnp.full((4,), 5e-11)}
    params = {"w": jnp.ones((4,))}
    step = lambda eps: optax.adamw(1e-2, b2=0.999, eps=eps, weight_decay=0.0).update(
        grads, optax.adamw(1e-2, eps=eps).init(params), params
    )[0]["w"]
    np.testing.assert_allclose(step(1e-25), -1e-2, rtol=1e-5)
    assert float(jnp.max(jnp.abs(step(1e-8)))) < 1e-4
