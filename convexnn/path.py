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

import dataclasses
import operator
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from . import _validate, progress, prox
from . import losses as _losses
from .options import GatedOptions, check_options
from .problem import Problem, on_shards, prepare, stack
from .sharding import RowSharded
from .solution import Solution
from .solvers._nondiff import not_differentiable
from .solvers.gated import GatedStatic, gated_core, gated_program, lockstep
from .solvers.relu import ReluStatic, check_relu_method, relu_options, relu_program

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

    Results come back in the order of `lams`, without solver states (a path is not resumed). A ReLU
    solution's (U, V) restarts the next solve as [U; V].
    """

    def one(lam, W):
        return dataclasses.replace(solve(lam, W), state=None)

    if mode == "vmap":
        return jax.vmap(lambda lam: one(lam, W0))(lams)
    order = jnp.argsort(-lams)

    def step(W, lam):
        sol = one(lam, W)
        return (stack(*sol.weights) if isinstance(sol.weights, tuple) else sol.weights), sol

    _, sols = lax.scan(step, W0, lams[order])
    inverse = jnp.argsort(order)
    return jax.tree.map(lambda a: a[inverse], sols)


class _PathStatic(NamedTuple):
    """The static settings of a path: its model and mode, and the single solve's settings."""

    model: str
    mode: str
    solve: GatedStatic | ReluStatic


def _solver(problem: Problem, tol, constraint_tol, max_iters, static: _PathStatic, differentiable: bool):
    """The single-λ solve (λ, W_start) -> Solution of `static.model` on `problem`.

    Differentiable (`differentiable`, one device): the gated solve is `gated_core`, so the path is
    differentiable like `solve_gated`. Vmapped gated solves polish in lockstep, so without the per-lane n×n
    factorizations (`lockstep`).
    """
    if static.model == "relu":
        return lambda lam, W: relu_program(problem, lam, W, tol, constraint_tol, max_iters, static.solve)
    solve = static.solve
    if static.mode == "vmap" and solve.polish:
        solve = solve._replace(options=lockstep(solve.options))
    if differentiable:
        return lambda lam, W: gated_core(problem.X, problem.y, problem.masks, lam, W, tol, max_iters, solve, None)
    return lambda lam, W: gated_program(problem, lam, W, tol, max_iters, solve)


def _path_program(X, Y, masks, lams, W0, tol, constraint_tol, max_iters, static: _PathStatic):
    loss = static.solve.loss
    rescale_x, penalty = static.solve.rescale_x, static.solve.penalty
    problem = Problem(X=X, masks=masks, y=Y, loss=loss, N=loss.normaliser(Y), rescale_x=rescale_x, penalty=penalty)
    return _sweep(_solver(problem, tol, constraint_tol, max_iters, static, True), lams, W0, static.mode)


_path = eqx.filter_jit(_path_program)
_relu_path = eqx.filter_jit(not_differentiable(_path_program, 8, "solve_path(model='relu')"))


def _path_sharded_program(data: RowSharded, lams, W0, tol, constraint_tol, max_iters, static: _PathStatic):
    """Either mode on row-sharded data: the vmap or the scan runs inside one `shard_map` program."""
    solve = static.solve._replace(monitor=progress.on_mesh(static.solve.monitor, data.mesh))
    static = static._replace(solve=solve)

    def local(problem, lams, W0, tol, constraint_tol, max_iters):
        return _sweep(_solver(problem, tol, constraint_tol, max_iters, static, False), lams, W0, static.mode)

    return on_shards(local, data, solve.loss, lams, W0, tol, constraint_tol, max_iters, penalty=solve.penalty)


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
    penalty: str = "group",
    method: str = "al",
    tol: ArrayLike | None = None,
    constraint_tol: ArrayLike = 1e-6,
    max_iters: ArrayLike | None = None,
    polish: bool = True,
    options: Any = None,
    verbose: bool | int = False,
    callback: progress.Callback | None = None,
) -> Solution:
    """Solve the gated or the exact ReLU program for every λ in `lams`; each field gains a leading λ axis.

        W*(λ_k) = argmin_W L(Σ_i D_i X w_i, y) + λ_k Ω(W)  (gated; ReLU adds the cone constraints)

    Args:
        X, y, masks, loss, penalty, tol, polish: as in `solve_gated` (X may be a `RowSharded` from `shard_rows`, with
            y and masks left out: the path then runs as one `shard_map` program and is not differentiable).
        lams: 1-D array of λ ≥ 0, in any order (results come back in the same order).
        model: "gated" (`solve_gated` per λ) or "relu" (`solve_relu` per λ: weights (U, V)).
        mode: "warm" (scan from large to small λ, each solve started at the previous solution) or "vmap"
            (all λ in lockstep: one batched GEMM per iteration; a converged λ stops changing).
        method, constraint_tol: as in `solve_relu` (model="relu" only).
        options: the single solve's options: a `GatedOptions` (gated), `ALOptions` or `ADMMOptions` (relu).
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
    penalty = prox.get_penalty(penalty)
    if model == "relu":
        check_relu_method(method, loss)
        options = relu_options(method, options, None)
    else:
        options = check_options(options, GatedOptions)
    p = prepare(
        "solve_path",
        X,
        y,
        masks,
        loss,
        lam=lams,
        tol=tol,
        max_iters=max_iters,
        default_max_iters=20_000 if model == "relu" else 10_000,
        constraint_tol=constraint_tol,
        blocks=2 if model == "relu" else 1,
        path=True,
    )
    if model == "relu":
        solve = ReluStatic(loss, method, bool(polish), options, monitor, p.rescale_x, penalty)
    else:
        solve = GatedStatic(loss, bool(polish), options, monitor, p.rescale_x, penalty)
    static = _PathStatic(model, mode, solve)
    numbers = (p.lam, p.W0, p.tol, p.constraint_tol, p.max_iters)
    if isinstance(p.X, RowSharded):
        sols = _path_sharded(p.X, *p.replicated(*numbers), static)
    else:
        sols = (_relu_path if model == "relu" else _path)(p.X, p.Y, p.masks, *numbers, static)
    progress.flush(monitor, sols)
    if p.squeeze:
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
