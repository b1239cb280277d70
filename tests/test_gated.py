"""solve_gated against an independent interior-point solver (cvxpy + Clarabel, float64), and its certificate.

Each reference problem is solved once per session by Clarabel; the checks are
- the objective matches Clarabel's optimum to 1e-6 relative, and the status is CONVERGED;
- the final gap meets the tolerance, and the gap of every iterate (runs stopped early) bounds the true
  suboptimality objective − p* from above;
- λ ≥ λ_max gives the all-zero solution at the first check, and just below it does not.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
import pytest

import convexnn as cn
from convexnn import losses

from . import helpers
from .reference import clarabel_gated

# (problem factory, λ values). The last λ of each keeps most groups at zero.
CASES = {
    "teacher": (helpers.teacher, (5e-4, 1e-2, 1e-1)),
    "diabetes": (helpers.diabetes, (1e-4, 1e-2, 1.0)),
    "breast_cancer": (helpers.breast_cancer, (1e-3, 1e-1)),
    "digits-squared": (functools.partial(helpers.digits, n=200, P=12, loss="squared"), (1e-3, 3e-2)),
    "digits-cross_entropy": (functools.partial(helpers.digits, n=120, P=8, loss="cross_entropy"), (1e-3, 3e-2)),
}
PARAMS = [(name, lam) for name, (_, lams) in CASES.items() for lam in lams]


@functools.cache
def problem(name: str) -> helpers.Problem:
    return CASES[name][0]()


@functools.cache
def reference(name: str, lam: float) -> float:
    p = problem(name)
    Y = losses.get_loss(p.loss).prepare_targets(np.asarray(p.y))
    value, _ = clarabel_gated(p.X, Y, p.masks, lam, p.loss)
    return value


@pytest.mark.parametrize("name,lam", PARAMS, ids=[f"{n}-lam{l:g}" for n, l in PARAMS])
def test_matches_clarabel(name, lam):
    p = problem(name)
    sol = cn.solve_gated(p.X, p.y, p.masks, lam, loss=p.loss, tol=1e-8)
    p_star = reference(name, lam)
    assert sol.status == cn.Status.CONVERGED, sol
    assert abs(float(sol.objective) - p_star) <= 1e-6 * abs(p_star), (float(sol.objective), p_star)
    assert float(sol.gap) <= 1e-8 * max(float(cn.certificates.objective_unit(p.y, p.loss)), abs(float(sol.objective)))
    # Clarabel's own accuracy is ~1e-10 relative: the certificate must hold up to that.
    assert float(sol.gap) >= float(sol.objective) - p_star - 1e-9 * abs(p_star)
    assert sol.weights.dtype == p.X.dtype
    expected = p.masks.shape[1:2] + p.X.shape[1:2] + (() if p.y.ndim == 1 else p.y.shape[1:2])
    assert sol.weights.shape == expected


@pytest.mark.parametrize("name,lam", [("teacher", 5e-4), ("diabetes", 1e-4), ("breast_cancer", 1e-3)])
@pytest.mark.parametrize("max_iters", [1, 5, 30])
def test_gap_bounds_suboptimality_of_every_iterate(name, lam, max_iters):
    p = problem(name)
    sol = cn.solve_gated(p.X, p.y, p.masks, lam, loss=p.loss, tol=1e-12, max_iters=max_iters)
    p_star = reference(name, lam)
    assert int(sol.iterations) <= max_iters + 10  # a Newton polish may end the last phase
    subopt = float(sol.objective) - p_star
    assert subopt >= -1e-9 * abs(p_star)
    assert float(sol.gap) >= subopt - 1e-9 * abs(p_star)


@pytest.mark.parametrize("name", ["teacher", "breast_cancer", "digits-cross_entropy"])
def test_lam_max_gives_zero_at_first_check(name):
    p = problem(name)
    top = float(cn.lam_max(p.X, p.y, p.masks, loss=p.loss))
    above = cn.solve_gated(p.X, p.y, p.masks, top * (1 + 1e-6), loss=p.loss)
    assert above.status == cn.Status.CONVERGED
    assert int(above.iterations) == 0
    assert float(jnp.max(jnp.abs(above.weights))) == 0.0
    below = cn.solve_gated(p.X, p.y, p.masks, top * 0.99, loss=p.loss)
    assert below.status == cn.Status.CONVERGED
    assert float(jnp.max(jnp.abs(below.weights))) > 0.0


def test_plain_rfista_also_certifies():
    p = problem("teacher")
    sol = cn.solve_gated(p.X, p.y, p.masks, 1e-1, polish=False, tol=1e-7)
    assert sol.status == cn.Status.CONVERGED
    assert abs(float(sol.objective) - reference("teacher", 1e-1)) <= 1e-6 * reference("teacher", 1e-1)


def test_warm_start_from_the_solution_stops_at_once():
    p = problem("teacher")
    sol = cn.solve_gated(p.X, p.y, p.masks, 1e-2, tol=1e-8)
    again = cn.solve_gated(p.X, p.y, p.masks, 1e-2, tol=1e-8, init=sol.weights)
    assert again.status == cn.Status.CONVERGED
    assert int(again.iterations) == 0
    np.testing.assert_allclose(again.objective, sol.objective, rtol=1e-12)


def test_float32_in_float32_out_and_converges_on_a_scaled_problem():
    p = helpers.teacher(dtype=jnp.float32)
    sol = cn.solve_gated(p.X, p.y, p.masks, 1e-2, tol=1e-4)
    assert sol.weights.dtype == jnp.float32
    assert sol.objective.dtype == jnp.float32
    assert sol.status == cn.Status.CONVERGED
    p64 = problem("teacher")
    assert np.array_equal(np.asarray(p.masks), np.asarray(p64.masks))
    p_star = reference("teacher", 1e-2)
    W = jnp.asarray(sol.weights, jnp.float64)
    obj64 = 0.5 * jnp.mean((cn.operators.gated_forward(p64.X, p64.masks, W) - p64.y) ** 2) + 1e-2 * cn.prox.group_l1(W)
    assert float(obj64) - p_star <= 1e-4  # the float32 certificate, checked in float64
