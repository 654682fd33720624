"""NumPy float64 references for the NTK probes, written from the papers' equations.

- Linear and two-layer NTKs: Θ = Σ_θ ∂f/∂θ(x1) ∂f/∂θ(x2), derived by hand (Jacot et al. 2018, eq. 6).
- Infinite-width kernels: the layer recursion of Jacot et al. (2018, Thm. 1) with the Gaussian
  expectations E[φ(u)φ(v)], E[φ'(u)φ'(v)] computed numerically (2-D Gauss-Hermite for erf, polar
  coordinates for the homogeneous ReLU), so the closed forms used by jaxdl are checked, not repeated.
- Gradient-flow predictions: matrix exponentials (scipy.linalg.expm) and linear solves of
  Lee et al. (2019, eq. 9-10).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
from scipy.special import erf


def linear_ntk(x1: np.ndarray, x2: np.ndarray, bias: bool) -> np.ndarray:
    """f(x) = x W (+ b): ∂f_o/∂W_io = x_i, ∂f_o/∂b_o = 1, so Θ_oo = x1·x2 (+ 1)."""
    return x1 @ x2.T + (1.0 if bias else 0.0)


def two_layer_ntk(w, b, v, c, x1, x2, phi, dphi) -> np.ndarray:
    """Θ for f(x) = Σ_j v_j φ(w_j·x + b_j) + c (one output), summed over the four parameter groups.

    ∂f/∂v_j = φ(z_j), ∂f/∂c = 1, ∂f/∂w_j = v_j φ'(z_j) x, ∂f/∂b_j = v_j φ'(z_j).
    """
    z1, z2 = x1 @ w + b, x2 @ w + b  # (N, H)
    readout = phi(z1) @ phi(z2).T + 1.0
    hidden = ((v**2 * dphi(z1)) @ dphi(z2).T) * (x1 @ x2.T + 1.0)
    return readout + hidden


_ACT = {
    "relu": (lambda u: np.maximum(u, 0.0), lambda u: (u > 0).astype(float)),
    "erf": (erf, lambda u: 2.0 / np.sqrt(np.pi) * np.exp(-(u**2))),
}


def _cholesky(q11, q22, q12):
    a = np.sqrt(q11)
    return a, q12 / a, np.sqrt(max(q22 - (q12 / a) ** 2, 0.0))


def _gaussian_expectation(g, q11, q22, q12, order=80):
    """E[g(u, v)] for (u, v) ~ N(0, [[q11, q12], [q12, q22]]) by Gauss-Hermite quadrature (smooth g)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(order)  # weight e^{-t²/2}
    weights = weights / np.sqrt(2 * np.pi)
    a, b, c = _cholesky(q11, q22, q12)
    s, t = np.meshgrid(nodes, nodes, indexing="ij")
    return float(np.sum(np.outer(weights, weights) * g(a * s, b * s + c * t)))


def _homogeneous_expectation(g, degree, q11, q22, q12, points=200_000):
    """E[g(u, v)] for g positively homogeneous of `degree` (ReLU products), in polar coordinates.

    With (u, v) = L (r cos φ, r sin φ), g(u, v) = r^degree g(L e_φ), and the radial integral is
    ∫ r^(degree+1) e^{-r²/2} dr = 2^(degree/2) Γ(degree/2 + 1); the angle is integrated by the midpoint rule.
    """
    a, b, c = _cholesky(q11, q22, q12)
    phi = (np.arange(points) + 0.5) * 2 * np.pi / points
    s, t = np.cos(phi), np.sin(phi)
    radial = 2 ** (degree / 2) * math.gamma(degree / 2 + 1)
    return float(np.mean(g(a * s, b * s + c * t)) * radial)


def analytic_kernels(x1, x2, depth, activation, w_std, b_std):
    """(ntk, nngp) of `depth` hidden layers + readout in the NTK parameterisation, by quadrature.

    ReLU's derivative jumps, which Gauss-Hermite handles badly, so ReLU uses its homogeneity instead.
    """
    phi, dphi = _ACT[activation]
    if activation == "relu":
        expect = _homogeneous_expectation
    else:
        expect = lambda g, degree, *q: _gaussian_expectation(g, *q)
    w2, b2 = w_std**2, b_std**2
    d = x1.shape[1]
    n1, n2 = len(x1), len(x2)
    ntk = np.zeros((n1, n2))
    nngp = np.zeros((n1, n2))
    for i in range(n1):
        for j in range(n2):
            q11 = w2 * x1[i] @ x1[i] / d + b2
            q22 = w2 * x2[j] @ x2[j] / d + b2
            q12 = w2 * x1[i] @ x2[j] / d + b2
            theta = q12
            for _ in range(depth):
                e12 = expect(lambda u, v: phi(u) * phi(v), 2, q11, q22, q12)
                e11 = expect(lambda u, v: phi(u) * phi(u), 2, q11, q11, q11)
                e22 = expect(lambda u, v: phi(u) * phi(u), 2, q22, q22, q22)
                ed = expect(lambda u, v: dphi(u) * dphi(v), 0, q11, q22, q12)
                q12, q11, q22 = w2 * e12 + b2, w2 * e11 + b2, w2 * e22 + b2
                theta = q12 + w2 * ed * theta
            ntk[i, j], nngp[i, j] = theta, q12
    return ntk, nngp


def gradient_flow(theta, theta_test, y, f0, f0_test, t, lr):
    """Lee et al. (2019) eq. 9-10 with dense matrix exponentials: returns (train, test) at time t."""
    decay = scipy.linalg.expm(-lr * theta * t)
    train = y + decay @ (f0 - y)
    test = f0_test + theta_test @ np.linalg.solve(theta, (np.eye(len(theta)) - decay) @ (y - f0))
    return train, test


def effective_rank(matrix) -> float:
    """exp of the entropy of the normalised eigenvalues (Roy & Vetterli 2007)."""
    lam = np.clip(np.linalg.eigvalsh(matrix), 0.0, None)
    p = lam / lam.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))
