"""The solvers answer in the user's units at every scale the dtype represents.

Multiplying X by a, y by b (squared loss) and λ by a·b changes the program only by its units: the weights
become (b/a)·W, the objective and its gap b²·(…), and the status stays. The solvers work on the problem
brought to unit scale (`convexnn._units`), so these hold where squared norms of X or y would underflow or
overflow. The reference is a tight float64 solve at unit scale; every scaled gap must bound the scaled
suboptimality.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convexnn as cn

from . import helpers

LAM = 1e-2


@functools.cache
def problem(dtype, loss="squared"):
    p = helpers.breast_cancer(n=120, P=10, dtype=dtype) if loss == "logistic" else helpers.teacher(60, 5, 10, seed=3)
    y = p.y if loss == "logistic" else (p.y - p.y.mean()) / p.y.std()
    return jnp.asarray(p.X, dtype), jnp.asarray(y, dtype), p.masks


@functools.cache
def optimum(loss="squared", model="gated") -> float:
    """p* at unit scale: a float64 solve to 1e-12."""
    X, y, masks = problem(jnp.float64, loss)
    solve = cn.solve_relu if model == "relu" else cn.solve_gated
    sol = solve(X, y, masks, LAM, loss=loss, tol=1e-12, max_iters=200_000)
    assert sol.status == cn.Status.CONVERGED
    return float(sol.objective)


def check_scaled(sol, a, b, p_star, tol, y_scaled, rel: float | None = None, certificate: bool = True) -> None:
    """sol solves the problem scaled by (a, b): converged, objective b²·p*, a gap that bounds its excess."""
    assert int(sol.status) == cn.Status.CONVERGED, sol
    objective, gap = float(sol.objective), float(sol.gap)
    scale = b * b
    rel = rel or (1e-4 if sol.objective.dtype == jnp.float32 else 1e-9)
    assert objective == pytest.approx(scale * p_star, rel=rel)
    assert gap <= tol * max(float(cn.certificates.objective_unit(y_scaled)), abs(objective)) * (1 + 1e-6)
    if certificate:  # objective − optimum ≤ gap, with the optimum known to 1e-12 relative
        assert gap >= 0
        assert objective - scale * p_star <= gap + 1e-11 * scale * abs(p_star)


@settings(deadline=None, max_examples=12)
@given(kx=st.integers(-15, 15), ky=st.integers(-15, 15))
def test_gated_float32_any_scale(kx, ky):
    X, y, masks = problem(jnp.float32)
    a, b = 10.0**kx, 10.0**ky
    ys = y * np.float32(b)
    sol = cn.solve_gated(X * np.float32(a), ys, masks, LAM * a * b, tol=1e-5)
    check_scaled(sol, a, b, optimum(), 1e-5, ys)
    unit = cn.solve_gated(X, y, masks, LAM, tol=1e-5)
    np.testing.assert_allclose(np.asarray(sol.weights) * a / b, np.asarray(unit.weights), rtol=1e-2, atol=1e-3)


@settings(deadline=None, max_examples=12)
@given(kx=st.integers(-150, 150), ky=st.integers(-150, 150))
def test_gated_float64_any_scale(kx, ky):
    X, y, masks = problem(jnp.float64)
    a, b = 10.0**kx, 10.0**ky
    sol = cn.solve_gated(X * a, y * b, masks, LAM * a * b, tol=1e-10)
    check_scaled(sol, a, b, optimum(), 1e-10, y * b)


def test_the_reported_cases():
    """X·1e-20 with λ·1e-20 (float32) and X·1e-170 (float64) used to stop CONVERGED at W = 0; λ_max was 0 at
    1e-170 and inf at X·1e30 (float32)."""
    for dtype, a in ((jnp.float32, 1e-20), (jnp.float64, 1e-170), (jnp.float32, 1e30), (jnp.float64, 1e170)):
        X, y, masks = problem(dtype)
        sol = cn.solve_gated(X * a, y, masks, LAM * a)
        check_scaled(sol, a, 1.0, optimum(), 1e-6, y)
        assert bool(jnp.any(sol.weights != 0))
        top = float(cn.lam_max(X * a, y, masks))
        assert top == pytest.approx(a * float(cn.lam_max(X, y, masks)), rel=1e-5)


@pytest.mark.parametrize("a", [1e-25, 1e25])
def test_logistic_float32_scale_of_X(a):
    """Label losses have no unit: only X (and λ with it) carry a scale."""
    X, y, masks = problem(jnp.float32, "logistic")
    sol = cn.solve_gated(X * np.float32(a), y, masks, LAM * a, loss="logistic", tol=1e-5)
    check_scaled(sol, a, 1.0, optimum("logistic"), 1e-5, y)
    assert float(cn.certificates.objective_unit(y, "logistic")) == 1.0


@pytest.mark.parametrize("a,b", [(1e-100, 1e50), (1e100, 1e-60)])
def test_relu_float64_any_scale(a, b):
    X, y, masks = problem(jnp.float64)
    sol = cn.solve_relu(X * a, y * b, masks, LAM * a * b, tol=1e-8, max_iters=100_000)
    # Within constraint_tol = 1e-6 of feasible, the objective may lie that little below the optimum, and
    # the exact program's gap at such a point is not yet a bound (it can be negative; at unit scale too).
    check_scaled(sol, a, b, optimum(model="relu"), 1e-8, y * b, rel=1e-7, certificate=False)
    assert float(sol.violation) <= 1e-6
    U, V = sol.weights
    assert np.isfinite(np.asarray(U)).all() and float(jnp.max(jnp.abs(U))) > 0


def test_path_and_sharded_scale():
    X, y, masks = problem(jnp.float64)
    a, b = 1e-120, 1e80
    path = cn.solve_path(X * a, y * b, masks, jnp.asarray([LAM, 10 * LAM]) * a * b, tol=1e-10)
    check_scaled(jax.tree.map(lambda v: v[0], path), a, b, optimum(), 1e-10, y * b)
    mesh = jax.make_mesh((8,), ("data",))
    data = cn.shard_rows(mesh, X * a, y * b, masks)
    check_scaled(cn.solve_gated(data, lam=LAM * a * b, tol=1e-10), a, b, optimum(), 1e-10, y * b)
    assert float(cn.lam_max(data)) == pytest.approx(float(cn.lam_max(X * a, y * b, masks)), rel=1e-12)


def test_targets_in_any_units_give_the_same_status():
    """The stopping rule is gap ≤ tol·max(u, |objective|) with u the targets' mean variance: the same in
    any units of y (with a floor of 1 in the user's units, tiny targets used to stop at once)."""
    X, y, masks = problem(jnp.float64)
    ref = cn.solve_gated(X, y, masks, LAM, tol=1e-8)
    for b in (1e-6, 1e6):
        sol = cn.solve_gated(X, y * b, masks, LAM * b, tol=1e-8)
        assert int(sol.iterations) == pytest.approx(int(ref.iterations), abs=3)
        assert float(sol.objective) == pytest.approx(b * b * float(ref.objective), rel=1e-10)
    assert float(cn.certificates.objective_unit(y * 1e-6)) == pytest.approx(1e-12 * float(jnp.var(y)), rel=1e-10)
