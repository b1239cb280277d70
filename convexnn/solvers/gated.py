"""The gated ReLU program, solved to a certified tolerance: R-FISTA phases with active-set Newton polish.

    min_W  L(Σ_i D_i X w_i, y) + λ Σ_i Σ_k ‖W[i, :, k]‖₂

Phases of R-FISTA run until the set of non-zero groups has held still for a while; then a Newton–CG
polish solves the program restricted to that set, and is kept if it lowers the objective. Proximal
gradient finds the support; Newton finds the optimum on it. Every iterate carries a duality gap, and
the loop (`_loop.iterate`) stops when gap ≤ tol · max(1, |objective|) in the solver's units.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike
from jaxtyping import Array, Int, Scalar

from .. import _validate, certificates, operators, progress, prox
from .. import losses as _losses
from .._units import Units
from ..options import GatedOptions, PolishOptions, StallOptions, check_options
from ..problem import Problem, on_shards, prepare
from ..sharding import RowSharded
from ..solution import RUNNING, Solution, Status
from . import working_set
from ._loop import iterate, running, select
from ._nondiff import not_differentiable
from .fista import FistaState, evaluate, fista_step, init_state, is_finite, rounding_scale, status_of
from .implicit import gated_solution_vjp
from .low_rank import low_rank_polish
from .newton import newton_polish
from .objectives import CompositeSmooth, GatedObjective

__all__ = ["solve_gated", "solve_composite", "GatedState", "GatedStatic", "gated_program", "gated_core", "lockstep"]


def lockstep(options: GatedOptions) -> GatedOptions:
    """The options of solves vmapped in lockstep (λ paths): the polish's Newton–CG without the n×n
    sample-space preconditioner. Under vmap every lane runs every lane's polish, so the lanes' c Cholesky
    factorizations of n×n kernels would be paid by all of them at each polish; CG steps are batched GEMMs."""
    newton = dataclasses.replace(options.polish.newton, kernel_cg_steps=0.0)
    return dataclasses.replace(options, polish=dataclasses.replace(options.polish, newton=newton))


class GatedState(NamedTuple):
    """The loop carry of `solve_composite`: the R-FISTA state, the polish phases and the stall window."""

    fista: FistaState
    iterations: Int[Array, ""]
    status: Int[Array, ""]
    phase_start: Int[Array, ""]
    phase_len: Int[Array, ""]
    best_objective: Scalar  # best objective and gap seen so far
    best_gap: Scalar
    window_start: Int[Array, ""]  # the stall window: when it began and the bests then
    window_objective: Scalar
    window_gap: Scalar
    crowded: Int[Array, ""]  # iterations in a row with more non-zero blocks than a `support_limit`

    @property
    def W(self) -> Array:
        return self.fista.W

    @property
    def objective(self) -> Scalar:
        return self.fista.objective

    @property
    def gap(self) -> Scalar:
        return self.fista.gap


def _track(c: GatedState, opts: StallOptions) -> GatedState:
    """Update the bests; at the end of a stall window, flag STALLED if neither best moved enough."""
    s = c.fista
    best_objective = jnp.minimum(c.best_objective, s.objective)
    best_gap = jnp.minimum(c.best_gap, s.gap)
    eps = jnp.finfo(s.objective.dtype).eps
    due = c.iterations - c.window_start >= opts.window
    moved = (c.window_objective - best_objective > opts.rel_eps * eps * rounding_scale(best_objective)) | (
        best_gap < 0.5 * c.window_gap
    )
    stalled = due & ~moved & (c.status == RUNNING)
    return c._replace(
        status=jnp.where(stalled, Status.STALLED, c.status).astype(jnp.int32),
        best_objective=best_objective,
        best_gap=best_gap,
        window_start=jnp.where(due, c.iterations, c.window_start),
        window_objective=jnp.where(due, best_objective, c.window_objective),
        window_gap=jnp.where(due, best_gap, c.window_gap),
    )


def _polish(
    obj: CompositeSmooth, lam: Scalar, tol: Scalar, max_iters: Int[Array, ""], c: GatedState, opts: PolishOptions
) -> GatedState:
    """A Newton polish on the identified structure (the non-zero groups; the nuclear blocks' ranks:
    `low_rank`), kept if it lowered the objective (beyond rounding) or the gap."""
    s = c.fista
    polisher = low_rank_polish if isinstance(obj.penalty, prox.Nuclear) else newton_polish
    W, cost = polisher(obj, lam, s.W, s.active, opts.newton, max_iters - c.iterations, tol)
    img = obj.apply(W)
    g = obj.grad(img)
    G = obj.transpose(g)
    objective, gap = evaluate(obj, lam, W, img, g, G)
    polished = s._replace(
        W=W, img=img, V=W, img_v=img, g_v=g, G_v=G, t=jnp.ones_like(s.t), objective=objective, gap=gap
    )
    # A polish that failed (non-finite) or helped neither the objective (beyond rounding) nor the gap is
    # dropped; the run goes on from s.
    rounding = 4 * jnp.finfo(objective.dtype).eps * jnp.abs(s.objective)
    accept = is_finite(polished) & ((objective <= s.objective + rounding) | (gap < s.gap))
    s = select(accept, polished, s)
    iterations = c.iterations + cost
    cut = accept & (gap <= 0.1 * c.fista.gap)
    phase_len = jnp.where(cut, opts.min_phase, 2 * c.phase_len)
    return c._replace(
        fista=s,
        iterations=iterations,
        status=status_of(s, tol),
        phase_start=iterations,
        phase_len=phase_len.astype(jnp.int32),
    )


def initial_state(obj: CompositeSmooth, lam: Scalar, W0: Array, tol: Scalar, options: GatedOptions) -> GatedState:
    """The loop carry at W0 (its status CONVERGED when W0 is already certified)."""
    s = init_state(obj, lam, W0)
    zero = jnp.zeros((), jnp.int32)
    return GatedState(
        fista=s,
        iterations=zero,
        status=status_of(s, tol),
        phase_start=zero,
        phase_len=jnp.asarray(options.polish.min_phase, jnp.int32),
        best_objective=s.objective,
        best_gap=s.gap,
        window_start=zero,
        window_objective=s.objective,
        window_gap=s.gap,
        crowded=zero,
    )


def _read(c: GatedState) -> dict:
    return dict(iteration=c.iterations, objective=c.fista.objective, gap=c.fista.gap, step=c.fista.step)


def solve_composite(
    obj: CompositeSmooth,
    lam: Scalar,
    W0: Array,
    tol: Scalar,
    max_iters: Int[Array, ""],
    *,
    polish: bool = True,
    options: GatedOptions = GatedOptions(),
    monitor: progress.Monitor | None = None,
    units: Units | None = None,
    state: GatedState | None = None,
    support_limit: tuple[int, int] | None = None,
) -> GatedState:
    """min_W F(K W) + λ Σ_g ‖W_g‖₂ from W0 (or from `state`, exactly) until gap ≤ tol·max(1, |objective|).

    A pure function of arrays: jit it, vmap it (over λ, data or W0), or run it inside shard_map with an
    objective whose reductions are collective. Returns the final loop state with its status set. With a
    `monitor` (static) it reports every `monitor.every` iterations and at the end (`convexnn.progress`),
    in the user's units when the problem was rescaled by `units`. With a `support_limit` (limit, hold) (static) it
    also stops, status MAX_ITERS, once more than `limit` blocks of W have been non-zero for `hold` iterations in a
    row (a working set that filled).
    """
    if state is None:
        c0 = initial_state(obj, lam, W0, tol, options)
    else:  # a stopped solve goes on from its carry, its status recomputed at this tol
        c0 = state._replace(status=status_of(state.fista, tol))
    report = progress.reporter(monitor, lam, units, _read, step_out="step_out")

    def step(c: GatedState) -> GatedState:
        s = fista_step(obj, lam, c.fista, options.fista)
        status, crowded = status_of(s, tol), c.crowded
        if support_limit is not None:
            limit, hold = support_limit
            many = jnp.sum(prox.pattern_support(s.active)) > limit
            crowded = jnp.where(many, crowded + 1, jnp.maximum(crowded - 1, 0))
            status = jnp.where((crowded > hold) & (status == RUNNING), Status.MAX_ITERS, status).astype(jnp.int32)
        c = c._replace(fista=s, iterations=c.iterations + 1, status=status, crowded=crowded)
        return _track(c, options.stall)

    def ready(c: GatedState):
        return (c.iterations - c.phase_start >= c.phase_len) & (c.fista.stable >= options.polish.stable_for)

    def between(c: GatedState) -> GatedState:
        before = c
        go = running(c, max_iters)
        c = lax.cond(go, lambda c: _polish(obj, lam, tol, max_iters, c, options.polish), lambda c: c, c)
        c = _track(c, options.stall)
        if report is not None:
            report(c, since=before.iterations, when=go & running(c, max_iters))
        return c

    phases = dict(pause=ready, between=between) if polish else {}
    return iterate(step, c0, max_iters, finite=lambda c: is_finite(c.fista), report=report, **phases)


class GatedStatic(NamedTuple):
    """The static settings of one gated solve (hashable: they select the traced program)."""

    loss: _losses.Loss
    polish: bool
    options: GatedOptions
    monitor: progress.Monitor | None
    rescale_x: bool = True
    penalty: prox.Penalty = prox.GroupL2()


def gated_program(problem: Problem, lam, W0, tol, max_iters, static: GatedStatic, state=None) -> Solution:
    """The gated solve of `problem` as a `Solution`, run at unit scale (`convexnn._units`), returned in the
    user's units; its `state` (the loop carry, in the solver's units) resumes it. Patches are pooled first
    (`Problem.with_pooled`): the gated maps then cost K times less."""
    problem, units = problem.in_units()
    problem = problem.with_pooled()
    sets = static.options.working_set
    stats = {}
    norms = certificates.pattern_norms(problem)  # ‖D_i X‖_F: the screening test's, one pass over X
    if sets is not None and problem.num_patterns >= sets.min_patterns:
        out, stats = _on_working_sets(problem, units, lam, W0, tol, max_iters, static, state, norms)
    else:
        out = solve_composite(
            GatedObjective(problem=problem),
            units.lam_in(lam),
            units.weights_in(W0),
            tol,
            max_iters,
            polish=static.polish,
            options=static.options,
            monitor=static.monitor,
            units=units,
            state=state,
        )
    # Patterns proven zero at every optimum (gap-safe), from the final dual point.
    screened = certificates.safe_zero(problem, units.lam_in(lam), out.fista.G_v, out.fista.gap, norms)
    stats = {**stats, "screened": screened}
    W, objective, gap = units.weights_out(out.W), units.objective_out(out.objective), units.objective_out(out.gap)
    return Solution(
        weights=W,
        objective=objective,
        gap=gap,
        violation=jnp.zeros((), W.dtype),
        iterations=out.iterations,
        status=units.status_out(out.status, objective, gap, W),
        lam=lam,
        state=out,
        penalty=problem.penalty.name,
        stats=stats,
    )


def _on_working_sets(problem: Problem, units: Units, lam, W0, tol, max_iters, static: GatedStatic, state, norms):
    """`working_set.solve_working_set` in the solver's units, as a `GatedState` (no momentum: a solve resumed
    from it starts R-FISTA afresh there) and its stats: outer steps and the last capacity. `norms` are the
    patterns' `certificates.pattern_norms`."""
    W0 = units.weights_in(W0) if state is None else state.W
    out = working_set.solve_working_set(
        problem,
        units.lam_in(lam),
        W0,
        tol,
        max_iters,
        polish=static.polish,
        options=static.options,
        working_set=static.options.working_set,
        monitor=static.monitor,
        units=units,
        solve_composite=solve_composite,
        norms=norms,
    )
    obj = GatedObjective(problem=problem)
    fista = working_set.fista_state(obj, out)
    carry = GatedState(
        fista=fista, iterations=out.iterations, status=out.status, phase_start=out.iterations,
        phase_len=jnp.asarray(static.options.polish.min_phase, jnp.int32), best_objective=out.objective,
        best_gap=out.gap, window_start=out.iterations, window_objective=out.objective, window_gap=out.gap,
        crowded=jnp.zeros((), jnp.int32),
    )  # fmt: skip
    return carry, {"outer_steps": out.outer_steps, "capacity": out.capacity}


