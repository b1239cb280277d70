"""The exact ReLU program, solved to a certified tolerance with its cone constraints met.

    min_{U,V}  L(Σ_i D_i X (u_i − v_i), y) + λ Σ_i (‖u_i‖₂ + ‖v_i‖₂)   s.t.  (2D_i − I) X u_i ≥ 0,  (2D_i − I) X v_i ≥ 0

Its optimum equals the optimum of the non-convex two-layer ReLU network with weight decay
min L(relu(X W1) w2, y) + (λ/2)(‖W1‖² + ‖w2‖²) over networks whose neurons use the given patterns
(all of them, when the masks enumerate every pattern of X: see `enumerate_masks`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import equinox as eqx
from jax.typing import ArrayLike

from .. import losses as _losses
from .. import progress, prox
from ..certificates import ReluRule
from ..options import ADMMOptions, ALOptions, check_options
from ..problem import Problem, on_shards, prepare, unstack
from ..sharding import RowSharded
from ..solution import Solution
from ._nondiff import not_differentiable
from .admm import ADMMState, solve_relu_admm
from .augmented_lagrangian import ALState, solve_relu_al
from .relu_working_set import solve_relu_working_set

__all__ = ["solve_relu", "relu_program", "ReluStatic", "check_relu_method"]

_METHODS = ("al", "admm")


def check_relu_method(method: str, loss: _losses.Loss) -> None:
    """The method exists and solves this loss (ADMM takes any loss with a prox)."""
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}; got {method!r}")
    if method == "admm" and type(loss).prox is _losses.Loss.prox:
        raise ValueError(f"method='admm' needs a loss with a prox (Loss.prox); the {loss.name} loss has none")


def relu_options(method: str, options: Any, admm_options: Any) -> ALOptions | ADMMOptions:
    """The method's options object: `options`, or (ADMM) the older `admm_options=`, or the defaults."""
    if admm_options is not None:
        if method != "admm" or options is not None:
            raise ValueError("admm_options is for method='admm' without options=; pass options=ADMMOptions(...)")
        options = admm_options
    return check_options(options, ADMMOptions if method == "admm" else ALOptions)


class ReluStatic(NamedTuple):
    """The static settings of one exact ReLU solve (hashable: they select the traced program)."""

    loss: _losses.Loss
    method: str
    polish: bool
    options: ALOptions | ADMMOptions
    monitor: progress.Monitor | None
    rescale_x: bool = True
    penalty: prox.Penalty = prox.GroupL2()


def relu_program(problem: Problem, lam, W0, tol, constraint_tol, max_iters, static: ReluStatic, state=None) -> Solution:
    """The exact ReLU solve of `problem` from W0 = [U0; V0] (or from `state`) as a `Solution` (un-jitted).

    The solver runs on the problem brought to unit scale (`convexnn._units`); what it returns is in the
    user's units, its `stats` too (its `state` stays in the solver's).
    """
    problem, units = problem.in_units()
    lam_s, W0 = units.lam_in(lam), units.weights_in(W0)
    args = (problem, lam_s, W0, ReluRule(tol, constraint_tol), max_iters)
    if static.method == "al" and state is None and _on_working_sets(problem, static.options):
        s = solve_relu_working_set(
            *args, polish=static.polish, opts=static.options, working_set=static.options.working_set,
            monitor=static.monitor, units=units,
        )  # fmt: skip
        stats = {"outer_steps": s.outer_steps, "rho": s.rho, "capacity": s.capacity}
    elif static.method == "al":
        s = solve_relu_al(
            *args, polish=static.polish, opts=static.options, monitor=static.monitor, units=units, state=state
        )
        stats = {"outer_steps": s.outer_steps, "rho": s.rho}
    else:
        # ADMM's active-set polish (`admm_polish`) is written for the group penalty on rows (n, d).
        polish = static.polish and isinstance(problem.penalty, prox.GroupL2) and not problem.patches
        s = solve_relu_admm(*args, static.options, static.monitor, polish, units, state)
        stats = {
            "admm_steps": s.admm_steps,
            "cg_iterations": s.cg_iterations,
            "polishes": s.polishes,
            "rho": units.weight_penalty_out(s.rho),  # on ‖u − v‖²: weights carry units (ρ_s, ρ_z have none)
            "rho_s": s.rho_s,
            "rho_z": s.rho_z,
            "projected_iterations": s.projected,  # still needed at the last slow_window's rate (SLOW's reason)
        }
    W, objective, gap = units.weights_out(s.W), units.objective_out(s.objective), units.objective_out(s.gap)
    return Solution(
        weights=unstack(W),
        objective=objective,
        gap=gap,
        violation=s.violation,
        iterations=s.iterations,
        status=units.status_out(s.status, objective, gap, W),
        lam=lam,
        stats=stats,
        state=s,
        penalty=problem.penalty.name,
    )


