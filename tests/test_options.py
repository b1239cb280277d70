"""convexnn.options: checked when built, reachable from every public solver, and they change what they say."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import convexnn as cn

from . import helpers


@pytest.mark.parametrize(
    "build, field",
    [
        (lambda: cn.FistaOptions(backtrack=1.0), "backtrack"),
        (lambda: cn.FistaOptions(max_backtracks=0), "max_backtracks"),
        (lambda: cn.NewtonOptions(cg_rtol=0.0), "cg_rtol"),
        (lambda: cn.PolishOptions(min_phase=0), "min_phase"),
        (lambda: cn.StallOptions(window=0), "window"),
        (lambda: cn.StallOptions(rel_eps=float("nan")), "rel_eps"),
        (lambda: cn.ALOptions(growth=0.5), "growth"),
        (lambda: cn.ADMMOptions(relaxation=2.0), "relaxation"),
        (lambda: cn.ADMMOptions(rho=-1.0), "rho"),
        (lambda: cn.ADMMOptions(cg_max_steps=-1), "cg_max_steps"),
        (lambda: cn.ADMMOptions(slow_window=-1), "slow_window"),
        (lambda: cn.ADMMOptions(slow_margin=-1.0), "slow_margin"),
        (lambda: cn.WorkingSetOptions(min_patterns=0), "min_patterns"),
        (lambda: cn.WorkingSetOptions(capacity=0), "capacity"),
        (lambda: cn.WorkingSetOptions(growth=1), "growth"),
        (lambda: cn.WorkingSetOptions(fill=0.0), "fill"),
        (lambda: cn.WorkingSetOptions(hold=-1), "hold"),
        (lambda: cn.WorkingSetOptions(stage_steps=0), "stage_steps"),
        (lambda: cn.WorkingSetOptions(inner_tol=0.0), "inner_tol"),
        (lambda: cn.WorkingSetOptions(inner_tol=2.0), "inner_tol"),
    ],
)
def test_a_bad_value_is_refused_when_built(build, field):
    with pytest.raises(ValueError, match=field):
        build()


@pytest.mark.parametrize(
    "build, field",
    [
        (lambda: cn.FistaOptions(max_backtracks=2.5), "max_backtracks"),
        (lambda: cn.NewtonOptions(rebuild_preconditioner="yes"), "rebuild_preconditioner"),
        (lambda: cn.GatedOptions(fista=cn.NewtonOptions()), "fista"),
        (lambda: cn.GatedOptions(working_set=cn.StallOptions()), "working_set"),
        (lambda: cn.WorkingSetOptions(growth=2.5), "growth"),
        (lambda: cn.ALOptions(subproblem=cn.PolishOptions()), "subproblem"),
        (lambda: cn.ALOptions(working_set=cn.StallOptions()), "working_set"),
        (lambda: cn.ADMMOptions(split_loss="auto"), "split_loss"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_when_built(build, field):
    """A ValueError from the options' own check; under the tests' runtime type checker (beartype through
    jaxtyping) the annotation refuses it first, with a TypeError naming the same field."""
    with pytest.raises((ValueError, TypeError), match=field):
        build()


def test_options_are_immutable_and_hashable():
    opts = cn.GatedOptions()
    assert hash(opts) == hash(cn.GatedOptions()) and opts == cn.GatedOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.fista = cn.FistaOptions()


def test_the_wrong_options_object_is_refused():
    p = helpers.teacher(n=40, d=4, P=6)
    with pytest.raises(ValueError, match="options must be a GatedOptions"):
        cn.solve_gated(p.X, p.y, p.masks, 1e-2, options=cn.ALOptions())
    with pytest.raises(ValueError, match="options must be a ADMMOptions"):
        cn.solve_relu(p.X, p.y, p.masks, 1e-2, method="admm", options=cn.ALOptions())
    with pytest.raises(ValueError, match="admm_options"):
        cn.solve_relu(p.X, p.y, p.masks, 1e-2, method="al", admm_options=cn.ADMMOptions())


def test_gated_options_reach_the_solver():
    """A stall window of 1 iteration with a huge threshold stops the solve at once as STALLED; a polish phase
    longer than the budget leaves plain R-FISTA's iterates, bit for bit."""
    p = helpers.teacher(n=60, d=5, P=10)
    stalled = cn.solve_gated(
        p.X, p.y, p.masks, 1e-3, tol=1e-12, options=cn.GatedOptions(stall=cn.StallOptions(1, 1e30))
    )
    assert int(stalled.status) == cn.Status.STALLED and int(stalled.iterations) <= 2
    never = cn.GatedOptions(polish=cn.PolishOptions(min_phase=10**6))
    a = cn.solve_gated(p.X, p.y, p.masks, 1e-3, max_iters=300, options=never)
    b = cn.solve_gated(p.X, p.y, p.masks, 1e-3, max_iters=300, polish=False)
    np.testing.assert_array_equal(np.asarray(a.weights), np.asarray(b.weights))


def test_relu_options_reach_the_solvers():
    p = helpers.teacher(n=60, d=5, P=8)
    al = cn.solve_relu(p.X, p.y, p.masks, 1e-2, max_iters=3000, options=cn.ALOptions(rho0=1.0))
    default = cn.solve_relu(p.X, p.y, p.masks, 1e-2, max_iters=3000)
    assert float(al.stats["rho"]) != float(default.stats["rho"])
    opts = cn.ADMMOptions(polish_every=10**6)
    admm = cn.solve_relu(p.X, p.y, p.masks, 1e-2, method="admm", max_iters=200, options=opts)
    assert int(admm.stats["polishes"]) == 0
    same = cn.solve_relu(p.X, p.y, p.masks, 1e-2, method="admm", max_iters=200, admm_options=opts)
    np.testing.assert_array_equal(np.asarray(admm.weights[0]), np.asarray(same.weights[0]))


def test_path_options_reach_every_lambda():
    p = helpers.teacher(n=60, d=5, P=8)
    opts = cn.GatedOptions(stall=cn.StallOptions(1, 1e30))
    path = cn.solve_path(p.X, p.y, p.masks, np.asarray([1e-2, 1e-3]), tol=1e-12, options=opts)
    assert np.all(np.asarray(path.status) == cn.Status.STALLED)
