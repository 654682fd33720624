"""Lanczos with full reorthogonalisation on pytree vectors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.probes import _operators as ops
from jaxdl.probes import lanczos as lz
from tests.reference import hessian as ref


def _split(x):
    """A flat vector as a pytree of two leaves with different shapes."""
    return {"a": x[:6].reshape(2, 3), "b": x[6:]}


def _join(t):
    return jnp.concatenate([t["a"].reshape(-1), t["b"]])


def _operator(a):
    a = jnp.asarray(a)
    return lambda v: _split(a @ _join(v))


@pytest.fixture
def sym(rng):
    a = rng.normal(size=(24, 24))
    return (a + a.T) / 2


def test_matches_numpy_reference_recurrence(x64, sym, rng):
    v0 = rng.normal(size=24)
    res = jax.jit(lambda v: lz.lanczos(_operator(sym), v, 12))(_split(jnp.asarray(v0)))
    alphas, betas, basis = ref.lanczos(sym, v0, 12)
    np.testing.assert_allclose(res.alphas, alphas, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.betas, betas, rtol=1e-10, atol=1e-12)
    got_basis = jax.vmap(_join)(res.basis)[:12]
    np.testing.assert_allclose(got_basis, basis, atol=1e-10)


def test_gauss_quadrature_moments_exact(x64, sym, rng):
    """sum_k w_k theta_k^p = v^T A^p v for p < 2m (Golub-Meurant), from our tridiagonal."""
    v0 = rng.normal(size=24)
    v0 /= np.linalg.norm(v0)
    m = 5
    res = lz.lanczos(_operator(sym), _split(jnp.asarray(v0)), m)
    theta, s = np.linalg.eigh(np.asarray(lz.tridiagonal(res.alphas, res.betas)))
    for p in range(2 * m):
        exact = v0 @ np.linalg.matrix_power(sym, p) @ v0
        np.testing.assert_allclose(np.sum(s[0] ** 2 * theta**p), exact, rtol=1e-9, atol=1e-9)


def test_float32_top_eigenvalues_of_diagonal():
    """probes.md §6.7: diag(1..n) top eigenvalues to ~1e-6 in float32 with full reorth."""
    n = 200
    diag = jnp.arange(1.0, n + 1.0)
    matvec = lambda v: {"w": diag * v["w"]}
    v0 = {"w": jax.random.normal(jax.random.key(1), (n,))}
    res = jax.jit(lambda v: lz.lanczos(matvec, v, 80))(v0)
    pairs = lz.ritz_pairs(res.alphas, res.betas, res.num_steps, k=5)
    np.testing.assert_allclose(pairs.values, [200.0, 199.0, 198.0, 197.0, 196.0], rtol=2e-6)


def test_basis_stays_orthonormal_in_float32(rng):
    """Without reorthogonalisation the basis of this operator loses orthogonality (ghosts)."""
    eig = np.concatenate([np.linspace(0.0, 1.0, 300), [50.0, 60.0]])
    q, _ = np.linalg.qr(rng.normal(size=(302, 302)))
    a = jnp.asarray((q * eig) @ q.T, jnp.float32)
    with jax.default_matmul_precision("highest"):
        res = jax.jit(lambda v: lz.lanczos(lambda x: {"w": a @ x["w"]}, v, 60))({"w": jnp.ones(302)})
    v = np.asarray(res.basis["w"][:60], np.float64)
    assert np.max(np.abs(v @ v.T - np.eye(60))) < 1e-5
    pairs = lz.ritz_pairs(res.alphas, res.betas, res.num_steps, k=3)
    np.testing.assert_allclose(pairs.values[:2], [60.0, 50.0], rtol=1e-6)
    assert pairs.values[2] < 1.0 + 1e-4  # no ghost copy of 60 or 50


def test_breakdown_restarts_and_finds_whole_spectrum(x64):
    """v0 inside a 3-dimensional invariant subspace: beta hits 0, the restart continues."""
    diag = jnp.arange(1.0, 11.0)
    v0 = {"w": jnp.zeros(10).at[:3].set(1.0)}
    res = jax.jit(lambda v: lz.lanczos(lambda u: {"w": diag * u["w"]}, v, 10))(v0)
    assert float(res.betas[2]) == 0.0
    pairs = lz.ritz_pairs(res.alphas, res.betas, res.num_steps, k=10)
    np.testing.assert_allclose(pairs.values, np.arange(10.0, 0.0, -1.0), rtol=1e-10)


def test_steps_clipped_to_dimension(x64, sym, rng):
    res = lz.lanczos(_operator(sym), _split(jnp.asarray(rng.normal(size=24))), 100)
    assert res.alphas.shape == (24,)
    pairs = lz.ritz_pairs(res.alphas, res.betas, res.num_steps, k=24, which="smallest")
    np.testing.assert_allclose(pairs.values, np.linalg.eigvalsh(sym), atol=1e-10)


def test_tolerance_stops_early_with_small_residual(x64, sym, rng):
    v0 = _split(jnp.asarray(rng.normal(size=24)))
    res = jax.jit(lambda v: lz.lanczos(_operator(sym), v, 24, tol=1e-6, k=2))(v0)
    assert int(res.num_steps) < 24
    pairs = lz.ritz_pairs(res.alphas, res.betas, res.num_steps, k=2)
    assert np.all(pairs.residuals <= 1e-6 * np.abs(pairs.values))
    np.testing.assert_allclose(pairs.values, np.linalg.eigvalsh(sym)[::-1][:2], rtol=1e-9)
    # Ritz vectors: unit norm, and A y - theta y equals the reported residual.
    y = lz.ritz_vectors(res.basis, pairs.vectors)
    for i in range(2):
        yi = _join(ops.block_get(y, i))
        np.testing.assert_allclose(jnp.linalg.norm(yi), 1.0, rtol=1e-10)
        r = jnp.linalg.norm(sym @ yi - pairs.values[i] * yi)
        np.testing.assert_allclose(r, pairs.residuals[i], rtol=1e-5, atol=1e-13)


def test_ritz_pairs_selection_rules(x64):
    alphas = jnp.array([-5.0, 1.0, 3.0, 0.0])
    betas = jnp.zeros(4)
    assert lz.ritz_pairs(alphas, betas, 4, 2, "algebraic").values.tolist() == [3.0, 1.0]
    assert lz.ritz_pairs(alphas, betas, 4, 2, "magnitude").values.tolist() == [-5.0, 3.0]
    assert lz.ritz_pairs(alphas, betas, 4, 2, "smallest").values.tolist() == [-5.0, 0.0]
    # only the first two rows active, under jit with a traced size
    vals = jax.jit(lambda n: lz.ritz_pairs(alphas, betas, n, 2, "algebraic").values)(2)
    assert vals.tolist() == [1.0, -5.0]


def test_vmap_over_start_vectors(x64, sym, rng):
    starts = jnp.asarray(rng.normal(size=(3, 24)))
    run = lambda v: lz.lanczos(_operator(sym), _split(v), 8).alphas
    batched = jax.vmap(run)(starts)
    singles = jax.lax.map(run, starts)
    np.testing.assert_allclose(batched, singles, rtol=1e-12)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_steps"):
        lz.lanczos(lambda v: v, {"w": jnp.ones(3)}, 0)
    with pytest.raises(ValueError, match="which"):
        lz.lanczos(lambda v: v, {"w": jnp.ones(3)}, 2, which="largest")
    with pytest.raises(TypeError, match="floating-point"):
        lz.lanczos(lambda v: v, {"w": jnp.ones(3, jnp.int32)}, 2)


def test_largest_ritz_pair_matches_numpy_eigh(x64, rng):
    """Random tridiagonals (one split by a zero beta, a tight top cluster, m = 1) against LAPACK."""
    pair = jax.jit(lz.largest_ritz_pair)
    cases = []
    for m in (1, 20):
        alphas, betas = rng.normal(size=m), np.abs(rng.normal(size=m))
        betas[m // 2] = 0.0  # a breakdown: T block diagonal
        cases.append((alphas, betas))
    cases.append((np.array([1.0, 5.0, 5.0 + 1e-7, -3.0]), np.zeros(4)))  # top gap 1e-7
    for alphas, betas in cases:
        t = np.asarray(lz.tridiagonal(jnp.asarray(alphas), jnp.asarray(betas)))
        values, vectors = np.linalg.eigh(t)
        value, vector = pair(jnp.asarray(alphas), jnp.asarray(betas))
        np.testing.assert_allclose(value, values[-1], rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(np.linalg.norm(vector), 1.0, rtol=1e-13)
        # an eigenvector of the top eigenvalue (inside the cluster when the gap is below rounding)
        np.testing.assert_allclose(t @ vector, values[-1] * vector, atol=1e-6 * np.abs(values).max())
    value, vector = pair(jnp.zeros(4), jnp.zeros(4))  # T = 0: eigenvalue 0, any unit vector
    assert float(value) == 0.0 and float(jnp.linalg.norm(vector)) == 1.0


def test_largest_ritz_pair_squarings_reach_float32_rounding():
    """The Rayleigh-quotient error after n squarings peaks at the relative gap 1 / 2^(n+1)
    (g (1-g)^(2^(n+1)) at most 1 / (e 2^(n+1))). The dtype's default n puts that gap below float32
    resolution; at the worst gap of 12 squarings (the former fixed count), which err there by
    ~1e-4 relative, the default is exact to rounding."""
    m = 20
    n = lz._default_squarings(m, jnp.float32)
    assert 2.0 / 2.0 ** (n + 1) < np.finfo(np.float32).eps  # lambda_max - lo = 2 below
    gap = 2.0 / 2.0**13
    alphas, betas = np.zeros(m, np.float32), np.zeros(m, np.float32)
    alphas[:3] = [1.0 - gap / 2, 1.0 - gap / 2, -1.0]  # [[a, b], [b, a]]: eigenvalues 1 and 1 - gap,
    betas[0] = gap / 2  # eigenvectors (1, ±1) / sqrt(2), so every column of B^(2^n) mixes them
    pair = jax.jit(lz.largest_ritz_pair, static_argnames="squarings")
    value, _ = pair(jnp.asarray(alphas), jnp.asarray(betas))
    assert abs(float(value) - 1.0) <= 2 * np.finfo(np.float32).eps
    coarse, _ = pair(jnp.asarray(alphas), jnp.asarray(betas), squarings=12)
    assert 2e-5 < 1.0 - float(coarse) < 1e-4


def test_wanted_pairs_for_one_pair_equal_eigh_route_with_traced_size(x64, sym, rng):
    """k = 1 by squaring (largest and smallest) equals ritz_pairs (eigh) on a leading block, under jit."""
    res = jax.jit(lambda v: lz.lanczos(_operator(sym), v, 12))(_split(jnp.asarray(rng.normal(size=24))))
    for which in ("algebraic", "smallest"):
        both = jax.jit(
            lambda n, w=which: (
                lz._wanted_pairs(res.alphas, res.betas, n, 1, w),
                lz.ritz_pairs(res.alphas, res.betas, n, 1, w),
            )
        )
        for n in (1, 5, 12):
            fast, slow = both(n)
            np.testing.assert_allclose(fast.values, slow.values, rtol=1e-12)
            np.testing.assert_allclose(np.abs(fast.vectors), np.abs(slow.vectors), atol=1e-7)
            np.testing.assert_allclose(fast.residuals, slow.residuals, rtol=1e-6, atol=1e-12)
            assert not np.any(fast.vectors[n:])  # zero past the active block


def test_two_breakdowns_restart_in_new_directions(x64):
    """diag(1, 1, 1, 2, 2, 2): each Krylov space has dimension 2, so steps 2 and 4 break down; the
    second restart needs a direction outside the first one's span (a cyclic shift of the hash)."""
    diag = jnp.array([1.0, 1.0, 1.0, 2.0, 2.0, 2.0])
    res = jax.jit(lambda v: lz.lanczos(lambda u: {"w": diag * u["w"]}, v, 6))({"w": jnp.arange(1.0, 7.0)})
    assert res.betas[1] == 0.0 and res.betas[3] == 0.0
    basis = np.asarray(res.basis["w"][:6])
    np.testing.assert_allclose(basis @ basis.T, np.eye(6), atol=1e-12)
    np.testing.assert_allclose(
        np.linalg.eigvalsh(lz.tridiagonal(res.alphas, res.betas)), [1.0] * 3 + [2.0] * 3
    )