def _on_working_sets(problem: Problem, options: ALOptions) -> bool:
    """Static: the AL's working sets apply (asked for, enough patterns, rows of one device, the group penalty)."""
    sets = options.working_set
    return (
        sets is not None
        and problem.num_patterns >= sets.min_patterns
        and not problem.patches
        and problem.rows is None
        and problem.masks is not None
        and isinstance(problem.penalty, prox.GroupL2)
    )


def _relu_single(X, Y, masks, lam, W0, tol, constraint_tol, max_iters, state, static: ReluStatic):
    loss = static.loss
    problem = Problem(
        X=X, masks=masks, y=Y, loss=loss, N=loss.normaliser(Y), rescale_x=static.rescale_x, penalty=static.penalty
    )
    return relu_program(problem, lam, W0, tol, constraint_tol, max_iters, static, state)


def relu_on_shards(data: RowSharded, lam, W0, tol, constraint_tol, max_iters, static: ReluStatic) -> Solution:
    """The exact ReLU solve on row-sharded data (a `RowSharded`), one `shard_map` program (jit it)."""
    static = static._replace(monitor=progress.on_mesh(static.monitor, data.mesh))

    def local(problem, *args):
        return dataclasses.replace(relu_program(problem, *args, static), state=None)

    return on_shards(local, data, static.loss, lam, W0, tol, constraint_tol, max_iters, penalty=static.penalty)


_solve_relu_jit = eqx.filter_jit(not_differentiable(_relu_single, 9, "solve_relu"))
_solve_relu_sharded_jit = eqx.filter_jit(not_differentiable(relu_on_shards, 6, "solve_relu on row-sharded data"))


def _resume_state(state, method: str, W0):
    """A `Solution`'s solver state, when it can resume this solve (same method, shapes, dtype), else a ValueError."""
    if state is None:
        return None
    kind = ALState if method == "al" else ADMMState
    if not isinstance(state, kind) or state.W.shape != W0.shape or state.W.dtype != W0.dtype:
        raise ValueError(f"init must be a Solution of solve_relu(method={method!r}) with these shapes to resume it")
    return state


