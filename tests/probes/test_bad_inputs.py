"""The `probes` rows of the bad-input catalogue (/work/shared/reference/bad-inputs.md), one case per row.

Each case either raises the given error type with a message naming the argument, or returns the
right answer (checked against a closed form or a NumPy reference).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.probes import (
    analytic_ntk,
    empirical_ntk,
    hessian_trace,
    hvp,
    ntk_predict_mse,
    ntk_spectrum,
    spectral_density,
    top_eigenvalues,
)

KEY = jax.random.key(0)
A = jnp.array([[1.0, 0.5, 0.0], [0.5, 2.0, 0.0], [0.0, 0.0, 3.0]])
PARAMS = {"w": jnp.full((3, 2), 0.5)}  # 6 parameters
BATCH = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 2.0]])


def loss(p, x):  # mean squared output: H = kron(x^T x / n, I_2), eigenvalues of x^T x / n twice
    return jnp.mean(jnp.sum((x @ p["w"]) ** 2, axis=-1))


def hessian_eigenvalues():
    gram = np.asarray(BATCH, np.float64).T @ np.asarray(BATCH, np.float64) / BATCH.shape[0]
    return np.sort(np.repeat(2 * np.linalg.eigvalsh(gram), 2))[::-1]


def f(p, x):
    return jnp.tanh(x @ p["w"])


THETA = jnp.array([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
Y3, F03 = jnp.ones((3, 1)), jnp.zeros((3, 1))


def check_old_style_key():
    res = top_eigenvalues(loss, PARAMS, BATCH, key=jax.random.PRNGKey(0), num_iters=6, tol=0.0)
    np.testing.assert_allclose(res.eigenvalues[0], hessian_eigenvalues()[0], rtol=1e-5)


def check_nan_in_nan_out():
    v = {"w": jnp.full((3, 2), jnp.nan)}
    assert bool(jnp.all(jnp.isnan(hvp(loss, PARAMS, BATCH, v)["w"])))


def check_spectrum_of_nan_kernel():
    s = ntk_spectrum(jnp.array([[1.0, jnp.nan, 0.0], [jnp.nan, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    assert all(bool(jnp.all(jnp.isnan(x))) for x in s)  # no plausible-looking effective rank


def check_singular_zero_kernel():
    out = ntk_predict_mse(jnp.zeros((3, 3)), jnp.zeros((2, 3)), Y3, F03, jnp.zeros((2, 1)), 5.0, 1.0)
    np.testing.assert_array_equal(out.train, F03)  # a zero kernel learns nothing: f stays at f0
    np.testing.assert_array_equal(out.test, jnp.zeros((2, 1)))


def check_infinite_time_with_zero_eigenvalue():
    y, f0 = jnp.array([[1.0], [-1.0]]), jnp.zeros((2, 1))
    # Θ = 1 1ᵀ: the residual along (1, 1) decays; along (1, -1) (eigenvalue 0) it never moves.
    out = ntk_predict_mse(jnp.ones((2, 2)), jnp.array([[1.0, 1.0]]), y, f0, jnp.zeros((1, 1)), jnp.inf, 1.0)
    np.testing.assert_allclose(out.train, f0, atol=1e-6)
    np.testing.assert_allclose(out.test, jnp.zeros((1, 1)), atol=1e-6)
    # With a ridge the kernel is invertible: the t = ∞ limit interpolates y (f0 = 0, Θ + r I).
    theta = jnp.array([[2.0, 1.0], [1.0, 2.0]])
    ridge = ntk_predict_mse(
        theta, None, y, f0, None, jnp.inf, 1.0, diag_reg=0.5, diag_reg_absolute_scale=True
    )
    np.testing.assert_allclose(ridge.train, y, atol=1e-6)
    late = ntk_predict_mse(
        theta, jnp.array([[1.0, 0.5]]), y, f0, jnp.zeros((1, 1)), jnp.array([1e4, jnp.inf]), 1.0
    )
    np.testing.assert_allclose(late.test[0], late.test[1], atol=1e-6)  # continuous at ∞


CASES = {
    "top_eigenvalues k=0": (
        lambda: top_eigenvalues(loss, PARAMS, BATCH, key=KEY, k=0),
        (ValueError, "k must"),
    ),
    "top_eigenvalues k=7 > 6 params": (
        lambda: top_eigenvalues(loss, PARAMS, BATCH, key=KEY, k=7),
        (ValueError, r"k must be an int in \[1, 6\]"),
    ),
    "top_eigenvalues num_iters=0": (
        lambda: top_eigenvalues(loss, PARAMS, BATCH, key=KEY, num_iters=0),
        (ValueError, "num_iters"),
    ),
    "top_eigenvalues method='arnoldi'": (
        lambda: top_eigenvalues(loss, PARAMS, BATCH, key=KEY, method="arnoldi"),
        (ValueError, "method"),
    ),
    "top_eigenvalues with int params": (
        lambda: top_eigenvalues(loss, {"w": jnp.ones((3, 2), jnp.int32)}, BATCH, key=KEY),
        (TypeError, r"params\['w'\]"),
    ),
    "top_eigenvalues key=0 (int, not a PRNG key)": (
        lambda: top_eigenvalues(loss, PARAMS, BATCH, key=0),
        (TypeError, r"key must be a PRNG key .*got int 0"),
    ),
    "top_eigenvalues int32 array as key": (
        lambda: top_eigenvalues(loss, PARAMS, BATCH, key=jnp.arange(3)),
        (TypeError, "key must be a PRNG key .*dtype int32"),
    ),
    "top_eigenvalues old-style uint32 key PRNGKey(0)": (check_old_style_key, None),
    "top_eigenvalues loss returning a vector": (
        lambda: top_eigenvalues(lambda p, x: jnp.sum((x @ p["w"]) ** 2, axis=-1), PARAMS, BATCH, key=KEY),
        (ValueError, r"loss_fn\(params, batch\) must return a scalar"),
    ),
    "top_eigenvalues on empty batch (0, 3)": (
        lambda: top_eigenvalues(loss, PARAMS, jnp.zeros((0, 3)), key=KEY),
        (ValueError, "batch has no examples"),
    ),
    "hessian_trace num_samples=0": (
        lambda: hessian_trace(loss, PARAMS, BATCH, key=KEY, num_samples=0),
        (ValueError, "num_samples"),
    ),
    "hessian_trace distribution='uniform'": (
        lambda: hessian_trace(loss, PARAMS, BATCH, key=KEY, distribution="uniform"),
        (ValueError, "distribution"),
    ),
    "hvp with v of another structure": (
        lambda: hvp(loss, PARAMS, BATCH, {"v": jnp.ones((3, 2))}),
        (ValueError, "v must have the tree structure of params"),
    ),
    "hvp with v of another shape": (
        lambda: hvp(loss, PARAMS, BATCH, {"w": jnp.ones((2, 3))}),
        (ValueError, r"v\['w'\] must have shape \(3, 2\)"),
    ),
    "hvp with v containing NaN": (check_nan_in_nan_out, None),
    "spectral_density lanczos_steps=0": (
        lambda: spectral_density(loss, PARAMS, BATCH, key=KEY, lanczos_steps=0),
        (ValueError, "lanczos_steps"),
    ),
    "spectral_density num_runs=0": (
        lambda: spectral_density(loss, PARAMS, BATCH, key=KEY, num_runs=0),
        (ValueError, "num_runs"),
    ),
    "empirical_ntk x1 (6,3) vs x2 (4,5)": (
        lambda: empirical_ntk(f, PARAMS, jnp.ones((6, 3)), jnp.ones((4, 5))),
        (ValueError, "x1 and x2 must have the same per-example shape"),
    ),
    "empirical_ntk implementation='fast'": (
        lambda: empirical_ntk(f, PARAMS, jnp.ones((6, 3)), implementation="fast"),
        (ValueError, "implementation"),
    ),
    "empirical_ntk empty x1 (0, 3)": (
        lambda: empirical_ntk(f, PARAMS, jnp.ones((0, 3))),
        (ValueError, "x1 must hold at least one example"),
    ),
    "empirical_ntk trace_axes=(5,)": (
        lambda: empirical_ntk(f, PARAMS, jnp.ones((6, 3)), trace_axes=(5,)),
        (ValueError, "trace_axes"),
    ),
    "empirical_ntk batch_size=0": (
        lambda: empirical_ntk(f, PARAMS, jnp.ones((6, 3)), batch_size=0),
        (ValueError, "batch_size"),
    ),
    "empirical_ntk f returning wrong batch size": (
        lambda: empirical_ntk(lambda p, x: f(p, x)[:2], PARAMS, jnp.ones((6, 3))),
        (ValueError, r"f\(params, x\) must map a batch of 6"),
    ),
    "ntk_spectrum of non-square (3,4)": (lambda: ntk_spectrum(jnp.ones((3, 4))), (ValueError, "theta")),
    "ntk_spectrum of a matrix with NaN": (check_spectrum_of_nan_kernel, None),
    "analytic_ntk depth=-1": (lambda: analytic_ntk(jnp.ones((2, 3)), depth=-1), (ValueError, "depth")),
    "analytic_ntk activation='gelu'": (
        lambda: analytic_ntk(jnp.ones((2, 3)), depth=1, activation="gelu"),
        (ValueError, "activation"),
    ),
    "ntk_predict_mse learning_rate=-1": (
        lambda: ntk_predict_mse(THETA, None, Y3, F03, None, 1.0, -1.0),
        (ValueError, "learning_rate"),
    ),
    "ntk_predict_mse y_train (4,1) vs theta (3,3)": (
        lambda: ntk_predict_mse(THETA, None, jnp.ones((4, 1)), F03, None, 1.0, 1.0),
        (ValueError, "y_train"),
    ),
    "ntk_predict_mse singular theta (all zeros)": (check_singular_zero_kernel, None),
    "ntk_predict_mse t=inf with a zero eigenvalue, and diag_reg": (
        check_infinite_time_with_zero_eigenvalue,
        None,
    ),
    "ntk_predict_mse t=-1": (
        lambda: ntk_predict_mse(THETA, None, Y3, F03, None, -1.0, 1.0),
        (ValueError, "t must be >= 0"),
    ),
    "ntk_predict_mse diag_reg=-1": (
        lambda: ntk_predict_mse(THETA, None, Y3, F03, None, 1.0, 1.0, diag_reg=-1.0),
        (ValueError, "diag_reg"),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case):
    call, expected = CASES[case]
    if expected is None:
        call()  # returns the right answer: the check raises otherwise
        return
    error, message = expected
    with pytest.raises(error, match=message) as info:
        call()
    assert "Tracer" not in str(info.value)  # the message shows the value, not a tracer
