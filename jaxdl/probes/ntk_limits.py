"""The infinite-width NTK of a fully connected network, and what it predicts about training.

- `analytic_ntk`: the NNGP and NTK recursions of Jacot, Gabriel & Hongler (NeurIPS 2018, Thm. 1) and
  Lee et al. (ICLR 2018), with the arc-cosine expectations of Cho & Saul (2009) for ReLU and the
  closed form of Williams (1997) for erf, in the NTK parameterisation of neural-tangents' `stax`.
- `ntk_predict_mse`: the linearised gradient-flow solution of Lee et al. (NeurIPS 2019, eq. 9-10).
- `ntk_spectrum`: eigenvalues, condition number and effective rank (Roy & Vetterli 2007) of a kernel.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Kernels", "MsePrediction", "Spectrum", "analytic_ntk", "ntk_predict_mse", "ntk_spectrum"]


class Kernels(NamedTuple):
    """Infinite-width kernels between two batches, each of shape (N1, N2).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.probes.ntk_limits import analytic_ntk
      >>> k = analytic_ntk(jnp.array([[1.0, 0.0], [0.0, 1.0]]), depth=1, w_std=2**0.5)  # one ReLU layer
      >>> # on the diagonal Σ¹ = 1 and Θ¹ = Σ¹ + 2 · 1/2 · Θ⁰ = 2; off it both are 1/π
      >>> [[round(v, 4) for v in row] for row in k.nngp.tolist()]
      [[1.0, 0.3183], [0.3183, 1.0]]
      >>> [[round(v, 4) for v in row] for row in k.ntk.tolist()]
      [[2.0, 0.3183], [0.3183, 2.0]]
    """

    ntk: jax.Array
    nngp: jax.Array


def _relu_expectations(q11, q22, q12):
    """E[relu(u) relu(v)] and E[relu'(u) relu'(v)] for (u, v) ~ N(0, [[q11, q12], [q12, q22]])."""
    norm = jnp.sqrt(q11 * q22)
    # θ from the cosine ρ via arctan2(√((1−ρ)(1+ρ)), ρ): exact (θ = 0) where q12 = √(q11 q22), where an
    # FMA-fused q11·q22 − q12² would leave a round-off sine and shift θ by ~√ε.
    cos = jnp.clip(q12 / jnp.where(norm > 0, norm, 1.0), -1.0, 1.0)
    theta = jnp.arctan2(jnp.sqrt((1 - cos) * (1 + cos)), cos)
    nngp = norm * (jnp.sin(theta) + (jnp.pi - theta) * cos) / (2 * jnp.pi)
    dot = (jnp.pi - theta) / (2 * jnp.pi)
    return nngp, dot


def _erf_expectations(q11, q22, q12):
    """E[erf(u) erf(v)] and E[erf'(u) erf'(v)] for (u, v) ~ N(0, [[q11, q12], [q12, q22]])."""
    denominator = (1 + 2 * q11) * (1 + 2 * q22)
    nngp = (2 / jnp.pi) * jnp.arcsin(jnp.clip(2 * q12 / jnp.sqrt(denominator), -1.0, 1.0))
    dot = (4 / jnp.pi) / jnp.sqrt(jnp.maximum(denominator - 4 * q12**2, 0.0))
    return nngp, dot


_ACTIVATIONS = {"relu": _relu_expectations, "erf": _erf_expectations}


def analytic_ntk(
    x1: jax.Array,
    x2: jax.Array | None = None,
    *,
    depth: int,
    activation: str = "relu",
    w_std: float = 1.0,
    b_std: float = 0.0,
) -> Kernels:
    """Infinite-width NTK and NNGP of a fully connected network in the NTK parameterisation.

    The network has `depth` hidden layers and a linear readout, each layer
    z = (w_std / √n_in) W h + b_std b with W, b ~ N(0, 1) (Jacot et al. 2018, eq. 1). The kernels
    follow the recursion (Jacot et al. 2018, Thm. 1; Arora et al. 2019, eq. 5)

        Σ⁰ = w_std² x·x'/d + b_std²,  Θ⁰ = Σ⁰,
        Σˡ = w_std² E[φ(u)φ(v)] + b_std²,  Θˡ = Σˡ + w_std² E[φ'(u)φ'(v)] Θˡ⁻¹,

    with (u, v) ~ N(0, Σˡ⁻¹). It is the limit of `empirical_ntk` (default ``trace_axes=(-1,)``) of such
    a network as its width grows.

    Args:
      x1: inputs, shape (N1, d).
      x2: inputs, shape (N2, d); None means x1.
      depth: number of hidden layers (≥ 0).
      activation: "relu" (arc-cosine kernels, Cho & Saul 2009) or "erf" (Williams 1997).
      w_std, b_std: weight and bias standard deviations.

    Returns:
      `Kernels(ntk, nngp)`, each of shape (N1, N2).

    >>> import jax.numpy as jnp
    >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> analytic_ntk(x, depth=1, w_std=2**0.5).ntk  # orthogonal inputs: Θ = Σ¹ = 1/π off the diagonal
    Array([[2.        , 0.31830987],
           [0.31830987, 2.        ]], dtype=float32)
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    if not isinstance(depth, int) or depth < 0:
        raise ValueError(f"depth must be a non-negative int, got {depth!r}")
    symmetric = x2 is None
    x1 = jnp.asarray(x1)
    x2 = x1 if x2 is None else jnp.asarray(x2)
    if x1.ndim != 2 or x2.ndim != 2 or x1.shape[1] != x2.shape[1]:
        raise ValueError(f"x1 and x2 must have shapes (N1, d) and (N2, d), got {x1.shape} and {x2.shape}")
    expectations = _ACTIVATIONS[activation]
    w2, b2 = w_std**2, b_std**2
    dim = x1.shape[1]
    q12 = w2 * (x1 @ x2.T) / dim + b2
    q11 = w2 * jnp.sum(x1**2, axis=1) / dim + b2
    q22 = w2 * jnp.sum(x2**2, axis=1) / dim + b2
    if symmetric:  # exact diagonal: there θ = 0, and round-off in q11·q22 − q12² would make it ~1e-4
        q12 = q12.at[jnp.diag_indices(x1.shape[0])].set(q11)
    ntk = q12
    for _ in range(depth):
        cross, dot = expectations(q11[:, None], q22[None, :], q12)
        diag1, _ = expectations(q11, q11, q11)
        diag2, _ = expectations(q22, q22, q22)
        q12, q11, q22 = w2 * cross + b2, w2 * diag1 + b2, w2 * diag2 + b2
        ntk = q12 + w2 * dot * ntk
    return Kernels(ntk=ntk, nngp=q12)


