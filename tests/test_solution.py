"""Solution.state: a stopped solve resumes exactly from its loop state through init=."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import convexnn as cn

from . import helpers


def _same(a, b):
    for x, y in zip(jax.tree.leaves(a.weights), jax.tree.leaves(b.weights), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert float(a.objective) == float(b.objective) and float(a.gap) == float(b.gap)
    assert int(a.iterations) == int(b.iterations) and int(a.status) == int(b.status)


@pytest.fixture(scope="module")
def prob():
    return helpers.teacher(n=60, d=5, P=10, seed=2)


def test_gated_resumes_exactly(prob):
    """Plain R-FISTA stopped at 40 iterations and resumed to 120 is the 120-iteration solve, bit for bit
    (momentum and step size come back with the state); weights alone would restart the momentum."""
    kw = dict(polish=False, tol=1e-12)
    whole = cn.solve_gated(prob.X, prob.y, prob.masks, 1e-3, max_iters=120, **kw)
    first = cn.solve_gated(prob.X, prob.y, prob.masks, 1e-3, max_iters=40, **kw)
    assert int(first.status) == cn.Status.MAX_ITERS and first.state is not None
    _same(cn.solve_gated(prob.X, prob.y, prob.masks, 1e-3, max_iters=120, init=first, **kw), whole)
    restarted = cn.solve_gated(prob.X, prob.y, prob.masks, 1e-3, max_iters=80, init=first.weights, **kw)
    assert not np.array_equal(np.asarray(restarted.weights), np.asarray(whole.weights))


def test_gated_resume_with_polish_reaches_the_optimum(prob):
    first = cn.solve_gated(prob.X, prob.y, prob.masks, 1e-3, max_iters=30)
    done = cn.solve_gated(prob.X, prob.y, prob.masks, 1e-3, init=first)
    assert int(done.status) == cn.Status.CONVERGED and int(done.iterations) > int(first.iterations)


@pytest.mark.parametrize("method", ["al", "admm"])
def test_relu_resumes_exactly(prob, method):
    """ADMM without its polish steps the same way whatever the budget, so a resumed solve is the whole one
    bit for bit. The AL's first solve here stops inside its first subproblem (budget 1), so the resumed one
    goes on from that point: its outer steps keep counting and ρ is not reset, and it reaches the optimum."""
    kw = dict(method=method, polish=method == "al", tol=1e-8)
    if method == "admm":
        whole = cn.solve_relu(prob.X, prob.y, prob.masks, 1e-2, max_iters=600, **kw)
        first = cn.solve_relu(prob.X, prob.y, prob.masks, 1e-2, max_iters=200, **kw)
        _same(cn.solve_relu(prob.X, prob.y, prob.masks, 1e-2, max_iters=600, init=first, **kw), whole)
    else:
        whole = cn.solve_relu(prob.X, prob.y, prob.masks, 1e-2, **kw)
        first = cn.solve_relu(prob.X, prob.y, prob.masks, 1e-2, max_iters=1, **kw)  # one outer step
        assert int(first.stats["outer_steps"]) == 1
        resumed = cn.solve_relu(prob.X, prob.y, prob.masks, 1e-2, init=first, **kw)
        assert int(resumed.status) == cn.Status.CONVERGED and int(resumed.stats["outer_steps"]) > 1
        assert int(resumed.iterations) > int(first.iterations)  # the count goes on from the first solve's
        assert float(resumed.stats["rho"]) >= float(first.stats["rho"])
        np.testing.assert_allclose(float(resumed.objective), float(whole.objective), rtol=1e-6)


def test_a_state_from_another_solver_is_refused(prob):
    gated = cn.solve_gated(prob.X, prob.y, prob.masks, 1e-2, max_iters=20)
    al = cn.solve_relu(prob.X, prob.y, prob.masks, 1e-2, max_iters=5)
    with pytest.raises(ValueError, match="init must be"):
        cn.solve_relu(prob.X, prob.y, prob.masks, 1e-2, method="admm", init=al)
    with pytest.raises(ValueError, match="init"):
        cn.solve_relu(prob.X, prob.y, prob.masks, 1e-2, init=gated)


def test_paths_and_sharded_solves_carry_no_state(prob):
    path = cn.solve_path(prob.X, prob.y, prob.masks, np.asarray([1e-2, 1e-3]), max_iters=50)
    assert path.state is None and path[0].state is None


def test_message_says_why_a_solve_stopped(prob):
    """One sentence per status with the solve's own figures; a path's message is per λ."""
    done = cn.solve_gated(prob.X, prob.y, prob.masks, 1e-2)
    assert done.message == (
        f"converged: the certificate met the tolerances after {int(done.iterations)} iterations, "
        f"gap {float(done.gap):.3g}, violation {float(done.violation):.3g}"
    )
    short = cn.solve_gated(prob.X, prob.y, prob.masks, 1e-3, max_iters=3, polish=False)
    assert short.message.startswith("max_iters: the iteration budget ran out after 3 iterations")
    path = cn.solve_path(prob.X, prob.y, prob.masks, np.array([1e-2, 1e-3]))
    with pytest.raises(ValueError, match="path"):
        _ = path.message
    assert path[1].message.startswith("converged")
