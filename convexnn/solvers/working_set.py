"""Working-set solves of the gated program: a cost that follows the solution's groups, not P.

    repeat:  S = the non-zero patterns ∪ those whose dual constraint ‖(Aᵀ∇L)_i‖_* ≤ λ is most violated, |S| = C
             W_S ← argmin L(Σ_{i∈S} D_i X w_i) + λ Σ_{i∈S} Ω(w_i)      (`solve_composite`, warm)
             G = Aᵀ∇L(A W)       one full adjoint: the whole program's certificate, and the next scores
    until the whole program's gap ≤ tol · max(1, |objective|)

The weights outside S are zero, so A W is the inner solve's own image and each outer step costs the data
once over all P patterns; the inner solve's iterations cost C/P of a full one. The capacity C is static, from a
ladder capacity · growth^k < P and then P itself: a stage runs its outer steps while the non-zero patterns fill at
most a fraction `fill` of C (an inner solve stops once they have filled more for `hold` iterations in a row), for at
most `stage_steps` outer steps, then hands its point to the next; the last stage is the full solve, warm. Each
inner solve stops at a fraction `inner_tol` of the whole program's relative gap at its start (at least of tol), as
celer does: early sets are solved loosely. The
stages are traced once each, so neither a new λ nor a growing set recompiles, and the whole solve is one jitted
program that vmaps (each lane its own set) and runs on row shards (the scores are computed from the psum'd
adjoint, so every shard gathers the same patterns).

Scores reuse the certificate's adjoint G, so a warm start along a path (the previous λ's solution) ranks the
patterns by the sequential strong rule's score at its first step; patterns that the gap-safe sphere test proves
zero at every optimum (`certificates.safe_zero`) come last.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Bool, Int, Scalar

from .. import certificates, operators, progress, prox
from .._units import Units
from ..options import GatedOptions, WorkingSetOptions
from ..problem import Problem
from ..solution import RUNNING, Status
from .fista import FistaState, status_at
from .objectives import GatedObjective

__all__ = ["capacities", "run_stages", "solve_working_set", "OuterState"]


def capacities(P: int, options: WorkingSetOptions) -> tuple[int, ...]:
    """The static set sizes, smallest first: capacity · growth^k below P, then P (the full solve)."""
    sizes, C = [], options.capacity
    while C < P:
        sizes.append(C)
        C *= options.growth
    return (*sizes, P)


def run_stages(P: int, options: WorkingSetOptions, state, going, outer, restart, report):
    """The outer loop over the ladder's set sizes C (static, `capacities`): at each, `outer(s, C)` while
    `going(s, C)`, from `restart(s)`; then a state still RUNNING is MAX_ITERS, reported once."""
    for C in capacities(P, options):
        state = lax.while_loop(functools.partial(going, C=C), functools.partial(outer, C=C), restart(state))
    state = state._replace(status=jnp.where(state.status == RUNNING, Status.MAX_ITERS, state.status).astype(jnp.int32))
    if report is not None:
        report(state, status=state.status)
    return state


class OuterState(NamedTuple):
    """The outer loop's carry: the full weights and, at them, the image, gradient and adjoint G = Aᵀ∇L."""

    W: Array
    img: Array
    g: Array
    G: Array
    objective: Scalar
    gap: Scalar
    step: Scalar
    iterations: Int[Array, ""]
    status: Int[Array, ""]
    outer_steps: Int[Array, ""]
    capacity: Int[Array, ""]
    stalled_inner: Bool[Array, ""]
    filled: Bool[Array, ""]  # the last inner solve stopped because its set filled: the stage is over
    stage_steps: Int[Array, ""]


def _pattern_support(obj: GatedObjective, W: Array) -> Array:
    return prox.pattern_support(obj.penalty.support(W))


def restrict(problem: Problem, idx: Int[Array, " C"]) -> Problem:
    """The problem on the patterns `idx` only (their masks, or their pooled patch sums, gathered in order). From
    gates, the set's masks are built (n×C bool): its inner iterations then skip the gates' extra GEMM."""
    if problem.gates is not None:
        masks = operators.masks_from_gates(problem.X, jnp.take(problem.gates, idx, axis=1))
        return dataclasses.replace(problem, masks=masks, gates=None)
    masks = None if problem.masks is None else jnp.take(problem.masks, idx, axis=-1)
    pooled = None if problem.pooled is None else jnp.take(problem.pooled, idx, axis=1)
    return dataclasses.replace(problem, masks=masks, pooled=pooled)


def _full_point(obj: GatedObjective, lam: Scalar, W: Array, img: Array):
    """(g, G, gap) at W of the whole program, from its image: one full adjoint."""
    g = obj.grad(img)
    G = obj.transpose(g)
    return g, G, obj.gap(lam, W, img, g, G)


