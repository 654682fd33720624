"""HiPPO-LegS, its normal-plus-low-rank (NPLR) form and the S4D diagonal initialisations.

Gu, Dao, Ermon, Rudra, Ré, "HiPPO: Recurrent Memory with Optimal Polynomial Projections" (2020),
LegS measure; Gu, Goel, Ré, "Efficiently Modeling Long Sequences with Structured State Spaces"
(ICLR 2022), NPLR form; Gu, Gupta, Goel, Ré, "On the Parameterization and Initialization of
Diagonal State Space Models" (S4D, NeurIPS 2022), Sec. 4 inits.

Everything here runs once on the host in NumPy (float64 / complex128): the results are constants
that the layers copy into their parameters.
"""

from __future__ import annotations

import numpy as np

__all__ = ["hippo_legs", "nplr_legs", "s4d_init", "S4D_INITS"]

S4D_INITS = ("legs", "lin", "inv", "real")


def _check_size(N: int, *, even: bool = False) -> None:
    if not isinstance(N, int | np.integer) or N < 1:
        raise ValueError(f"N must be a positive integer, got {N!r}")
    if even and N % 2:
        raise ValueError(f"N must be even (the state is stored as N/2 conjugate pairs), got {N}")


def hippo_legs(N: int) -> tuple[np.ndarray, np.ndarray]:
    """The HiPPO-LegS state matrix and input vector (HiPPO paper, Theorem 2 / eq. (3)).

    A_nk = -sqrt(2n+1) sqrt(2k+1) for n > k, -(n+1) for n = k, 0 for n < k;  B_n = sqrt(2n+1).
    The eigenvalues of A are exactly -1, ..., -N, but A is far from normal.

    Args:
      N: state size.

    Returns:
      (A, B): float64 arrays of shapes (N, N) and (N,).

    >>> A, B = hippo_legs(3)
    >>> A
    array([[-1.        ,  0.        ,  0.        ],
           [-1.73205081, -2.        ,  0.        ],
           [-2.23606798, -3.87298335, -3.        ]])
    """
    _check_size(N)
    p = np.sqrt(1.0 + 2.0 * np.arange(N))
    A = -np.tril(np.outer(p, p), k=-1) - np.diag(np.arange(1.0, N + 1.0)) + 0.0  # + 0.0 drops -0.0
    return A, p.copy()


def nplr_legs(N: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """HiPPO-LegS as normal plus low rank: A = V diag(Lambda) V* - P P^T (S4 paper, Theorem 1).

    S = A + P P^T with P_n = sqrt(n + 1/2) equals -I/2 plus a skew-symmetric matrix, so it is
    normal and is diagonalised by a unitary V from the Hermitian eigenproblem of -iS.

    Args:
      N: state size.

    Returns:
      (Lambda, P, B, V): Lambda (N,) complex128 with real part -1/2, P (N,) and B (N,) float64
      (B = sqrt(2) P), V (N, N) unitary complex128.

    >>> Lambda, P, B, V = nplr_legs(4)
    >>> A, _ = hippo_legs(4)
    >>> bool(np.allclose(V @ np.diag(Lambda) @ V.conj().T - np.outer(P, P), A))
    True
    """
    A, B = hippo_legs(N)
    P = np.sqrt(np.arange(N) + 0.5)
    S = A + np.outer(P, P)
    real_part = np.mean(np.diag(S))
    imag_part, V = np.linalg.eigh(-1j * (S - real_part * np.eye(N)))
    return real_part + 1j * imag_part, P, B, V


def s4d_init(kind: str, N: int) -> tuple[np.ndarray, np.ndarray]:
    """Diagonal S4D initialisation with N/2 complex modes (S4D paper, Sec. 4 and Table 1).

    With n = 0..N/2-1 the modes are A_n = -Re_n + i Im_n:

    - ``"lin"``:  Re = 1/2, Im = pi n, B = 1.
    - ``"inv"``:  Re = 1/2, Im = (N/pi)(N/(2n+1) - 1), B = 1.
    - ``"legs"``: the eigenvalues of the normal part of HiPPO-LegS (one of each conjugate pair,
      positive imaginary part), B = V* B_HiPPO. The S4D paper notes that B/2 matches S4-LegS
      exactly; like the reference code we keep B without the factor 1/2.
    - ``"real"``: Re = n + 1, Im = 0, B = 1.

    The layers output 2 Re(C x), so these N/2 modes stand for a real state of size N.

    Args:
      kind: one of "legs", "lin", "inv", "real".
      N: even state size.

    Returns:
      (Lambda, B): complex128 arrays of shape (N/2,).

    >>> Lambda, B = s4d_init("lin", 4)
    >>> Lambda
    array([-0.5+0.j        , -0.5+3.14159265j])
    """
    if kind not in S4D_INITS:
        raise ValueError(f"kind must be one of {S4D_INITS}, got {kind!r}")
    _check_size(N, even=True)
    n = np.arange(N // 2)
    ones = np.ones(N // 2, dtype=np.complex128)
    if kind == "lin":
        return -0.5 + 1j * np.pi * n, ones
    if kind == "inv":
        return -0.5 + 1j * (N / np.pi) * (N / (2 * n + 1) - 1), ones
    if kind == "real":
        return -(n + 1.0) + 0j, ones
    Lambda, _, B, V = nplr_legs(N)
    keep = np.argsort(Lambda.imag)[N // 2 :]
    return Lambda[keep], V[:, keep].conj().T @ B