class MsePrediction(NamedTuple):
    """Predicted outputs after training for time t: train (T, N, K) and test (T, M, K) (T only if t is a vector).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.probes.ntk_limits import ntk_predict_mse
      >>> theta, y, f0 = jnp.diag(jnp.array([2.0, 1.0])), jnp.array([[1.0], [-1.0]]), jnp.zeros((2, 1))
      >>> t = jnp.array([0.0, jnp.log(2.0)])  # e^{-Θt} = diag(1/4, 1/2) at the second time
      >>> theta_test, f0_test = jnp.array([[1.0, 0.0]]), jnp.zeros((1, 1))
      >>> pred = ntk_predict_mse(theta, theta_test, y, f0, f0_test, t, learning_rate=1.0)
      >>> pred.train.shape, pred.test.shape
      ((2, 2, 1), (2, 1, 1))
      >>> # train: y (1 - e^{-λt}) = (3/4, -1/2); test: Θ(x, X) Θ⁻¹ (I - e^{-Θt}) y = 1/2 · 3/4
      >>> [round(v, 4) for v in pred.train[1, :, 0].tolist()], round(pred.test[1, 0, 0].item(), 4)
      ([0.75, -0.5], 0.375)
    """

    train: jax.Array
    test: jax.Array | None


def _as_matrix(kernel, name):
    """A (N1, N2) kernel, or a full (N1, N2, K, K) one flattened to (N1·K, N2·K)."""
    kernel = jnp.asarray(kernel)
    if kernel.ndim == 2:
        return kernel
    if kernel.ndim == 4 and kernel.shape[2] == kernel.shape[3]:
        n1, n2, k, _ = kernel.shape
        return jnp.transpose(kernel, (0, 2, 1, 3)).reshape(n1 * k, n2 * k)
    raise ValueError(f"{name} must have shape (N1, N2) or (N1, N2, K, K), got {kernel.shape}")