def solve_relu(
    X: ArrayLike | RowSharded,
    y: ArrayLike | None = None,
    masks: ArrayLike | None = None,
    lam: ArrayLike | None = None,
    *,
    loss: str | _losses.Loss = "squared",
    penalty: str = "group",
    method: str = "al",
    tol: ArrayLike | None = None,
    constraint_tol: ArrayLike = 1e-6,
    max_iters: ArrayLike | None = None,
    init: Any = None,
    polish: bool = True,
    options: Any = None,
    admm_options: Any = None,
    verbose: bool | int = False,
    callback: progress.Callback | None = None,
) -> Solution:
    """Train a two-layer ReLU network to a certified global optimum (over networks using these patterns).

    Row-sharded data: pass `shard_rows(mesh, X, y, masks)` as X and leave out y and masks, as for
    `solve_gated`; the AL multipliers and ADMM's slacks stay with their rows, the weights are replicated.

    Args:
        X, y, masks, lam, loss: as in `solve_gated` (X may be a `RowSharded`).
        penalty: "group" (λ Σ_{i,k} (‖U[i,:,k]‖ + ‖V[i,:,k]‖): c separate networks, the exact program) or
            "nuclear" (λ Σ_i (‖U_i‖_* + ‖V_i‖_*) with every column of U_i, V_i in pattern i's cone: the convex
            relaxation of the vector-output ReLU network, which shares its neurons across outputs. The
            relaxation's optimum bounds that network's optimum from below; `networks.relu_interval` reads a
            ReLU network off the solution and returns the certified interval).
            ADMM's polish is for the group penalty on rows (n, d) only.
        method: "al" (augmented Lagrangian, subproblems by R-FISTA + Newton polish; every loss) or
            "admm" (ADMM with a Nyström-preconditioned CG linear solve; squared loss in its u-step, the
            logistic loss through its prox; cross-entropy not yet).
        tol: stop when the duality gap ≤ tol · max(u, |objective|) (None: 1e-6; u as in `solve_gated`) ...
        constraint_tol: ... and the cone violation max (−s_i ⊙ X w_i)₊ / max |X W| ≤ constraint_tol.
        max_iters: iteration budget (None: 20 000; each iteration costs about one product with X and one
            with Xᵀ).
        init: initial (U, V), each shaped like the weights (default zero); or a `Solution` of `solve_relu`
            with the same method on the same data, λ and settings, to resume it exactly (the AL's multipliers,
            ρ and subproblem tolerance; ADMM's slacks, duals and penalties); `max_iters` counts from the first
            solve's start.
        polish: use the Newton polish inside the AL subproblems; for ADMM, try its active-set polish
            (`admm_polish`) every so often and stop once the certificate accepts the polished point.
        options: the method's options object, an `ALOptions` (method="al") or an `ADMMOptions`
            (method="admm"); None: the defaults. `ALOptions(working_set=WorkingSetOptions(...))` solves on
            working sets (`convexnn.solvers.relu_working_set`; rows of one device, the group penalty): the AL on a
            gathered set of patterns, every zero block outside it certified by its cone projection, the gap the
            whole program's; `stats["capacity"]` is the last set's size (off by default: measured in
            benchmarks/results/relu_support.md).
        admm_options: an `ADMMOptions` for method="admm" (the same as options=).
        verbose, callback: progress from inside the compiled loop, as in `solve_gated`: after AL outer
            steps or ADMM steps, at the first iterate past every `verbose` iterations (True: 100), and
            once at the end; `Progress.violation` is the cone violation and `Progress.step` the penalty ρ.

    Returns:
        a `Solution` with weights (U, V), each (P, d) for 1-D y or (P, d, c), and its certificate:

        - `violation` = ε / max |X W|, ε = max over blocks and rows of (−(2D_i − I) X u_i)₊: the point meets
          every cone constraint up to ε (0 for a feasible point).
        - `gap` ≥ 0 is the duality gap of the program whose constraints are relaxed by the point's own
          violations E = (−(2D_i − I) X u_i)₊ ≤ ε (`certificates.relu_duality_gap`): the point is feasible for
          that program, its optimum p*_E is ≤ the exact optimum p*, and objective − p* ≤ objective − p*_E ≤
          gap. A point below p* thus never shows a negative gap: the price of its violation, ⟨Γ, E⟩, is in
          the gap. CONVERGED means violation ≤ constraint_tol and gap ≤ tol · max(u, |objective|).
    """
    loss = _losses.get_loss(loss)
    monitor = progress.monitor(verbose, callback, f"relu-{method}")
    check_relu_method(method, loss)
    options = relu_options(method, options, admm_options)
    penalty = prox.get_penalty(penalty)
    p = prepare(
        "solve_relu",
        X,
        y,
        masks,
        loss,
        lam=lam,
        tol=tol,
        max_iters=max_iters,
        default_max_iters=20_000,
        constraint_tol=constraint_tol,
        init=init,
        blocks=2,
    )
    static = ReluStatic(loss, method, bool(polish), options, monitor, p.rescale_x, penalty)
    numbers = (p.lam, p.W0, p.tol, p.constraint_tol, p.max_iters)
    if isinstance(p.X, RowSharded):
        sol = _solve_relu_sharded_jit(p.X, *p.replicated(*numbers), static)
    else:
        sol = _solve_relu_jit(p.X, p.Y, p.masks, *numbers, _resume_state(p.resume, method, p.W0), static)
        # The patterns travel with the solution, as for solve_gated (to_network checks cones with them).
        sol = eqx.tree_at(lambda s: s.stats, sol, {**sol.stats, "masks": p.masks})
    progress.flush(monitor, sol)
    if p.squeeze:
        sol = eqx.tree_at(lambda s: s.weights, sol, tuple(w[..., 0] for w in sol.weights))
    return sol
