import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxdl.nn.ssm import bidirectional_kernel, discretize, fft_conv, linear_recurrence, ssm_kernel
from tests.reference import ssm as ref


def _system(rng, H=3, N=4):
    Lambda = -rng.uniform(0.1, 1.0, (H, N)) + 1j * rng.uniform(-5, 5, (H, N))
    B = rng.standard_normal((H, N)) + 1j * rng.standard_normal((H, N))
    C = rng.standard_normal((2, H, N)) + 1j * rng.standard_normal((2, H, N))
    log_step = np.log(rng.uniform(0.01, 0.3, H))
    return Lambda, B, C, log_step


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_discretize_matches_numpy(method, rng, x64):
    Lambda, B, _, log_step = _system(rng)
    Lambda_bar, B_bar = discretize(Lambda, B, log_step[:, None], method)
    Lambda_ref, B_ref = ref.discretize(Lambda, B, np.exp(log_step)[:, None], method)
    np.testing.assert_allclose(Lambda_bar, Lambda_ref, rtol=1e-12)
    np.testing.assert_allclose(B_bar, B_ref, rtol=1e-12)


def test_discretize_methods_agree_for_small_steps(rng, x64):
    Lambda, B, _, _ = _system(rng)
    zoh = discretize(Lambda, B, np.log(1e-4))
    bilinear = discretize(Lambda, B, np.log(1e-4), "bilinear")
    np.testing.assert_allclose(zoh[0], bilinear[0], rtol=1e-9)
    np.testing.assert_allclose(zoh[1], bilinear[1], rtol=1e-7)


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
@pytest.mark.parametrize("chunk_size", [None, 7])
def test_ssm_kernel_matches_loop(method, chunk_size, rng, x64):
    Lambda, B, C, log_step = _system(rng)
    K = ssm_kernel(Lambda, B, C, log_step, 30, method=method, chunk_size=chunk_size)
    assert K.shape == (2, 3, 30)
    for d in range(2):
        np.testing.assert_allclose(
            K[d], ref.kernel(Lambda, B, C[d], np.exp(log_step), 30, method), rtol=1e-10
        )


def test_ssm_kernel_float32_close_to_float64(rng):
    Lambda, B, C, log_step = _system(rng)
    with jax.default_matmul_precision("highest"):
        K = ssm_kernel(
            jnp.asarray(Lambda, jnp.complex64),
            B.astype(np.complex64),
            C.astype(np.complex64),
            log_step.astype(np.float32),
            64,
            chunk_size=16,
        )
    assert K.dtype == jnp.float32
    expected = np.stack([ref.kernel(Lambda, B, C[d], np.exp(log_step), 64) for d in range(2)])
    np.testing.assert_allclose(K, expected, atol=1e-4 * np.abs(expected).max())


def test_check_grads_through_the_kernel(rng, x64):
    Lambda, B, C, log_step = _system(rng, H=2, N=3)

    def f(re, im, b, c, log_step):
        return ssm_kernel(jax.lax.complex(re, im), b, c, log_step, 12, chunk_size=5)

    check_grads(f, (Lambda.real, Lambda.imag, B, C, log_step), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_fft_conv_equals_direct_convolution(rng, x64):
    u = rng.standard_normal((2, 17, 3))
    K = rng.standard_normal((3, 17))
    y = fft_conv(u, K)
    for b in range(2):
        np.testing.assert_allclose(y[b], ref.causal_conv(u[b], K), atol=1e-12)


def test_bidirectional_kernel_runs_the_backward_kernel_on_the_reversed_sequence(rng, x64):
    u = rng.standard_normal((9, 2))
    K_forward, K_backward = rng.standard_normal((2, 2, 9))
    y = fft_conv(u, bidirectional_kernel(K_forward, K_backward))
    expected = ref.causal_conv(u, K_forward) + ref.causal_conv(u[::-1], K_backward)[::-1]
    np.testing.assert_allclose(y, expected, atol=1e-12)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("per_token", [False, True])
def test_linear_recurrence_matches_loop(reverse, per_token, rng, x64):
    L, P = 13, 4
    a = np.exp(
        -rng.uniform(0.01, 1, (L, P) if per_token else (P,))
        + 1j * rng.uniform(-1, 1, (L, P) if per_token else (P,))
    )
    b = rng.standard_normal((L, P)) + 1j * rng.standard_normal((L, P))
    x = linear_recurrence(a, b, reverse=reverse)
    if reverse:
        a_r = a[::-1] if per_token else a
        np.testing.assert_allclose(x, ref.recurrence(a_r, b[::-1])[::-1], rtol=1e-12)
    else:
        np.testing.assert_allclose(x, ref.recurrence(a, b), rtol=1e-12)


def test_kernel_equals_impulse_response_of_the_recurrence(rng, x64):
    # Convolution mode and recurrent mode describe the same SSM: K is the impulse response.
    Lambda, B, C, log_step = _system(rng, H=1, N=5)
    K = ssm_kernel(Lambda, B, C[:1], log_step, 20)[0, 0]
    Lambda_bar, B_bar = discretize(Lambda[0], B[0], log_step[0])
    impulse = np.zeros((20, 5), complex)
    impulse[0] = B_bar
    states = linear_recurrence(Lambda_bar, impulse)
    np.testing.assert_allclose(K, 2 * np.real(states @ C[0, 0]), rtol=1e-10)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="expected Lambda and B"):
        ssm_kernel(jnp.ones((2, 3)), jnp.ones((2, 4)), jnp.ones((2, 3)), jnp.zeros(2), 5)
    with pytest.raises(ValueError, match="log_step must have shape"):
        ssm_kernel(jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.zeros(3), 5)
    with pytest.raises(ValueError, match="L must be a positive integer"):
        ssm_kernel(jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.zeros(2), 0)
    with pytest.raises(ValueError, match="method must be one of"):
        discretize(jnp.ones(2), jnp.ones(2), 0.0, "euler")
    with pytest.raises(ValueError, match="K must have shape"):
        fft_conv(jnp.ones((5, 2)), jnp.ones((2, 4)))