def ntk_predict_mse(
    ntk_train_train: jax.Array,
    ntk_test_train: jax.Array | None,
    y_train: jax.Array,
    f0_train: jax.Array,
    f0_test: jax.Array | None,
    t: float | jax.Array,
    learning_rate: float,
    *,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
) -> MsePrediction:
    """Outputs of a network trained by gradient flow on MSE, from its NTK (Lee et al. 2019, eq. 9-10).

    For the loss ½‖f(X) − Y‖² (a sum, not a mean) and parameter flow dθ/dt = −η ∇L:

        f_t(X) = Y + e^{−ηΘt}(f_0(X) − Y),
        f_t(x) = f_0(x) + Θ(x, X) Θ⁻¹ (I − e^{−ηΘt}) (Y − f_0(X)),

    evaluated through one eigendecomposition Θ = V Λ Vᵀ, with (1 − e^{−ηλt})/λ → ηt as λ → 0 (so a
    singular Θ is fine). Eigenvalues below ``N · eps · λ_max`` count as zero: their residual never
    decays, and at ``t = inf`` (the fully trained network) the test prediction uses the pseudo-inverse
    Θ⁺ there, the limit of the finite-``t`` formula for a kernel J Jᵀ (whose null space carries no
    cross-kernel). ``diag_reg`` adds a ridge to Θ(X, X) as neural-tangents' ``gradient_descent_mse``
    does: ``diag_reg · tr(Θ)/N · I``, or ``diag_reg · I`` with ``diag_reg_absolute_scale=True``. For neural-tangents' mean loss 1/(2n)‖·‖² pass ``learning_rate = η / y.size``;
    for k steps of gradient descent with a small step η use t = k.

    Args:
      ntk_train_train: Θ(X, X), shape (N, N) (the same kernel for every output, as ``trace_axes=(-1,)``
        gives) or (N, N, K, K) (``trace_axes=()``).
      ntk_test_train: Θ(x, X), shape (M, N) or (M, N, K, K); None skips the test prediction.
      y_train: targets, shape (N, K) (or (N,)).
      f0_train, f0_test: outputs at initialisation, shapes like y_train and (M, K).
      t: training time ``>= 0``, a scalar or a vector of T times; ``jnp.inf`` gives the converged network.
      learning_rate: η, a positive number.
      diag_reg: ridge added to the diagonal of Θ(X, X) (``>= 0``).
      diag_reg_absolute_scale: whether ``diag_reg`` is absolute, or relative to the mean diagonal of Θ.

    Returns:
      `MsePrediction(train, test)`, each with a leading axis of size T when t is a vector.

    >>> import jax.numpy as jnp
    >>> theta = jnp.array([[2.0, 0.5], [0.5, 1.0]])
    >>> y, f0 = jnp.array([[1.0], [-1.0]]), jnp.zeros((2, 1))
    >>> ntk_predict_mse(theta, None, y, f0, None, t=1e4, learning_rate=1.0).train  # converges to y
    Array([[ 1.],
           [-1.]], dtype=float32)
    """
    if isinstance(learning_rate, int | float) and not (learning_rate > 0 and math.isfinite(learning_rate)):
        raise ValueError(f"learning_rate must be a positive finite number, got {learning_rate!r}")
    if not isinstance(diag_reg, int | float) or not (diag_reg >= 0 and math.isfinite(diag_reg)):
        raise ValueError(f"diag_reg must be a finite number >= 0, got {diag_reg!r}")
    if isinstance(t, int | float) and not t >= 0:
        raise ValueError(f"t must be >= 0 (or jnp.inf), got {t!r}")
    theta = _as_matrix(ntk_train_train, "ntk_train_train")
    y_train, f0_train = jnp.asarray(y_train), jnp.asarray(f0_train)
    if y_train.shape != f0_train.shape or y_train.ndim not in (1, 2):
        raise ValueError(
            f"y_train and f0_train must share a shape (N,) or (N, K), got {y_train.shape} and {f0_train.shape}"
        )
    full = jnp.ndim(ntk_train_train) == 4
    rows = y_train.size if full else y_train.shape[0]
    if theta.shape != (rows, rows):
        raise ValueError(
            f"ntk_train_train has shape {jnp.shape(ntk_train_train)}, which does not match y_train {y_train.shape}"
        )
    residual0 = (f0_train - y_train).reshape(rows, -1)  # (N·K, 1) for a full kernel, else (N, K)
    if diag_reg:
        scale = 1.0 if diag_reg_absolute_scale else jnp.trace(theta) / rows
        theta = theta + diag_reg * scale * jnp.eye(rows, dtype=theta.dtype)
    eigenvalues, vectors = jnp.linalg.eigh(theta)
    tiny = rows * jnp.finfo(eigenvalues.dtype).eps * jnp.max(jnp.abs(eigenvalues))
    positive = eigenvalues > tiny
    eigenvalues = jnp.where(positive, eigenvalues, 0.0)
    t = jnp.asarray(t, dtype=theta.dtype)[..., None]
    safe = jnp.where(positive, eigenvalues, 1.0)
    rate = learning_rate * safe * t  # (..., N); finite where the eigenvalue is zero
    decay = jnp.where(positive, jnp.exp(-rate), 1.0)
    # (1 − e^{−ηλt}) / λ, continuous at λ = 0 (ηt there), and 0 there at t = ∞ (the pseudo-inverse).
    gain = jnp.where(positive, -jnp.expm1(-rate) / safe, jnp.where(jnp.isinf(t), 0.0, learning_rate * t))
    projected = vectors.T @ residual0
    times = t.shape[:-1]
    train = y_train + (vectors @ (decay[..., :, None] * projected)).reshape(times + y_train.shape)
    if ntk_test_train is None:
        return MsePrediction(train, None)
    cross = _as_matrix(ntk_test_train, "ntk_test_train")
    f0_test = jnp.asarray(f0_test)
    if cross.shape[1] != rows:
        raise ValueError(
            f"ntk_test_train has shape {jnp.shape(ntk_test_train)}, which does not match y_train {y_train.shape}"
        )
    test = f0_test - (cross @ vectors @ (gain[..., :, None] * projected)).reshape(times + f0_test.shape)
    return MsePrediction(train, test)