def _problem(X, Y, masks, static: GatedStatic) -> Problem:
    loss, rescale_x = static.loss, static.rescale_x
    return Problem(X=X, masks=masks, y=Y, loss=loss, N=loss.normaliser(Y), rescale_x=rescale_x, penalty=static.penalty)


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def gated_core(X, Y, masks, lam, W0, tol, max_iters, static: GatedStatic, state) -> Solution:
    """The gated solve on canonical inputs (X (n, d), Y (n, c), bool masks, scalar arrays), un-jitted.

    Differentiable in X, Y and λ by implicit differentiation of the optimality conditions
    (`convexnn.solvers.implicit`); the loop itself is never differentiated.
    """
    return gated_program(_problem(X, Y, masks, static), lam, W0, tol, max_iters, static, state)


def _gated_core_fwd(X, Y, masks, lam, W0, tol, max_iters, static, state):
    sol = gated_program(_problem(X, Y, masks, static), lam, W0, tol, max_iters, static, state)
    return sol, (X, Y, masks, lam, sol.weights)


def _gated_core_bwd(static: GatedStatic, residuals, ct: Solution):
    X, Y, masks, lam, W = residuals
    if not isinstance(static.penalty, prox.GroupL2):
        raise NotImplementedError("jax.grad through solve_gated is implemented for penalty='group' only")
    X_bar, Y_bar, lam_bar = gated_solution_vjp(X, Y, masks, lam, W, static.loss, ct.weights, ct.objective)
    return X_bar, Y_bar, None, lam_bar + ct.lam, None, None, None, None


