"""Tests of jaxdl.probes.ntk_limits: infinite-width kernels, gradient-flow predictions, spectra."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.probes.ntk import empirical_ntk
from jaxdl.probes.ntk_limits import analytic_ntk, ntk_predict_mse, ntk_spectrum
from tests.reference.ntk import analytic_kernels, effective_rank, gradient_flow

ACTIVATIONS = {"relu": jax.nn.relu, "erf": jax.scipy.special.erf}


def ntk_mlp_init(key, sizes, dtype=jnp.float32):
    """W, b ~ N(0, 1): the NTK parameterisation keeps the scales in the forward pass."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        (jax.random.normal(k, (a, b), dtype), jax.random.normal(jax.random.fold_in(k, 1), (b,), dtype))
        for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def ntk_mlp_apply(params, x, activation="relu", w_std=2**0.5, b_std=0.0):
    """z = (w_std / √n_in) W h + b_std b (Jacot et al. 2018, eq. 1), activation between layers."""
    for i, (w, b) in enumerate(params):
        x = w_std * x @ w / np.sqrt(w.shape[0]) + b_std * b
        if i < len(params) - 1:
            x = ACTIVATIONS[activation](x)
    return x


# --------------------------------------------------------------------------- analytic kernels


@pytest.mark.parametrize("activation,rtol", [("erf", 1e-6), ("relu", 5e-5)])
@pytest.mark.parametrize("depth", [0, 1, 3])
@pytest.mark.parametrize("b_std", [0.0, 0.5])
def test_analytic_kernels_match_quadrature(x64, rng, activation, rtol, depth, b_std):
    """The closed forms (arc-cosine, erf) against Gauss-Hermite expectations of the same recursion."""
    x1, x2 = rng.normal(size=(3, 4)), rng.normal(size=(2, 4))
    got = analytic_ntk(
        jnp.asarray(x1), jnp.asarray(x2), depth=depth, activation=activation, w_std=1.3, b_std=b_std
    )
    ntk, nngp = analytic_kernels(x1, x2, depth, activation, 1.3, b_std)
    np.testing.assert_allclose(got.ntk, ntk, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(got.nngp, nngp, rtol=rtol, atol=rtol)


def test_relu_he_diagonal_closed_form(x64, rng):
    """With w_std² = 2 and no bias, ReLU preserves q = 2|x|²/d, and each layer adds q: Θ(x, x) = (L+1) q."""
    x = jnp.asarray(rng.normal(size=(5, 6)))
    q = 2 * jnp.sum(x**2, axis=1) / 6
    for depth in range(4):
        kernels = analytic_ntk(x, depth=depth, w_std=2**0.5)
        np.testing.assert_allclose(jnp.diag(kernels.ntk), (depth + 1) * q, rtol=1e-12)
        np.testing.assert_allclose(jnp.diag(kernels.nngp), q, rtol=1e-12)


@pytest.mark.slow
@pytest.mark.xla_optimized  # wide networks' kernels: execution-bound (12.5 vs 15.6 CPU-s at -O0)
def test_empirical_relu_ntk_converges_like_inverse_sqrt_width(rng):
    """Relative Frobenius error of the empirical NTK of a 2-hidden-layer ReLU MLP falls like W^(-1/2)."""
    x = jnp.asarray(rng.normal(size=(8, 16)), jnp.float32)
    exact = analytic_ntk(x, depth=2, w_std=2**0.5).ntk
    widths = (64, 256, 1024, 4096)
    errors = []
    with jax.default_matmul_precision("highest"):
        for width in widths:
            ntk = jax.jit(lambda p: empirical_ntk(ntk_mlp_apply, p, x, implementation="structured"))
            trials = [ntk(ntk_mlp_init(jax.random.key(s), (16, width, width, 1))) for s in range(4)]
            errors.append(
                np.mean([float(jnp.linalg.norm(t - exact) / jnp.linalg.norm(exact)) for t in trials])
            )
    slope = np.polyfit(np.log(widths), np.log(errors), 1)[0]
    assert -0.7 < slope < -0.3, (slope, errors)
    assert errors[-1] < 0.1, errors


# --------------------------------------------------------------------------- training dynamics


def _train_and_predict(width, steps, checkpoints):
    """Full-batch GD on ½‖f − y‖² of a 2-hidden-layer ReLU MLP, and the NTK prediction from its init."""
    rng = np.random.default_rng(1)
    x_train, x_test = (jnp.asarray(rng.normal(size=(n, 4)), jnp.float32) for n in (8, 4))
    y_train = jnp.sin(x_train.sum(axis=1, keepdims=True))
    params = ntk_mlp_init(jax.random.key(0), (4, width, width, 1))
    theta = empirical_ntk(ntk_mlp_apply, params, x_train)
    theta_test = empirical_ntk(ntk_mlp_apply, params, x_test, x_train)
    lr = 0.1 / float(ntk_spectrum(theta).eigenvalues[0])  # small steps: GD ≈ gradient flow

    loss = lambda p: 0.5 * jnp.sum((ntk_mlp_apply(p, x_train) - y_train) ** 2)
    step = jax.jit(lambda p: jax.tree.map(lambda w, g: w - lr * g, p, jax.grad(loss)(p)))
    f0_train, f0_test = ntk_mlp_apply(params, x_train), ntk_mlp_apply(params, x_test)
    actual = {}
    for k in range(1, steps + 1):
        params = step(params)
        if k in checkpoints:
            actual[k] = (ntk_mlp_apply(params, x_train), ntk_mlp_apply(params, x_test))
    predicted = ntk_predict_mse(theta, theta_test, y_train, f0_train, f0_test, jnp.asarray(checkpoints), lr)
    errors = []
    for i, k in enumerate(checkpoints):
        for got, want, start in (
            (predicted.train[i], actual[k][0], f0_train),
            (predicted.test[i], actual[k][1], f0_test),
        ):
            errors.append(float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want - start)))
    return max(errors)


