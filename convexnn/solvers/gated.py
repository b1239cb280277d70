"""The gated ReLU program, solved to a certified tolerance: R-FISTA phases with active-set Newton polish.

    min_W  L(Σ_i D_i X w_i, y) + λ Σ_i Σ_k ‖W[i, :, k]‖₂

Phases of R-FISTA run until the set of non-zero groups has held still for a while; then a Newton–CG
polish solves the program restricted to that set, and is kept if it lowers the objective. Proximal
gradient finds the support; Newton finds the optimum on it. Every iterate carries a duality gap, and
the loop stops when gap ≤ tol · max(1, |objective|).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike
from jaxtyping import Array, Float, Int, Scalar

from .. import _validate, progress
from .. import losses as _losses
from .._units import Units, units_of
from ..sharding import RowSharded, check_problem, replicate, run_sharded
from ..solution import RUNNING, Solution, Status
from ._nondiff import not_differentiable
from .fista import (
    FistaOptions,
    FistaState,
    check,
    evaluate,
    fista_step,
    init_state,
    is_finite,
    rounding_scale,
    with_status,
)
from .implicit import gated_solution_vjp
from .newton import NewtonOptions, newton_polish
from .objectives import CompositeSmooth, GatedObjective

__all__ = ["solve_gated", "solve_composite", "gated_program", "gated_sharded", "PolishOptions"]


class StallOptions(NamedTuple):
    """Stop with STALLED when, over `window` iterations, the best objective fell by less than `rel_eps`
    epsilons times its rounding scale (`fista.rounding_scale`) and the best gap did not halve: rounding has won."""

    window: int = 200
    rel_eps: float = 64.0


class PolishOptions(NamedTuple):
    """When to try a Newton polish: after `min_phase` R-FISTA iterations (doubling after a polish that
    did not cut the gap tenfold) once the non-zero groups have not changed for `stable_for` iterations."""

    min_phase: int = 25
    stable_for: int = 10
    newton: NewtonOptions = NewtonOptions()


LOCKSTEP_POLISH = PolishOptions(newton=NewtonOptions(kernel_cg_steps=0.0))
"""The polish for solves vmapped in lockstep (λ paths): Newton–CG without the n×n sample-space
preconditioner. Under vmap every lane runs every lane's polish, so the lanes' c Cholesky factorizations
of n×n kernels are paid by all of them at each polish; CG steps are batched GEMMs and cost far less."""


class _Carry(NamedTuple):
    s: FistaState
    phase_start: Int[Array, ""]
    phase_len: Int[Array, ""]
    best_objective: Scalar  # best objective and gap seen so far
    best_gap: Scalar
    window_start: Int[Array, ""]  # the stall window: when it began and the bests then
    window_objective: Scalar
    window_gap: Scalar


def _track(c: _Carry, opts: StallOptions) -> _Carry:
    """Update the bests; at the end of a stall window, flag STALLED if neither best moved enough."""
    s = c.s
    best_objective = jnp.minimum(c.best_objective, s.objective)
    best_gap = jnp.minimum(c.best_gap, s.gap)
    eps = jnp.finfo(s.objective.dtype).eps
    due = s.iterations - c.window_start >= opts.window
    moved = (c.window_objective - best_objective > opts.rel_eps * eps * rounding_scale(best_objective)) | (
        best_gap < 0.5 * c.window_gap
    )
    stalled = due & ~moved & (s.status == RUNNING)
    status = jnp.where(stalled, Status.STALLED, s.status).astype(jnp.int32)
    return c._replace(
        s=s._replace(status=status),
        best_objective=best_objective,
        best_gap=best_gap,
        window_start=jnp.where(due, s.iterations, c.window_start),
        window_objective=jnp.where(due, best_objective, c.window_objective),
        window_gap=jnp.where(due, best_gap, c.window_gap),
    )


def _polish(
    obj: CompositeSmooth, lam: Scalar, tol: Scalar, max_iters: Int[Array, ""], c: _Carry, opts: PolishOptions
) -> _Carry:
    s = c.s
    W, cost = newton_polish(obj, lam, s.W, s.active, opts.newton, max_iters - s.iterations, tol)
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
    s = jax.tree.map(lambda a, b: jnp.where(accept, a, b), polished, s)
    s = with_status(s._replace(iterations=s.iterations + cost), tol)
    cut = accept & (gap <= 0.1 * c.s.gap)
    phase_len = jnp.where(cut, opts.min_phase, 2 * c.phase_len)
    return c._replace(s=s, phase_start=s.iterations, phase_len=phase_len.astype(jnp.int32))


def solve_composite(
    obj: CompositeSmooth,
    lam: Scalar,
    W0: Float[Array, "p d c"],
    tol: Scalar,
    max_iters: Int[Array, ""],
    *,
    polish: bool = True,
    fista_opts: FistaOptions = FistaOptions(),
    polish_opts: PolishOptions = PolishOptions(),
    stall_opts: StallOptions = StallOptions(),
    monitor: progress.Monitor | None = None,
    units: Units | None = None,
) -> FistaState:
    """min_W F(K W) + λ Σ_g ‖W_g‖₂ from W0 until gap ≤ tol·max(1, |objective|) or max_iters iterations.

    A pure function of arrays: jit it, vmap it (over λ, data or W0), or run it inside shard_map with an
    objective whose reductions are collective. Returns the final loop state with its status set. With a
    `monitor` (static) it reports every `monitor.every` iterations and at the end (`convexnn.progress`),
    in the user's units when the problem was rescaled by `units`.
    """
    s = with_status(init_state(obj, lam, W0), tol)

    def running(s: FistaState):
        return (s.status == RUNNING) & (s.iterations < max_iters)

    def phase_cond(c: _Carry):
        ready = (c.s.iterations - c.phase_start >= c.phase_len) & (c.s.stable >= polish_opts.stable_for)
        return running(c.s) & ~(polish & ready)

    def report(s: FistaState, **when):
        values = dict(objective=s.objective, gap=s.gap, step=s.step, lam=lam)
        if units is not None:
            values = dict(
                objective=units.objective_out(s.objective),
                gap=units.objective_out(s.gap),
                step=units.step_out(s.step),
                lam=units.lam_out(lam),
            )
        progress.report(monitor, iteration=s.iterations, **values, **when)

    def phase_body(c: _Carry):
        new = _track(c._replace(s=check(c.s, fista_step(obj, lam, c.s, fista_opts), tol)), stall_opts)
        if monitor is not None:  # not a lane that had stopped (vmap), nor the last iterate (reported below)
            report(new.s, since=c.s.iterations, when=phase_cond(c) & running(new.s))
        return new

    def outer_body(c: _Carry):
        c = lax.while_loop(phase_cond, phase_body, c)
        if polish:
            before = c.s
            c = lax.cond(running(c.s), lambda c: _polish(obj, lam, tol, max_iters, c, polish_opts), lambda c: c, c)
            c = _track(c, stall_opts)
            if monitor is not None:
                report(c.s, since=before.iterations, when=running(before) & running(c.s))
        return c

    zero = jnp.zeros((), jnp.int32)
    c0 = _Carry(
        s=s,
        phase_start=zero,
        phase_len=jnp.asarray(polish_opts.min_phase, jnp.int32),
        best_objective=s.objective,
        best_gap=s.gap,
        window_start=zero,
        window_objective=s.objective,
        window_gap=s.gap,
    )
    out = lax.while_loop(lambda c: running(c.s), outer_body, c0).s
    out = out._replace(status=jnp.where(out.status == RUNNING, Status.MAX_ITERS, out.status).astype(jnp.int32))
    if monitor is not None:
        report(out, status=out.status)
    return out


def gated_program(
    X, Y, masks, lam, W0, tol, max_iters, loss, polish, rows=None, N=None, monitor=None, rescale_x=True
) -> Solution:
    """The gated solve on canonical inputs as a `Solution`; with `rows`, on one shard of row-sharded data.

    The solver runs on the problem brought to unit scale (`convexnn._units`); what it returns is in the
    user's units.
    """
    N = loss.normaliser(Y) if N is None else N
    units = units_of(X, Y, loss, N, rows, rescale_x)
    Xs, Ys = units.data(X, Y)
    obj = GatedObjective(X=Xs, masks=masks, y=Ys, loss=loss, N=N, rows=rows)
    # `polish` is a bool, or the PolishOptions to polish with (see LOCKSTEP_POLISH).
    opts = polish if isinstance(polish, PolishOptions) else PolishOptions()
    s = solve_composite(
        obj,
        units.lam_in(lam),
        units.weights_in(W0),
        tol,
        max_iters,
        polish=bool(polish),
        polish_opts=opts,
        monitor=monitor,
        units=units,
    )
    W, objective, gap = units.weights_out(s.W), units.objective_out(s.objective), units.objective_out(s.gap)
    return Solution(
        weights=W,
        objective=objective,
        gap=gap,
        violation=jnp.zeros((), X.dtype),
        iterations=s.iterations,
        status=units.status_out(s.status, objective, gap, W),
        lam=lam,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9, 10))
def gated_core(X, Y, masks, lam, W0, tol, max_iters, loss, polish, monitor=None, rescale_x=True) -> Solution:
    """The gated solve on canonical inputs (X (n, d), Y (n, c), bool masks, scalar arrays), un-jitted.

    Differentiable in X, Y and λ by implicit differentiation of the optimality conditions
    (`convexnn.solvers.implicit`); the loop itself is never differentiated.
    """
    return gated_program(X, Y, masks, lam, W0, tol, max_iters, loss, polish, monitor=monitor, rescale_x=rescale_x)


def _gated_core_fwd(X, Y, masks, lam, W0, tol, max_iters, loss, polish, monitor=None, rescale_x=True):
    sol = gated_program(X, Y, masks, lam, W0, tol, max_iters, loss, polish, monitor=monitor, rescale_x=rescale_x)
    return sol, (X, Y, masks, lam, sol.weights)


def _gated_core_bwd(loss, polish, monitor, rescale_x, residuals, ct: Solution):
    X, Y, masks, lam, W = residuals
    X_bar, Y_bar, lam_bar = gated_solution_vjp(X, Y, masks, lam, W, loss, ct.weights, ct.objective)
    return X_bar, Y_bar, None, lam_bar + ct.lam, None, None, None


gated_core.defvjp(_gated_core_fwd, _gated_core_bwd)
_solve_gated_jit = eqx.filter_jit(gated_core)


def gated_sharded(data: RowSharded, lam, W0, tol, max_iters, loss, polish, monitor=None) -> Solution:
    """The gated solve on row-sharded data, one `shard_map` program (jit it; not differentiable)."""
    N = data.normaliser(loss)
    monitor = progress.on_mesh(monitor, data.mesh)

    def local(X, Y, masks, rows, lam, W0, tol, max_iters):
        return gated_program(
            X,
            Y,
            masks,
            lam,
            W0,
            tol,
            max_iters,
            loss,
            polish,
            rows=rows,
            N=N,
            monitor=monitor,
            rescale_x=data.rescale_x,
        )

    return run_sharded(local, data, lam, W0, tol, max_iters)


_solve_gated_sharded_jit = eqx.filter_jit(not_differentiable(gated_sharded, 5, "solve_gated on row-sharded data"))


def solve_gated(
    X: ArrayLike | RowSharded,
    y: ArrayLike | None = None,
    masks: ArrayLike | None = None,
    lam: ArrayLike | None = None,
    *,
    loss: str | _losses.Loss = "squared",
    tol: ArrayLike | None = None,
    max_iters: ArrayLike | None = None,
    init: ArrayLike | None = None,
    polish: bool = True,
    verbose: bool | int = False,
    callback: progress.Callback | None = None,
) -> Solution:
    """Train a gated ReLU network to a certified optimum: min_W L(Σ_i D_i X w_i, y) + λ Σ_{i,k} ‖W[i,:,k]‖₂.

    R-FISTA (line search with growth, gradient-mapping restarts) finds the non-zero groups; an active-set
    Newton–CG polish finishes on them. One jitted program with no host round trips; works under `jax.jit`
    and `jax.vmap` (over lam, y, masks, init), in float32 and float64 (the dtype of X). Differentiable
    (`jax.grad`, `jax.vjp`) in X, y and lam by implicit differentiation: the weights and objective carry
    exact derivatives wherever the set of non-zero groups is locally constant.

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
        tol: stop when the duality gap ≤ tol · max(u, |objective|) (None: 1e-6). u is the unit of the
            objective (`certificates.objective_unit(y, loss)`): for the squared loss the targets' variance
            averaged over outputs (1 for standardized targets), for the label losses 1; so the rule, like
            every result, does not depend on the units of X, y and λ.
        max_iters: iteration budget (None: 10 000), counting R-FISTA steps and Newton–CG steps alike (each
            costs one product with X and one with Xᵀ; a Newton step's gradient counts as one more).
        init: initial weights, shaped like the solution's weights (default zero).
        polish: use the active-set Newton polish (turn off for plain R-FISTA).
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
    if lam is None:
        raise ValueError("lam must be given: solve_gated(X, y, masks, lam) or solve_gated(data, lam=...)")
    X, Y, masks, (P, d, c), squeeze, dtype, rescale_x = check_problem(X, y, masks, loss)
    lam = _validate.check_lam(lam, dtype)
    tol = _validate.check_positive("tol", _validate.DEFAULT_TOL if tol is None else tol, dtype)
    max_iters = _validate.check_positive("max_iters", 10_000 if max_iters is None else max_iters, dtype, integer=True)
    if init is None:
        W0 = jnp.zeros((P, d, c), dtype)
    else:
        W0 = _validate.check_init(init, P, d, c, squeeze, dtype)
    if isinstance(X, RowSharded):
        args = replicate(X, (lam, W0, tol, max_iters))
        sol = _solve_gated_sharded_jit(X, *args, loss, polish, monitor)
    else:
        sol = _solve_gated_jit(X, Y, masks, lam, W0, tol, max_iters, loss, polish, monitor, rescale_x)
        # The patterns travel with the solution (the same buffer, no copy outside jit), so that
        # `cone_decompose(solution, X)` knows them.
        sol = eqx.tree_at(lambda s: s.stats, sol, {**sol.stats, "masks": masks})
    progress.flush(monitor, sol)
    if squeeze:
        sol = eqx.tree_at(lambda s: s.weights, sol, sol.weights[..., 0])
    return sol