gated_core.defvjp(_gated_core_fwd, _gated_core_bwd)


_solve_gated_jit = eqx.filter_jit(gated_core)


def gated_from_gates(X, Y, gates, lam, W0, tol, max_iters, static: GatedStatic) -> Solution:
    """The gated solve of X (n, d) or patches (n, K, h) whose patterns are recomputed from `gates` (d, P) in row
    blocks: by the maps themselves for rows (`operators.gates_forward`), once into Z_i = Σ_k D_ik X_k for patches
    (`operators.pool_patches_from_gates`). The n×P (n×K×P) masks never exist."""
    loss = static.loss
    patches = X.ndim == 3
    problem = Problem(
        X=X, masks=None, y=Y, loss=loss, N=loss.normaliser(Y), rescale_x=static.rescale_x, penalty=static.penalty,
        pooled=operators.pool_patches_from_gates(X, gates) if patches else None, gates=None if patches else gates,
    )  # fmt: skip
    return dataclasses.replace(gated_program(problem, lam, W0, tol, max_iters, static), state=None)


_solve_from_gates_jit = eqx.filter_jit(not_differentiable(gated_from_gates, 7, "solve_gated with gates="))


def gated_on_shards(data: RowSharded, lam, W0, tol, max_iters, static: GatedStatic) -> Solution:
    """The gated solve on row-sharded data, one `shard_map` program (jit it; not differentiable)."""
    static = static._replace(monitor=progress.on_mesh(static.monitor, data.mesh))

    def local(problem, lam, W0, tol, max_iters):
        return dataclasses.replace(gated_program(problem, lam, W0, tol, max_iters, static), state=None)

    return on_shards(local, data, static.loss, lam, W0, tol, max_iters, penalty=static.penalty)


