import numpy as np
import pytest

from jaxdl.nn.ssm import hippo_legs, nplr_legs, s4d_init
from tests.reference import ssm as ref


@pytest.mark.parametrize("N", [1, 5, 16])
def test_hippo_legs_matches_formula(N):
    A, B = hippo_legs(N)
    A_ref, B_ref = ref.hippo_legs(N)
    np.testing.assert_array_equal(A, A_ref)
    np.testing.assert_allclose(B, B_ref, rtol=1e-15)


@pytest.mark.parametrize("N", [4, 8])
def test_hippo_legs_eigenvalues_are_minus_one_to_minus_n(N):
    # Lower triangular: the eigenvalues are the diagonal; eig agrees despite kappa(V) ~ 1e4.
    A, _ = hippo_legs(N)
    np.testing.assert_allclose(np.sort(np.linalg.eigvals(A).real), -np.arange(N, 0, -1.0), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.eigvals(A).imag, 0.0, atol=1e-6)


@pytest.mark.parametrize("N", [3, 8, 32])
def test_nplr_reconstructs_hippo(N):
    Lambda, P, B, V = nplr_legs(N)
    A, B_hippo = hippo_legs(N)
    np.testing.assert_allclose(V.conj().T @ V, np.eye(N), atol=1e-12)
    np.testing.assert_allclose(V @ np.diag(Lambda) @ V.conj().T - np.outer(P, P), A, atol=1e-10)
    np.testing.assert_allclose(B, np.sqrt(2.0) * P, rtol=1e-15)
    S, _ = ref.legs_normal_part(N)
    np.testing.assert_allclose(S + S.T, -np.eye(N), atol=1e-12)  # -I/2 plus skew-symmetric
    np.testing.assert_allclose(Lambda.real, -0.5, atol=1e-12)


@pytest.mark.parametrize("kind", ["lin", "inv", "real", "legs"])
@pytest.mark.parametrize("N", [8, 16])
def test_s4d_inits_match_reference(kind, N):
    Lambda, B = s4d_init(kind, N)
    Lambda_ref, B_ref = ref.s4d_modes(kind, N)
    assert Lambda.shape == B.shape == (N // 2,)
    order, order_ref = np.argsort(Lambda.imag), np.argsort(Lambda_ref.imag)
    np.testing.assert_allclose(Lambda[order], Lambda_ref[order_ref], atol=1e-10)
    # B = V* B_HiPPO depends on the eigenvector phases; |B_n| does not.
    np.testing.assert_allclose(np.abs(B[order]), np.abs(B_ref[order_ref]), atol=1e-10)


def test_s4d_legs_keeps_one_of_each_conjugate_pair():
    Lambda_full, *_ = nplr_legs(16)
    Lambda, _ = s4d_init("legs", 16)
    kept_and_conjugates = np.concatenate([Lambda, Lambda.conj()])
    np.testing.assert_allclose(np.sort_complex(kept_and_conjugates), np.sort_complex(Lambda_full), atol=1e-10)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: hippo_legs(0), "N must be a positive integer"),
        (lambda: s4d_init("lin", 7), "N must be even"),
        (lambda: s4d_init("foo", 8), "kind must be one of"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_cached_modes_are_read_only():
    from jaxdl.nn.ssm.functional import s4d_modes as old_home  # still importable where it was
    from jaxdl.nn.ssm.modes import s4d_modes, s5_block_modes

    assert old_home is s4d_modes
    Lambda, B, _ = s4d_modes("lin", 4)
    with pytest.raises(ValueError, match="read-only"):
        Lambda[1] = 99
    with pytest.raises(ValueError, match="read-only"):
        B[0] = 99
    for array in s5_block_modes("legs", 4):
        assert not array.flags.writeable
    np.testing.assert_allclose(s4d_modes("lin", 4)[0], [-0.5, -0.5 + np.pi * 1j])
