"""The exact ReLU program by an augmented Lagrangian method whose subproblems R-FISTA solves.

For multipliers Γ ≥ 0 of the cone constraints R = s ⊙ X W ≥ 0 and a penalty ρ > 0, one outer step is

    W ← argmin_W L(z(W)) + (ρ/2) ‖(Γ/ρ − R(W))₊‖² + λ Σ_g ‖W_g‖      (warm-started R-FISTA + Newton polish)
    Γ ← ρ (Γ/ρ − R(W))₊                                              (first-order multiplier update)
    ρ ← min(10 ρ, ρ_max)  if the violation did not fall fourfold        (as in scnn and LANCELOT)

and the subproblem tolerance tightens tenfold per step down to tol/10. It stops when the violation is
≤ `constraint_tol` (relative to max |X W|) and the exact program's duality gap, built from ∇L and Γ
(`relu_duality_gap`), is ≤ tol · max(1, |objective|), or when neither the gap nor the objective nor the
violation improves any more (STALLED: float32's rounding, multiplied by ρ, is a floor). ρ_max keeps that
rounding below λ's scale; a fixed ρ still converges (the multiplier updates do the work), only slower.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Int, Scalar

from .. import progress, prox
from .._units import Units
from ..solution import RUNNING, Status
from .fista import rounding_scale
from .gated import PolishOptions, solve_composite
from .newton import NewtonOptions
from .relu_objectives import AugmentedLagrangianObjective, ReluData, relu_duality_gap, relu_violation

__all__ = ["ALOptions", "ALState", "solve_relu_al"]


class ALOptions(NamedTuple):
    """AL settings: ρ starts at rho0/N, grows by `growth` when the violation did not fall by `shrink`.

    From a feasible W0 (the default zero) the first step's violation cannot have fallen, so ρ grows once
    there: the first subproblem runs at rho0/N, the next from 10·rho0/N. Measured at 2000×50×200 (float32,
    tol 1e-4, code before 3b07a8e), that reached 1e-4 at iteration 16 402 (at d6b4375: 18 152); exempting
    the first step from the test (ρ grew at the second instead) and starting at 10·rho0/N without that
    growth both first reached it at 20 000.
    """

    rho0: float = 100.0
    growth: float = 10.0
    rho_max_eps: float = 1e-3  # ρ ≤ rho_max_eps / (N·eps): beyond it the penalty's gradient carries ρ × the
    # rounding of X W, which swamps λ in the subproblems (float32: N·ρ ≤ 8.4e3) and makes the certificate lie
    # about nothing better; float64's cap (4.5e12) is never met in practice
    stall_window: int = 5  # outer steps after which, if the best certified gap has not halved and the best
    # objective not fallen by more than `stall_rel_eps` epsilons, the solve stops as STALLED
    stall_rel_eps: float = 64.0
    shrink: float = 0.25
    inner_tol0: float = 1e-3
    # The subproblems' Newton polish builds its block-Jacobi preconditioner once per polish, not per Newton
    # step: a build (n d² per block, ~84 ms) costs ~35 CG steps at 2000×50×200, and rebuilding at every
    # step did not save CG steps there (float32, one core: 174 Newton steps and ~17 400 polish iterations
    # either way; the AL's 20 000 iterations took 67 s rebuilding, 55 s building once).
    polish: PolishOptions = PolishOptions(newton=NewtonOptions(rebuild_preconditioner=False))


class _Point(NamedTuple):
    """An iterate with its certificate: what the solver can return."""

    W: Array  # [U; V], (2P, d, c)
    objective: Scalar
    gap: Scalar
    violation: Scalar


class ALState(NamedTuple):
    point: _Point  # the last outer step's result
    best: _Point  # the smallest gap among the points within constraint_tol (gap inf: none yet)
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


def _measure(data: ReluData, lam: Scalar, W: Array, gamma: Array) -> _Point:
    XW = data.products(W)
    z, R = data.split(XW)
    objective = data.loss_value(z) + lam * prox.group_l1(W)
    grad = data.loss.grad(z, data.y, data.N)
    return _Point(W, objective, relu_duality_gap(data, lam, W, z, R, grad, gamma), relu_violation(R, XW, data.rows))


def _select(pred: Array, a, b):
    return jax.tree.map(lambda x, y: jnp.where(pred, x, y), a, b)


def solve_relu_al(
    data: ReluData,
    lam: Scalar,
    W0: Array,
    tol: Scalar,
    constraint_tol: Scalar,
    max_iters: Int[Array, ""],
    *,
    polish: bool = True,
    opts: ALOptions = ALOptions(),
    monitor: progress.Monitor | None = None,
    units: Units | None = None,
) -> ALState:
    """Augmented Lagrangian for the exact ReLU program from W0 = [U0; V0]; see the module docstring.

    Stops CONVERGED at a point within both tolerances; STALLED when, over `opts.stall_window` outer steps,
    the best gap among points within `constraint_tol` has not halved, the lowest objective among them has
    not moved beyond rounding, and the violation has not halved (float32 reaches such a floor: the multipliers
    carry ρ × the rounding of X W); MAX_ITERS when the budget runs out; NONFINITE on divergence (the last
    finite point). When it stops short, the state's point is the best within `constraint_tol` (smallest
    gap), if any was found, else the last.

    With a `monitor` (static), reports after outer steps (every `monitor.every` iterations) and at the end,
    in the user's units when the problem was rescaled by `units` (ρ has none: it is the same in both).
    """
    dtype = W0.dtype
    eps = jnp.finfo(dtype).eps
    n, c = data.y.shape
    gamma0 = jnp.zeros((n, c, W0.shape[0]), dtype)
    rho_max = jnp.asarray(opts.rho_max_eps / (data.N * eps), dtype)
    inf = jnp.asarray(jnp.inf, dtype)

    def within(p: _Point):
        return p.violation <= constraint_tol

    def converged(p: _Point):
        return within(p) & (p.gap <= tol * jnp.maximum(1, jnp.abs(p.objective)))

    start = _measure(data, lam, W0, gamma0)
    no_point = _Point(W0, inf, inf, inf)
    best0 = _select(within(start), start, no_point)
    s0 = ALState(
        point=start,
        best=best0,
        gamma=gamma0,
        rho=jnp.minimum(jnp.asarray(opts.rho0 / data.N, dtype), rho_max),
        inner_tol=jnp.maximum(tol, jnp.asarray(opts.inner_tol0, dtype)),
        iterations=jnp.zeros((), jnp.int32),
        outer_steps=jnp.zeros((), jnp.int32),
        status=jnp.where(converged(start), Status.CONVERGED, RUNNING).astype(jnp.int32),
        low_objective=best0.objective,
        window_start=jnp.zeros((), jnp.int32),
        window_gap=best0.gap,
        window_objective=best0.objective,
        window_violation=inf,  # a feasible W0, such as 0, says nothing of the outer steps' progress
    )

    def cond(s: ALState):
        return (s.status == RUNNING) & (s.iterations < max_iters)

    def report(s: ALState, **when):
        fields = dict(objective=s.objective, gap=s.gap, violation=s.violation, step=s.rho, lam=lam)
        if units is not None:
            fields.update(
                objective=units.objective_out(s.objective), gap=units.objective_out(s.gap), lam=units.lam_out(lam)
            )
        progress.report(monitor, iteration=s.iterations, **fields, **when)

    def body(s: ALState) -> ALState:
        obj = AugmentedLagrangianObjective(data=data, gamma=s.gamma, rho=s.rho)
        inner = solve_composite(
            obj, lam, s.W, s.inner_tol, max_iters - s.iterations, polish=polish, polish_opts=opts.polish
        )
        W = inner.W
        _, R = data.split(data.products(W))
        gamma = s.rho * jnp.maximum(s.gamma / s.rho - R, 0)
        point = _measure(data, lam, W, gamma)
        finite = jnp.isfinite(point.objective) & jnp.isfinite(point.gap) & jnp.all(jnp.isfinite(W))
        slow = (point.violation > opts.shrink * s.violation) & (point.violation > constraint_tol)
        candidate = finite & within(point)
        best = _select(candidate & (point.gap < s.best.gap), point, s.best)
        low_objective = jnp.where(candidate, jnp.minimum(s.low_objective, point.objective), s.low_objective)

        outer_steps = s.outer_steps + 1
        due = outer_steps - s.window_start >= opts.stall_window
        floor = opts.stall_rel_eps * eps * rounding_scale(low_objective)
        moved = (
            (best.gap < 0.5 * s.window_gap)
            | (low_objective < s.window_objective - floor)
            | (point.violation < 0.5 * s.window_violation)
        )
        status = jnp.where(converged(point), Status.CONVERGED, jnp.where(due & ~moved, Status.STALLED, RUNNING))
        new = ALState(
            point=point,
            best=best,
            gamma=gamma,
            rho=jnp.where(slow, jnp.minimum(opts.growth * s.rho, rho_max), s.rho),
            # Down to tol/10, and below it while the exact gap does not follow: once the multipliers' updates
            # are smaller than what the subproblem's tolerance resolves, its solves return at once.
            inner_tol=jnp.maximum(0.1 * s.inner_tol, jnp.where(point.gap < s.gap, 0.1 * tol, 16 * eps)),
            iterations=s.iterations + jnp.maximum(inner.iterations, 1),
            outer_steps=outer_steps,
            status=jnp.where(finite, status, Status.NONFINITE).astype(jnp.int32),
            low_objective=low_objective,
            window_start=jnp.where(due, outer_steps, s.window_start),
            window_gap=jnp.where(due, best.gap, s.window_gap),
            window_objective=jnp.where(due, low_objective, s.window_objective),
            window_violation=jnp.where(due, point.violation, s.window_violation),
        )
        kept = _select(finite, new, s)  # the last finite state on divergence
        kept = kept._replace(iterations=new.iterations, outer_steps=new.outer_steps, status=new.status)
        if monitor is not None:  # not a lane that had stopped (vmap), nor the last iterate (reported below)
            report(kept, since=s.iterations, when=cond(s) & cond(kept))
        return kept

    out = lax.while_loop(cond, body, s0)
    status = jnp.where(out.status == RUNNING, Status.MAX_ITERS, out.status).astype(jnp.int32)
    # Stopped short of the tolerances: hand back the best point within constraint_tol, when there is one.
    short = (status == Status.MAX_ITERS) | (status == Status.STALLED)
    out = out._replace(point=_select(short & jnp.isfinite(out.best.gap), out.best, out.point), status=status)
    if monitor is not None:
        report(out, status=out.status)
    return out
