"""NumPy float64 references for the optimizers and StableMax, written from the papers.

diffGrad: Dubey et al. 2020, eqs. (11)-(20), in the order of the authors' diffGrad_v2.py.
LAMB: You et al. 2020, Algorithm 2 with phi(z) = z, ratio 1 at zero norms.
⊥Grad: Prieto et al. 2025, eq. (12), per tensor, rescaled to ||g|| as in their OrthoGrad code.
Adam/AdamW: Kingma & Ba 2015; Loshchilov & Hutter 2019 (decay multiplied by the learning rate).
StableMax: Prieto et al. 2025, Def. 4.
Each optimizer is a class with `step(params, grads) -> new params` over dicts of arrays.
"""

from __future__ import annotations

import numpy as np


class DiffGrad:
    def __init__(self, lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False):
        self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps
        self.wd, self.decoupled = weight_decay, decoupled
        self.t, self.m, self.v, self.prev = 0, {}, {}, {}

    def step(self, params, grads):
        self.t += 1
        out = {}
        for k, p in params.items():
            g = grads[k] + (0.0 if self.decoupled else self.wd * p)
            m = self.m.get(k, np.zeros_like(p))
            v = self.v.get(k, np.zeros_like(p))
            prev = self.prev.get(k, np.zeros_like(p))
            m = self.b1 * m + (1 - self.b1) * g
            v = self.b2 * v + (1 - self.b2) * np.abs(g) ** 2  # |g|^2: complex g as optax does
            xi = 1.0 / (1.0 + np.exp(-np.abs(prev - g)))
            step_size = self.lr * np.sqrt(1 - self.b2**self.t) / (1 - self.b1**self.t)
            update = step_size * xi * m / (np.sqrt(v) + self.eps)
            if self.decoupled:
                update = update + self.lr * self.wd * p
            out[k] = p - update
            self.m[k], self.v[k], self.prev[k] = m, v, g
        return out


class AdamW:
    def __init__(self, lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0):
        self.lr, self.b1, self.b2, self.eps, self.wd = lr, b1, b2, eps, weight_decay
        self.t, self.m, self.v = 0, {}, {}

    def direction(self, k, g):
        """Bias-corrected m_hat / (sqrt(v_hat) + eps) for leaf k, updating the moments."""
        m = self.b1 * self.m.get(k, np.zeros_like(g)) + (1 - self.b1) * g
        v = self.b2 * self.v.get(k, np.zeros_like(g)) + (1 - self.b2) * g * g
        self.m[k], self.v[k] = m, v
        m_hat = m / (1 - self.b1**self.t)
        v_hat = v / (1 - self.b2**self.t)
        return m_hat / (np.sqrt(v_hat) + self.eps)

    def step(self, params, grads):
        self.t += 1
        return {k: p - self.lr * (self.direction(k, grads[k]) + self.wd * p) for k, p in params.items()}


class Lamb(AdamW):
    def __init__(self, lr, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.0, adapt=None, decay=None):
        super().__init__(lr, b1, b2, eps, weight_decay)
        self.adapt = adapt or {}  # leaf -> False to skip the trust ratio
        self.decay = decay or {}  # leaf -> False to skip the decay

    def step(self, params, grads):
        self.t += 1
        out = {}
        for k, p in params.items():
            r = self.direction(k, grads[k]) + (self.wd * p if self.decay.get(k, True) else 0.0)
            w_norm, r_norm = np.linalg.norm(p), np.linalg.norm(r)
            ratio = w_norm / r_norm if (w_norm > 0 and r_norm > 0) else 1.0
            out[k] = p - self.lr * (ratio if self.adapt.get(k, True) else 1.0) * r
        return out


def perp(g, w, renormalize=True):
    """eq. (12) on one tensor, flattened, in float64; rescaled to ||g|| when renormalize, exactly
    as the authors' OrthoGrad does (eps 1e-30 in both divisions, no cap)."""
    gf, wf = np.ravel(g).astype(np.float64), np.ravel(w).astype(np.float64)
    g_perp = gf - (wf @ gf) / (wf @ wf + 1e-30) * wf
    if renormalize:
        g_perp = g_perp * np.linalg.norm(gf) / (np.linalg.norm(g_perp) + 1e-30)
    return g_perp.reshape(np.shape(g))


class PerpAdamW(AdamW):
    def __init__(self, lr, renormalize=True, **kwargs):
        super().__init__(lr, **kwargs)
        self.renormalize = renormalize

    def step(self, params, grads):
        projected = {k: perp(grads[k], params[k], self.renormalize) for k in params}
        return super().step(params, projected)


def stablemax(x, axis=-1):
    s = np.where(x >= 0, x + 1.0, 1.0 / (1.0 - np.minimum(x, 0.0)))
    return s / s.sum(axis=axis, keepdims=True)
