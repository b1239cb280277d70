"""Working sets of the exact ReLU program: the cone scores and their multipliers, and the solve against Clarabel."""

from __future__ import annotations

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import convexnn as cn
from convexnn import certificates, losses
from convexnn.problem import Problem

from . import helpers


def _problem(p: helpers.Problem) -> Problem:
    loss = losses.get_loss("squared")
    Y = jnp.asarray(p.y)[:, None]
    return Problem(X=p.X, masks=p.masks, y=Y, loss=loss, N=loss.normaliser(Y))


def _projection_norm(X, s, c) -> float:
    """‖Π_K(c)‖, K = {u : s ⊙ X u ≥ 0}, by cvxpy + Clarabel."""
    u = cp.Variable(X.shape[1])
    cp.Problem(cp.Minimize(cp.sum_squares(u - c)), [cp.multiply(s, X @ u) >= 0]).solve(
        solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12
    )
    return float(np.linalg.norm(u.value))


def test_cone_scores_are_the_projections_and_their_multipliers_reach_them():
    """At a random point: each score is ‖Π_{K_i}(∓Xᵀ D_i ∇L)‖ (Clarabel's projection), Γ ≥ 0, and the relaxed dual's
    H = Kᵀ(∇L, −Γ) has exactly those norms on every block (the identity the certificate outside a set uses)."""
    p = helpers.teacher(n=80, d=5, P=12, seed=0)
    prob = _problem(p)
    W = 0.1 * jax.random.normal(jax.random.PRNGKey(1), (24, 5, 1), jnp.float64)
    z, _ = prob.split(prob.products(W))
    grad = prob.loss_grad(z)
    A = prob.adjoint(grad)
    norms, gamma = certificates.cone_scores(prob.X, prob.masks, A)
    assert norms.shape == (2, 12, 1) and gamma.shape == (80, 1, 24)
    assert float(jnp.min(gamma)) >= 0
    H = prob.pullback(grad, -gamma)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(H), axis=1)[:, 0], np.asarray(norms).reshape(-1), atol=1e-10)
    X, s = np.asarray(p.X), 2.0 * np.asarray(p.masks, np.float64) - 1.0
    for i in (0, 5, 11):
        a = np.asarray(A[i, :, 0])
        assert abs(float(norms[0, i, 0]) - _projection_norm(X, s[:, i], -a)) <= 1e-7
        assert abs(float(norms[1, i, 0]) - _projection_norm(X, s[:, i], a)) <= 1e-7


WS = cn.ALOptions(working_set=cn.WorkingSetOptions(min_patterns=1, capacity=4))


@pytest.mark.parametrize("lam", [3e-2, 1e-2])
def test_working_sets_reach_clarabels_optimum_with_an_honest_gap(lam):
    """The AL on working sets (sets of 4, 8, 16 of 24 patterns, then all) converges to Clarabel's p* of the whole
    program, and its gap, the whole program's with cone multipliers for the blocks outside the set, bounds
    objective − p*."""
    p = helpers.teacher(n=80, d=5, P=24, seed=1)
    p_star = helpers.relu_optimum(p, lam)
    sol = cn.solve_relu(p.X, p.y, p.masks, lam, tol=1e-8, options=WS)
    assert int(sol.status) == cn.Status.CONVERGED, sol
    assert int(sol.stats["capacity"]) > 0
    assert abs(float(sol.objective) - p_star) <= 1e-6 * max(1.0, p_star)
    assert float(sol.gap) >= 0
    assert float(sol.objective) - p_star <= float(sol.gap) + 1e-9 * max(1.0, p_star)
    assert float(sol.violation) <= 1e-6
    plain = cn.solve_relu(p.X, p.y, p.masks, lam, tol=1e-8)
    np.testing.assert_allclose(float(sol.objective), float(plain.objective), rtol=1e-6)


def test_working_sets_report_a_set_smaller_than_P_when_the_optimum_needs_few_patterns():
    """A large λ (half of λ_max): the optimum has few patterns, and the solve ends on a set of 4 of 24."""
    p = helpers.teacher(n=80, d=5, P=24, seed=1)
    lam = 0.5 * float(cn.lam_max(p.X, p.y, p.masks, model="relu"))
    p_star = helpers.relu_optimum(p, lam)
    sol = cn.solve_relu(p.X, p.y, p.masks, lam, tol=1e-8, options=WS)
    assert int(sol.status) == cn.Status.CONVERGED, sol
    assert int(sol.stats["capacity"]) < 24
    assert abs(float(sol.objective) - p_star) <= 1e-6 * max(1.0, p_star)


@pytest.mark.parametrize("mode", ["warm", "vmap"])
def test_a_relu_path_on_working_sets_matches_the_path_on_every_pattern(mode):
    """`solve_path(model="relu")` with working sets, warm (one λ after another) and vmapped (every λ at once, each lane
    its own set): every λ certified, at the objectives of the path on every pattern."""
    p = helpers.teacher(n=80, d=5, P=24, seed=1)
    lams = jnp.asarray([3e-2, 1e-2])
    ws = cn.solve_path(p.X, p.y, p.masks, lams, model="relu", mode=mode, tol=1e-8, options=WS)
    plain = cn.solve_path(p.X, p.y, p.masks, lams, model="relu", mode=mode, tol=1e-8)
    assert np.all(np.asarray(ws.status) == cn.Status.CONVERGED), ws.status
    np.testing.assert_allclose(np.asarray(ws.objective), np.asarray(plain.objective), rtol=1e-6)
    assert np.all(np.asarray(ws.gap) >= 0)