_solve_gated_sharded_jit = eqx.filter_jit(not_differentiable(gated_on_shards, 5, "solve_gated on row-sharded data"))


def solve_gated(
    X: ArrayLike | RowSharded,
    y: ArrayLike | None = None,
    masks: ArrayLike | None = None,
    lam: ArrayLike | None = None,
    *,
    loss: str | _losses.Loss = "squared",
    penalty: str = "group",
    tol: ArrayLike | None = None,
    max_iters: ArrayLike | None = None,
    init: ArrayLike | Solution | None = None,
    polish: bool = True,
    options: Any = None,
    gates: ArrayLike | None = None,
    verbose: bool | int = False,
    callback: progress.Callback | None = None,
) -> Solution:
    """Train a gated ReLU network to a certified optimum: min_W L(Σ_i D_i X w_i, y) + λ Ω(W).

    Ω(W) = Σ_{i,k} ‖W[i,:,k]‖₂ (penalty="group": c separate networks, one neuron per pattern and output) or
    Σ_i ‖W[i]‖_* (penalty="nuclear": one hidden layer shared by the c outputs; the SVD of block i gives the
    neurons that share gate i, `to_network`). For c = 1 the two are the same program.

    R-FISTA (line search with growth, gradient-mapping restarts) finds the non-zero groups; an active-set
    Newton–CG polish finishes on them; from 512 patterns on, on working sets (`convexnn.solvers.working_set`;
    `WorkingSetOptions`; stats "outer_steps", "capacity"). `stats["screened"]` (P,) marks the patterns proven
    zero at every optimum (gap-safe test at the returned point, `certificates.safe_zero`). One jitted program
    with no host round trips; works under `jax.jit` and `jax.vmap` (over lam, y, masks, init), in float32 and
    float64 (the dtype of X). Differentiable (`jax.grad`, `jax.vjp`) in X, y and lam by implicit
    differentiation: the weights and objective carry exact derivatives wherever the set of non-zero groups is
    locally constant.

    Inputs are checked here, before tracing (shapes always; values when concrete), so their annotations
    are deliberately loose: a bad input gets a ValueError that names it.

    Data split by rows over devices or processes: pass `shard_rows(mesh, X, y, masks)` as X and leave out y
    and masks (`solve_gated(data, lam=...)`). The solve is then one `shard_map` program whose only
    communication is one psum of the (P, d, c) gradient plus scalars per iteration; the Newton polish runs
    unpreconditioned CG (its sample-space preconditioner is n×n), and the result is not differentiable.

    Args:
        X: data (n, d), float32 or float64; or a `RowSharded` (from `shard_rows`) holding X, y and masks.
        y: targets (n,) or (n, c); for "logistic" labels in {−1, +1}; for "cross_entropy" integer labels
            (n,) or one-hot rows (n, c).
        masks: activation patterns (n, P), bool (see `activation_masks`); used in the order given.
        lam: λ ≥ 0.
        loss: "squared", "logistic", "cross_entropy" or a `Loss` instance.
        penalty: "group" or "nuclear" (see above). With "nuclear" the prox is singular-value thresholding of
            each block and the polish is Newton–CG on the factors of the identified ranks
            (`convexnn.solvers.low_rank`); the dual norm of the certificate is the spectral norm.
            Differentiation (`jax.grad`) is implemented for "group" only.
        tol: stop when the duality gap ≤ tol · max(u, |objective|) (None: 1e-6). u is the unit of the
            objective (`certificates.objective_unit(y, loss)`): for the squared loss the targets' variance
            averaged over outputs (1 for standardized targets), for the label losses 1; so the rule, like
            every result, does not depend on the units of X, y and λ.
        max_iters: iteration budget (None: 10 000), counting R-FISTA steps and Newton–CG steps alike (each
            costs one product with X and one with Xᵀ; a Newton step's gradient counts as one more; on working
            sets an inner iteration, of C/P the cost, counts as one, and each outer step's full adjoint too).
        init: initial weights, shaped like the solution's weights (default zero); or a `Solution` of
            `solve_gated` on the same data, λ and settings, to resume it: the loop goes on from its exact
            state (momentum, step size, polish phase), and `max_iters` counts from the first solve's start.
        polish: use the active-set Newton polish (turn off for plain R-FISTA).
        options: a `GatedOptions` (line search, polish, stall rule); None: the defaults.
        gates: on one device, the gates (d, P) in place of masks: the patterns are recomputed in row blocks by
            every product with X (for patches, once, while Z_i = Σ_k D_ik X_k is built), so no masks are
            stored (docs/scaling.md); the same solution as with `activation_masks(X, gates)`, not differentiable.
        verbose: print progress from inside the compiled loop every `verbose` iterations (True: every 100)
            and once at the end; off (False) by default. Static: changing it recompiles, never the result.
        callback: a function of one `convexnn.progress.Progress` (iteration, objective, gap, step size, λ,
            final status), called at those points instead of printing (every 100 iterations unless
            `verbose` sets the cadence); under vmap once per lane. See `convexnn.progress`.

    Returns:
        a `Solution` with weights (P, d) for 1-D y, (P, d, c) for 2-D y; status CONVERGED when the gap
        met the tolerance, MAX_ITERS when the budget ran out first, NONFINITE when an iterate became
        non-finite (the last finite iterate is returned), STALLED when objective and gap stopped improving
        at the precision of the dtype (float32 certifies less than float64; `gap` says how much).
    """
    loss = _losses.get_loss(loss)
    monitor = progress.monitor(verbose, callback, "gated")
    options = check_options(options, GatedOptions)
    penalty = prox.get_penalty(penalty)
    if gates is not None:
        return _solve_with_gates(X, y, masks, gates, lam, loss, penalty, tol, max_iters, init, polish, options, monitor)
    p = prepare(
        "solve_gated", X, y, masks, loss, lam=lam, tol=tol, max_iters=max_iters, default_max_iters=10_000, init=init
    )
    static = GatedStatic(loss, bool(polish), options, monitor, p.rescale_x, penalty)
    if isinstance(p.X, RowSharded):
        sol = _solve_gated_sharded_jit(p.X, *p.replicated(p.lam, p.W0, p.tol, p.max_iters), static)
    else:
        state = _resume_state(p.resume, p.W0)
        sol = _solve_gated_jit(p.X, p.Y, p.masks, p.lam, p.W0, p.tol, p.max_iters, static, state)
        # The patterns travel with the solution (the same buffer, no copy outside jit), so that
        # `cone_decompose(solution, X)` knows them.
        sol = eqx.tree_at(lambda s: s.stats, sol, {**sol.stats, "masks": p.masks})
    progress.flush(monitor, sol)
    if p.squeeze:
        sol = eqx.tree_at(lambda s: s.weights, sol, sol.weights[..., 0])
    return sol