@pytest.mark.slow
def test_wide_network_training_follows_ntk_prediction():
    """Lee et al. (2019): at width ≥ 2048 GD tracks the linearised prediction; narrow nets drift more."""
    with jax.default_matmul_precision("highest"):
        wide = _train_and_predict(2048, 400, (50, 200, 400))
        narrow = _train_and_predict(64, 400, (50, 200, 400))
    assert wide < 0.05, wide
    assert narrow > 2 * wide, (narrow, wide)


@pytest.mark.parametrize("outputs", [1, 3])
def test_predict_mse_matches_matrix_exponential(x64, rng, outputs):
    a = rng.normal(size=(6, 6))
    theta = a @ a.T + 0.1 * np.eye(6)
    theta_test = rng.normal(size=(4, 6))
    y, f0, f0_test = (
        rng.normal(size=(6, outputs)),
        rng.normal(size=(6, outputs)),
        rng.normal(size=(4, outputs)),
    )
    times = np.array([0.0, 0.3, 2.0, 50.0])
    got = ntk_predict_mse(theta, theta_test, y, f0, f0_test, jnp.asarray(times), 0.7)
    assert got.train.shape == (4, 6, outputs) and got.test.shape == (4, 4, outputs)
    for i, t in enumerate(times):
        train, test = gradient_flow(theta, theta_test, y, f0, f0_test, t, 0.7)
        np.testing.assert_allclose(got.train[i], train, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(got.test[i], test, rtol=1e-9, atol=1e-10)
    scalar = ntk_predict_mse(theta, theta_test, y, f0, f0_test, 2.0, 0.7)
    np.testing.assert_allclose(scalar.test, got.test[2], rtol=1e-12)


def test_predict_mse_full_kernel_equals_per_output_kernel(x64, rng):
    """A (N, N, K, K) kernel Θ ⊗ I gives the same predictions as the (N, N) kernel applied per output."""
    a = rng.normal(size=(5, 5))
    theta, theta_test = a @ a.T, rng.normal(size=(3, 5))
    eye = np.eye(2)
    y, f0, f0_test = rng.normal(size=(5, 2)), rng.normal(size=(5, 2)), rng.normal(size=(3, 2))
    small = ntk_predict_mse(theta, theta_test, y, f0, f0_test, 1.5, 0.2)
    full = ntk_predict_mse(
        np.einsum("ab,kl->abkl", theta, eye),
        np.einsum("ab,kl->abkl", theta_test, eye),
        y,
        f0,
        f0_test,
        1.5,
        0.2,
    )
    np.testing.assert_allclose(full.train, small.train, rtol=1e-12)
    np.testing.assert_allclose(full.test, small.test, rtol=1e-12)


def test_predict_mse_singular_kernel_limits(x64, rng):
    """Rank-deficient Θ stays finite; components in its null space keep f0; t = 0 returns f0."""
    v = rng.normal(size=(4, 1))
    theta = v @ v.T  # rank one
    y, f0 = rng.normal(size=(4, 1)), rng.normal(size=(4, 1))
    theta_test = rng.normal(size=(2, 1)) @ v.T
    f0_test = rng.normal(size=(2, 1))
    start = ntk_predict_mse(theta, theta_test, y, f0, f0_test, 0.0, 1.0)
    np.testing.assert_allclose(start.train, f0, atol=1e-12)
    np.testing.assert_allclose(start.test, f0_test, atol=1e-12)
    late = ntk_predict_mse(theta, theta_test, y, f0, f0_test, 1e6, 1.0)
    u = v / np.linalg.norm(v)
    expected_train = f0 + u @ (u.T @ (y - f0))  # only the span of v is fitted
    np.testing.assert_allclose(late.train, expected_train, rtol=1e-9)
    expected_test = f0_test + theta_test @ np.linalg.pinv(theta) @ (y - f0)
    np.testing.assert_allclose(late.test, expected_test, rtol=1e-8)


def test_spectrum_against_numpy(x64, rng):
    a = rng.normal(size=(7, 7))
    theta = a @ a.T
    s = ntk_spectrum(theta)
    lam = np.sort(np.linalg.eigvalsh(theta))[::-1]
    np.testing.assert_allclose(s.eigenvalues, lam, rtol=1e-10)
    np.testing.assert_allclose(s.condition_number, lam[0] / lam[-1], rtol=1e-9)
    np.testing.assert_allclose(s.effective_rank, effective_rank(theta), rtol=1e-10)
    np.testing.assert_allclose(ntk_spectrum(3 * np.eye(5)).effective_rank, 5.0, rtol=1e-12)
    np.testing.assert_allclose(ntk_spectrum(np.outer(lam, lam)).effective_rank, 1.0, rtol=1e-6)


def test_jit_and_vmap(rng):
    x = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
    kernel = lambda w: analytic_ntk(x, depth=2, w_std=w).ntk
    np.testing.assert_allclose(jax.jit(kernel)(1.5), kernel(1.5), rtol=1e-6)
    stacked = jax.vmap(kernel)(jnp.array([1.0, 2.0]))
    np.testing.assert_allclose(stacked[1], kernel(2.0), rtol=1e-6)
    theta = analytic_ntk(x, depth=1).ntk
    y = jnp.ones((4, 1))
    predict = lambda t: ntk_predict_mse(theta, None, y, jnp.zeros_like(y), None, t, 0.1).train
    # float32 eigh differs slightly between compiled programs.
    np.testing.assert_allclose(jax.jit(predict)(3.0), predict(3.0), rtol=2e-4)
    np.testing.assert_allclose(jax.vmap(predict)(jnp.array([1.0, 3.0]))[1], predict(3.0), rtol=2e-4)


def test_bad_inputs_raise_clear_errors():
    x = jnp.ones((3, 2))
    with pytest.raises(ValueError, match="activation"):
        analytic_ntk(x, depth=1, activation="gelu")
    with pytest.raises(ValueError, match="depth"):
        analytic_ntk(x, depth=-1)
    with pytest.raises(ValueError, match="x1 and x2"):
        analytic_ntk(x, jnp.ones((3, 5)), depth=1)
    with pytest.raises(ValueError, match="ntk_train_train"):
        ntk_predict_mse(jnp.eye(4), None, jnp.ones((3, 1)), jnp.ones((3, 1)), None, 1.0, 0.1)
    with pytest.raises(ValueError, match="y_train and f0_train"):
        ntk_predict_mse(jnp.eye(3), None, jnp.ones((3, 1)), jnp.ones((3, 2)), None, 1.0, 0.1)
    with pytest.raises(ValueError, match="ntk_test_train"):
        ntk_predict_mse(
            jnp.eye(3), jnp.ones((2, 4)), jnp.ones((3, 1)), jnp.ones((3, 1)), jnp.ones((2, 1)), 1.0, 0.1
        )
    with pytest.raises(ValueError, match="theta"):
        ntk_spectrum(jnp.ones((3, 4, 5)))
