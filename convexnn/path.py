"""Regularisation paths: the solution for many λ at once, as one compiled program.

    W*(λ) = argmin_W L(Σ_i D_i X w_i, y) + λ Σ_i Σ_k ‖W[i, :, k]‖₂,    λ ∈ {λ_1, …, λ_m}

for the gated program or the exact ReLU program (its cone constraints added; `solve_relu` per λ). Two
modes, both jittable and both returning a `Solution` whose fields carry a leading λ axis in the order of
`lams`:

- "vmap": the solver vmapped over λ. Every iteration does one batched GEMM for all λ; a λ whose gap met
  the tolerance stops changing while the others run.
- "warm": `lax.scan` from the largest λ to the smallest, each solve starting from the previous solution
  (the path is continuous in λ, so each start is close).
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from . import _validate, progress
from . import losses as _losses
from .sharding import RowSharded, check_problem, replicate, run_sharded
from .solution import Solution
from .solvers._nondiff import not_differentiable
from .solvers.admm import ADMMOptions
from .solvers.gated import LOCKSTEP_POLISH, gated_core, gated_program
from .solvers.relu import check_relu_method, relu_solution
from .solvers.relu_objectives import ReluData, stack

__all__ = ["solve_path", "plot_path", "lam_grid"]

_MODES = ("vmap", "warm")
_MODELS = ("gated", "relu")


def lam_grid(lam_max: ArrayLike, num: int = 16, ratio: float = 1e-3) -> jax.Array:
    """λ_k = λ_max · ratio^(k/(num−1)), k = 0, …, num−1: evenly spaced on a log scale, largest first (num = 1: λ_max).

    Args:
        lam_max: the largest λ, a finite scalar ≥ 0 (e.g. from `lam_max`). It may be traced; a non-finite or
            negative traced value then raises when the program runs (`eqx.error_if`).
        num: the number of values, an integer ≥ 1.
        ratio: the smallest value over the largest, a concrete number in (0, 1].

    Returns:
        λ of shape (num,), in lam_max's floating dtype (the default float dtype for an integer or a Python number).
    """
    try:
        count = None if isinstance(num, bool) else operator.index(num)
    except TypeError:
        count = None
    if count is None or count < 1:
        raise ValueError(f"num must be an integer >= 1; got {num!r}")
    try:
        r = float(ratio)
    except (TypeError, ValueError, jax.errors.ConcretizationTypeError):
        raise ValueError(f"ratio must be a concrete number in (0, 1]; got {ratio!r}") from None
    if not 0 < r <= 1:
        raise ValueError(f"ratio must be in (0, 1]; got {ratio}")
    top = jnp.asarray(lam_max)
    if top.ndim != 0:
        raise ValueError(f"lam_max must be a scalar; got shape {top.shape}")
    if not (jnp.issubdtype(top.dtype, jnp.floating) or jnp.issubdtype(top.dtype, jnp.integer)):
        raise ValueError(f"lam_max must be a real number; got dtype {top.dtype}")
    if not jnp.issubdtype(top.dtype, jnp.floating):
        top = top.astype(jnp.result_type(float))
    value = _validate.concrete(top)
    if value is None:
        top = eqx.error_if(top, ~jnp.isfinite(top) | (top < 0), "lam_max must be finite and >= 0")
    elif not np.isfinite(value) or value < 0:
        raise ValueError(f"lam_max must be finite and >= 0; got {value}")
    return top * jnp.logspace(0, np.log10(r), count, dtype=top.dtype)


def _sweep(solve: Callable[[jax.Array, jax.Array], Solution], lams: jax.Array, W0: jax.Array, mode: str) -> Solution:
    """solve(λ, W_start) for every λ: vmapped from W0, or scanned from the largest λ down, warm-started.

    Results come back in the order of `lams`. A ReLU solution's (U, V) restarts the next solve as [U; V].
    """
    if mode == "vmap":
        return jax.vmap(lambda lam: solve(lam, W0))(lams)
    order = jnp.argsort(-lams)

    def step(W, lam):
        sol = solve(lam, W)
        return (stack(*sol.weights) if isinstance(sol.weights, tuple) else sol.weights), sol

    _, sols = lax.scan(step, W0, lams[order])
    inverse = jnp.argsort(order)
    return jax.tree.map(lambda a: a[inverse], sols)


def _solver(
    model,
    mode,
    X,
    Y,
    masks,
    tol,
    constraint_tol,
    max_iters,
    loss,
    polish,
    method,
    monitor,
    rows=None,
    N=None,
    rescale_x=True,
):
    """The single-λ solve (λ, W_start) -> Solution of `model` on one device's rows (all rows when `rows` is None).

    On unsharded data the gated solve is `gated_core`, so the path is differentiable like `solve_gated`.
    Vmapped gated solves polish in lockstep, so without the per-lane n×n factorizations (`LOCKSTEP_POLISH`).
    """
    if model == "relu":
        data = ReluData(X=X, masks=masks, y=Y, loss=loss, N=loss.normaliser(Y) if N is None else N, rows=rows)
        options = ADMMOptions() if method == "admm" else None
        return lambda lam, W: relu_solution(
            data, lam, W, tol, constraint_tol, max_iters, method, polish, options, monitor, rescale_x
        )
    if polish and mode == "vmap":
        polish = LOCKSTEP_POLISH
    if rows is None:
        return lambda lam, W: gated_core(X, Y, masks, lam, W, tol, max_iters, loss, polish, monitor, rescale_x)
    return lambda lam, W: gated_program(
        X, Y, masks, lam, W, tol, max_iters, loss, polish, rows=rows, N=N, monitor=monitor, rescale_x=rescale_x
    )


def _path_program(
    X,
    Y,
    masks,
    lams,
    W0,
    tol,
    constraint_tol,
    max_iters,
    loss,
    polish,
    mode,
    model,
    method,
    monitor=None,
    rescale_x=True,
):
    solve = _solver(
        model, mode, X, Y, masks, tol, constraint_tol, max_iters, loss, polish, method, monitor, rescale_x=rescale_x
    )
    return _sweep(solve, lams, W0, mode)


_path = eqx.filter_jit(_path_program)
_relu_path = eqx.filter_jit(not_differentiable(_path_program, 8, "solve_path(model='relu')"))


def _path_sharded_program(
    data, lams, W0, tol, constraint_tol, max_iters, loss, polish, mode, model, method, monitor=None
):
    """Either mode on row-sharded data: the vmap or the scan runs inside one `shard_map` program."""
    N = data.normaliser(loss)
    monitor = progress.on_mesh(monitor, data.mesh)

    def local(X, Y, masks, rows, lams, W0, tol, constraint_tol, max_iters):
        solve = _solver(
            model,
            mode,
            X,
            Y,
            masks,
            tol,
            constraint_tol,
            max_iters,
            loss,
            polish,
            method,
            monitor,
            rows=rows,
            N=N,
            rescale_x=data.rescale_x,
        )
        return _sweep(solve, lams, W0, mode)

    return run_sharded(local, data, lams, W0, tol, constraint_tol, max_iters)


_path_sharded = eqx.filter_jit(not_differentiable(_path_sharded_program, 6, "solve_path on row-sharded data"))


def solve_path(
    X: ArrayLike | RowSharded,
    y: ArrayLike | None = None,
    masks: ArrayLike | None = None,
    lams: ArrayLike | None = None,
    *,
    model: str = "gated",
    mode: str = "warm",
    loss: str | _losses.Loss = "squared",
    method: str = "al",
    tol: ArrayLike | None = None,
    constraint_tol: ArrayLike = 1e-6,
    max_iters: ArrayLike | None = None,
    polish: bool = True,
    verbose: bool | int = False,
    callback: progress.Callback | None = None,
) -> Solution:
    """Solve the gated or the exact ReLU program for every λ in `lams`; each field gains a leading λ axis.

        W*(λ_k) = argmin_W L(Σ_i D_i X w_i, y) + λ_k Σ_g ‖W_g‖  (gated; ReLU adds the cone constraints)

    Args:
        X, y, masks, loss, tol, polish: as in `solve_gated` (X may be a `RowSharded` from `shard_rows`, with
            y and masks left out: the path then runs as one `shard_map` program and is not differentiable).
        lams: 1-D array of λ ≥ 0, in any order (results come back in the same order).
        model: "gated" (`solve_gated` per λ) or "relu" (`solve_relu` per λ: weights (U, V)).
        mode: "warm" (scan from large to small λ, each solve started at the previous solution) or "vmap"
            (all λ in lockstep: one batched GEMM per iteration; a converged λ stops changing).
        method, constraint_tol: as in `solve_relu` (model="relu" only).
        max_iters: the iteration budget of each λ (default: 10 000 gated, 20 000 ReLU, as the single solves).
        verbose, callback: progress of each λ's solve, as in `solve_gated`: "warm" reports one solve after
            the other (largest λ first); "vmap" reports every λ still running at each cadence point, one
            call per λ (`Progress.index` = its position in `lams`), and every λ's end once all have stopped.

    Returns:
        a `Solution` with weights (m, P, d[, c]) (ReLU: a pair of them) and objective, gap, violation,
        iterations, status, lam of shape (m,). The whole path is one jitted program; the gated path is
        differentiable in X, y and λ like `solve_gated`.
    """
    if model not in _MODELS:
        raise ValueError(f"model must be one of {_MODELS}; got {model!r}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}; got {mode!r}")
    loss = _losses.get_loss(loss)
    monitor = progress.monitor(verbose, callback, "gated" if model == "gated" else f"relu-{method}")
    if model == "relu":
        check_relu_method(method, loss)
    if lams is None:
        raise ValueError("lams must be given: solve_path(X, y, masks, lams) or solve_path(data, lams=...)")
    X, Y, masks, (P, d, c), squeeze, dtype, rescale_x = check_problem(X, y, masks, loss)
    lams = _validate.check_lams(lams, dtype)
    tol = _validate.check_positive("tol", _validate.DEFAULT_TOL if tol is None else tol, dtype)
    constraint_tol = _validate.check_positive("constraint_tol", constraint_tol, dtype)
    if max_iters is None:
        max_iters = 20_000 if model == "relu" else 10_000
    max_iters = _validate.check_positive("max_iters", max_iters, dtype, integer=True)
    W0 = jnp.zeros(((2 if model == "relu" else 1) * P, d, c), dtype)
    static = (loss, polish, mode, model, method, monitor)
    if isinstance(X, RowSharded):
        sols = _path_sharded(X, *replicate(X, (lams, W0, tol, constraint_tol, max_iters)), *static)
    else:
        path = _relu_path if model == "relu" else _path
        sols = path(X, Y, masks, lams, W0, tol, constraint_tol, max_iters, *static, rescale_x)
    progress.flush(monitor, sols)
    if squeeze:
        drop = (lambda w: tuple(a[..., 0] for a in w)) if model == "relu" else (lambda w: w[..., 0])
        sols = eqx.tree_at(lambda s: s.weights, sols, drop(sols.weights))
    return sols


def plot_path(
    path: Solution,
    *,
    X: ArrayLike | None = None,
    y: ArrayLike | None = None,
    masks: ArrayLike | None = None,
    X_val: ArrayLike | None = None,
    y_val: ArrayLike | None = None,
    masks_val: ArrayLike | None = None,
    loss: str | _losses.Loss = "squared",
    ax=None,
):
    """Objective, active neurons and (given data) train/validation metric against λ, on a log λ axis.

    Needs matplotlib (`pip install 'convexnn[plot]'`). Returns the matplotlib Figure.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError("plot_path needs matplotlib: pip install 'convexnn[plot]'") from err
    from . import operators, prox

    loss = _losses.get_loss(loss)
    lams = np.asarray(path.lam)
    if lams.ndim != 1:
        raise ValueError(f"path must have one leading λ axis; got lam of shape {lams.shape}")
    W = jnp.asarray(path.weights)
    W3 = W if W.ndim == 4 else W[..., None]
    neurons = np.asarray(jnp.sum(jnp.any(prox.group_norms(W3) > 0, axis=-1), axis=-1))
    panels = 3 if X is not None else 2
    if ax is None:
        fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4), constrained_layout=True)
    else:
        axes = np.atleast_1d(ax)
        fig = axes[0].figure
    axes[0].loglog(lams, np.asarray(path.objective), "o-")
    axes[0].set(xlabel="λ", ylabel="objective", title="objective")
    axes[1].semilogx(lams, neurons, "o-")
    axes[1].set(xlabel="λ", ylabel="neurons (non-zero patterns)", title="active neurons")
    if X is not None:

        def metric(Xs, ys, ms):
            Xs = jnp.asarray(Xs, W3.dtype)
            Ys = jnp.asarray(loss.prepare_targets(np.asarray(ys)), W3.dtype)
            preds = jax.vmap(lambda Wk: operators.gated_forward(Xs, jnp.asarray(ms, bool), Wk))(W3)
            return np.asarray(jax.vmap(lambda z: loss.metric(z, Ys))(preds))

        axes[2].semilogx(lams, metric(X, y, masks), "o-", label="train")
        if X_val is not None:
            axes[2].semilogx(lams, metric(X_val, y_val, masks_val), "s-", label="validation")
        axes[2].set(xlabel="λ", ylabel=loss.metric_name, title=loss.metric_name)
        axes[2].legend()
    for a in axes:
        a.invert_xaxis()
    return fig
