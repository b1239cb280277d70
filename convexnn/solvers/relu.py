"""The exact ReLU program, solved to a certified tolerance with its cone constraints met.

    min_{U,V}  L(Σ_i D_i X (u_i − v_i), y) + λ Σ_i (‖u_i‖₂ + ‖v_i‖₂)   s.t.  (2D_i − I) X u_i ≥ 0,  (2D_i − I) X v_i ≥ 0

Its optimum equals the optimum of the non-convex two-layer ReLU network with weight decay
min L(relu(X W1) w2, y) + (λ/2)(‖W1‖² + ‖w2‖²) over networks whose neurons use the given patterns
(all of them, when the masks enumerate every pattern of X: see `enumerate_masks`).
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jax.typing import ArrayLike

from .. import _validate, progress
from .. import losses as _losses
from .._units import units_of
from ..sharding import RowSharded, check_problem, replicate, run_sharded
from ..solution import Solution
from ._nondiff import not_differentiable
from .admm import solve_relu_admm
from .augmented_lagrangian import solve_relu_al
from .relu_objectives import ReluData, stack, unstack

__all__ = ["solve_relu", "relu_solution", "check_relu_method"]

_METHODS = ("al", "admm")


def check_relu_method(method: str, loss: _losses.Loss) -> None:
    """The method exists and solves this loss (ADMM takes any loss with a prox)."""
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}; got {method!r}")
    if method == "admm" and type(loss).prox is _losses.Loss.prox:
        raise ValueError(f"method='admm' needs a loss with a prox (Loss.prox); the {loss.name} loss has none")


def relu_solution(
    data, lam, W0, tol, constraint_tol, max_iters, method, polish, admm_options, monitor=None, rescale_x=True
) -> Solution:
    """The exact ReLU solve of `data` (one device's rows, or all) from W0 = [U0; V0] as a `Solution` (un-jitted).

    The solver runs on the problem brought to unit scale (`convexnn._units`); what it returns is in the
    user's units, its `stats` too.
    """
    units = units_of(data.X, data.y, data.loss, data.N, data.rows, rescale_x)
    Xs, Ys = units.data(data.X, data.y)
    data = eqx.tree_at(lambda d: (d.X, d.y), data, (Xs, Ys))
    lam_s, W0 = units.lam_in(lam), units.weights_in(W0)
    if method == "al":
        s = solve_relu_al(data, lam_s, W0, tol, constraint_tol, max_iters, polish=polish, monitor=monitor, units=units)
        stats = {"outer_steps": s.outer_steps, "rho": s.rho}
    else:
        s = solve_relu_admm(
            data, lam_s, W0, tol, constraint_tol, max_iters, admm_options, monitor=monitor, polish=polish, units=units
        )
        stats = {
            "admm_steps": s.admm_steps,
            "cg_iterations": s.cg_iterations,
            "polishes": s.polishes,
            "rho": units.weight_penalty_out(s.rho),  # on ‖u − v‖²: weights carry units (ρ_s, ρ_z have none)
            "rho_s": s.rho_s,
            "rho_z": s.rho_z,
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
    )


def _relu_program(
    X, Y, masks, lam, W0, tol, constraint_tol, max_iters, loss, method, polish, admm_options, monitor, rescale_x
):
    data = ReluData(X=X, masks=masks, y=Y, loss=loss, N=loss.normaliser(Y))
    return relu_solution(
        data, lam, W0, tol, constraint_tol, max_iters, method, polish, admm_options, monitor, rescale_x
    )


def relu_sharded(
    data, lam, W0, tol, constraint_tol, max_iters, loss, method, polish, admm_options, monitor=None
) -> Solution:
    """The exact ReLU solve on row-sharded data (a `RowSharded`), one `shard_map` program (jit it)."""
    N = data.normaliser(loss)
    monitor = progress.on_mesh(monitor, data.mesh)

    def local(X, Y, masks, rows, lam, W0, tol, constraint_tol, max_iters):
        shard = ReluData(X=X, masks=masks, y=Y, loss=loss, N=N, rows=rows)
        return relu_solution(
            shard, lam, W0, tol, constraint_tol, max_iters, method, polish, admm_options, monitor, data.rescale_x
        )

    return run_sharded(local, data, lam, W0, tol, constraint_tol, max_iters)


_solve_relu_jit = eqx.filter_jit(not_differentiable(_relu_program, 8, "solve_relu"))
_solve_relu_sharded_jit = eqx.filter_jit(not_differentiable(relu_sharded, 6, "solve_relu on row-sharded data"))


def solve_relu(
    X: ArrayLike | RowSharded,
    y: ArrayLike | None = None,
    masks: ArrayLike | None = None,
    lam: ArrayLike | None = None,
    *,
    loss: str | _losses.Loss = "squared",
    method: str = "al",
    tol: ArrayLike | None = None,
    constraint_tol: ArrayLike = 1e-6,
    max_iters: ArrayLike | None = None,
    init: Any = None,
    polish: bool = True,
    admm_options=None,
    verbose: bool | int = False,
    callback: progress.Callback | None = None,
) -> Solution:
    """Train a two-layer ReLU network to a certified global optimum (over networks using these patterns).

    Row-sharded data: pass `shard_rows(mesh, X, y, masks)` as X and leave out y and masks, as for
    `solve_gated`; the AL multipliers and ADMM's slacks stay with their rows, the weights are replicated.

    Args:
        X, y, masks, lam, loss: as in `solve_gated` (X may be a `RowSharded`).
        method: "al" (augmented Lagrangian, subproblems by R-FISTA + Newton polish; every loss) or
            "admm" (ADMM with a Nyström-preconditioned CG linear solve; squared loss in its u-step, the
            logistic loss through its prox; cross-entropy not yet).
        tol: stop when the duality gap ≤ tol · max(u, |objective|) (None: 1e-6; u as in `solve_gated`) ...
        constraint_tol: ... and the cone violation max (−s_i ⊙ X w_i)₊ / max |X W| ≤ constraint_tol.
        max_iters: iteration budget (None: 20 000; each iteration costs about one product with X and one
            with Xᵀ).
        init: initial (U, V), each shaped like the weights (default zero).
        polish: use the Newton polish inside the AL subproblems; for ADMM, try its active-set polish
            (`admm_polish`) every so often and stop once the certificate accepts the polished point.
        admm_options: an `ADMMOptions` (penalty, CG and Nyström settings) for method="admm".
        verbose, callback: progress from inside the compiled loop, as in `solve_gated`: after AL outer
            steps or ADMM steps, at the first iterate past every `verbose` iterations (True: 100), and
            once at the end; `Progress.violation` is the cone violation and `Progress.step` the penalty ρ.

    Returns:
        a `Solution` with weights (U, V), each (P, d) for 1-D y or (P, d, c); `violation` the relative
        cone violation; `gap` a bound on objective − optimum from a dual feasible point of the exact
        program (valid for any point; meaningful as a certificate once the violation is small).
    """
    loss = _losses.get_loss(loss)
    monitor = progress.monitor(verbose, callback, f"relu-{method}")
    check_relu_method(method, loss)
    if lam is None:
        raise ValueError("lam must be given: solve_relu(X, y, masks, lam) or solve_relu(data, lam=...)")
    X, Y, masks, (P, d, c), squeeze, dtype, rescale_x = check_problem(X, y, masks, loss)
    lam = _validate.check_lam(lam, dtype)
    tol = _validate.check_positive("tol", _validate.DEFAULT_TOL if tol is None else tol, dtype)
    constraint_tol = _validate.check_positive("constraint_tol", constraint_tol, dtype)
    max_iters = _validate.check_positive("max_iters", 20_000 if max_iters is None else max_iters, dtype, integer=True)
    if init is None:
        W0 = jnp.zeros((2 * P, d, c), dtype)
    else:
        if not (isinstance(init, tuple) and len(init) == 2):
            raise ValueError("init must be a pair (U, V)")
        W0 = stack(*(_validate.check_init(w, P, d, c, squeeze, dtype) for w in init))
    if method == "admm" and admm_options is None:
        from .admm import ADMMOptions

        admm_options = ADMMOptions()
    if isinstance(X, RowSharded):
        args = replicate(X, (lam, W0, tol, constraint_tol, max_iters))
        sol = _solve_relu_sharded_jit(X, *args, loss, method, polish, admm_options, monitor)
    else:
        sol = _solve_relu_jit(
            X,
            Y,
            masks,
            lam,
            W0,
            tol,
            constraint_tol,
            max_iters,
            loss,
            method,
            polish,
            admm_options,
            monitor,
            rescale_x,
        )
    progress.flush(monitor, sol)
    if squeeze:
        sol = eqx.tree_at(lambda s: s.weights, sol, tuple(w[..., 0] for w in sol.weights))
    return sol