def test_mixed_dtype_leaves_keep_their_dtypes():
    """The iteration runs on the raveled vector at the widest dtype; the basis leaves keep theirs."""
    v0 = {"a": jnp.ones(3, jnp.bfloat16), "b": jnp.arange(1.0, 4.0, dtype=jnp.float32)}
    res = jax.jit(lambda v: lz.lanczos(lambda u: jax.tree.map(lambda x: 2 * x, u), v, 1))(v0)
    assert res.basis["a"].dtype == jnp.bfloat16 and res.basis["b"].dtype == jnp.float32
    assert res.alphas.dtype == jnp.float32
    # v0 / |v0| rounded to bfloat16 (relative 2^-9) on the "a" leaf, which carries 3/17 of |v0|^2
    np.testing.assert_allclose(res.alphas, [2.0], rtol=2e-3)


def test_unrolled_equals_loop_and_first_product(x64, sym, rng):
    """The straight-line form (the GPU default for short runs), the fori_loop and a precomputed
    first product give the same recurrence."""
    v0 = jnp.asarray(rng.normal(size=24))
    a = jnp.asarray(sym)
    run = jax.jit(
        lambda v, unroll, first: lz._lanczos_flat(lambda x: a @ x, v, 6, unroll=unroll, first_product=first),
        static_argnums=1,
    )
    loop = run(v0, False, None)
    for unroll, first in ((True, None), (True, a @ v0), (False, a @ v0)):
        res = run(v0, unroll, first)
        np.testing.assert_allclose(res.alphas, loop.alphas, rtol=1e-12)
        np.testing.assert_allclose(res.betas, loop.betas, rtol=1e-12)
        np.testing.assert_allclose(res.basis, loop.basis, atol=1e-12)
