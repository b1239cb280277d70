"""The exact ReLU program by an augmented Lagrangian method whose subproblems R-FISTA solves.

For multipliers Γ ≥ 0 of the cone constraints R = s ⊙ X W ≥ 0 and a penalty ρ > 0, one outer step is

    W ← argmin_W L(z(W)) + (ρ/2) ‖(Γ/ρ − R(W))₊‖² + λ Σ_g ‖W_g‖      (warm-started R-FISTA + Newton polish)
    Γ ← ρ (Γ/ρ − R(W))₊                                              (first-order multiplier update)
    ρ ← min(10 ρ, ρ_max)  if the violation did not fall fourfold        (as in scnn and LANCELOT)

and the subproblem tolerance tightens tenfold per step down to tol/10. ρ grows only while the violation is
above `constraint_tol`, or while its price in the gap, ⟨Γ, (−R)₊⟩, is above tol/2 and half the gap. It
stops when the violation is ≤ `constraint_tol` (relative to max |X W|) and the duality gap, built from ∇L
and Γ (`certificates.relu_duality_gap`: the gap of the program relaxed by the point's own violations, ≥ 0),
is ≤ tol · max(1, |objective|), or when neither the gap nor the objective nor the violation improves any
more (STALLED: float32's rounding, multiplied by ρ, is a floor). ρ_max keeps that rounding below λ's scale; a
fixed ρ still converges (the multiplier updates do the work), only slower.

The polish's Newton systems are preconditioned by the subproblem's Hessian with the norm's curvature along
each group damped (`AugmentedLagrangianObjective.newton_preconditioner`). On float64 rows of one device (n ≤
1024) it takes the loss's coupling across blocks in sample space (Woodbury), so CG needs a few steps whatever
ρ and λ, and is rebuilt at every Newton step (the hinge's active rows change from step to step); elsewhere it
is block Jacobi.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Int, Scalar

from .. import progress
from .._units import Units
from ..certificates import ReluRule, relu_duality_gap, relu_violation
from ..options import ALOptions
from ..problem import Problem
from ..solution import RUNNING, Status
from ._loop import iterate, select
from .fista import rounding_scale
from .gated import solve_composite
from .objectives import AugmentedLagrangianObjective

__all__ = ["ALState", "initial_state", "solve_relu_al"]


class _Point(NamedTuple):
    """An iterate with its certificate: what the solver can return."""

    W: Array  # [U; V], (2P, d, c)
    objective: Scalar
    gap: Scalar
    violation: Scalar
    price: Scalar  # ⟨Γ, (−R)₊⟩ ≥ the violation's share of the gap (`relu_duality_gap`)


class ALState(NamedTuple):
    point: _Point  # the last outer step's result
    best: _Point  # the smallest gap among the points within constraint_tol (gap inf: none yet)
    nearest: _Point  # the finite point nearest to meeting the rule (`ReluRule.distance`)
    improved: Bool[Array, ""]  # an outer step's point became `best`: one within constraint_tol beat the start
    gamma: Array  # multipliers of R ≥ 0, (n, c, 2P)
    rho: Scalar
    inner_tol: Scalar
    iterations: Int[Array, ""]
    outer_steps: Int[Array, ""]
    status: Int[Array, ""]
    low_objective: Scalar  # the lowest objective within constraint_tol so far
    window_start: Int[Array, ""]  # the stall window: the outer step it began at, the bests and the violation then
    window_gap: Scalar
    window_objective: Scalar
    window_violation: Scalar

    @property
    def W(self) -> Array:
        return self.point.W

    @property
    def objective(self) -> Scalar:
        return self.point.objective

    @property
    def gap(self) -> Scalar:
        return self.point.gap

    @property
    def violation(self) -> Scalar:
        return self.point.violation


def _measure(problem: Problem, lam: Scalar, W: Array, gamma: Array) -> _Point:
    XW = problem.products(W)
    z, R = problem.split(XW)
    objective = problem.loss_value(z) + lam * problem.penalty.value(W)
    grad = problem.loss_grad(z)
    price = problem.row_sum(gamma * jnp.maximum(-R, 0))
    return _Point(
        W,
        objective,
        relu_duality_gap(problem, lam, W, z, R, grad, gamma),
        relu_violation(R, XW, problem.rows),
        price,
    )


def _rho_max(problem: Problem, opts: ALOptions, dtype) -> Scalar:
    """ρ's cap, rho_max_eps / (N·eps): beyond it the penalty's gradient carries ρ × the rounding of X W."""
    return jnp.asarray(opts.rho_max_eps / (problem.N * jnp.finfo(dtype).eps), dtype)


def initial_state(problem: Problem, lam, W0, rule: ReluRule, opts: ALOptions, gamma0=None) -> ALState:
    """The AL's state at W0 with multipliers `gamma0` (default zero) and ρ = rho0/N: what `solve_relu_al(state=...)`
    starts from (working sets hand their multipliers on from one set to the next)."""
    dtype = W0.dtype
    gamma0 = jnp.zeros(problem.residual_shape(W0.shape[0]), dtype) if gamma0 is None else gamma0
    rho_max = _rho_max(problem, opts, dtype)
    inf = jnp.asarray(jnp.inf, dtype)
    start = _measure(problem, lam, W0, gamma0)
    best0 = select(rule.feasible(start.violation), start, _Point(W0, inf, inf, inf, inf))
    return ALState(
        point=start,
        best=best0,
        nearest=start,
        improved=jnp.zeros((), bool),
        gamma=gamma0,
        rho=jnp.minimum(jnp.asarray(opts.rho0 / problem.N, dtype), rho_max),
        inner_tol=jnp.maximum(rule.tol, jnp.asarray(opts.inner_tol0, dtype)),
        iterations=jnp.zeros((), jnp.int32),
        outer_steps=jnp.zeros((), jnp.int32),
        status=jnp.where(_met(rule, start), Status.CONVERGED, RUNNING).astype(jnp.int32),
        low_objective=best0.objective,
        window_start=jnp.zeros((), jnp.int32),
        window_gap=best0.gap,
        window_objective=best0.objective,
        window_violation=inf,  # a feasible W0, such as 0, says nothing of the outer steps' progress
    )


def _outer_step(problem, lam, s: ALState, rule: ReluRule, max_iters, polish: bool, opts: ALOptions) -> ALState:
    """One AL step: the subproblem by R-FISTA (+ polish), the multipliers, ρ, and the stall window."""
    dtype = s.W.dtype
    eps = jnp.finfo(dtype).eps
    obj = AugmentedLagrangianObjective(problem=problem, gamma=s.gamma, rho=s.rho)
    sub = opts.subproblem
    if obj.couples_samples():  # its sample-space preconditioner follows the hinge's active rows (ALOptions)
        sub = eqx.tree_at(lambda o: o.polish.newton.rebuild_preconditioner, sub, True)
    inner = solve_composite(obj, lam, s.W, s.inner_tol, max_iters - s.iterations, polish=polish, options=sub)
    W = inner.W
    _, R = problem.split(problem.products(W))
    gamma = s.rho * jnp.maximum(s.gamma / s.rho - R, 0)
    point = _measure(problem, lam, W, gamma)
    finite = _finite(point)
    # ρ grows while the violation does not fall fast enough, both above constraint_tol and, below it, while the
    # violation's price in the gap (⟨Γ, (−R)₊⟩) is most of a gap above tol (else ρ would only amplify rounding).
    priced = (point.price > 0.5 * rule.tol * jnp.maximum(1, jnp.abs(point.objective))) & (point.price > 0.5 * point.gap)
    slow = (point.violation > opts.shrink * s.violation) & ((point.violation > rule.constraint_tol) | priced)
    candidate = finite & rule.feasible(point.violation)
    better = candidate & (point.gap < s.best.gap)
    best = select(better, point, s.best)
    nearest = select(_distance(rule, point) < _distance(rule, s.nearest), point, s.nearest)
    low_objective = jnp.where(candidate, jnp.minimum(s.low_objective, point.objective), s.low_objective)

    outer_steps = s.outer_steps + 1
    due = outer_steps - s.window_start >= opts.stall_window
    floor = opts.stall_rel_eps * eps * rounding_scale(low_objective)
    moved = (
        (best.gap < 0.5 * s.window_gap)
        | (low_objective < s.window_objective - floor)
        | (point.violation < 0.5 * s.window_violation)
    )
    status = jnp.where(_met(rule, point), Status.CONVERGED, jnp.where(due & ~moved, Status.STALLED, RUNNING))
    rho_max = _rho_max(problem, opts, dtype)
    return ALState(
        point=point,
        best=best,
        nearest=nearest,
        improved=s.improved | better,
        gamma=gamma,
        rho=jnp.where(slow, jnp.minimum(opts.growth * s.rho, rho_max), s.rho),
        # Down to tol/10, and below it while the exact gap does not follow: once the multipliers' updates
        # are smaller than what the subproblem's tolerance resolves, its solves return at once.
        inner_tol=jnp.maximum(0.1 * s.inner_tol, jnp.where(point.gap < s.gap, 0.1 * rule.tol, 16 * eps)),
        iterations=s.iterations + jnp.maximum(inner.iterations, 1),
        outer_steps=outer_steps,
        status=status.astype(jnp.int32),
        low_objective=low_objective,
        window_start=jnp.where(due, outer_steps, s.window_start),
        window_gap=jnp.where(due, best.gap, s.window_gap),
        window_objective=jnp.where(due, low_objective, s.window_objective),
        window_violation=jnp.where(due, point.violation, s.window_violation),
    )


def _read(s: ALState) -> dict:
    return dict(iteration=s.iterations, objective=s.objective, gap=s.gap, violation=s.violation, step=s.rho)


def _met(rule: ReluRule, p: _Point):
    return rule.met(p.objective, p.gap, p.violation)


def _distance(rule: ReluRule, p: _Point):
    return jnp.where(_finite(p), rule.distance(p.objective, p.gap, p.violation), jnp.inf)


def _finite(p: _Point):
    return jnp.isfinite(p.objective) & jnp.isfinite(p.gap) & jnp.all(jnp.isfinite(p.W))


def solve_relu_al(
    problem: Problem,
    lam: Scalar,
    W0: Array,
    rule: ReluRule,
    max_iters: Int[Array, ""],
    *,
    polish: bool = True,
    opts: ALOptions = ALOptions(),
    monitor: progress.Monitor | None = None,
    units: Units | None = None,
    state: ALState | None = None,
) -> ALState:
    """Augmented Lagrangian for the exact ReLU program from W0 = [U0; V0] (or from `state`, exactly).

    Stops CONVERGED at a point that meets `rule` (both tolerances); STALLED when, over `opts.stall_window` outer steps,
    the best gap among points within `constraint_tol` has not halved, the lowest objective among them has
    not moved beyond rounding, and the violation has not halved (float32 reaches such a floor: the multipliers
    carry ρ × the rounding of X W); MAX_ITERS when the budget runs out; NONFINITE on divergence (the last
    finite point). When it stops short, the state's point is the best within `constraint_tol` (smallest
    gap), unless that is the start and the finite point nearest to meeting `rule` (smallest
    `ReluRule.distance`) has an objective below the start's by more than its gap: then that point.

    With a `monitor` (static), reports after outer steps (every `monitor.every` iterations) and at the end,
    in the user's units when the problem was rescaled by `units` (ρ has none: it is the same in both).
    """
    if state is None:
        s0 = initial_state(problem, lam, W0, rule, opts)
    else:  # a stopped solve goes on from its carry (multipliers, ρ, subproblem tolerance, stall window)
        s0 = state._replace(status=jnp.where(_met(rule, state.point), Status.CONVERGED, RUNNING).astype(jnp.int32))

    def finish(out: ALState) -> ALState:
        # Stopped short of the tolerances: hand back the best point within constraint_tol, unless that is the start
        # and the point nearest to meeting both lies below it by more than its own gap (a float32 solve whose
        # violation stalls just above constraint_tol would otherwise return its zero start; a start that is the
        # optimum, as at λ ≥ λ_max, stays).
        short = (out.status == Status.MAX_ITERS) | (out.status == Status.STALLED)
        far_below = out.nearest.objective + out.nearest.gap < out.best.objective
        use_nearest = ~jnp.isfinite(out.best.gap) | (~out.improved & far_below)
        chosen = select(use_nearest, out.nearest, out.best)
        return out._replace(point=select(short, chosen, out.point))

    return iterate(
        lambda s: _outer_step(problem, lam, s, rule, max_iters, polish, opts),
        s0,
        max_iters,
        finite=lambda s: _finite(s.point),
        counters=("iterations", "outer_steps"),
        report=progress.reporter(monitor, lam, units, _read),
        finish=finish,
    )
