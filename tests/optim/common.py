"""Helpers shared by the optimizer tests."""

import jax
import jax.numpy as jnp
import numpy as np
import optax


def flat_params(rng, dtype=np.float64):
    """A dict pytree (the NumPy references walk dict leaves) with a matrix, a vector and a scalar."""
    return {
        "kernel": rng.normal(size=(5, 3)).astype(dtype),
        "bias": rng.normal(size=(3,)).astype(dtype),
        "scale": np.asarray(rng.normal(), dtype=dtype),
    }


def tensor_params(rng, dtype=np.float64):
    """flat_params without its scalar leaf: on a scalar the authors' ⊥Grad rescales round-off to
    ||g|| (a random sign), which jaxdl caps instead; scalars are tested on their own."""
    params = flat_params(rng, dtype)
    del params["scale"]
    return params


def at_angle(degrees, n=4096, seed=0):
    """float32 w and g = 3 (cos a w_hat + sin a u) with u a unit vector orthogonal to w."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=n) * 2.5
    u = rng.normal(size=n)
    u -= (u @ w) / (w @ w) * w
    angle = np.deg2rad(degrees)
    g = 3.0 * (np.cos(angle) * w / np.linalg.norm(w) + np.sin(angle) * u / np.linalg.norm(u))
    return np.float32(g), np.float32(w)


def gradient_sequence(rng, params, steps, dtype=np.float64):
    return [{k: rng.normal(size=np.shape(p)).astype(dtype) for k, p in params.items()} for _ in range(steps)]


def run(tx, params, grads_seq, jit=False):
    """Apply `tx` for len(grads_seq) steps with the given gradients; returns the params trajectory.
    `jit` compiles the update once (op-by-op dispatch of a long update is slow on CPU)."""
    params = jax.tree.map(jnp.asarray, params)
    state = tx.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    trajectory = []
    for grads in grads_seq:
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
        trajectory.append(params)
    return trajectory


def run_reference(opt, params, grads_seq):
    trajectory = []
    for grads in grads_seq:
        params = opt.step(params, grads)
        trajectory.append(params)
    return trajectory


def assert_trajectories_close(actual, expected, rtol=1e-10, atol=1e-12):
    assert len(actual) == len(expected)
    for step, (a, e) in enumerate(zip(actual, expected, strict=True)):
        for k in e:
            np.testing.assert_allclose(
                np.asarray(a[k]), e[k], rtol=rtol, atol=atol, err_msg=f"step {step + 1}, {k}"
            )
