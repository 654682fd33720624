"""Perturb-then-diagonalize (PTD): a well-conditioned approximate diagonalisation of HiPPO.

Yu, Nigmetov, Morozov, Mahoney, Erichson, "Robustifying State-space Models for Long Sequences via
Approximate Diagonalization" (ICLR 2024, arXiv 2310.01698), Sec. 4.2:

    min_E  kappa(V)^2 + weight * ||E||_F   subject to   A + E = V Lambda V^{-1},

solved by gradient descent (Adam) through the eigendecomposition. The gradient of kappa(V) is
analytic: with X = V^{-1} dM V and F_ij = 1/(lambda_j - lambda_i), the unit-column eigenvectors move
by dV = V (F o X) + V D, and d sigma_k = Re(u_k^H dV w_k) from the SVD of V. A penalty
mu * sum relu(Re lambda + margin)^2 keeps the spectrum in the left half plane while optimising;
the best stable iterate is returned and any eigenvalue left unstable is reflected,
Re lambda <- -|Re lambda| (as the authors do).

Non-Hermitian `eig` has no GPU/TPU path in JAX, so this runs once on the host in NumPy complex128;
results are cached per (A, settings) and the layers copy them into their parameters.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

__all__ = ["PTDResult", "ptd", "kappa_gradient", "conjugate_half"]


class PTDResult(NamedTuple):
    """Lambda (N,), V (N, N), V_inv (N, N) with A + E = V diag(Lambda) V_inv, and E (N, N).

    Example:
      >>> import numpy as np
      >>> from jaxdl.nn.ssm.hippo import hippo_legs
      >>> from jaxdl.nn.ssm.ptd import ptd
      >>> A, _ = hippo_legs(4)
      >>> result = ptd(A, steps=200)
      >>> bool(np.allclose(result.V @ np.diag(result.Lambda) @ result.V_inv, A + result.E))
      True
      >>> result.Lambda.shape, bool((result.Lambda.real < 0).all())  # a stable spectrum
      ((4,), True)
    """

    Lambda: np.ndarray
    V: np.ndarray
    V_inv: np.ndarray
    E: np.ndarray


def _eig(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lam, V = np.linalg.eig(M)
    return lam, V / np.linalg.norm(V, axis=0, keepdims=True)


def kappa_gradient(
    M: np.ndarray, *, margin: float = 0.5, mu: float = 0.0
) -> tuple[float, np.ndarray, np.ndarray]:
    """kappa(V)^2 + mu * sum relu(Re lambda + margin)^2 and its gradient with respect to M.

    V holds the unit-norm eigenvectors of M. The gradient G is the complex matrix with
    d loss = Re <G, dM>; for a real perturbation take Re G.

    Args:
      M: (N, N) matrix with distinct eigenvalues.
      margin: eigenvalues with Re lambda > -margin are penalised.
      mu: weight of the stability penalty.

    Returns:
      (loss, G, eigenvalues).

    >>> loss, G, lam = kappa_gradient(np.array([[1.0, 1.0], [0.0, 2.0]]))
    >>> round(loss, 6), G.shape
    (5.828427, (2, 2))
    """
    lam, V = _eig(M)
    N = len(lam)
    U, s, Wh = np.linalg.svd(V)
    kappa = s[0] / s[-1]
    # d kappa = Re <Gv, dV>, from d sigma_k = Re(u_k^H dV w_k).
    Gv = kappa * (np.outer(U[:, 0], Wh[0]) / s[0] - np.outer(U[:, -1], Wh[-1]) / s[-1])
    Gv *= 2.0 * kappa
    diff = lam[None, :] - lam[:, None]
    np.fill_diagonal(diff, 1.0)
    F = 1.0 / diff
    np.fill_diagonal(F, 0.0)
    VhG = V.conj().T @ Gv
    W = V.conj().T @ V
    r = np.real(np.diag(VhG))
    # Pull back through dV = V (F o X) + V D, with D real diagonal keeping the columns unit norm.
    H = np.conj(F) * VhG - r[None, :] * W * np.conj(F)
    violation = np.maximum(lam.real + margin, 0.0)
    H[np.arange(N), np.arange(N)] += 2.0 * mu * violation
    V_inv = np.linalg.inv(V)
    G = V_inv.conj().T @ H @ V.conj().T
    return float(kappa**2 + mu * np.sum(violation**2)), G, lam


@functools.lru_cache(maxsize=64)
def _ptd_cached(key, weight, steps, lr, mu, margin, seed, real, init_scale) -> PTDResult:
    A_bytes, N, dtype = key
    A = np.frombuffer(A_bytes, dtype=dtype).reshape(N, N)
    rng = np.random.default_rng(seed)
    E = init_scale * rng.standard_normal((N, N))
    if not real:
        E = E + 1j * init_scale * rng.standard_normal((N, N))
    m = np.zeros_like(E)
    v = np.zeros(E.shape)
    b1, b2, eps = 0.9, 0.999, 1e-8
    best, best_loss = None, np.inf
    for t in range(1, steps + 1):
        loss, G, lam = kappa_gradient(A + E, margin=margin, mu=mu)
        norm_E = np.linalg.norm(E)
        loss += weight * norm_E
        if loss < best_loss and lam.real.max() < 0:
            best, best_loss = E.copy(), loss
        grad = (G.real if real else G) + weight * E / norm_E
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * np.abs(grad) ** 2
        step = lr * 0.5 * (1 + np.cos(np.pi * (t - 1) / steps))  # cosine decay
        E = E - step * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    if best is None:
        best = E
    lam, V = _eig(A + best)
    lam = -np.abs(lam.real) + 1j * lam.imag
    out = PTDResult(lam, V, np.linalg.inv(V), best)
    for arr in out:
        arr.setflags(write=False)
    return out


def ptd(
    A,
    *,
    weight: float = 10.0,
    steps: int = 4000,
    lr: float | None = None,
    mu: float = 10.0,
    margin: float = 0.5,
    seed: int = 0,
    real: bool = True,
    init_scale: float = 1.0,
) -> PTDResult:
    """Perturb-then-diagonalize: eigendecomposition of A + E with small E and well-conditioned V.

    Minimises kappa(V)^2 + weight ||E||_F (PTD paper, Sec. 4.2) with Adam and a cosine schedule
    on the host (NumPy complex128), keeping the best iterate whose spectrum is stable. Deterministic
    for a seed and cached. Eigenvalues still unstable are reflected, Re lambda <- -|Re lambda|, and
    the input/output maps of a model are then B~ = V_inv B, C~ = C V.

    With ``real=True`` (default) E is real, so the spectrum is closed under conjugation and
    `conjugate_half` can halve the state exactly; ``real=False`` optimises a complex E.

    Args:
      A: (N, N) real matrix, e.g. ``hippo_legs(N)[0]``.
      weight: gamma, the price of the perturbation size; larger gives smaller E and larger kappa.
      steps: Adam steps.
      lr: peak learning rate; default 0.05 sqrt(N).
      mu: weight of the stability penalty on Re lambda > -margin during the optimisation.
      margin: see mu.
      seed: seed of the random initial E ~ init_scale * N(0, 1).
      real: optimise a real (True) or complex (False) perturbation.
      init_scale: scale of the initial perturbation.

    Returns:
      PTDResult(Lambda (N,), V (N, N), V_inv (N, N), E (N, N)), read-only NumPy arrays.

    >>> from jaxdl.nn.ssm.hippo import hippo_legs
    >>> A, _ = hippo_legs(8)
    >>> Lambda, V, V_inv, E = ptd(A, steps=300)
    >>> bool(np.linalg.cond(V) < 50 and np.linalg.norm(E, 2) < 0.2 * np.linalg.norm(A, 2))
    True
    """
    A = np.asarray(A)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square matrix, got shape {A.shape}")
    if not np.isrealobj(A):
        raise TypeError(f"A must be real, got dtype {A.dtype}")
    if not np.all(np.isfinite(A)):
        raise ValueError("A must be finite")
    for name, value in (("weight", weight), ("mu", mu), ("init_scale", init_scale)):
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    N = A.shape[0]
    lr = 0.05 * np.sqrt(N) if lr is None else lr
    A = np.ascontiguousarray(A, dtype=np.float64)
    key = (A.tobytes(), N, A.dtype.str)
    return _ptd_cached(
        key,
        float(weight),
        steps,
        float(lr),
        float(mu),
        float(margin),
        int(seed),
        bool(real),
        float(init_scale),
    )


def conjugate_half(Lambda, V, V_inv, *, tol: float = 1e-8):
    """Keep one mode of each conjugate pair and every real mode, so that 2 Re(.) is exact.

    For a real system with a conjugate-closed spectrum, sum_n C_n B_n exp(lambda_n t) equals
    2 Re sum over the kept modes with weights 1 for a kept pair member and 1/2 for a real mode.

    Args:
      Lambda: (N,) eigenvalues of a real matrix.
      V, V_inv: (N, N) eigenvectors and their inverse.
      tol: relative tolerance that classifies an eigenvalue as real, and matches pairs.

    Returns:
      (Lambda (M,), V (N, M), V_inv (M, N), weight (M,)), with M = (N + #real) / 2.

    >>> lam = np.array([-1 + 2j, -1 - 2j, -3 + 0j])
    >>> conjugate_half(lam, np.eye(3), np.eye(3))[3]
    array([1. , 0.5])
    """
    Lambda = np.asarray(Lambda)
    scale = tol * max(1.0, np.abs(Lambda).max())
    is_real = np.abs(Lambda.imag) <= scale
    upper = np.flatnonzero(~is_real & (Lambda.imag > 0))
    lower = np.flatnonzero(~is_real & (Lambda.imag < 0))
    if len(upper) != len(lower) or not np.allclose(
        np.sort_complex(Lambda[upper]), np.sort_complex(Lambda[lower].conj()), atol=100 * scale
    ):
        raise ValueError("Lambda is not closed under conjugation; use the full spectrum instead")
    keep = np.concatenate([upper, np.flatnonzero(is_real)])
    weight = np.where(is_real[keep], 0.5, 1.0)
    return Lambda[keep], np.asarray(V)[:, keep], np.asarray(V_inv)[keep], weight
