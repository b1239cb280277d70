"""convexnn.linalg: CG against a direct solve, Nyström's error against the SVD, block Jacobi against solves."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convexnn import linalg


def _spd(rng, m: int, cond: float) -> np.ndarray:
    Q, _ = np.linalg.qr(rng.normal(size=(m, m)))
    return (Q * np.geomspace(1.0, 1.0 / cond, m)) @ Q.T


@pytest.mark.parametrize("precondition", [False, True])
def test_pcg_matches_a_direct_solve(precondition):
    rng = np.random.default_rng(0)
    H = _spd(rng, 30, 1e4)
    b = rng.normal(size=30)
    M = (lambda r: r / jnp.diag(jnp.asarray(H))) if precondition else None
    x, k = linalg.pcg(lambda v: jnp.asarray(H) @ v, jnp.asarray(b), 1e-12, 500, M)
    np.testing.assert_allclose(np.asarray(x), np.linalg.solve(H, b), rtol=1e-8)
    assert 0 < int(k) <= 500


def test_pcg_stops_at_its_tolerance_and_budget():
    rng = np.random.default_rng(1)
    H, b = _spd(rng, 40, 1e6), rng.normal(size=40)
    x, _ = linalg.pcg(lambda v: jnp.asarray(H) @ v, jnp.asarray(b), 1e-2, 10_000)
    r = np.linalg.norm(b - H @ np.asarray(x))
    assert r <= 1e-2 * np.linalg.norm(b)
    _, k = linalg.pcg(lambda v: jnp.asarray(H) @ v, jnp.asarray(b), 1e-14, 3)
    assert int(k) == 3


def test_pcg_returns_zero_for_zero_rhs_and_stops_at_negative_curvature():
    x, k = linalg.pcg(lambda v: v, jnp.zeros(5), 1e-8, 10)
    assert int(k) == 0 and not np.any(np.asarray(x))
    x, k = linalg.pcg(lambda v: -v, jnp.ones(5), 1e-8, 10)  # not PSD: the first step is refused
    assert int(k) == 1 and not np.any(np.asarray(x))


def test_nystrom_error_against_the_svd():
    """For a PSD matrix of rapidly decaying spectrum, the rank-r sketch's error is near the best rank-r error
    (the (r+1)-th eigenvalue, from the SVD), and its factor has orthonormal rows."""
    rng = np.random.default_rng(2)
    m, r = 60, 12
    Q, _ = np.linalg.qr(rng.normal(size=(m, m)))
    eigs = 0.5 ** np.arange(m)
    A = (Q * eigs) @ Q.T
    U, lam = linalg.nystrom(lambda v: jnp.asarray(A) @ v, (m,), jnp.float64, r, jax.random.key(0))
    U, lam = np.asarray(U), np.asarray(lam)
    approx = (U.T * lam) @ U
    best = np.linalg.svd(A, compute_uv=False)[r]  # the best rank-r error in the spectral norm
    error = np.linalg.norm(A - approx, 2)
    assert best <= error <= 10 * best
    np.testing.assert_allclose(U @ U.T, np.eye(r), atol=1e-10)
    assert np.all(lam >= 0)


def test_nystrom_is_exact_on_a_low_rank_operator():
    rng = np.random.default_rng(3)
    B = rng.normal(size=(4, 20))
    A = B.T @ B  # rank 4
    U, lam = linalg.nystrom(lambda v: jnp.asarray(A) @ v, (20,), jnp.float64, 6, jax.random.key(1))
    approx = (np.asarray(U).T * np.asarray(lam)) @ np.asarray(U)
    np.testing.assert_allclose(approx, A, atol=1e-8 * np.linalg.norm(A))


def test_block_jacobi_inverts_each_block_and_leaves_the_others():
    rng = np.random.default_rng(4)
    q, c, d = 3, 2, 4
    B = np.stack([np.stack([_spd(rng, d, 50.0) for _ in range(c)]) for _ in range(q)])
    on = np.ones((q, c), bool)
    on[1, 0] = False
    v = rng.normal(size=(q, d, c))
    out = np.asarray(linalg.block_jacobi(jnp.asarray(B), jnp.asarray(on))(jnp.asarray(v)))
    for i in range(q):
        for k in range(c):
            expected = np.linalg.solve(B[i, k], v[i, :, k]) if on[i, k] else v[i, :, k]
            np.testing.assert_allclose(out[i, :, k], expected, rtol=1e-10, atol=1e-12)
