"""Every solver through one set of checks (as jaxopt's common_test): under `jax.jit` it gives the eager result
bit for bit, `jax.vmap` over λ gives a loop of single solves, a new λ compiles nothing; float32 asked for more
than its precision stops STALLED with an honest gap. Then solve_gated's vmap over y and masks, and its outputs.

The solvers: solve_gated; solve_relu with method "al" and "admm"; solve_path (gated) in modes "warm" and "vmap".
A ReLU path is left out here: each of its programs takes 10–20 s to compile on one core (test_path.py and
test_networks.py solve ReLU paths).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import convexnn as cn

from . import helpers
from .reference import clarabel_gated

TOL = 1e-9  # gated certificate tolerance
RELU_TOL = 1e-8  # ReLU certificate and cone-violation tolerance
# λ_max = 1.47 on this problem; at these λ ADMM certifies within ~5 500 iterations (at 2e-2 it needs 36 000).
LAM, NEW_LAM = 3e-2, 5e-2
LAMS = (3e-3, 3e-2, 5e-2)  # vmap and path grid; a path's "new λ" is NEW_LAMS, of the same shape
NEW_LAMS = (5e-3, 2e-2, 1e-1)


class Solver(NamedTuple):
    solve: Callable[..., cn.Solution]  # (X, y, masks, lam[, tol]) -> Solution; lam is an array for a path
    tol: float  # the certificate tolerance it runs with
    path: bool  # takes an array of λ and returns a path
    # How the lanes of jax.vmap over λ (or the points of a path) match single solves at each λ:
    # a float: to that relative accuracy (the same point up to rounding); None: only as certified, 2·tol apart.
    lane_rtol: float | None
    same_iterations: bool  # vmap lanes take exactly the single solve's iterations


def _gated(X, y, masks, lam, tol=TOL):
    return cn.solve_gated(X, y, masks, lam, tol=tol)


def _relu_al(X, y, masks, lam, tol=RELU_TOL, constraint_tol=RELU_TOL):
    return cn.solve_relu(X, y, masks, lam, method="al", tol=tol, constraint_tol=constraint_tol)


def _relu_admm(X, y, masks, lam, tol=RELU_TOL):
    return cn.solve_relu(X, y, masks, lam, method="admm", tol=tol, constraint_tol=RELU_TOL, max_iters=60_000)


def _path_warm(X, y, masks, lams, tol=TOL):
    return cn.solve_path(X, y, masks, lams, mode="warm", tol=tol)


def _path_vmap(X, y, masks, lams, tol=TOL):
    return cn.solve_path(X, y, masks, lams, mode="vmap", tol=tol)


SOLVERS = {
    "gated": Solver(_gated, TOL, path=False, lane_rtol=1e-12, same_iterations=True),
    # The AL's outer loop turns a last-bit difference (a batched product rounds otherwise) into other
    # iterates: its vmap lanes match single solves only as both are certified (up to 4e-11 apart here).
    "relu-al": Solver(_relu_al, RELU_TOL, path=False, lane_rtol=None, same_iterations=False),
    # ADMM's lanes take other step counts, but its polish lands on the same optimum (2e-15 apart here).
    "relu-admm": Solver(_relu_admm, RELU_TOL, path=False, lane_rtol=1e-12, same_iterations=False),
    # A warm path starts each λ at the previous solution, a vmap path runs all λ in lockstep: other iterates.
    "path-warm": Solver(_path_warm, TOL, path=True, lane_rtol=None, same_iterations=False),
    "path-vmap": Solver(_path_vmap, TOL, path=True, lane_rtol=None, same_iterations=False),
}
# One jitted wrapper per solver, shared by the tests, so that their compiled programs are too.
JITTED = {name: jax.jit(s.solve) for name, s in SOLVERS.items()}
# The single solve a path's points are checked against: solve_gated with the path's settings.
SINGLE = {"path-warm": _gated, "path-vmap": _gated}


@pytest.fixture(scope="module")
def prob():
    return helpers.teacher(n=60, d=5, P=10, seed=3)


def _lam(name, new=False):
    if SOLVERS[name].path:
        return jnp.asarray(NEW_LAMS if new else LAMS)
    return NEW_LAM if new else LAM


def _scale(prob, objective):
    """The unit of the stopping rule: gap ≤ tol · max(u, |objective|)."""
    return max(float(cn.certificates.objective_unit(prob.y)), abs(float(objective)))


def _assert_identical(a: cn.Solution, b: cn.Solution):
    """Every field (weights, objective, gap, violation, iterations, status, lam, stats) bit for bit."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _compilations(caplog):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Compiling")]


