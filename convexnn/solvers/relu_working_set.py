"""Working-set solves of the exact ReLU program: the augmented Lagrangian on a gathered set of patterns.

    repeat:  S = the C patterns of largest weight ‖u_i‖ + ‖v_i‖, then of largest cone score (zero blocks)
             [U_S; V_S] ← the AL on the patterns S, warm from the weights and multipliers (`solve_relu_al`)
             score_i = max ‖Π_{K_i}(∓Xᵀ D_i ∇L)‖ over signs and outputs; Γ outside S from those projections
             gap = the whole program's `relu_duality_gap` at ([U; V], Γ)
    until the rule is met (both tolerances, the whole program's gap)

A zero block is optimal iff its cone projection's norm is ≤ λ (`certificates.cone_scores`): the plain test
‖Xᵀ D_i ∇L‖ ≤ λ of the gated program fails for most zero blocks of an exact optimum (their cones need
multipliers), so the scores and the multipliers outside S come from the projections, and the certificate is the
whole program's, with every cone multiplier that the projections give. The exact optimum puts its weight on few
patterns (benchmarks/results/relu_support.md: at 300×10, P = 512, 13 patterns carry 99.9 % of it and the
16 largest reach the optimum within 2e-8) but these are not the gated optimum's largest, so the set is chosen by
the scores, not seeded from the gated program.

Capacities follow the gated working sets' ladder (`working_set.capacities`); a stage runs at most `stage_steps`
outer steps, and the last one is the AL on every pattern, warm. Each outer step costs 2·P·c small cone QPs
(interior point, d×d systems) on top of the AL on S: rows (n, d), the group penalty and one device only.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Int, Scalar

from .. import certificates, progress
from .._units import Units
from ..certificates import ReluRule
from ..options import ALOptions, WorkingSetOptions
from ..problem import Problem
from ..solution import RUNNING, Status
from .augmented_lagrangian import initial_state, solve_relu_al
from .working_set import restrict, run_stages

__all__ = ["ReluOuterState", "solve_relu_working_set"]


class ReluOuterState(NamedTuple):
    """The outer loop's carry: the whole program's point and certificate, and the cone scores there."""

    W: Array  # [U; V], (2P, d, c)
    objective: Scalar
    gap: Scalar
    violation: Scalar
    scores: Array  # (P,): the largest cone score of each pattern's blocks
    gamma: Array  # the certificate's multipliers (n, c, 2P): the inner AL's on its set, the projections' elsewhere
    rho: Scalar  # the last inner AL's penalty (reported as the step; each inner AL starts from rho0/N)
    iterations: Int[Array, ""]
    outer_steps: Int[Array, ""]
    capacity: Int[Array, ""]
    stage_steps: Int[Array, ""]
    status: Int[Array, ""]


def _whole_point(problem: Problem, lam: Scalar, W: Array, inner_gamma: Array | None, idx: Array | None):
    """(objective, gap, violation, scores, Γ) of the whole program at W: Γ is the inner AL's on the set `idx`, the
    cone projections' elsewhere."""
    P = problem.num_patterns
    XW = problem.products(W)
    z, R = problem.split(XW)
    grad = problem.loss_grad(z)
    norms, gamma = certificates.cone_scores(problem.X, problem.masks, problem.adjoint(grad))
    if inner_gamma is not None:
        gamma = gamma.at[..., idx].set(inner_gamma[..., : idx.size]).at[..., P + idx].set(inner_gamma[..., idx.size :])
    objective = problem.loss_value(z) + lam * problem.penalty.value(W)
    gap = certificates.relu_duality_gap(problem, lam, W, z, R, grad, gamma)
    violation = certificates.relu_violation(R, XW, problem.rows)
    return objective, gap, violation, jnp.max(norms, axis=(0, 2)), gamma


def _pattern_weights(W: Array, P: int) -> Array:
    """‖u_i‖ + ‖v_i‖ over outputs, (P,)."""
    norms = jnp.sqrt(jnp.sum(jnp.square(W), axis=1))  # (2P, c)
    return jnp.sum(norms[:P] + norms[P:], axis=-1)


