import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxdl.optim import diffgrad, scale_by_diffgrad
from tests.optim.common import assert_trajectories_close, flat_params, gradient_sequence, run, run_reference
from tests.reference.optimizers import DiffGrad

STEPS = 25


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"b1": 0.8, "b2": 0.95, "eps": 1e-3},
        {"weight_decay": 0.1},
        {"weight_decay": 0.1, "decoupled": True},
    ],
    ids=["defaults", "betas-eps", "coupled-l2", "decoupled"],
)
def test_matches_numpy_reference(x64, rng, kwargs):
    params = flat_params(rng)
    grads = gradient_sequence(rng, params, STEPS)
    actual = run(diffgrad(1e-2, **kwargs), params, grads)
    expected = run_reference(DiffGrad(1e-2, **kwargs), params, grads)
    assert_trajectories_close(actual, expected)


def test_first_friction_coefficient_sees_zero_previous_gradient(x64):
    # g_0 = 0 (paper, Sec. V): xi_1 = sigmoid(|g_1|), not 0.5.
    g = jnp.array([0.0, 2.0])
    tx = scale_by_diffgrad(b1=0.0, b2=0.0, eps=1e-12)
    updates, _ = tx.update(g, tx.init(g), g)
    # With b1 = b2 = 0 the Adam direction is sign(g), so the update is xi * sign(g).
    np.testing.assert_allclose(updates, [0.0, 1 / (1 + np.exp(-2.0))], rtol=1e-9)


def test_coupled_decay_enters_the_stored_gradient(x64):
    params = {"w": jnp.array([2.0])}
    tx = diffgrad(1.0, weight_decay=0.5)
    _, state = tx.update({"w": jnp.array([1.0])}, tx.init(params), params)
    diffgrad_state = state[1]
    np.testing.assert_allclose(diffgrad_state.prev_grad["w"], [1.0 + 0.5 * 2.0])


def test_weight_decay_mask(x64, rng):
    params = flat_params(rng)
    grads = gradient_sequence(rng, params, 3)
    mask = {"kernel": True, "bias": False, "scale": False}
    masked = run(diffgrad(1e-2, weight_decay=0.3, weight_decay_mask=mask), params, grads)
    undecayed = run(diffgrad(1e-2), params, grads)
    decayed = run(diffgrad(1e-2, weight_decay=0.3), params, grads)
    np.testing.assert_array_equal(masked[-1]["bias"], undecayed[-1]["bias"])
    np.testing.assert_array_equal(masked[-1]["kernel"], decayed[-1]["kernel"])


def _f1(x):
    return jnp.where(x <= 0, (x + 0.3) ** 2, (x - 0.2) ** 2 + 0.05)


def _f2(x):
    return jnp.where(x <= -0.9, -40 * x - 35.15, x**3 + x * jnp.sin(8 * x) + 0.85)


def _minimise(tx, f, steps=300):
    def step(carry, _):
        x, state = carry
        updates, state = tx.update(jax.grad(f)(x), state, x)
        return (x + updates, state), None

    x0 = jnp.asarray(-1.0)
    (x, _), _ = jax.lax.scan(step, (x0, tx.init(x0)), length=steps)
    return float(x)


@pytest.mark.parametrize(
    ("f", "global_min", "adam_trap"),
    [(_f1, -0.3, 0.2), (_f2, -0.6429, 0.0)],
    ids=["F1", "F2"],
)
def test_paper_synthetic_functions(x64, f, global_min, adam_trap):
    # Dubey et al. 2020, Sec. V: beta1 = 0.95, lr = 0.1, x0 = -1, 300 iterations.
    # diffGrad settles in the global minimum; Adam overshoots into a local one.
    x_diffgrad = _minimise(diffgrad(0.1, b1=0.95), f)
    x_adam = _minimise(optax.adam(0.1, b1=0.95), f)
    assert abs(x_diffgrad - global_min) < 0.01
    assert abs(x_adam - adam_trap) < 0.01
    assert f(x_diffgrad) < f(x_adam) - 0.04


def test_mu_dtype_and_bf16_params():
    params = {"w": jnp.ones((4,), jnp.bfloat16)}
    tx = diffgrad(1e-3, mu_dtype=jnp.float32)
    state = tx.init(params)
    updates, state = tx.update({"w": jnp.full((4,), 0.5, jnp.bfloat16)}, state, params)
    assert updates["w"].dtype == jnp.bfloat16
    rescale_state = state[1]
    assert rescale_state.mu["w"].dtype == jnp.float32
    assert rescale_state.nu["w"].dtype == jnp.bfloat16
    assert rescale_state.prev_grad["w"].dtype == jnp.bfloat16