# ------------------------------------------------------------------------------------------------ jit = eager


@pytest.mark.parametrize("name", SOLVERS)
def test_jit_equals_eager(prob, name):
    """Measured: bit for bit for every solver, with the data passed as arguments of the jitted function.
    (Closed over as constants they compile into another program whose last bits differ, ~1e-16 for gated,
    and the AL's iterates then drift, ~1e-10 in the objective: hence the arguments.)"""
    lam = _lam(name)
    eager = SOLVERS[name].solve(prob.X, prob.y, prob.masks, lam)
    jitted = JITTED[name](prob.X, prob.y, prob.masks, lam)
    assert np.all(np.asarray(jitted.status) == cn.Status.CONVERGED), jitted
    _assert_identical(eager, jitted)


# ------------------------------------------------------------------------------------------ vmap over λ = a loop


@pytest.mark.parametrize("name", SOLVERS)
def test_vmap_over_lam_equals_a_loop(prob, name):
    """jax.vmap of a single-λ solver, or a path, against a Python loop of single solves at each λ."""
    solver = SOLVERS[name]
    lams = jnp.asarray(LAMS)
    if solver.path:
        batched = solver.solve(prob.X, prob.y, prob.masks, lams)
        single = SINGLE[name]
    else:
        batched = jax.vmap(lambda lam: solver.solve(prob.X, prob.y, prob.masks, lam))(lams)
        single = solver.solve
    for w in jax.tree.leaves(batched.weights):
        assert w.shape == (len(LAMS),) + prob.masks.shape[1:] + prob.X.shape[1:]
    assert np.all(np.asarray(batched.status) == cn.Status.CONVERGED), batched
    np.testing.assert_array_equal(np.asarray(batched.lam), np.asarray(lams))
    for k, lam in enumerate(lams):
        lane, one = batched[k], single(prob.X, prob.y, prob.masks, lam)
        scale = _scale(prob, one.objective)
        assert int(lane.status) == int(one.status)
        assert float(lane.gap) <= solver.tol * scale
        assert float(lane.violation) <= solver.tol
        if solver.lane_rtol is None:  # both certified within tol·scale of the optimum
            assert abs(float(lane.objective) - float(one.objective)) <= 2 * solver.tol * scale
        else:
            rtol = solver.lane_rtol
            np.testing.assert_allclose(float(lane.objective), float(one.objective), rtol=rtol, atol=0)
            np.testing.assert_allclose(float(lane.gap), float(one.gap), rtol=0, atol=rtol * scale)
            for a, b in zip(jax.tree.leaves(lane.weights), jax.tree.leaves(one.weights), strict=True):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=rtol * float(jnp.max(jnp.abs(b))))
        if solver.same_iterations:
            assert int(lane.iterations) == int(one.iterations)


# ------------------------------------------------------------------------------------ a new λ does not recompile


@pytest.mark.parametrize("name", SOLVERS)
def test_new_lam_does_not_recompile(prob, name, caplog):
    """The second λ, eager and under jit, compiles nothing at all (every "Compiling" log of JAX is counted;
    a new shape is seen to compile in the next test). A λ of the same kind: a Python float after a Python
    float, an array after an array (jit keys its cache on weak types too)."""
    solve, jitted = SOLVERS[name].solve, JITTED[name]
    solve(prob.X, prob.y, prob.masks, _lam(name))  # compiled here, or already by an earlier test
    jitted(prob.X, prob.y, prob.masks, _lam(name))
    assert jitted._cache_size() == 1
    with jax.log_compiles(True), caplog.at_level(logging.WARNING, logger="jax"):
        caplog.clear()
        eager = solve(prob.X, prob.y, prob.masks, _lam(name, new=True))
        traced = jitted(prob.X, prob.y, prob.masks, _lam(name, new=True))
        compiled = _compilations(caplog)
    assert compiled == [], compiled
    assert jitted._cache_size() == 1
    np.testing.assert_array_equal(np.asarray(eager.lam), np.asarray(_lam(name, new=True)))
    _assert_identical(eager, traced)