def _solve_with_gates(X, y, masks, gates, lam, loss, penalty, tol, max_iters, init, polish, options, monitor):
    """`solve_gated(X, y, lam=..., gates=G)`: checked here, solved by `gated_from_gates`."""
    if masks is not None:
        raise ValueError("give masks or gates, not both (gates= recomputes the masks in row blocks)")
    if isinstance(X, RowSharded) or np.ndim(X) not in (2, 3):
        raise ValueError(
            "gates= is for X (n, d) or patches (n, K, h) on one device (the masks are recomputed in row blocks); "
            f"pass masks otherwise; got X of shape {np.shape(X)}"
        )
    if isinstance(init, Solution):
        init = init.weights
    one_pattern = np.zeros(np.shape(X)[:-1] + (1,), bool)  # n (n·K) bytes: prepare checks X, y and the numbers
    p = prepare("solve_gated", X, y, one_pattern, loss, lam=lam, tol=tol, max_iters=max_iters, default_max_iters=10_000)
    _, h, c = p.shape
    G = np.asarray(gates) if not isinstance(gates, jax.Array) else gates
    if G.ndim != 2 or G.shape[0] != h or G.shape[1] == 0 or not np.issubdtype(G.dtype, np.floating):
        raise ValueError(
            f"gates must be a floating (d, P) array, d = {h} (X's last axis); got {G.dtype} of shape {G.shape}"
        )
    G = jnp.asarray(G, p.X.dtype)
    P = G.shape[1]
    W0 = jnp.zeros((P, h, c), p.X.dtype) if init is None else _validate.check_init(init, P, h, c, p.squeeze, p.X.dtype)
    static = GatedStatic(loss, bool(polish), options, monitor, p.rescale_x, penalty)
    sol = _solve_from_gates_jit(p.X, p.Y, G, p.lam, W0, p.tol, p.max_iters, static)
    progress.flush(monitor, sol)
    if p.squeeze:
        sol = eqx.tree_at(lambda s: s.weights, sol, sol.weights[..., 0])
    return sol


def _resume_state(state, W0: Array) -> GatedState | None:
    """A `Solution`'s solver state, when it can resume this solve (same shapes and dtype), else a ValueError."""
    if state is None:
        return None
    if not isinstance(state, GatedState) or state.W.shape != W0.shape or state.W.dtype != W0.dtype:
        raise ValueError("init must be a Solution of solve_gated with these shapes and dtype to resume it")
    return state
