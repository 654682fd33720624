"""Probes compile once per (function, options, shapes), run inside the caller's jit, and do not leak.

Compilations are counted with a `jax.monitoring` listener (events ending in
``backend_compile_duration``), never by timing.
"""

import gc
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.probes import (
    GGN,
    empirical_ntk,
    empirical_ntk_fn,
    hessian_probes,
    hessian_trace,
    ntk_fn_from_nnx,
    spectral_density,
    top_eigenvalues,
)
from tests.probes._compiles import compiles

KEY = jax.random.key(0)
X = jnp.asarray(np.random.default_rng(0).normal(size=(6, 3)), jnp.float32)
Y = jnp.asarray(np.random.default_rng(1).normal(size=(6, 2)), jnp.float32)
EIG = {"num_iters": 6, "tol": 0.0}
TRACE = {"num_samples": 4}
DENSITY = {"num_runs": 1, "lanczos_steps": 4, "num_points": 16}
PARAMS = {"w": jnp.full((3, 4), 0.3), "v": jnp.full((4, 2), -0.2)}


def apply(p, x):
    return jnp.tanh(x @ p["w"]) @ p["v"]


def loss(p, batch):
    x, y = batch
    return 0.5 * jnp.mean((apply(p, x) - y) ** 2)


def test_ntk_second_call_compiles_nothing():
    ntk = empirical_ntk_fn(apply, implementation="auto")
    first = ntk(PARAMS, X)
    with compiles() as events:
        again = ntk(PARAMS, X)
        via_cache = [empirical_ntk(apply, PARAMS, X, implementation="auto") for _ in range(2)][1]
        with compiles() as second:
            empirical_ntk(apply, PARAMS, X, implementation="auto")
    assert not second  # the free function compiled once, on its first call above
    assert len(events) == 1
    np.testing.assert_array_equal(again, first)
    np.testing.assert_allclose(via_cache, first, rtol=1e-6)
    x4 = X[:4]
    with compiles() as events:
        ntk(PARAMS, x4)  # new shapes: one compilation
    assert len(events) == 1


def test_ntk_fn_from_nnx_again_in_a_loop_compiles_nothing():
    from flax import nnx

    model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.tanh, nnx.Linear(4, 2, rngs=nnx.Rngs(1)))
    f, params = ntk_fn_from_nnx(model)
    first = empirical_ntk(f, params, X)
    model.layers[0].kernel[...] = 2 * model.layers[0].kernel[...]  # a training step changed the weights
    with compiles() as events:
        f_again, params_again = ntk_fn_from_nnx(model)
        again = empirical_ntk(f_again, params_again, X)
    assert f_again is f and not events
    # The reused f applies the new weights: the same kernel as a fresh split's own function.
    graphdef, state = nnx.split(model)
    fresh = empirical_ntk(lambda p, x: nnx.merge(graphdef, p)(x), state, X)
    np.testing.assert_allclose(again, fresh, rtol=1e-6)
    assert not np.allclose(again, first, rtol=1e-2)


@pytest.mark.parametrize("probe", ["top_eigenvalues", "trace", "density", "hvp"])
def test_hessian_probes_second_call_compiles_nothing(probe):
    probes = hessian_probes(loss)
    call = {
        "top_eigenvalues": lambda p, k: probes.top_eigenvalues(p, (X, Y), k, **EIG).eigenvalues,
        "trace": lambda p, k: probes.trace(p, (X, Y), k, **TRACE).trace,
        "density": lambda p, k: probes.density(p, (X, Y), k, **DENSITY).density,
        "hvp": lambda p, k: probes.hvp(p, (X, Y), p)["w"],
    }[probe]
    call(PARAMS, KEY)
    inputs = [(jax.tree.map(lambda a, i=i: a * (1.0 + i), PARAMS), jax.random.key(i)) for i in range(3)]
    with compiles() as events:
        for p, k in inputs:  # new values, same shapes
            call(p, k)
    assert not events


def test_free_functions_compile_once_per_loss_object():
    ggn = GGN(apply_fn=lambda p, b: apply(p, b[0]), loss=lambda out, b: 0.5 * jnp.mean((out - b[1]) ** 2))
    for curvature in (loss, ggn):
        top_eigenvalues(curvature, PARAMS, (X, Y), key=KEY, **EIG)
        hessian_trace(curvature, PARAMS, (X, Y), key=KEY, **TRACE)
        with compiles() as events:
            top_eigenvalues(curvature, PARAMS, (X, Y), key=KEY, **EIG)
            hessian_trace(curvature, PARAMS, (X, Y), key=KEY, **TRACE)
            # a GGN rebuilt from the same functions is the same curvature: still cached
            if isinstance(curvature, GGN):
                top_eigenvalues(GGN(*curvature), PARAMS, (X, Y), key=KEY, **EIG)
        assert not events
    spectral_density(loss, PARAMS, (X, Y), key=KEY, **DENSITY)
    with compiles() as events:
        spectral_density(loss, PARAMS, (X, Y), key=KEY, **DENSITY)
    assert not events


def test_new_lambda_each_call_does_not_leak():
    refs = []
    for _ in range(2):
        fn = lambda p, b: loss(p, b)  # noqa: E731 - the pattern users write in a loop
        refs.append(weakref.ref(fn))
        hessian_trace(fn, PARAMS, (X, Y), key=KEY, **TRACE)
        f = lambda p, x: apply(p, x)  # noqa: E731
        refs.append(weakref.ref(f))
        empirical_ntk(f, PARAMS, X, implementation="jacobian")
        del fn, f
    gc.collect()
    assert all(ref() is None for ref in refs)


def test_bound_methods_hit_the_cache():
    class Model:
        def loss(self, p, batch):
            return loss(p, batch)

    model = Model()
    hessian_trace(model.loss, PARAMS, (X, Y), key=KEY, **TRACE)
    with compiles() as events:
        hessian_trace(model.loss, PARAMS, (X, Y), key=KEY, **TRACE)  # a new bound-method object
    assert not events


def test_probes_under_user_jit_equal_eager():
    probes = hessian_probes(loss)
    ntk = empirical_ntk_fn(apply, implementation="structured")

    def everything(p, batch, key):
        return (
            probes.top_eigenvalues(p, batch, key, **EIG).eigenvalues,
            probes.trace(p, batch, key, **TRACE).trace,
            probes.density(p, batch, key, **DENSITY).density,
            ntk(p, batch[0]),
            empirical_ntk(apply, p, batch[0], batch[0][:2], implementation="ntvp"),
        )

    with jax.default_matmul_precision("highest"):
        eager = everything(PARAMS, (X, Y), KEY)
        jitted = jax.jit(everything)(PARAMS, (X, Y), KEY)
    for a, b in zip(eager, jitted, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