def test_new_tol_and_max_iters_do_not_recompile_but_a_new_shape_does(prob, caplog):
    _gated(prob.X, prob.y, prob.masks, LAM)  # compile once
    with jax.log_compiles(True), caplog.at_level(logging.WARNING, logger="jax"):
        caplog.clear()
        _gated(prob.X, prob.y, prob.masks, NEW_LAM)
        cn.solve_gated(prob.X, prob.y, prob.masks, 5e-2, tol=1e-7, max_iters=500)
        compiled = _compilations(caplog)
        # The detector itself works: a new shape does compile.
        cn.solve_gated(prob.X[:-3], prob.y[:-3], prob.masks[:-3], 5e-2, polish=False)
        detected = _compilations(caplog)
    assert compiled == [], compiled
    assert len(detected) > 0


# ---------------------------------------------------------------------------------------------------- STALLED


# The AL keeps its cone-violation tolerance at float32's reach: it hands back its best point within it.
STALLS = {"gated": {}, "relu-al": {"constraint_tol": 1e-6}}


@pytest.mark.parametrize("name", STALLS)
def test_float32_below_its_precision_stalls_with_an_honest_gap(name):
    """tol = 1e-12 is far below float32's precision (eps 1.2e-7): the solver must stop on its own, STALLED,
    with a float32-accurate point and a gap that still bounds objective − p* (p* from Clarabel in float64).
    The gated stall rule serves both gated paths; ADMM has no stall rule (it runs to MAX_ITERS)."""
    p64 = helpers.teacher(n=60, d=5, P=10, seed=3)
    p = helpers.teacher(n=60, d=5, P=10, seed=3, dtype=jnp.float32)
    if name == "gated":
        p_star = clarabel_gated(p64.X, np.asarray(p64.y)[:, None], p64.masks, LAM)[0]
    else:
        p_star = helpers.relu_optimum(p64, LAM)
    sol = SOLVERS[name].solve(p.X, p.y, p.masks, LAM, tol=1e-12, **STALLS[name])
    assert int(sol.status) == cn.Status.STALLED, sol
    assert sol.objective.dtype == jnp.float32
    assert jax.tree.leaves(sol.weights)[0].dtype == jnp.float32
    assert float(sol.violation) <= 1e-6
    assert abs(float(sol.objective) - p_star) <= 1e-5 * p_star
    assert float(sol.objective) - p_star <= float(sol.gap)


# ------------------------------------------------------------------------------ solve_gated: vmap over y, masks


def _close(a, b, rtol=1e-6):
    np.testing.assert_allclose(np.asarray(a.objective), np.asarray(b.objective), rtol=rtol)


def test_vmap_over_y_equals_a_loop(prob):
    ys = jnp.stack([prob.y, -prob.y, 2 * prob.y])
    batched = jax.vmap(lambda y: _gated(prob.X, y, prob.masks, LAM))(ys)
    for k in range(3):
        _close(batched[k], _gated(prob.X, ys[k], prob.masks, LAM))


def test_vmap_over_masks_equals_a_loop(prob):
    rng = np.random.default_rng(0)
    stack = jnp.stack([prob.masks, jnp.asarray(rng.random(prob.masks.shape) < 0.5)])
    batched = jax.vmap(lambda m: _gated(prob.X, prob.y, m, LAM))(stack)
    for k in range(2):
        _close(batched[k], _gated(prob.X, prob.y, stack[k], LAM))


def test_multi_output_equals_outputs_solved_apart(prob):
    """Groups are per (pattern, output), so with the squared loss the outputs decouple up to the 1/c."""
    Y = jnp.stack([prob.y, jnp.sin(prob.y)], axis=1)
    joint = cn.solve_gated(prob.X, Y, prob.masks, LAM, tol=TOL)
    assert joint.weights.shape == prob.masks.shape[1:] + prob.X.shape[1:] + (2,)
    total = 0.0
    for k in range(2):
        # (1/(2n·2)) Σ over both outputs = ½ · each single-output loss, so λ halves per output.
        part = cn.solve_gated(prob.X, Y[:, k], prob.masks, 2 * LAM, tol=TOL)
        np.testing.assert_allclose(joint.weights[..., k], part.weights, atol=1e-5)
        total += 0.5 * float(part.objective)
    np.testing.assert_allclose(float(joint.objective), total, rtol=1e-7)
