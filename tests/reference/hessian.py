"""NumPy float64 references for the Hessian probes, written from the papers' equations.

- Lanczos with full reorthogonalisation (Lanczos 1950; Paige 1976), textbook three-term
  recurrence plus Gram-Schmidt against all previous vectors.
- Gauss quadrature nodes/weights of a tridiagonal matrix (Golub & Welsch 1969).
- Hutchinson's per-sample variance for Rademacher probes (Hutchinson 1989; Avron & Toledo 2011).
- Hutch++ (Meyer, Musco, Musco & Woodruff 2021, Alg. 1) for given probe matrices.
- SLQ Gaussian-broadened density (Ghorbani, Krishnan & Xiao 2019, eq. 6) with PyHessian's variance rule.
- GGN ``J^T H_l J`` with the closed-form softmax cross-entropy output Hessian ``diag(p) - p p^T``.
- Marchenko-Pastur upper edge for sample covariances (Marchenko & Pastur 1967).
"""

from __future__ import annotations

import numpy as np


def lanczos(a: np.ndarray, v0: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """m Lanczos steps on the symmetric matrix ``a``: returns (alphas, betas, V) with V of shape (m, n)."""
    n = a.shape[0]
    basis = np.zeros((m, n))
    alphas, betas = np.zeros(m), np.zeros(m)
    v = v0 / np.linalg.norm(v0)
    for j in range(m):
        basis[j] = v
        w = a @ v
        alphas[j] = w @ v
        w = w - alphas[j] * v - (betas[j - 1] * basis[j - 1] if j > 0 else 0.0)
        for _ in range(2):
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        betas[j] = np.linalg.norm(w)
        v = w / betas[j]
    return alphas, betas, basis


def gauss_quadrature(alphas: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodes (eigenvalues of T) and weights (squared first eigenvector components)."""
    t = np.diag(alphas) + np.diag(betas[:-1], 1) + np.diag(betas[:-1], -1)
    theta, s = np.linalg.eigh(t)
    return theta, s[0] ** 2


def hutchinson_rademacher_std(h: np.ndarray) -> float:
    """Standard deviation of one Rademacher sample z^T H z: sqrt(2 (||H||_F^2 - sum_i H_ii^2))."""
    return float(np.sqrt(2.0 * (np.sum(h**2) - np.sum(np.diag(h) ** 2))))


def hutch_plus_plus(h: np.ndarray, s: np.ndarray, g: np.ndarray) -> float:
    """Hutch++ with sketch ``s`` (n, k) and probes ``g`` (n, l): tr(Q^T H Q) + tr(G^T P H P G) / l."""
    q, _ = np.linalg.qr(h @ s)
    proj = np.eye(h.shape[0]) - q @ q.T
    return float(np.trace(q.T @ h @ q) + np.trace(g.T @ proj @ h @ proj @ g) / g.shape[1])


def slq_density(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, sigma_squared: float) -> np.ndarray:
    """phi(t) = mean_runs sum_k w_k N(t; theta_k, var), var = sigma_squared * max(1, range); unit integral."""
    var = sigma_squared * max(1.0, nodes.max() - nodes.min())
    gauss = np.exp(-((grid[:, None] - nodes.reshape(-1)[None]) ** 2) / (2 * var)) / np.sqrt(2 * np.pi * var)
    density = gauss @ weights.reshape(-1) / nodes.shape[0]
    return density / np.trapezoid(density, grid)


def softmax_ce_ggn(jacobian: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """GGN of mean softmax cross-entropy: (1/N) sum_i J_i^T (diag(p_i) - p_i p_i^T) J_i.

    ``jacobian``: (N, C, P) Jacobian of the logits; ``logits``: (N, C).
    """
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    h_out = np.einsum("nc,cd->ncd", p, np.eye(p.shape[1])) - np.einsum("nc,nd->ncd", p, p)
    return np.einsum("ncp,ncd,ndq->pq", jacobian, h_out, jacobian) / logits.shape[0]


def empirical_fisher(per_example_grads: np.ndarray) -> np.ndarray:
    """(1/N) sum_i g_i g_i^T for per-example gradients (N, P)."""
    return per_example_grads.T @ per_example_grads / per_example_grads.shape[0]


def marchenko_pastur_edge(variance: float, dimension: int, samples: int) -> float:
    """Upper edge variance * (1 + sqrt(P/B))^2 of the spectrum of X^T X / B, X with i.i.d. entries."""
    return variance * (1.0 + np.sqrt(dimension / samples)) ** 2


def dense_matrix(matvec, like) -> np.ndarray:
    """A matrix-free operator on pytrees as a dense ``(P, P)`` float64 matrix, one column per basis
    vector, in ``ravel_pytree`` order (for small tests only)."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    flat, unravel = ravel_pytree(like)
    columns = jax.vmap(lambda e: ravel_pytree(matvec(unravel(e)))[0])(jnp.eye(flat.size, dtype=flat.dtype))
    return np.asarray(columns).T
