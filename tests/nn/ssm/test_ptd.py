import ctypes
import glob
import os

import numpy as np
import pytest
from scipy.linalg import expm

from jaxdl.nn.ssm import conjugate_half, hippo_legs, ptd
from jaxdl.nn.ssm.ptd import kappa_gradient


@pytest.fixture
def single_threaded_blas():
    """One BLAS thread: the solver's 64x64 eigendecompositions gain nothing from threads, and on a busy
    CI box spinning BLAS threads multiply the CPU time. A no-op where the bundled OpenBLAS is absent."""
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*"))
    lib = ctypes.CDLL(libs[0]) if libs else None
    if lib is None or not hasattr(lib, "scipy_openblas_set_num_threads64_"):
        yield
        return
    before = lib.scipy_openblas_get_num_threads64_()
    lib.scipy_openblas_set_num_threads64_(1)
    yield
    lib.scipy_openblas_set_num_threads64_(before)


def _check_targets(N, result):
    A, _ = hippo_legs(N)
    Lambda, V, V_inv, E = result
    kappa = np.linalg.cond(V)
    relative_E = np.linalg.norm(E, 2) / np.linalg.norm(A, 2)
    assert kappa <= 20, kappa
    assert relative_E <= 0.10, relative_E
    assert Lambda.real.max() < 0
    # The best iterate is stable already, so no eigenvalue was reflected: an exact decomposition.
    np.testing.assert_allclose(V @ np.diag(Lambda) @ V_inv, A + E, atol=1e-10 * np.linalg.norm(A))
    np.testing.assert_allclose(V_inv @ V, np.eye(N), atol=1e-10)
    # Unperturbed HiPPO has kappa(V) > 1e10 at these sizes (reference §1.1).
    assert np.linalg.cond(np.linalg.eig(A)[1]) > 1e8


@pytest.mark.parametrize("N", [16, 32])
def test_ptd_meets_targets(N, single_threaded_blas):
    _check_targets(N, ptd(hippo_legs(N)[0]))


@pytest.mark.slow
def test_ptd_meets_targets_n64(single_threaded_blas):
    _check_targets(64, ptd(hippo_legs(64)[0], steps=8000))  # ~25 s single-threaded


def test_ptd_is_deterministic_and_cached():
    A, _ = hippo_legs(8)
    first = ptd(A, steps=200, seed=3)
    again = ptd(A.copy(), steps=200, seed=3)
    assert first is again
    other = ptd(A, steps=200, seed=4)
    assert not np.allclose(first.E, other.E)
    with pytest.raises(ValueError, match="read-only"):
        first.E[0, 0] = 1.0


def test_complex_perturbation():
    A, _ = hippo_legs(8)
    Lambda, V, V_inv, E = ptd(A, steps=500, real=False)
    assert np.iscomplexobj(E) and np.abs(E.imag).max() > 0
    assert np.linalg.cond(V) < 20 and Lambda.real.max() < 0
    np.testing.assert_allclose(V @ np.diag(Lambda) @ V_inv, A + E, atol=1e-10)


@pytest.mark.parametrize("direction", ["real", "imag"])
def test_kappa_gradient_matches_finite_differences(direction, rng):
    A, _ = hippo_legs(6)
    M = A + rng.standard_normal((6, 6)) + 1j * rng.standard_normal((6, 6))
    D = rng.standard_normal((6, 6)) * (1 if direction == "real" else 1j)
    loss, G, _ = kappa_gradient(M, mu=1.0, margin=50.0)  # margin 50: the penalty is active
    h = 1e-6
    up, _, _ = kappa_gradient(M + h * D, mu=1.0, margin=50.0)
    down, _, _ = kappa_gradient(M - h * D, mu=1.0, margin=50.0)
    np.testing.assert_allclose((up - down) / (2 * h), np.real(np.sum(G.conj() * D)), rtol=1e-5)
    kappa = np.linalg.cond(np.linalg.eig(M)[1] / np.linalg.norm(np.linalg.eig(M)[1], axis=0))
    lam = np.linalg.eigvals(M)
    np.testing.assert_allclose(loss, kappa**2 + np.sum((lam.real + 50.0) ** 2), rtol=1e-8)


def test_conjugate_half_gives_the_real_system_kernel(rng):
    # 2 Re over the kept modes (real modes weighted 1/2) equals c^T exp(A t) b of the real system.
    N = 16
    A, _ = hippo_legs(N)
    Lambda, V, V_inv, E = ptd(A)
    Lambda_h, V_h, V_inv_h, weight = conjugate_half(Lambda, V, V_inv)
    assert len(Lambda_h) == (N + np.sum(np.abs(Lambda.imag) < 1e-8)) // 2
    b, c = rng.standard_normal(N), rng.standard_normal(N)
    for t in [0.0, 0.1, 1.0]:
        exact = c @ expm((A + E) * t) @ b
        half = 2 * np.real(np.sum((c @ V_h) * weight * (V_inv_h @ b) * np.exp(Lambda_h * t)))
        np.testing.assert_allclose(half, exact, rtol=1e-8, atol=1e-10)


def test_conjugate_half_rejects_a_complex_spectrum():
    with pytest.raises(ValueError, match="not closed under conjugation"):
        conjugate_half(np.array([-1 + 1j, -2 + 0j]), np.eye(2), np.eye(2))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(A=np.ones((2, 3))), ValueError, "square"),
        (dict(A=np.eye(2) * 1j), TypeError, "real"),
        (dict(A=np.eye(2), weight=0.0), ValueError, "weight must be positive"),
        (dict(A=np.eye(2), steps=0), ValueError, "steps"),
        (dict(A=np.full((2, 2), np.nan)), ValueError, "finite"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ptd(**kwargs)