def solve_working_set(
    problem: Problem,
    lam: Scalar,
    W0: Array,
    tol: Scalar,
    max_iters: Int[Array, ""],
    *,
    polish: bool,
    options: GatedOptions,
    working_set: WorkingSetOptions,
    monitor: progress.Monitor | None = None,
    units: Units | None = None,
    solve_composite=None,
    norms: Array | None = None,
):
    """min_W L(A W) + λ Ω(W) by working sets (module docstring), from W0; returns the final `OuterState`.

    `solve_composite` is `convexnn.solvers.gated.solve_composite` (passed in: that module imports this one).
    `iterations` counts the inner solves' iterations (each C/P of a full one) plus one per outer step's full
    adjoint; `max_iters` bounds that total. `norms` are the patterns' `certificates.pattern_norms` when known.
    """
    obj = GatedObjective(problem=problem)
    P = W0.shape[0]
    img = obj.apply(W0)
    g, G, gap = _full_point(obj, lam, W0, img)
    objective = obj.value(img) + lam * obj.penalty.value(W0)
    zero = jnp.zeros((), jnp.int32)
    state = OuterState(
        W=W0, img=img, g=g, G=G, objective=objective, gap=gap, step=jnp.ones((), W0.dtype), iterations=zero,
        status=_status(objective, gap, tol), outer_steps=zero, capacity=zero, stalled_inner=jnp.zeros((), bool),
        filled=jnp.zeros((), bool), stage_steps=zero,
    )  # fmt: skip
    report = progress.reporter(monitor, lam, units, _read, step_out="step_out")
    if norms is None and len(capacities(P, working_set)) > 1:
        norms = certificates.pattern_norms(problem)

    def inner_tol(s: OuterState) -> Scalar:
        """A fraction of the whole program's relative gap now, at least of tol: loose while violators abound."""
        return working_set.inner_tol * jnp.maximum(tol, s.gap / jnp.maximum(1, jnp.abs(s.objective)))

    def fits(s: OuterState, C: int):
        full, limit = C == P, int(working_set.fill * C)
        # A stage starts if its set can hold the non-zero patterns (a warm start's may not), and goes on until
        # an inner solve fills it or `stage_steps` outer steps have passed.
        starts = (s.stage_steps > 0) | (jnp.sum(_pattern_support(obj, s.W)) <= limit)
        room = full | (starts & ~s.filled & (s.stage_steps < working_set.stage_steps))
        return (s.status == RUNNING) & (s.iterations < max_iters) & room

    def outer(s: OuterState, C: int) -> OuterState:
        full, limit = C == P, int(working_set.fill * C)
        if full:
            idx, sub = jnp.arange(P), problem
        else:
            # the non-zero patterns first, then by violation; those proven zero (gap-safe) last
            safe = certificates.safe_zero(problem, lam, s.G, s.gap, norms)
            score = jnp.where(safe, -jnp.inf, obj.penalty.pattern_dual_norms(s.G))
            priority = jnp.where(_pattern_support(obj, s.W), jnp.inf, score)
            idx = jnp.sort(lax.top_k(priority, C)[1])
            sub = restrict(problem, idx)
        inner = solve_composite(
            GatedObjective(problem=sub), lam, s.W[idx], tol if full else inner_tol(s), max_iters - s.iterations,
            polish=polish, options=options, support_limit=None if full else (limit, working_set.hold),
        )  # fmt: skip
        W = inner.W if full else jnp.zeros_like(s.W).at[idx].set(inner.W)
        img = inner.fista.img
        g, G, gap = _full_point(obj, lam, W, img)
        objective = inner.objective
        iterations = s.iterations + inner.iterations + 1
        # A non-finite inner solve hands back its last finite iterate, and the outer loop stops there.
        finite = inner.status != Status.NONFINITE
        status = jnp.where(finite, _status(objective, gap, tol), Status.NONFINITE)
        # An inner solve that stalled at the dtype's precision, twice with no progress: the outer loop stops.
        no_progress = (objective >= s.objective) & (gap >= s.gap)
        stalled = (inner.status == Status.STALLED) & s.stalled_inner & no_progress
        status = jnp.where((status == RUNNING) & stalled, Status.STALLED, status).astype(jnp.int32)
        if full:  # the inner solve is the whole program's: its status is the answer (STALLED, MAX_ITERS too)
            status = jnp.where(status == RUNNING, inner.status, status).astype(jnp.int32)
        filled = inner.crowded > working_set.hold  # the inner solve stopped because its set filled
        new = OuterState(
            W=W, img=img, g=g, G=G, objective=objective, gap=gap, step=inner.fista.step, iterations=iterations,
            status=status, outer_steps=s.outer_steps + 1, capacity=jnp.asarray(C, jnp.int32),
            stalled_inner=inner.status == Status.STALLED, filled=filled,
            stage_steps=s.stage_steps + 1,
        )  # fmt: skip
        if report is not None:
            report(new, since=s.iterations, when=new.status == RUNNING)
        return new

    def restart(s: OuterState) -> OuterState:
        return s._replace(filled=jnp.zeros((), bool), stage_steps=zero)

    return run_stages(P, working_set, state, fits, outer, restart, report)


def _status(objective: Scalar, gap: Scalar, tol: Scalar) -> Int[Array, ""]:
    return status_at(objective, gap, tol, jnp.isfinite(objective) & jnp.isfinite(gap))


def _read(s: OuterState) -> dict:
    return dict(iteration=s.iterations, objective=s.objective, gap=s.gap, step=s.step)


def fista_state(obj: GatedObjective, s: OuterState) -> FistaState:
    """The R-FISTA state at the outer point (no momentum): what a full solve resumed from it starts with."""
    one, zero = jnp.ones((), s.W.dtype), jnp.zeros((), jnp.int32)
    return FistaState(s.W, s.img, s.W, s.img, s.g, s.G, one, s.step, s.objective, s.gap, zero, obj.penalty.support(s.W))