class Spectrum(NamedTuple):
    """Eigenvalues (descending), condition number λ_max/λ_min and effective rank exp(H(λ/Σλ)).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxdl.probes.ntk_limits import ntk_spectrum
      >>> identity, rank_one = ntk_spectrum(jnp.eye(4)), ntk_spectrum(jnp.ones((4, 4)))
      >>> identity.eigenvalues.tolist(), float(identity.condition_number), float(identity.effective_rank)
      ([1.0, 1.0, 1.0, 1.0], 1.0, 4.0)
      >>> round(float(rank_one.eigenvalues[0]), 4), round(float(rank_one.effective_rank), 4)
      (4.0, 1.0)
    """

    eigenvalues: jax.Array
    condition_number: jax.Array
    effective_rank: jax.Array


def ntk_spectrum(theta: jax.Array) -> Spectrum:
    """Spectrum summaries of a symmetric PSD kernel matrix.

    The effective rank is the exponential of the Shannon entropy of the normalised eigenvalues
    (Roy & Vetterli, EUSIPCO 2007); it is N for a multiple of the identity and 1 for rank one.

    Args:
      theta: kernel of shape (N, N), or (N, N, K, K) which is flattened to (N·K, N·K).

    >>> import jax.numpy as jnp
    >>> s = ntk_spectrum(jnp.diag(jnp.array([4.0, 1.0])))
    >>> s.eigenvalues, s.condition_number
    (Array([4., 1.], dtype=float32), Array(4., dtype=float32))
    """
    matrix = _as_matrix(theta, "theta")
    if matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"theta must be square, got shape {jnp.shape(theta)}")
    eigenvalues = jnp.maximum(jnp.linalg.eigvalsh(matrix)[::-1], 0.0)  # round-off can dip below 0
    p = eigenvalues / jnp.sum(eigenvalues)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    # A non-finite kernel has no spectrum: NaN summaries rather than a plausible effective rank.
    finite = jnp.all(jnp.isfinite(matrix))
    nan = jnp.array(jnp.nan, eigenvalues.dtype)
    return Spectrum(
        jnp.where(finite, eigenvalues, nan),
        jnp.where(finite, eigenvalues[0] / eigenvalues[-1], nan),
        jnp.where(finite, jnp.exp(entropy), nan),
    )
