"""Stability and learning-rate monitors: closed forms, the batch-Hessian claim and the edge of stability."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.probes import hessian as hs
from jaxdl.probes import monitors as mon
from tests.reference import hessian as ref

KEY = jax.random.key(0)
DIAG = jnp.array([4.0, 1.0, 0.5])


def quadratic(w, _):
    return 0.5 * jnp.sum(DIAG * w**2)


def test_stability_report_closed_form_and_thresholds(x64):
    # lambda_max = 4, tr(H) = 5.5
    r = mon.stability_report(quadratic, jnp.zeros(3), None, 0.3, key=KEY, num_samples=2)
    np.testing.assert_allclose([r.sharpness_ratio, r.trace_ratio], [0.6, 0.825], rtol=1e-10)
    np.testing.assert_allclose([r.lambda_max, r.trace, r.trace_standard_error], [4.0, 5.5, 0.0], atol=1e-10)
    assert bool(r.stable)
    # eta = 0.45: GD-stable (0.9) but not SGD-stable (tr ratio 1.2375)
    report = jax.jit(
        lambda lr: mon.stability_report(
            quadratic, jnp.zeros(3), None, lr, key=KEY, optimizer="sgd", num_samples=2
        )
    )
    sgd = report(0.45)
    gd = mon.stability_report(quadratic, jnp.zeros(3), None, 0.45, key=KEY, num_samples=2)
    assert bool(gd.stable) and not bool(sgd.stable)
    # heavy-ball momentum raises the GD threshold to (2 + 2 beta) / eta
    fast = mon.stability_report(quadratic, jnp.zeros(3), None, 0.7, key=KEY, momentum=0.5, num_samples=2)
    np.testing.assert_allclose(fast.sharpness_ratio, 0.7 * 4.0 / 3.0, rtol=1e-10)
    with pytest.raises(ValueError, match="optimizer"):
        mon.stability_report(quadratic, jnp.zeros(3), None, 0.1, key=KEY, optimizer="adam")
    with pytest.raises(ValueError, match="learning_rate must be positive"):
        mon.stability_report(quadratic, jnp.zeros(3), None, -0.1, key=KEY)
    with pytest.raises(ValueError, match="momentum"):
        mon.stability_report(quadratic, jnp.zeros(3), None, 0.1, key=KEY, momentum=1.0)


def test_batch_hessian_extremes_exceed_full_and_follow_marchenko_pastur(x64):
    """Granziol et al. (2022): |extremal eigenvalues| of minibatch Hessians exceed the full ones.

    For least squares with isotropic Gaussian inputs, H_B = X_B^T X_B / B is a Wishart matrix
    whose top eigenvalue sits at the Marchenko-Pastur edge (1 + sqrt(P/B))^2.
    """
    n, d = 2048, 16
    data = {"x": jax.random.normal(jax.random.key(1), (n, d))}
    loss = lambda w, b: 0.5 * jnp.mean((b["x"] @ w) ** 2)
    sizes = (32, 256)
    cmp = mon.batch_vs_full_spectrum(
        loss, jnp.zeros(d), data, key=KEY, batch_sizes=sizes, num_draws=6, num_iters=d
    )
    x = np.asarray(data["x"])
    exact = np.linalg.eigvalsh(x.T @ x / n)
    np.testing.assert_allclose([cmp.full_max, cmp.full_min], [exact[-1], exact[0]], rtol=1e-10)
    mean_max, mean_min = np.mean(cmp.batch_max, axis=1), np.mean(cmp.batch_min, axis=1)
    assert np.all(np.asarray(cmp.batch_max) > float(cmp.full_max))
    assert np.all(np.asarray(cmp.batch_min) < float(cmp.full_min))
    assert np.all(np.diff(mean_max) < 0) and np.all(np.diff(mean_min) > 0)
    # against NumPy: the same statistic over many random subsets of the same data
    rng = np.random.default_rng(0)
    for i, b in enumerate(sizes):
        tops = [
            np.linalg.eigvalsh(x[s].T @ x[s] / b)[-1] for s in (rng.permutation(n)[:b] for _ in range(300))
        ]
        assert abs(mean_max[i] - np.mean(tops)) < 4.0 * np.std(tops) / np.sqrt(6)
    # and the random-matrix closed form the paper builds on (finite d = 16 sits a little below the edge)
    edges = [ref.marchenko_pastur_edge(1.0, d, b) for b in sizes]
    np.testing.assert_allclose(mean_max, edges, rtol=0.2)


def test_batch_ggn_extremes_exceed_full_on_an_mlp():
    k = jax.random.split(jax.random.key(2), 4)
    params = {"w1": jax.random.normal(k[0], (4, 8)) / 2.0, "w2": jax.random.normal(k[1], (8, 3)) / 3.0}
    data = {"x": jax.random.normal(k[2], (256, 4)), "y": jax.random.randint(k[3], (256,), 0, 3)}
    apply_fn = lambda p, b: jnp.tanh(b["x"] @ p["w1"]) @ p["w2"]
    ce = lambda out, b: jnp.mean(
        jax.nn.logsumexp(out, axis=-1) - jnp.take_along_axis(out, b["y"][:, None], 1)[:, 0]
    )
    with jax.default_matmul_precision("highest"):
        cmp = mon.batch_vs_full_spectrum(
            hs.GGN(apply_fn, ce), params, data, key=KEY, batch_sizes=(8,), num_draws=8, num_iters=20
        )
    # lambda_max is convex and E[G_B] = G, so E[lambda_max(G_B)] >= lambda_max(G) (Jensen); at B = 8
    # the noise term makes the gap large
    assert float(np.mean(cmp.batch_max)) > 1.2 * float(cmp.full_max)
    # the GGN is positive semi-definite for a convex loss: its smallest eigenvalue is ~0
    assert float(cmp.full_min) > -1e-5


def test_lr_from_spectrum_linear_and_square_root_scaling():
    # lambda(B) = 0.01 + 10 / B: noise-dominated for B << 1000
    sizes = jnp.array([8, 32, 128])
    cmp = mon.SpectrumComparison(sizes, (0.01 + 10.0 / sizes)[:, None], None, jnp.array(0.01), None)
    sgd = mon.lr_from_spectrum(cmp, [8, 16, 32, 1e6])
    np.testing.assert_allclose(sgd.noise, 10.0, rtol=1e-5)
    np.testing.assert_allclose(sgd.critical_batch_size, 1000.0, rtol=1e-5)
    np.testing.assert_allclose(
        sgd.learning_rates, 2.0 / (0.01 + 10.0 / np.array([8, 16, 32, 1e6])), rtol=1e-5
    )
    assert 1.95 < float(sgd.learning_rates[1] / sgd.learning_rates[0]) <= 2.0  # linear in B
    np.testing.assert_allclose(sgd.learning_rates[3], 2.0 / 0.01, rtol=1e-3)  # saturates at 2 / lambda_full
    adam = mon.lr_from_spectrum(cmp, [8, 32], optimizer="adam", base_batch_size=8, base_learning_rate=1e-3)
    np.testing.assert_allclose(adam.learning_rates[0], 1e-3, rtol=1e-6)
    assert 1.95 < float(adam.learning_rates[1] / 1e-3) <= 2.0  # sqrt(32 / 8)
    base = mon.lr_from_spectrum(cmp, [16], base_batch_size=8, base_learning_rate=0.1)
    np.testing.assert_allclose(base.learning_rates, 0.1 * (0.01 + 10 / 8) / (0.01 + 10 / 16), rtol=1e-5)
    with pytest.raises(ValueError, match="adam"):
        mon.lr_from_spectrum(cmp, [8], optimizer="adam")
    with pytest.raises(ValueError, match="optimizer"):
        mon.lr_from_spectrum(cmp, [8], optimizer="lion")
    with pytest.raises(ValueError, match="batch_sizes"):
        mon.lr_from_spectrum(cmp, [0])


def test_batch_vs_full_rejects_bad_sizes():
    data = {"x": jnp.ones((10, 2)), "y": jnp.ones((9,))}
    with pytest.raises(ValueError, match="leading example axis"):
        mon.batch_vs_full_spectrum(quadratic, jnp.zeros(3), data, key=KEY, batch_sizes=(2,))
    with pytest.raises(ValueError, match="batch_sizes"):
        mon.batch_vs_full_spectrum(
            quadratic, jnp.zeros(3), {"x": jnp.ones((10, 2))}, key=KEY, batch_sizes=(11,)
        )


@pytest.mark.slow
def test_gd_sharpness_rises_to_two_over_eta_and_hovers():
    """Cohen et al. (2021): under GD, sharpness rises (progressive sharpening) to 2/eta and stays there."""
    eta, steps, every = 0.25, 2000, 100
    n, d, w = 32, 8, 16
    kx, ky, kp = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (n, d))
    y = jnp.sin(x @ jax.random.normal(ky, (d, 2)))
    k1, k2, k3 = jax.random.split(kp, 3)
    params = {
        "w1": jax.random.normal(k1, (d, w)) / np.sqrt(d),
        "w2": jax.random.normal(k2, (w, w)) / np.sqrt(w),
        "w3": jax.random.normal(k3, (w, 2)) / np.sqrt(w),
    }

    def loss(p, b):
        h = jnp.tanh(jnp.tanh(b[0] @ p["w1"]) @ p["w2"])
        return 0.5 * jnp.mean(jnp.sum((h @ p["w3"] - b[1]) ** 2, axis=-1))

    def sharpness(p, k):
        return hs.top_eigenvalues(loss, p, (x, y), key=k, num_iters=20, tol=0.0).eigenvalues[0]

    @jax.jit
    def train(p):
        def chunk(p, k):
            def step(p, _):
                g = jax.grad(loss)(p, (x, y))
                return jax.tree.map(lambda a, b: a - eta * b, p, g), None

            p, _ = jax.lax.scan(step, p, None, length=every)
            return p, sharpness(p, k)

        return sharpness(p, KEY), *jax.lax.scan(chunk, p, jax.random.split(KEY, steps // every))

    with jax.default_matmul_precision("highest"):
        initial, final_params, history = train(params)
    threshold = 2.0 / eta
    history = np.asarray(history)
    assert float(initial) < 0.6 * threshold  # starts well inside the stable region
    assert history.max() > 0.98 * threshold  # progressive sharpening reaches 2/eta
    late = history[len(history) // 2 :]
    assert np.all(np.abs(late / threshold - 1.0) < 0.05)  # and hovers there
    report = mon.stability_report(loss, final_params, (x, y), eta, key=KEY, num_samples=10)
    np.testing.assert_allclose(report.sharpness_ratio, 1.0, atol=0.05)
