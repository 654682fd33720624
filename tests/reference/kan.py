"""NumPy float64 references for the KAN family, written from the papers' equations with explicit loops.

- KAN (Liu et al. 2024) Sec. 2.2: Cox–de Boor B-splines, phi(x) = w_b silu(x) + sum_m c_m B_m(x), grid update.
- ReLU-KAN (Qiu et al. 2024): R_i(x) = [ReLU(e_i - x) ReLU(x - s_i)]^2 16 / (e_i - s_i)^4.
- AF-KAN (Ta & Tran 2025): f(act(x - s_i), act(e_i - x)), L2MM, global attention, LayerNorm, linear.
- FastKAN: exp(-((x - u)/h)^2). ChebyKAN: cos(n arccos(tanh x)). FourierKAN: cos(kx), sin(kx).
- KAT (Yang & Wang 2025): F(x) = sum a_i x^i / (1 + sum |b_q| |x|^q), groups of channels.
"""

from __future__ import annotations

import math

import numpy as np


def silu(x):
    return x / (1.0 + np.exp(-x))


def bspline(x: float, knots: np.ndarray, m: int, p: int) -> float:
    """B_{m,p}(x) by the Cox–de Boor recursion, 0/0 := 0."""
    if p == 0:
        return 1.0 if knots[m] <= x < knots[m + 1] else 0.0
    value = 0.0
    if knots[m + p] != knots[m]:
        value += (x - knots[m]) / (knots[m + p] - knots[m]) * bspline(x, knots, m, p - 1)
    if knots[m + p + 1] != knots[m + 1]:
        value += (knots[m + p + 1] - x) / (knots[m + p + 1] - knots[m + 1]) * bspline(x, knots, m + 1, p - 1)
    return value


def bspline_basis(x: np.ndarray, grid: np.ndarray, order: int) -> np.ndarray:
    """x (B, D), grid (D, K) -> (B, D, K - order - 1)."""
    batch, dims = x.shape
    count = grid.shape[1] - order - 1
    out = np.zeros((batch, dims, count))
    for b in range(batch):
        for d in range(dims):
            for m in range(count):
                out[b, d, m] = bspline(x[b, d], grid[d], m, order)
    return out


def extended_uniform_grid(dims: int, grid_size: int, order: int, low: float, high: float) -> np.ndarray:
    step = (high - low) / grid_size
    knots = [low + step * i for i in range(-order, grid_size + order + 1)]
    return np.tile(np.array(knots), (dims, 1))


def kan_layer(x, grid, order, coef, base_weight, bias):
    """y_j = sum_d [w_b[d, j] silu(x_d) + sum_m coef[d, m, j] B_m(x_d)] + bias_j, one edge at a time."""
    basis = bspline_basis(x, grid, order)
    batch, dims = x.shape
    out = np.zeros((batch, coef.shape[2]))
    for b in range(batch):
        for j in range(coef.shape[2]):
            total = bias[j]
            for d in range(dims):
                total += base_weight[d, j] * silu(x[b, d]) + sum(
                    coef[d, m, j] * basis[b, d, m] for m in range(coef.shape[1])
                )
            out[b, j] = total
    return out


def quantile_grid(x: np.ndarray, grid_size: int, order: int, grid_eps: float) -> np.ndarray:
    """KAN grid update: grid_eps * uniform(min, max) + (1 - grid_eps) * samples at floor(B i / G), extended."""
    batch, dims = x.shape
    rows = []
    for d in range(dims):
        s = np.sort(x[:, d])
        adaptive = np.array([s[(batch * i) // grid_size] for i in range(grid_size)] + [s[-1]])
        uniform = np.array([s[0] + (s[-1] - s[0]) * i / grid_size for i in range(grid_size + 1)])
        interior = grid_eps * uniform + (1 - grid_eps) * adaptive
        step = (interior[-1] - interior[0]) / grid_size
        left = [interior[0] - step * i for i in range(order, 0, -1)]
        right = [interior[-1] + step * i for i in range(1, order + 1)]
        rows.append(np.array(left + list(interior) + right))
    return np.stack(rows)


def relu_kan_basis(x: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """x (B, D), starts/ends (D, M)."""
    out = np.zeros(x.shape + (starts.shape[1],))
    for b, d, i in np.ndindex(out.shape):
        s, e = starts[d, i], ends[d, i]
        out[b, d, i] = (max(e - x[b, d], 0.0) * max(x[b, d] - s, 0.0)) ** 2 * 16.0 / (e - s) ** 4
    return out


AF_COMBINATIONS = {
    "quad1": lambda a, b: (a * b) ** 2,
    "quad2": lambda a, b: a * b + a * a + b * b,
    "sum": lambda a, b: a + b,
    "prod": lambda a, b: a * b,
    "sum_prod": lambda a, b: a + b + a * b,
    "cubic1": lambda a, b: (a + b) * (a * a + b * b),
    "cubic2": lambda a, b: (a * b) ** 3,
}


def af_kan_basis(x, starts, ends, combination="quad1", act=silu):
    out = np.zeros(x.shape + (starts.shape[0],))
    for b, d, i in np.ndindex(out.shape):
        out[b, d, i] = AF_COMBINATIONS[combination](act(x[b, d] - starts[i]), act(ends[i] - x[b, d]))
    return out


def af_kan_layer(x, p, eps=1e-5):
    """AF-KAN, per example: L2 norm then min-max, global attention over D, LayerNorm, silu, linear."""
    feats = af_kan_basis(x, p["starts"], p["ends"])
    out = []
    for f in feats:  # f: (D, M)
        f = f / np.sqrt(np.sum(f**2))
        f = (f - f.min()) / (f.max() - f.min())
        scores = f @ p["score_kernel"] + p["score_bias"]
        scores = scores / max(p["temperature"], 1.0)
        w = np.exp(scores - scores.max())
        w = w / w.sum()
        z = f.sum(1) * w
        z = (z - z.mean()) / np.sqrt(z.var() + eps) * p["norm_scale"] + p["norm_bias"]
        out.append(silu(z) @ p["kernel"])
    return np.stack(out)


def rbf_basis(x, centers, width):
    out = np.zeros(x.shape + (centers.shape[1],))
    for b, d, m in np.ndindex(out.shape):
        out[b, d, m] = math.exp(-(((x[b, d] - centers[d, m]) / width) ** 2))
    return out


def chebyshev_basis(x, degree):
    out = np.zeros(x.shape + (degree + 1,))
    for b, d, n in np.ndindex(out.shape):
        out[b, d, n] = math.cos(n * math.acos(math.tanh(x[b, d])))
    return out


def fourier_basis(x, num_frequencies):
    out = np.zeros(x.shape + (2 * num_frequencies,))
    for b, d in np.ndindex(x.shape):
        for k in range(1, num_frequencies + 1):
            out[b, d, k - 1] = math.cos(k * x[b, d])
            out[b, d, num_frequencies + k - 1] = math.sin(k * x[b, d])
    return out


def rational(x: float, a: np.ndarray, b: np.ndarray) -> float:
    p = sum(a[i] * x**i for i in range(len(a)))
    q = 1.0 + sum(abs(b[q - 1]) * abs(x) ** q for q in range(1, len(b) + 1))
    return p / q


def group_rational(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x (B, D); a (g, m+1), b (g, n); channel c uses group c // (D / g)."""
    groups = a.shape[0]
    per_group = x.shape[1] // groups
    out = np.zeros_like(x)
    for i, c in np.ndindex(x.shape):
        g = c // per_group
        out[i, c] = rational(x[i, c], a[g], b[g])
    return out
