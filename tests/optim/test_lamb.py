import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.optim import lamb
from tests.optim.common import assert_trajectories_close, flat_params, gradient_sequence, run, run_reference
from tests.reference.optimizers import Lamb

STEPS = 20


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_matches_numpy_reference(x64, rng, weight_decay):
    params = flat_params(rng)
    grads = gradient_sequence(rng, params, STEPS)
    actual = run(lamb(1e-2, weight_decay=weight_decay), params, grads)
    expected = run_reference(Lamb(1e-2, weight_decay=weight_decay), params, grads)
    assert_trajectories_close(actual, expected)


def test_same_shaped_leaves_each_get_their_own_trust_ratio(x64, rng):
    # Same-shaped small leaves share one batched norm; every row must stay its own layer.
    shapes = {**{f"bias{i}": (7,) for i in range(4)}, "scale0": (), "scale1": (), "kernel": (5, 3)}
    params = {k: rng.normal(size=s) * (1 + i) for i, (k, s) in enumerate(shapes.items())}
    grads = [{k: rng.normal(size=s) for k, s in shapes.items()} for _ in range(STEPS)]
    actual = run(lamb(1e-2, weight_decay=0.05), params, grads)
    expected = run_reference(Lamb(1e-2, weight_decay=0.05), params, grads)
    assert_trajectories_close(actual, expected)


@pytest.mark.parametrize("kwargs", [{}, {"weight_decay": 0.05, "b1": 0.8, "eps": 1e-4, "eps_root": 1e-8}])
def test_equals_optax_lamb(rng, kwargs):
    params = flat_params(rng, np.float32)
    grads = gradient_sequence(rng, params, STEPS, np.float32)
    mask = {"kernel": True, "bias": False, "scale": False}
    peer_kwargs = dict(kwargs, mask=mask)
    ours_kwargs = dict(kwargs, weight_decay_mask=mask)
    for a, b in zip(
        run(lamb(1e-2, **ours_kwargs), params, grads),
        run(optax.lamb(1e-2, **peer_kwargs), params, grads),
        strict=True,
    ):
        jax.tree.map(np.testing.assert_array_equal, a, b)


def test_trust_ratio_mask_gives_masked_leaves_the_adamw_step(x64, rng):
    params = flat_params(rng)
    grads = gradient_sequence(rng, params, STEPS)
    mask = {"kernel": True, "bias": False, "scale": False}
    ours = run(lamb(1e-2, weight_decay=0.05, trust_ratio_mask=mask), params, grads)
    expected = run_reference(Lamb(1e-2, weight_decay=0.05, adapt=mask), params, grads)
    assert_trajectories_close(ours, expected)
    # Peer: a leaf outside the trust ratio takes exactly optax.adamw's step (decay times lr).
    adamw = run(optax.adamw(1e-2, eps=1e-6, weight_decay=0.05), params, grads)
    np.testing.assert_allclose(ours[-1]["bias"], adamw[-1]["bias"], rtol=1e-12)


def test_trust_ratio_mask_as_callable(x64, rng):
    params = flat_params(rng)
    grads = gradient_sequence(rng, params, 3)
    only_matrices = lambda p: jax.tree.map(lambda x: jnp.ndim(x) >= 2, p)
    a = run(lamb(1e-2, trust_ratio_mask=only_matrices), params, grads)
    b = run(lamb(1e-2, trust_ratio_mask={"kernel": True, "bias": False, "scale": False}), params, grads)
    jax.tree.map(np.testing.assert_array_equal, a[-1], b[-1])


def test_max_grad_norm_clips_before_the_moments(x64, rng):
    params = flat_params(rng)
    grads = [jax.tree.map(lambda g: 10 * g, g) for g in gradient_sequence(rng, params, 5)]
    ours = run(lamb(1e-2, max_grad_norm=1.0), params, grads)
    peer = run(optax.chain(optax.clip_by_global_norm(1.0), optax.lamb(1e-2)), params, grads)
    jax.tree.map(np.testing.assert_array_equal, ours[-1], peer[-1])


def test_zero_parameters_take_a_plain_adam_step(x64):
    # ||theta|| = 0: the trust ratio is 1, so a zero-initialised bias still moves (by ~lr).
    params = {"b": jnp.zeros(2)}
    tx = lamb(1e-2)
    updates, _ = tx.update({"b": jnp.array([0.5, -0.5])}, tx.init(params), params)
    np.testing.assert_allclose(updates["b"], [-1e-2, 1e-2], rtol=1e-5)


def test_gradient_through_the_update_matches_optax_at_zero_parameters(rng):
    # Meta-gradients through a LAMB step stay finite when a leaf is exactly zero (a fresh bias).
    params = {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32), "b": jnp.zeros(3)}
    grads = {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32), "b": jnp.ones(3)}

    def step_loss(tx, params):
        updates, _ = tx.update(grads, tx.init(params), params)
        return sum(jnp.sum(jnp.square(u)) for u in jax.tree.leaves(updates))

    ours = jax.grad(lambda p: step_loss(lamb(1e-2), p))(params)
    peer = jax.grad(lambda p: step_loss(optax.lamb(1e-2), p))(params)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(ours))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12), ours, peer)
