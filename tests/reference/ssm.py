"""NumPy float64 references for the state-space layers, written from the papers' equations.

HiPPO-LegS (Gu et al. 2020, eq. (3)); S4D inits (Gu et al. 2022, Sec. 4); ZOH and bilinear
discretisation; the SSM kernel and recurrence by explicit loops; transfer functions by dense solves.
"""

from __future__ import annotations

import numpy as np


def hippo_legs(N):
    A = np.zeros((N, N))
    for n in range(N):
        for k in range(N):
            if n > k:
                A[n, k] = -np.sqrt(2 * n + 1) * np.sqrt(2 * k + 1)
            elif n == k:
                A[n, k] = -(n + 1)
    return A, np.sqrt(2 * np.arange(N) + 1.0)


def legs_normal_part(N):
    """S = A + P P^T with P_n = sqrt(n + 1/2) (S4 paper, Sec. 3.3)."""
    A, _ = hippo_legs(N)
    P = np.sqrt(np.arange(N) + 0.5)
    return A + np.outer(P, P), P


def s4d_modes(kind, N):
    """(Lambda, B) of the S4D inits with N/2 modes, Lambda with positive imaginary part (S4D Table 1)."""
    n = np.arange(N // 2)
    if kind == "lin":
        return -0.5 + 1j * np.pi * n, np.ones(N // 2)
    if kind == "inv":
        return -0.5 + 1j * N / np.pi * (N / (2 * n + 1) - 1), np.ones(N // 2)
    if kind == "real":
        return -(n + 1.0) + 0j, np.ones(N // 2)
    # legs: non-Hermitian eig of the normal part (an independent route from eigh of -iS).
    S, _ = legs_normal_part(N)
    lam, V = np.linalg.eig(S)
    V = V / np.linalg.norm(V, axis=0)
    keep = lam.imag > 0
    _, B = hippo_legs(N)
    return lam[keep], np.linalg.solve(V, B)[keep]


def discretize(Lambda, B, step, method):
    if method == "zoh":
        Lambda_bar = np.exp(step * Lambda)
        return Lambda_bar, (Lambda_bar - 1) / Lambda * B
    Lambda_bar = (1 + step * Lambda / 2) / (1 - step * Lambda / 2)
    return Lambda_bar, step / (1 - step * Lambda / 2) * B


def kernel(Lambda, B, C, step, L, method="zoh"):
    """K[h, l] = 2 Re sum_n C[h,n] B_bar[h,n] Lambda_bar[h,n]^l by an explicit loop over l."""
    Lambda_bar, B_bar = discretize(Lambda, B, step[:, None], method)
    K = np.zeros((Lambda.shape[0], L))
    power = np.ones_like(Lambda_bar)
    for position in range(L):
        K[:, position] = 2 * np.real(np.sum(C * B_bar * power, axis=-1))
        power = power * Lambda_bar
    return K


def causal_conv(u, K):
    """y[t, h] = sum_{s<=t} K[h, t-s] u[s, h]."""
    L, H = u.shape
    y = np.zeros((L, H))
    for t in range(L):
        for s in range(t + 1):
            y[t] += K[:, t - s] * u[s]
    return y


def recurrence(a, b):
    """x_k = a_k x_{k-1} + b_k, x_{-1} = 0, by a loop over k (a broadcast to b's shape)."""
    a = np.broadcast_to(a, b.shape)
    x = np.zeros(b.shape[1:], dtype=np.result_type(a, b))
    out = []
    for k in range(b.shape[0]):
        x = a[k] * x + b[k]
        out.append(x)
    return np.stack(out)


def transfer(A, B, C, omega):
    """G(i omega) = C (i omega I - A)^{-1} B for a dense A."""
    N = A.shape[0]
    return np.array([C @ np.linalg.solve(1j * w * np.eye(N) - A, B) for w in omega])


def listops_value(tokens):
    """Value of a ListOps token list by recursive descent (LRA grammar, Tay et al. 2021)."""
    ops = {"[MIN": min, "[MAX": max, "[MED": lambda a: int(np.median(a)), "[SM": lambda a: sum(a) % 10}

    def parse(i):
        token = tokens[i]
        if token not in ops:
            return int(token), i + 1
        args, i = [], i + 1
        while tokens[i] != "]":
            value, i = parse(i)
            args.append(value)
        return ops[token](args), i + 1

    value, end = parse(0)
    assert end == len(tokens)
    return value