def solve_relu_working_set(
    problem: Problem,
    lam: Scalar,
    W0: Array,
    rule: ReluRule,
    max_iters: Int[Array, ""],
    *,
    polish: bool,
    opts: ALOptions,
    working_set: WorkingSetOptions,
    monitor: progress.Monitor | None = None,
    units: Units | None = None,
) -> ReluOuterState:
    """The exact ReLU program by working sets (module docstring), from W0 = [U0; V0]; the final `ReluOuterState`.

    `iterations` counts the inner ALs' iterations plus one per outer step (its full products and cone QPs).
    """
    P = problem.num_patterns
    objective, gap, violation, scores, gamma = _whole_point(problem, lam, W0, None, None)
    zero = jnp.zeros((), jnp.int32)
    state = ReluOuterState(
        W=W0, objective=objective, gap=gap, violation=violation, scores=scores, gamma=gamma,
        rho=jnp.zeros((), W0.dtype), iterations=zero, outer_steps=zero, capacity=zero, stage_steps=zero,
        status=jnp.where(rule.met(objective, gap, violation), Status.CONVERGED, RUNNING).astype(jnp.int32),
    )  # fmt: skip
    report = progress.reporter(monitor, lam, units, _read)

    def going(s: ReluOuterState, C: int):
        full = C == P
        room = full | (s.stage_steps < working_set.stage_steps)
        return (s.status == RUNNING) & (s.iterations < max_iters) & room

    def outer(s: ReluOuterState, C: int) -> ReluOuterState:
        full = C == P
        if full:
            idx, sub = jnp.arange(P), problem
        else:
            # weighted patterns first (largest first), then the zero ones by their cone score
            weight = _pattern_weights(s.W, P)
            priority = jnp.where(weight > 0, jnp.inf, s.scores)
            order = jnp.lexsort((-weight, -priority))
            idx = jnp.sort(order[:C])
            sub = restrict(problem, idx)
        W_S = jnp.concatenate([s.W[idx], s.W[P + idx]])
        loose = jnp.maximum(rule.tol, working_set.inner_tol * s.gap / jnp.maximum(1, jnp.abs(s.objective)))
        inner_rule = rule if full else rule._replace(tol=loose)
        # The multipliers go on from the last certificate (the AL's on the old set, the projections' elsewhere);
        # ρ starts afresh: handed on, it grew tenfold with every set.
        gamma_S = jnp.concatenate([s.gamma[..., idx], s.gamma[..., P + idx]], axis=-1)
        start = initial_state(sub, lam, W_S, inner_rule, opts, gamma0=gamma_S)
        budget = max_iters - s.iterations
        inner = solve_relu_al(sub, lam, W_S, inner_rule, budget, polish=polish, opts=opts, state=start)
        W = jnp.zeros_like(s.W).at[idx].set(inner.W[:C]).at[P + idx].set(inner.W[C:])
        objective, gap, violation, scores, gamma = _whole_point(problem, lam, W, inner.gamma, idx)
        if full:  # the AL on every pattern: its own certificate and status are the answer
            objective, gap, violation = inner.objective, inner.gap, inner.violation
        status = jnp.where(rule.met(objective, gap, violation), Status.CONVERGED, RUNNING)
        status = jnp.where(inner.status == Status.NONFINITE, Status.NONFINITE, status)
        if full:
            status = jnp.where(status == RUNNING, inner.status, status)
        # The set met its loose tolerance at once and the whole gap did not move: the violators do not fit in
        # this set (its weighted patterns fill it), so the next, larger one takes over.
        stuck = (inner.iterations <= 1) & (gap >= s.gap)
        stage_steps = jnp.where(stuck, working_set.stage_steps, s.stage_steps + 1)
        new = ReluOuterState(
            W=W, objective=objective, gap=gap, violation=violation, scores=scores, gamma=gamma, rho=inner.rho,
            iterations=s.iterations + inner.iterations + 1, outer_steps=s.outer_steps + 1,
            capacity=jnp.asarray(C, jnp.int32), stage_steps=stage_steps, status=status.astype(jnp.int32),
        )  # fmt: skip
        if report is not None:
            report(new, since=s.iterations, when=new.status == RUNNING)
        return new

    def restart(s: ReluOuterState) -> ReluOuterState:
        return s._replace(stage_steps=zero)

    return run_stages(P, working_set, state, going, outer, restart, report)


def _read(s: ReluOuterState) -> dict:
    return dict(iteration=s.iterations, objective=s.objective, gap=s.gap, violation=s.violation, step=s.rho)
