"""The paper's claim (PTD paper Sec. 3, Theorems 2 and 3; reference §3): S4D-LegS converges to
HiPPO-LegS only weakly, with a spike of the transfer-function error near omega = n^2/pi, while the
perturb-then-diagonalize system stays uniformly close."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.nn.ssm import hippo_legs, nplr_legs, ptd, transfer_function
from tests.reference import ssm as ref


def _errors(n):
    """Norms over omega of the HiPPO resolvent (i omega - A)^{-1} B and of the errors of S4D-LegS and PTD.

    Taking C = I measures the worst case over unit output vectors C, the operator-norm sense of
    Theorems 2 and 3 (a single random C sees a seed-dependent fraction of the spike).
    """
    A, B = hippo_legs(n)
    spike = n**2 / np.pi
    omega = np.concatenate([[0.0, spike], np.geomspace(1e-2, 20 * n**2, 2000)])
    G_hippo = np.stack([ref.transfer(A, B, row, omega) for row in np.eye(n)], axis=1)
    Lambda, _, _, V = nplr_legs(n)  # S4D-LegS with B/2: the diagonalised normal part
    G_s4d = transfer_function(jnp.asarray(Lambda), V.conj().T @ B / 2, V, omega)
    Lambda_p, V_p, V_inv_p, _ = ptd(A)
    G_ptd = transfer_function(jnp.asarray(Lambda_p), V_inv_p @ B, V_p, omega)
    norm = lambda G: np.linalg.norm(np.asarray(G), axis=1)
    return omega, norm(G_hippo), norm(G_hippo - G_s4d), norm(G_hippo - G_ptd)


@pytest.mark.parametrize("n", [16, 32])
def test_s4d_spikes_and_ptd_converges_uniformly(n, x64):
    omega, G_hippo, err_s4d, err_ptd = _errors(n)
    assert err_s4d[0] < 1e-8  # B/2 matches the DC gain
    assert err_s4d[1] >= 5 * G_hippo.max()  # the spike at n^2/pi
    assert omega[2:][np.argmax(err_s4d[2:])] == pytest.approx(
        n**2 / np.pi, rel=0.05
    )  # is the worst frequency
    assert err_ptd.max() < 0.25 * err_s4d.max()


def test_transfer_function_dense_equals_reference_and_diagonal(x64, rng):
    A, B = hippo_legs(6)
    C = rng.standard_normal(6)
    omega = np.geomspace(1e-2, 1e3, 50)
    dense = transfer_function(A, B, C, omega)
    np.testing.assert_allclose(dense, ref.transfer(A, B, C, omega), rtol=1e-10)
    Lambda, V = np.linalg.eig(A + 0.3 * rng.standard_normal((6, 6)))
    A2 = (V @ np.diag(Lambda) @ np.linalg.inv(V)).real
    diagonal = transfer_function(Lambda, np.linalg.solve(V, B), C @ V, omega)
    np.testing.assert_allclose(diagonal, ref.transfer(A2, B, C, omega), rtol=1e-8)
    jitted = jax.jit(transfer_function)(A, B, C, omega)
    np.testing.assert_allclose(jitted, dense, rtol=1e-12)


def test_transfer_function_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="expected A"):
        transfer_function(np.eye(3), np.ones(2), np.ones(2), np.ones(4))
    with pytest.raises(ValueError, match="expected A"):
        transfer_function(np.ones(2), np.ones(2), np.ones((2, 2, 2)), np.ones(4))
