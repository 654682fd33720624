"""Hessian probes: products, eigenvalues, trace and density against dense references."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxdl.probes import _operators as ops
from jaxdl.probes import hessian as hs
from tests.reference import hessian as ref

KEY = jax.random.key(0)


def mlp_apply(params, batch):
    h = jnp.tanh(batch["x"] @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def mlp_ce(logits, batch):
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()


def mlp_loss(params, batch):
    return mlp_ce(mlp_apply(params, batch), batch)


def make_mlp(dtype=jnp.float64, n=16, d=5, width=6, classes=3, seed=0):
    k = jax.random.split(jax.random.key(seed), 5)
    params = {
        "w1": jax.random.normal(k[0], (d, width), dtype) / np.sqrt(d),
        "b1": 0.1 * jax.random.normal(k[1], (width,), dtype),
        "w2": jax.random.normal(k[2], (width, classes), dtype) / np.sqrt(width),
        "b2": jnp.zeros((classes,), dtype),
    }
    batch = {"x": jax.random.normal(k[3], (n, d), dtype), "y": jax.random.randint(k[4], (n,), 0, classes)}
    return params, batch


def dense_hessian(loss, params, batch):
    flat, unravel = ravel_pytree(params)
    return np.asarray(jax.jit(jax.hessian(lambda f, b: loss(unravel(f), b)))(flat, batch))


# ---- products -------------------------------------------------------------------------------


def test_hvp_matches_central_differences_of_gradients(x64):
    params, batch = make_mlp()
    v = ops.tree_random_like(jax.random.key(1), params, "normal")
    eps = 1e-5

    @jax.jit
    def both(params, batch, v):
        grad = lambda p: jax.grad(mlp_loss)(p, batch)
        fd = jax.tree.map(
            lambda a, b: (a - b) / (2 * eps),
            grad(ops.tree_axpy(eps, v, params)),
            grad(ops.tree_axpy(-eps, v, params)),
        )
        return hs.hvp(mlp_loss, params, batch, v), fd

    got, fd = both(params, batch, v)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9), got, fd)


def test_quadratic_and_least_squares_hessians_exact(x64, rng):
    a = rng.normal(size=(7, 7))
    a = a @ a.T
    params = {"u": jnp.zeros(3), "v": jnp.zeros((2, 2))}
    quad = lambda p, _: 0.5 * ravel_pytree(p)[0] @ a @ ravel_pytree(p)[0]
    np.testing.assert_allclose(
        ref.dense_matrix(hs.curvature_operator(quad, params, None), params), a, atol=1e-12
    )
    # least squares L = 1/(2n) ||X w - y||^2: H = X^T X / n, and GGN = H for a linear model
    x, y = rng.normal(size=(20, 4)), rng.normal(size=20)
    w = jnp.asarray(rng.normal(size=4))
    linear = lambda w, b: b[0] @ w
    mse = lambda out, b: 0.5 * jnp.mean((out - b[1]) ** 2)
    batch = (jnp.asarray(x), jnp.asarray(y))
    expected = x.T @ x / 20
    h = ref.dense_matrix(hs.curvature_operator(lambda w, b: mse(linear(w, b), b), w, batch), w)
    g = ref.dense_matrix(hs.curvature_operator(hs.GGN(linear, mse), w, batch), w)
    np.testing.assert_allclose(h, expected, atol=1e-12)
    np.testing.assert_allclose(g, expected, atol=1e-12)


def test_ggn_and_fisher_match_dense_references(x64):
    params, batch = make_mlp()
    flat, unravel = ravel_pytree(params)
    per_example = lambda p, b: optax.softmax_cross_entropy_with_integer_labels(mlp_apply(p, b), b["y"])
    v = ops.tree_random_like(jax.random.key(2), params, "normal")

    @jax.jit
    def compute(params, batch, v):
        jac = jax.jacobian(lambda f: mlp_apply(unravel(f), batch))(flat)
        one = lambda xi, yi: ravel_pytree(jax.grad(mlp_loss)(params, {"x": xi[None], "y": yi[None]}))[0]
        grads = jax.vmap(one)(batch["x"], batch["y"])
        ggn_v = ravel_pytree(hs.ggn_vp(mlp_apply, mlp_ce, params, batch, v))[0]
        fisher_v = ravel_pytree(hs.fisher_vp(per_example, params, batch, v))[0]
        return jac, mlp_apply(params, batch), grads, ggn_v, fisher_v

    jac, logits, grads, ggn_v, fisher_v = compute(params, batch, v)
    expected_ggn = ref.softmax_ce_ggn(np.asarray(jac), np.asarray(logits))
    expected_fisher = ref.empirical_fisher(np.asarray(grads))
    flat_v = ravel_pytree(v)[0]
    np.testing.assert_allclose(ggn_v, expected_ggn @ flat_v, rtol=1e-10)
    np.testing.assert_allclose(fisher_v, expected_fisher @ flat_v, rtol=1e-10)
    # GGN is PSD and differs from the Hessian away from a minimum
    assert np.linalg.eigvalsh(expected_ggn).min() > -1e-12
    assert not np.allclose(expected_ggn, dense_hessian(mlp_loss, params, batch), atol=1e-3)


def test_microbatches_average_to_full_batch(x64):
    params, batch = make_mlp(n=16)
    stacked = hs.Batches(jax.tree.map(lambda x: x.reshape(4, 4, *x.shape[1:]), batch))
    v = ops.tree_random_like(jax.random.key(3), params, "normal")
    full = hs.hvp(mlp_loss, params, batch, v)
    micro = jax.jit(lambda p, b, v: hs.hvp(mlp_loss, p, b, v))(params, stacked, v)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10), micro, full)
    listed = hs.stack_batches([jax.tree.map(lambda x, i=i: x[4 * i : 4 * i + 4], batch) for i in range(4)])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b), listed.data, stacked.data)


# ---- eigenvalues ----------------------------------------------------------------------------


def test_top5_lanczos_and_power_match_eigvalsh(x64):
    params, batch = make_mlp()
    exact = np.linalg.eigvalsh(dense_hessian(mlp_loss, params, batch))
    # P = 57 Lanczos steps span the whole space: Ritz values are exact
    res = hs.top_eigenvalues(mlp_loss, params, batch, key=KEY, k=5, num_iters=57, tol=0.0)
    np.testing.assert_allclose(res.eigenvalues, exact[::-1][:5], rtol=1e-9)
    # eigenvectors: pytrees like params, unit norm, and H y = lambda y
    y = np.asarray(jax.vmap(lambda t: ravel_pytree(t)[0])(res.eigenvectors))
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, rtol=1e-10)
    h = dense_hessian(mlp_loss, params, batch)
    np.testing.assert_allclose(y @ h, res.eigenvalues[:, None] * y, atol=1e-8)
    mag = exact[np.argsort(-np.abs(exact))][:2]
    power = hs.top_eigenvalues(
        mlp_loss, params, batch, key=KEY, k=2, method="power", which="magnitude", num_iters=2000, tol=1e-12
    )
    np.testing.assert_allclose(power.eigenvalues, mag, rtol=1e-6)


def test_power_algebraic_handles_dominant_negative_eigenvalue(x64):
    diag = jnp.array([-10.0, 3.0, 2.0, 1.0, -1.0])
    loss = lambda w, _: 0.5 * jnp.sum(diag * w**2)
    res = hs.top_eigenvalues(loss, jnp.zeros(5), None, key=KEY, k=2, method="power", num_iters=500, tol=1e-10)
    np.testing.assert_allclose(res.eigenvalues, [3.0, 2.0], rtol=1e-6)
    lan = hs.top_eigenvalues(loss, jnp.zeros(5), None, key=KEY, k=1, which="magnitude")
    np.testing.assert_allclose(lan.eigenvalues, [-10.0], rtol=1e-6)


def test_float32_lanczos_top5_at_highest_precision():
    params, batch = make_mlp(jnp.float32, n=32, width=12)
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params)
        b64 = {"x": jnp.asarray(batch["x"], jnp.float64), "y": batch["y"]}
        exact = np.linalg.eigvalsh(dense_hessian(mlp_loss, p64, b64))[::-1][:5]
    with jax.default_matmul_precision("highest"):
        res = hs.top_eigenvalues(mlp_loss, params, batch, key=KEY, k=5, num_iters=60, tol=1e-4)
    assert res.eigenvalues.dtype == jnp.float32
    np.testing.assert_allclose(res.eigenvalues, exact, rtol=1e-4)
    assert int(res.num_matvecs) <= 60


# ---- trace and density ----------------------------------------------------------------------


def test_trace_exact_on_diagonal_and_within_standard_error_on_mlp(x64):
    loss = lambda w, _: 0.5 * jnp.sum(jnp.arange(1.0, 9.0) * w["a"] ** 2)
    exact_diag = hs.hessian_trace(loss, {"a": jnp.zeros(8)}, None, key=KEY, num_samples=4)
    np.testing.assert_allclose(exact_diag.trace, 36.0, rtol=1e-12)  # Rademacher on diagonal H: zero variance
    assert float(exact_diag.standard_error) < 1e-10

    params, batch = make_mlp()
    h = dense_hessian(mlp_loss, params, batch)
    res = hs.hessian_trace(mlp_loss, params, batch, key=KEY, num_samples=200)
    predicted_se = ref.hutchinson_rademacher_std(h) / np.sqrt(200)
    assert abs(float(res.trace) - np.trace(h)) < 3.5 * predicted_se
    np.testing.assert_allclose(res.standard_error, predicted_se, rtol=0.3)


def test_hutch_plus_plus_exact_for_low_rank_and_tighter_than_hutchinson(x64, rng):
    # rank-4 PSD "Hessian": the sketch of 6 vectors captures it, so Hutch++ is exact
    u = rng.normal(size=(30, 4))
    a = u @ np.diag([10.0, 5.0, 2.0, 1.0]) @ u.T
    loss = lambda w, _: 0.5 * w @ a @ w
    res = hs.hessian_trace(loss, jnp.zeros(30), None, key=KEY, num_samples=18, method="hutch++")
    np.testing.assert_allclose(res.trace, np.trace(a), rtol=1e-9)
    # a fast-decaying spectrum: Hutch++ error well below Hutchinson's with the same budget
    q, _ = np.linalg.qr(rng.normal(size=(60, 60)))
    b = (q * (1.0 / np.arange(1, 61) ** 2)) @ q.T
    loss_b = lambda w, _: 0.5 * w @ b @ w
    errs = {}
    for method in ("hutchinson", "hutch++"):
        est = jax.vmap(
            lambda k, method=method: (
                hs.hessian_trace(loss_b, jnp.zeros(60), None, key=k, num_samples=30, method=method).trace
            )
        )(jax.random.split(KEY, 20))
        errs[method] = float(np.sqrt(np.mean((np.asarray(est) - np.trace(b)) ** 2)))
    assert errs["hutch++"] < 0.25 * errs["hutchinson"]


def test_density_peaks_at_true_eigenvalues_and_matches_reference(x64):
    eig = jnp.array([1.0, 1.0, 1.0, 4.0, 4.0, 9.0])
    loss = lambda w, _: 0.5 * jnp.sum(eig * w**2)
    sd = hs.spectral_density(loss, jnp.zeros(6), None, key=KEY, num_runs=4, lanczos_steps=6, num_points=2001)
    np.testing.assert_allclose(np.trapezoid(sd.density, sd.grid), 1.0, rtol=1e-9)
    np.testing.assert_allclose(sd.ritz_weights.sum(axis=1), 1.0, rtol=1e-12)
    # three distinct eigenvalues: each run's quadrature has exactly three nodes with weight
    for run in range(4):
        nodes = np.asarray(sd.ritz_values[run])[np.asarray(sd.ritz_weights[run]) > 1e-10]
        np.testing.assert_allclose(np.sort(nodes), [1.0, 4.0, 9.0], atol=1e-9)
    peaks = [
        float(sd.grid[i]) for i in range(1, 2000) if sd.density[i - 1] < sd.density[i] > sd.density[i + 1]
    ]
    np.testing.assert_allclose(peaks, [1.0, 4.0, 9.0], atol=0.01)
    # Rademacher start: weights are exactly the eigenvalue multiplicities / P
    np.testing.assert_allclose(
        np.asarray(sd.ritz_weights[0])[np.asarray(sd.ritz_weights[0]) > 1e-10], [0.5, 1 / 3, 1 / 6], rtol=1e-9
    )
    expected = ref.slq_density(
        np.asarray(sd.ritz_values), np.asarray(sd.ritz_weights), np.asarray(sd.grid), 1e-5
    )
    np.testing.assert_allclose(sd.density, expected, rtol=1e-8, atol=1e-10)


def test_slq_moments_match_exact_spectrum(x64):
    params, batch = make_mlp()
    exact = np.linalg.eigvalsh(dense_hessian(mlp_loss, params, batch))
    sd = hs.spectral_density(mlp_loss, params, batch, key=KEY, num_runs=40, lanczos_steps=12, num_points=500)
    for p in (1, 2, 3):
        estimate = np.mean(np.sum(np.asarray(sd.ritz_weights) * np.asarray(sd.ritz_values) ** p, axis=1))
        np.testing.assert_allclose(estimate, np.mean(exact**p), rtol=0.25)
    # density mean from the grid equals the quadrature mean
    np.testing.assert_allclose(
        np.trapezoid(sd.grid * sd.density, sd.grid),
        np.mean(np.sum(np.asarray(sd.ritz_weights) * np.asarray(sd.ritz_values), axis=1)),
        rtol=1e-3,
        atol=1e-4,
    )


# ---- transformations and devices ------------------------------------------------------------


def test_jit_vmap_determinism():
    params, batch = make_mlp(jnp.float32)
    probe = jax.jit(
        lambda p, b, k: hs.top_eigenvalues(mlp_loss, p, b, key=k, k=2, num_iters=10, tol=0.0).eigenvalues
    )
    first, again = probe(params, batch, KEY), probe(params, batch, KEY)
    np.testing.assert_array_equal(first, again)
    keys = jax.random.split(KEY, 2)
    vmapped = jax.vmap(probe, in_axes=(None, None, 0))(params, batch, keys)
    for i in range(2):
        np.testing.assert_allclose(vmapped[i], probe(params, batch, keys[i]), rtol=1e-5)
    assert not np.array_equal(probe(params, batch, jax.random.key(1)), first)  # the key matters


def test_sharded_batch_equals_single_device(mesh):
    params, batch = make_mlp(jnp.float32, n=32)
    sharded = jax.device_put(batch, NamedSharding(mesh, P("data")))
    assert len(sharded["x"].sharding.device_set) == 8

    @jax.jit
    def probes(p, b):
        eig = hs.top_eigenvalues(mlp_loss, p, b, key=KEY, k=2, num_iters=20, tol=0.0).eigenvalues
        tr = hs.hessian_trace(mlp_loss, p, b, key=KEY, num_samples=8).trace
        return eig, tr

    with jax.default_matmul_precision("highest"):
        single = probes(params, batch)
        multi = probes(params, sharded)
    np.testing.assert_allclose(multi[0], single[0], rtol=2e-5)
    np.testing.assert_allclose(multi[1], single[1], rtol=2e-5)


def test_nnx_and_linen_models_give_same_sharpness(x64):
    class NnxMLP(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(5, 6, rngs=rngs, param_dtype=jnp.float64)
            self.l2 = nnx.Linear(6, 3, rngs=rngs, param_dtype=jnp.float64)

        def __call__(self, x):
            return self.l2(jnp.tanh(self.l1(x)))

    class LinenMLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = jnp.tanh(nn.Dense(6, param_dtype=jnp.float64)(x))
            return nn.Dense(3, param_dtype=jnp.float64)(h)

    _, batch = make_mlp()
    graphdef, state = nnx.split(NnxMLP(nnx.Rngs(0)), nnx.Param)
    nnx_loss = lambda p, b: mlp_ce(nnx.merge(graphdef, p)(b["x"]), b)
    linen_params = {
        "params": {
            f"Dense_{i}": {"kernel": state[name]["kernel"][...], "bias": state[name]["bias"][...]}
            for i, name in enumerate(("l1", "l2"))
        }
    }
    linen_loss = lambda p, b: mlp_ce(LinenMLP().apply(p, b["x"]), b)

    @jax.jit
    def sharpness(state, linen_params, batch):
        top_nnx = hs.top_eigenvalues(nnx_loss, state, batch, key=KEY, k=2, num_iters=57, tol=0.0)
        top_linen = hs.top_eigenvalues(linen_loss, linen_params, batch, key=KEY, k=2, num_iters=57, tol=0.0)
        return top_nnx, top_linen

    top_nnx, top_linen = sharpness(state, linen_params, batch)
    np.testing.assert_allclose(top_nnx.eigenvalues, top_linen.eigenvalues, rtol=1e-9)
    assert jax.tree.structure(ops.block_get(top_nnx.eigenvectors, 0)) == jax.tree.structure(state)


# ---- errors ---------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    params, batch = make_mlp(jnp.float32)
    with pytest.raises(ValueError, match="tree structure of params"):
        hs.hvp(mlp_loss, params, batch, {"w1": params["w1"]})
    wrong_shape = dict(params, b2=jnp.zeros(4))
    with pytest.raises(ValueError, match=r"v\['b2'\] must have shape \(3,\)"):
        hs.hvp(mlp_loss, params, batch, wrong_shape)
    with pytest.raises(ValueError, match="v.*tree structure"):
        hs.curvature_operator(mlp_loss, params, batch)([params["w1"]])
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        hs.top_eigenvalues(mlp_loss, params, batch, key=0)
    with pytest.raises(ValueError, match="method must be one of"):
        hs.hessian_trace(mlp_loss, params, batch, key=KEY, method="girard")
    with pytest.raises(ValueError, match="k must be an int in"):
        hs.top_eigenvalues(mlp_loss, params, batch, key=KEY, k=1000)
    with pytest.raises(ValueError, match="which must be one of"):
        hs.top_eigenvalues(mlp_loss, params, batch, key=KEY, which="largest")
    with pytest.raises(TypeError, match=r"params\['n'\] must be a floating-point"):
        hs.hvp(mlp_loss, {"n": jnp.arange(3)}, batch, {"n": jnp.arange(3)})
    with pytest.raises(TypeError, match="loss_fn must be a callable"):
        hs.hessian_trace("mse", params, batch, key=KEY)
    with pytest.raises(ValueError, match="leading"):
        hs.hvp(mlp_loss, params, hs.Batches({"x": jnp.ones((2, 3, 5)), "y": jnp.ones((3,))}), params)
    with pytest.raises(ValueError, match="per-example"):
        hs.fisher_vp(mlp_loss, params, batch, params)
