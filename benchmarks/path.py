"""Benchmark: regularisation paths. convexnn's solve_path (vmap, warm) against independent solves, one
solve, and pyscnn's optimize_path, on the same problems and the same λ grid.

For each size (n, d, P) it builds one planted-teacher problem and one set of gates exactly as
benchmarks/gated_vs_scnn.py does (its helpers are imported from there), one λ grid

    lams = lam_grid(lam_max(X, y, masks), 16, 1e-3)   (λ_max … λ_max/1000, log-spaced, largest first)

rounded once to float32 values that every run uses, and measures, in one process:

  (a) the optimum p*(λ) of every grid point, from a float64 convexnn warm path at tol 1e-10
      (cross-checked on small sizes by a float64 vmap path at the same tol);
  (b) float32 timed runs of: convexnn solve_path mode="vmap" (one compiled program, all λ in lockstep),
      mode="warm" (a scan from large to small λ, warm-started), 16 independent solve_gated calls (sum of
      their times; the times of single solves at the smallest and the median λ come from the same calls),
      each over a sweep of convexnn's tol; and pyscnn's optimize_path (R-FISTA, unitize_data=False,
      float32, same gates, same 16 λ) over a sweep of its tol, as installed ("pyscnn") and with its
      FISTA momentum scalar kept float32 ("pyscnn-f32"; see gated_vs_scnn.py);
  (c) every point's relative suboptimality (obj64(W) − p*(λ)) / |p*(λ)|, evaluated in float64 from the
      run's weights, and the worst and median over the path. "Matched accuracy" is the fastest run
      whose worst point is within --target (1e-4).

Compile time is excluded (one warm-up call with the same shapes before timing); times are medians of
≥ 3 runs. Run `python benchmarks/path.py --help`; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gated_vs_scnn as gv  # noqa: E402  (enables jax_enable_x64, as that benchmark does)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from gated_vs_scnn import (  # noqa: E402
    Budget,
    Problem,
    _ratio,
    _sci,
    blas_limits,
    fmt_range,
    fmt_time,
    log,
    machine_description,
    make_problem,
    parse_floats,
    parse_sizes,
    pyscnn_context,
    timed,
)

import convexnn as cn  # noqa: E402

REPO = gv.REPO
DEFAULT_SIZES = gv.DEFAULT_SIZES
QUICK_SIZES = gv.QUICK_SIZES
CN_MODES = ("vmap", "warm", "independent")


# --------------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class PathRun:
    """One method at one tol over the whole λ grid: timings over repeats and the last repeat's result.

    Attributes:
        method: "vmap", "warm", "independent", "pyscnn-f32" or "pyscnn".
        tol: the method's own tolerance.
        times: total wall time of the path, per repeat (independent: the sum of the 16 solves' times).
        point_times: per repeat, per λ: independent: each solve's wall time; pyscnn: its own solver time
            per λ (from its metrics); None for the one-program convexnn modes.
        iterations, status: per λ (last repeat).
        gap: convexnn's certified gap per λ (in the run's dtype); None for pyscnn.
        obj64, rel: per λ, float64 objective of the weights and relative suboptimality against p*(λ).
    """

    method: str
    tol: float
    times: list[float]
    point_times: list[list[float]] | None
    iterations: np.ndarray
    status: list[str]
    gap: np.ndarray | None
    obj64: np.ndarray
    rel: np.ndarray
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def worst(self) -> float:
        return float(np.max(self.rel))

    @property
    def worst_at(self) -> int:
        return int(np.argmax(self.rel))

    @property
    def median_rel(self) -> float:
        return float(np.median(self.rel))

    def point_median(self, k: int) -> float:
        """Median over repeats of point k's own time (independent solves / pyscnn solver time)."""
        return statistics.median(pt[k] for pt in self.point_times)


def status_summary(status: list[str]) -> str:
    """'16 converged' or '14 converged, 2 stalled' (in order of first appearance)."""
    counts: dict[str, int] = {}
    for s in status:
        counts[s] = counts.get(s, 0) + 1
    return ", ".join(f"{v} {k}" for k, v in counts.items())


def iteration_summary(it: np.ndarray) -> str:
    """'Σ 1234 (per λ 0 / 70 / 400)': total, and min / median / max per point."""
    it = np.asarray(it)
    return f"Σ {int(it.sum())} ({int(it.min())} / {int(np.median(it))} / {int(it.max())})"


def matched(runs: list[PathRun], target: float) -> PathRun | None:
    """The fastest run (median time) whose every point is within `target` relative suboptimality."""
    ok = [r for r in runs if r.worst <= target]
    return min(ok, key=lambda r: r.median) if ok else None


# --------------------------------------------------------------------------------------------------
# λ grid, objective, reference
# --------------------------------------------------------------------------------------------------


def make_grid(prob: Problem, num: int, ratio: float) -> tuple[np.ndarray, np.ndarray, float]:
    """cn.lam_grid(cn.lam_max(X, y, masks), num, ratio) computed in float64, rounded once to float32.

    Returns (lams32, lams64, lam_max64): the float32 values every timed run uses and the same values
    upcast (exactly) for the reference, so p*(λ) is the optimum of the very problem each run solves.
    """
    dev = prob.device
    lam_max64 = float(cn.lam_max(dev["X64"], dev["y64"], dev["masks"]))
    grid = np.asarray(cn.lam_grid(jnp.asarray(lam_max64), num, ratio), np.float64)
    lams32 = grid.astype(np.float32)
    return lams32, lams32.astype(np.float64), lam_max64


def make_path_objective64(prob: Problem, lams64: np.ndarray) -> Callable[[Any], np.ndarray]:
    """obj64(W_k) = ½ mean((Σ_i D_i X w_i − y)²) + λ_k Σ_i ‖w_i‖₂ in float64 for stacked (m, P, d) weights
    (a lax.map over λ, so that large sizes do not hold m residuals at once)."""
    X, y, masks = prob.device["X64"], prob.device["y64"], prob.device["masks"]
    lams = jnp.asarray(lams64)

    @jax.jit
    def f(Ws):
        def one(args):
            W, lam = args
            r = cn.operators.gated_forward(X, masks, W) - y
            return 0.5 * jnp.mean(r * r) + lam * jnp.sum(jnp.linalg.norm(W, axis=1))

        return jax.lax.map(one, (Ws, lams))

    def objective64(Ws) -> np.ndarray:
        Ws = np.asarray(Ws, np.float64)
        if Ws.shape != (len(lams64), prob.P, prob.d):
            raise ValueError(f"weights must be {(len(lams64), prob.P, prob.d)}; got {Ws.shape}")
        return np.asarray(f(jnp.asarray(Ws)))

    return objective64


def status_names(status) -> list[str]:
    return [cn.Status(int(s)).name.lower() for s in np.asarray(status).reshape(-1)]


def cn_path(prob: Problem, lams, mode: str, *, tol: float, max_iters: int, dtype=np.float32) -> cn.Solution:
    """One blocking cn.solve_path on the device arrays (float32 timed data, or the float64 upcast)."""
    dev = prob.device
    X, y = (dev["X32"], dev["y32"]) if dtype == np.float32 else (dev["X64"], dev["y64"])
    sol = cn.solve_path(X, y, dev["masks"], lams, mode=mode, tol=tol, max_iters=max_iters)
    return jax.block_until_ready(sol)


def reference_path(prob: Problem, lams64: np.ndarray, mode: str, tol: float, max_iters: int, objective64) -> dict:
    """p*(λ) for every grid point from a float64 convexnn path (compiled first, so its time is the solve's)."""
    lams = jnp.asarray(lams64)
    cn_path(prob, lams, mode, tol=tol, max_iters=1, dtype=np.float64)  # compile
    t, sol = timed(lambda: cn_path(prob, lams, mode, tol=tol, max_iters=max_iters, dtype=np.float64))
    return {
        "mode": mode,
        "p_star": objective64(sol.weights),
        "gap": np.asarray(sol.gap, np.float64),
        "objective": np.asarray(sol.objective, np.float64),
        "iterations": np.asarray(sol.iterations),
        "status": status_names(sol.status),
        "neurons": np.asarray(jnp.sum(jnp.linalg.norm(sol.weights, axis=-1) > 0, axis=-1)),
        "time": t,
    }


# --------------------------------------------------------------------------------------------------
# convexnn
# --------------------------------------------------------------------------------------------------


def _independent(prob: Problem, lams32: np.ndarray, tol: float, max_iters: int) -> tuple[list[float], list]:
    """16 (m) independent cold-started solve_gated calls, each timed on its own."""
    times, sols = [], []
    for lam in lams32:
        t, s = timed(lambda: gv.cn_solve(prob, float(lam), tol=tol, max_iters=max_iters, polish=True))
        times.append(t)
        sols.append(s)
    return times, sols


def bench_convexnn(
    prob: Problem, lams32: np.ndarray, p_star: np.ndarray, objective64, args
) -> dict[str, list[PathRun]]:
    """vmap path, warm path and independent solves at every tol of args.cn_tols (float32).

    Each is compiled first by a call with the same shapes (tol, max_iters and λ are traced, so one
    compile serves the whole sweep). At each tol the three methods run one after another, `repeats`
    times each (`slow_repeats` when the first run takes more than `slow_s`).
    """
    lams = jnp.asarray(lams32)
    for mode in ("vmap", "warm"):
        cn_path(prob, lams, mode, tol=1e-2, max_iters=2)  # compile
    gv.cn_solve(prob, float(lams32[0]), tol=1e-2, max_iters=2, polish=True)  # compile
    out: dict[str, list[PathRun]] = {m: [] for m in CN_MODES}
    for tol in args.cn_tols:
        for mode in CN_MODES:
            if mode == "vmap" and args.vmap_tols is not None and tol not in args.vmap_tols:
                continue
            times, point_times = [], []
            n_runs = args.repeats
            k = 0
            while k < n_runs:
                if mode == "independent":
                    pts, sols = _independent(prob, lams32, tol, args.cn_max_iters)
                    t = sum(pts)
                    point_times.append(pts)
                    W = np.stack([np.asarray(s.weights) for s in sols])
                    iters = np.array([int(s.iterations) for s in sols])
                    status = [cn.Status(int(s.status)).name.lower() for s in sols]
                    gap = np.array([float(s.gap) for s in sols])
                else:
                    t, sol = timed(lambda: cn_path(prob, lams, mode, tol=tol, max_iters=args.cn_max_iters))
                    W, iters = np.asarray(sol.weights), np.asarray(sol.iterations)
                    status, gap = status_names(sol.status), np.asarray(sol.gap, np.float64)
                times.append(t)
                if k == 0 and t > args.slow_s:
                    n_runs = args.slow_repeats
                k += 1
            obj = objective64(W)
            run = PathRun(
                method=mode,
                tol=tol,
                times=times,
                point_times=point_times or None,
                iterations=iters,
                status=status,
                gap=gap,
                obj64=obj,
                rel=(obj - p_star) / np.abs(p_star),
            )
            out[mode].append(run)
            log(
                f"  convexnn {mode} tol={tol:g}: {fmt_time(run.median)} ({fmt_range(run.times)}), iterations "
                f"{iteration_summary(run.iterations)}, {status_summary(run.status)}, worst rel. subopt "
                f"{run.worst:.2g} (median {run.median_rel:.2g})"
            )
    return out


# --------------------------------------------------------------------------------------------------
# pyscnn optimize_path
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def track_path_points(budget: Budget):
    """Record, at the start of each λ of optimize_path, whether the time limit had already passed.

    optimize_path builds one optimizer per regularizer (scnn.optimize.build_optimizer) just before
    solving it; wrapping that call tells which λ were cut by the deadline and which never ran.
    """
    import scnn.optimize as so

    starts: list[bool] = []
    saved = so.build_optimizer

    def tracking(*a, **k):
        starts.append(budget.hit)
        return saved(*a, **k)

    so.build_optimizer = tracking
    try:
        yield starts
    finally:
        so.build_optimizer = saved


def scnn_path(
    prob: Problem,
    lams32: np.ndarray,
    *,
    tol: float,
    max_iters: int,
    budget: Budget,
    time_limit: float = math.inf,
    dtype: str = "float32",
) -> dict:
    """One pyscnn optimize_path over the grid (in the order given: largest λ first), as a user calls it.

    optimize_path(model, solver, path, metrics, X, y, ...) takes a list of regularizers, builds the
    patterns once from the first, and always warm-starts each λ from the previous solution (its
    `warm_start` argument is never read). It returns one deep-copied model and one Metrics per λ.
    Call inside `pyscnn_context`, passing its budget.

    Returns per-λ W (m, P, d) float64, iterations, status (converged, max_iters, time_limit, or
    not_run when the deadline had passed before that λ started), pyscnn's own objective and solver time.
    """
    from scnn.metrics import Metrics
    from scnn.models import ConvexGatedReLU
    from scnn.optimize import optimize_path
    from scnn.regularizers import NeuronGL1
    from scnn.solvers import RFISTA

    X, y = (prob.X32, prob.y32) if dtype == "float32" else (prob.X64, prob.y64)
    model = ConvexGatedReLU(prob.gates.copy(), c=1, bias=False)
    solver = RFISTA(model, max_iters=max_iters, tol=tol)
    path = [NeuronGL1(float(lam)) for lam in lams32]
    budget.deadline, budget.hit = time.perf_counter() + time_limit, False
    with track_path_points(budget) as starts:
        models, metrics = optimize_path(
            model,
            solver,
            path,
            Metrics(),
            X,
            y,
            return_convex=True,
            unitize_data=False,
            verbose=False,
            device="cpu",
            dtype=dtype,
        )
    end_hit, budget.deadline = budget.hit, math.inf
    m = len(lams32)
    if len(models) != m or len(metrics) != m or len(starts) != m:
        raise RuntimeError(f"optimize_path returned {len(models)} models / {len(metrics)} metrics for {m} λ")
    Ws, iters, status, own, solver_time = [], [], [], [], []
    for k, (mod, met) in enumerate(zip(models, metrics, strict=True)):
        G = np.asarray(mod.G, np.float64)
        if G.shape != prob.gates.shape or not np.array_equal(G, prob.gates):
            raise RuntimeError(f"pyscnn's gates at λ #{k} differ from the benchmark's (or were reordered)")
        W = np.asarray(mod.parameters[0])
        if W.shape != (1, prob.P, prob.d):
            raise RuntimeError(f"unexpected pyscnn weight shape {W.shape}; expected (1, {prob.P}, {prob.d})")
        Ws.append(W[0].astype(np.float64))
        it = len(met.objective) - 2  # one entry before, one per iteration, one after
        iters.append(it)
        hit_after = starts[k + 1] if k + 1 < m else end_hit
        if starts[k]:
            status.append("not_run")
        elif hit_after:
            status.append("time_limit")
        else:
            status.append("max_iters" if it >= max_iters else "converged")
        own.append(float(met.objective[-1]))
        solver_time.append(float(met.time[-1]))
    return {
        "W": np.stack(Ws),
        "weight_dtype": str(np.asarray(models[-1].parameters[0]).dtype),
        "iterations": np.array(iters),
        "status": status,
        "own_objective": np.array(own),
        "solver_time": solver_time,
    }


def bench_pyscnn_path(
    prob: Problem, lams32: np.ndarray, method: str, keep_float32: bool, p_star: np.ndarray, objective64, args
) -> list[PathRun]:
    """optimize_path at each of args.scnn_tols (loosest first). The sweep stops after a tol whose worst
    point reaches the target, or after a run cut by --scnn-time-limit (a tighter tol can only take longer);
    a cut run is not repeated."""
    runs: list[PathRun] = []
    with pyscnn_context(keep_float32) as budget:
        scnn_path(prob, lams32[:2], tol=args.scnn_tols[0], max_iters=3, budget=budget)  # warm-up
        for tol in args.scnn_tols:
            times, outs = [], []
            n_runs = args.repeats
            k = 0
            while k < n_runs:
                t, out = timed(
                    lambda: scnn_path(
                        prob,
                        lams32,
                        tol=tol,
                        max_iters=args.scnn_max_iters,
                        budget=budget,
                        time_limit=args.scnn_time_limit,
                    )
                )
                times.append(t)
                outs.append(out)
                if k == 0:
                    if any(s in ("time_limit", "not_run") for s in out["status"]):
                        n_runs = 1
                    elif t > args.slow_s:
                        n_runs = args.slow_repeats
                k += 1
            out = outs[-1]
            obj = objective64(out["W"])
            run = PathRun(
                method=method,
                tol=tol,
                times=times,
                point_times=[o["solver_time"] for o in outs],
                iterations=out["iterations"],
                status=out["status"],
                gap=None,
                obj64=obj,
                rel=(obj - p_star) / np.abs(p_star),
                note=("default tol; " if tol == args.scnn_default_tol else "") + f"iterates {out['weight_dtype']}",
            )
            runs.append(run)
            log(
                f"  {method} optimize_path tol={tol:g}: {fmt_time(run.median)} ({fmt_range(run.times)}), iterations "
                f"{iteration_summary(run.iterations)}, {status_summary(run.status)}, worst rel. subopt "
                f"{run.worst:.2g} (median {run.median_rel:.2g})"
            )
            if run.worst <= args.target or "time_limit" in run.status or "not_run" in run.status:
                break
    return runs


# --------------------------------------------------------------------------------------------------
# one size, end to end
# --------------------------------------------------------------------------------------------------


def bench_size(n: int, d: int, P: int, args: argparse.Namespace) -> dict:
    """All measurements for one size; returns a dict the report writer consumes."""
    log(f"\n=== n={n}, d={d}, P={P} ({args.num_lams} λ from λ_max to λ_max·{args.lam_ratio:g}) ===")
    t0 = time.perf_counter()
    prob = make_problem(n, d, P, args.seed)
    lams32, lams64, lam_max64 = make_grid(prob, args.num_lams, args.lam_ratio)
    objective64 = make_path_objective64(prob, lams64)
    log(
        f"data ready: {prob.P} distinct non-zero patterns of {prob.P_sampled} gates; min |x·g| = "
        f"{prob.min_margin:.2g}; λ_max = {lam_max64:.6g}"
    )
    res: dict[str, Any] = {"size": (n, d, P), "problem": prob, "lams": lams64, "lam_max": lam_max64}

    ref = reference_path(prob, lams64, "warm", args.ref_tol, args.ref_max_iters, objective64)
    res["ref"] = ref
    p_star = ref["p_star"]
    log(
        f"reference (convexnn float64 warm path, tol {args.ref_tol:g}): {status_summary(ref['status'])}, max gap "
        f"{np.max(ref['gap']):.2g}, iterations {iteration_summary(ref['iterations'])}, {fmt_time(ref['time'])}"
    )
    if any(s != "converged" for s in ref["status"]):
        log("WARNING: some reference points did not converge; their suboptimalities are against their objective")
    crosscheck = args.crosscheck == "on" or (args.crosscheck == "auto" and n <= args.crosscheck_max_n)
    if crosscheck:
        chk = reference_path(prob, lams64, "vmap", args.ref_tol, args.ref_max_iters, objective64)
        chk["rel_diff"] = (chk["p_star"] - p_star) / np.abs(p_star)
        res["crosscheck"] = chk
        log(
            f"cross-check (float64 vmap path, tol {args.ref_tol:g}): {status_summary(chk['status'])}, max |Δp*|/p* "
            f"{np.max(np.abs(chk['rel_diff'])):.2g}, iterations {iteration_summary(chk['iterations'])}, "
            f"{fmt_time(chk['time'])}"
        )

    res["cn"] = bench_convexnn(prob, lams32, p_star, objective64, args)
    scnn: dict[str, list[PathRun]] = {}
    for method, keep in (("pyscnn-f32", True), ("pyscnn", False)):
        if method in args.scnn_modes:
            scnn[method] = bench_pyscnn_path(prob, lams32, method, keep, p_star, objective64, args)
    res["scnn"] = scnn
    res["wall"] = time.perf_counter() - t0
    res["load"] = os.getloadavg()
    return res


# --------------------------------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------------------------------


def point_index(m: int) -> tuple[int, int]:
    """Indices (in the largest-first grid) of the smallest λ and of the median λ (the upper median)."""
    return m - 1, m // 2


def one_solve_matched(indep: list[PathRun], k: int, target: float) -> PathRun | None:
    """The independent-solve run (tol) whose point k reaches `target` in the least time for that point."""
    ok = [r for r in indep if r.rel[k] <= target]
    return min(ok, key=lambda r: r.point_median(k)) if ok else None


def summarize_size(res: dict, target: float) -> dict:
    """Headline numbers: matched runs, one-solve times and the ratios."""
    m = len(res["lams"])
    k_small, k_med = point_index(m)
    cn_runs = res["cn"]
    s: dict[str, Any] = {"k_small": k_small, "k_med": k_med}
    s["matched"] = {mode: matched(cn_runs[mode], target) for mode in CN_MODES}
    by_tol = {mode: {r.tol: r for r in cn_runs[mode]} for mode in CN_MODES}
    s["by_tol"] = by_tol
    s["one_matched"] = {k: one_solve_matched(cn_runs["independent"], k, target) for k in (k_small, k_med)}
    path_modes = [s["matched"][mo] for mo in ("vmap", "warm") if s["matched"][mo]]
    s["fastest_path"] = min(path_modes, key=lambda r: r.median) if path_modes else None
    all_modes = [r for r in s["matched"].values() if r]
    s["fastest_cn"] = min(all_modes, key=lambda r: r.median) if all_modes else None
    s["scnn_matched"] = {mo: matched(runs, target) for mo, runs in res["scnn"].items()}
    best = [r for r in s["scnn_matched"].values() if r]
    s["scnn_best"] = min(best, key=lambda r: r.median) if best else None
    return s


def size_markdown(res: dict, args: argparse.Namespace) -> list[str]:
    """The markdown section for one size."""
    n, d, P = res["size"]
    prob: Problem = res["problem"]
    lams, ref = res["lams"], res["ref"]
    m = len(lams)
    s = summarize_size(res, args.target)
    k_small, k_med = s["k_small"], s["k_med"]
    target = args.target
    L = [f"## n = {n}, d = {d}, P = {P}", ""]
    L.append(
        f"Planted teacher (tests/helpers.py, seed {args.seed}; d includes the bias column). {P} gates drawn, "
        f"**{prob.P} distinct non-zero patterns kept** (pyscnn's de-duplication), used by every method; masks "
        f"identical under ≥ 0 and > 0 (min |x·g| = {prob.min_margin:.2g})."
    )
    L.append("")
    L.append(
        f"λ grid: `lam_grid(lam_max(X, y, masks), {m}, {args.lam_ratio:g})`, λ_max = {res['lam_max']:.6g} (float64), "
        f"rounded to float32 values used by every run: {', '.join(f'{v:.3g}' for v in lams)}. "
        f'"Smallest λ" = {lams[k_small]:.3g} (#{k_small}), "median λ" = {lams[k_med]:.3g} (#{k_med}, '
        "counting from 0 at λ_max)."
    )
    L.append("")
    L.append(
        f"Reference p*(λ): convexnn float64 warm path at tol {args.ref_tol:g} on the upcast data: "
        f"{status_summary(ref['status'])}, max certified gap {np.max(ref['gap']):.2g}, iterations "
        f"{iteration_summary(ref['iterations'])}, {fmt_time(ref['time'])}. Active neurons along the path: "
        f"{', '.join(str(int(v)) for v in ref['neurons'])}."
    )
    if "crosscheck" in res:
        c = res["crosscheck"]
        L.append(
            f"Cross-check: a float64 vmap path at the same tol ({status_summary(c['status'])}, iterations "
            f"{iteration_summary(c['iterations'])}, {fmt_time(c['time'])}) agrees to max |Δp*|/p* = "
            f"{np.max(np.abs(c['rel_diff'])):.1e}."
        )
    all_runs = [r for runs in res["cn"].values() for r in runs] + [r for runs in res["scnn"].values() for r in runs]
    lowest = min(float(np.min(r.rel)) for r in all_runs)
    L.append(
        f"Lowest relative suboptimality of any timed run at any point: {lowest:.1e} (negative values down to "
        "float64 rounding mean p* is as low as anything found)."
    )
    L.append("")

    L.append("### Runs (float32; suboptimality evaluated in float64 from each run's weights, against p*(λ))")
    L.append("")
    L.append(
        "| method | tol | total time median | min – max | runs | iterations Σ (min / median / max per λ) | status "
        f"| worst rel. subopt (at λ #) | median rel. subopt | all ≤ {target:g} | note |"
    )
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    labels = {"vmap": "convexnn vmap path", "warm": "convexnn warm path", "independent": f"convexnn {m} independent"}
    for mode in CN_MODES:
        for r in res["cn"][mode]:
            note = f"max gap {np.max(r.gap):.2g}"
            L.append(
                f"| {labels[mode]} | {r.tol:g} | {fmt_time(r.median)} | {fmt_range(r.times)} | {len(r.times)} | "
                f"{iteration_summary(r.iterations)} | {status_summary(r.status)} | {_sci(r.worst)} (#{r.worst_at}) | "
                f"{_sci(r.median_rel)} | {'yes' if r.worst <= target else 'no'} | {note} |"
            )
    for method, runs in res["scnn"].items():
        for r in runs:
            solver = sum(statistics.median(pt[k] for pt in r.point_times) for k in range(m))
            note = f"{r.note}; solver-only Σ {fmt_time(solver)}"
            L.append(
                f"| {method} optimize_path | {r.tol:g} | {fmt_time(r.median)} | {fmt_range(r.times)} | "
                f"{len(r.times)} | {iteration_summary(r.iterations)} | {status_summary(r.status)} | "
                f"{_sci(r.worst)} (#{r.worst_at}) | {_sci(r.median_rel)} | {'yes' if r.worst <= target else 'no'} | "
                f"{note} |"
            )
    L.append("")

    L.append("### convexnn per tol: path modes against independent solves and one solve")
    L.append("")
    L.append(
        "One solve = the median time of that λ's cold-started solve_gated call within the independent runs at "
        "the same tol."
    )
    L.append("")
    L.append(
        f"| tol | vmap path | warm path | {m} independent | one solve, smallest λ | one solve, median λ | "
        "vmap / one (smallest) | vmap / one (median) | warm / one (smallest) | warm / one (median) | "
        "vmap / warm | independent / vmap | independent / warm |"
    )
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for tol in args.cn_tols:
        v, w, ind = (s["by_tol"][mo].get(tol) for mo in CN_MODES)
        if not (w and ind):
            continue
        o_s, o_m = ind.point_median(k_small), ind.point_median(k_med)
        vt = v.median if v else None
        L.append(
            f"| {tol:g} | {fmt_time(vt) if v else 'not run'} | {fmt_time(w.median)} | {fmt_time(ind.median)} | "
            f"{fmt_time(o_s)} | {fmt_time(o_m)} | {_ratio(vt, o_s)} | {_ratio(vt, o_m)} | {_ratio(w.median, o_s)} | "
            f"{_ratio(w.median, o_m)} | {_ratio(vt, w.median)} | {_ratio(ind.median, vt)} | "
            f"{_ratio(ind.median, w.median)} |"
        )
    L.append("")

    L.append(f"### At matched accuracy (every point within {target:g} of p*(λ))")
    L.append("")
    for mode in CN_MODES:
        r = s["matched"][mode]
        if r:
            L.append(
                f"- {labels[mode]}: **{fmt_time(r.median)}** (tol {r.tol:g}; worst {r.worst:.1e}, median "
                f"{r.median_rel:.1e}; iterations {iteration_summary(r.iterations)}; {status_summary(r.status)})."
            )
        else:
            L.append(f"- {labels[mode]}: no tol of the sweep put every point within {target:g}.")
    for k, name in ((k_small, "smallest"), (k_med, "median")):
        om = s["one_matched"][k]
        if om:
            L.append(
                f"- One solve at the {name} λ ({lams[k]:.3g}) within {target:g}: {fmt_time(om.point_median(k))} "
                f"(tol {om.tol:g}, {int(om.iterations[k])} iterations, rel. subopt {om.rel[k]:.1e})."
            )
        else:
            L.append(f"- One solve at the {name} λ: no tol of the sweep reached {target:g}.")
    for mode in ("vmap", "warm"):
        r = s["matched"][mode]
        if not r:
            continue
        ind = s["by_tol"]["independent"].get(r.tol)
        parts = []
        for k, name in ((k_small, "smallest"), (k_med, "median")):
            same = ind.point_median(k) if ind else None
            om = s["one_matched"][k]
            own = om.point_median(k) if om else None
            parts.append(
                f"{name} λ: {_ratio(r.median, same)} at the same tol, {_ratio(r.median, own)} against the one "
                "solve at its own matched tol"
            )
        L.append(f"- **{mode} path / one solve**: " + "; ".join(parts) + ".")
    v, w, ind = (s["matched"][mo] for mo in CN_MODES)
    if v and w:
        L.append(
            f"- **vmap / warm** (each at matched accuracy): {_ratio(v.median, w.median)}"
            + (
                f"; **independent / vmap**: {_ratio(ind.median, v.median)}; **independent / warm**: "
                f"{_ratio(ind.median, w.median)}"
                if ind
                else ""
            )
            + "."
        )
    fp = s["fastest_path"]
    fp_t = fp.median if fp else None
    if fp:
        L.append(f"- Fastest convexnn path mode: **{fp.method}** at tol {fp.tol:g}, {fmt_time(fp.median)}.")
    fc = s["fastest_cn"]
    if fc and fc is not fp:
        L.append(
            f"- (The {m} independent solves are faster still: {fmt_time(fc.median)} at tol {fc.tol:g}; pyscnn "
            f"against them: multiply the ratios below by {_ratio(fp_t, fc.median)}.)"
        )
    for method, runs in res["scnn"].items():
        r = s["scnn_matched"][method]
        if r:
            L.append(
                f"- {method} optimize_path: **{fmt_time(r.median)}** (tol {r.tol:g}; worst {r.worst:.1e}); "
                f"**{method} / fastest convexnn path = {_ratio(r.median, fp_t)}**."
            )
        else:
            longest = max(runs, key=lambda q: q.median)
            best = min(runs, key=lambda q: q.worst)
            L.append(
                f"- {method} optimize_path: never had every point within {target:g} (best worst-point "
                f"{best.worst:.1e} at tol {best.tol:g}, {status_summary(best.status)}); its longest run took "
                f"{fmt_time(longest.median)}, **≥ {_ratio(longest.median, fp_t)}** the fastest convexnn path."
            )
    if res["scnn"]:
        b = s["scnn_best"]
        if b:
            L.append(
                f"- **Fastest pyscnn path at matched accuracy: {b.method} at tol {b.tol:g}, {fmt_time(b.median)}: "
                f"{_ratio(b.median, fp_t)} the fastest convexnn path.**"
            )
        else:
            L.append(f"- No pyscnn variant put every point within {target:g}.")
    L.append("")

    L.append("### Per λ (matched-accuracy runs; pyscnn: its best-accuracy run)")
    L.append("")
    cols: list[tuple[str, PathRun]] = []
    for mode in CN_MODES:
        r = s["matched"][mode] or min(res["cn"][mode], key=lambda q: q.worst)
        cols.append((f"{mode} (tol {r.tol:g})", r))
    for method, runs in res["scnn"].items():
        r = s["scnn_matched"][method] or min(runs, key=lambda q: q.worst)
        cols.append((f"{method} (tol {r.tol:g})", r))
    head = "| # | λ | p*(λ) | active | " + " | ".join(f"{name}: it / rel" for name, _ in cols)
    ind_r = cols[2][1]
    L.append(head + f" | independent (tol {ind_r.tol:g}): time |")
    L.append("|" + "---|" * (5 + len(cols)))
    for k in range(m):
        cells = [
            f"{int(r.iterations[k])} / {_sci(float(r.rel[k]), 1)}"
            + ("" if r.status[k] == "converged" else f" ({r.status[k]})")
            for _, r in cols
        ]
        L.append(
            f"| {k} | {lams[k]:.3g} | {ref['p_star'][k]:.8g} | {int(ref['neurons'][k])} | "
            + " | ".join(cells)
            + f" | {fmt_time(ind_r.point_median(k))} |"
        )
    L.append("")
    L.append(f"### Iterations per λ, every run (λ #0 = λ_max … #{m - 1} = smallest)")
    L.append("")
    L.append("| method | tol | " + " | ".join(f"#{k}" for k in range(m)) + " |")
    L.append("|---|---|" + "---|" * m)
    rows = [(labels[mo], r) for mo in CN_MODES for r in res["cn"][mo]]
    rows += [(f"{mo} optimize_path", r) for mo, runs in res["scnn"].items() for r in runs]
    for name, r in rows:
        L.append(f"| {name} | {r.tol:g} | " + " | ".join(str(int(i)) for i in r.iterations) + " |")
    L.append("")
    L.append(
        f"Wall time for this size, everything included: {fmt_time(res['wall'])}; load average at its end "
        f"(1/5/15 min): {' / '.join(f'{x:.2f}' for x in res['load'])}."
    )
    L.append("")
    return L


def write_report(results: list[dict], args: argparse.Namespace, machine: dict, load: tuple) -> str:
    """The whole markdown report."""
    L = ["# Regularisation paths: convexnn solve_path vs independent solves vs pyscnn optimize_path", ""]
    L.append(f"Generated by `benchmarks/path.py {' '.join(sys.argv[1:])}` on {args.date}.")
    L.append("")
    L.append("| machine | |")
    L.append("|---|---|")
    for k, v in machine.items():
        L.append(f"| {k} | {v} |")
    L.append(f"| load average (1 min) before / after | {load[0]:.2f} / {load[1]:.2f} |")
    L.append("")
    L.append(
        f"Timed runs: float32, CPU, one process, medians of {args.repeats} runs ({args.slow_repeats} when a "
        f"configuration's first run takes more than {args.slow_s:g} s); every convexnn program is compiled by a "
        "call with the same shapes before anything is timed (λ, tol and max_iters are traced: one compile per "
        f"program). Every path covers the same {args.num_lams} float32 λ values. Relative suboptimality of point λ: "
        "(obj64(W_λ) − p*(λ))/|p*(λ)|, obj64(W) = ½ mean((Σ_i D_i X w_i − y)²) + λ Σ_i ‖w_i‖₂ in float64."
    )
    L.append("")
    L.append(
        'convexnn: `solve_path(X, y, masks, lams, mode="vmap"|"warm", tol, max_iters)` (polish on) and '
        f"`solve_gated(X, y, masks, λ, tol, max_iters)` per λ from zero (max_iters {args.cn_max_iters} per λ); "
        "tol bounds the certified duality gap: gap ≤ tol·max(1, |objective|) at every point."
    )
    L.append("")
    L.append(
        "pyscnn: `optimize_path(ConvexGatedReLU(G), RFISTA(model, max_iters, tol), [NeuronGL1(λ) for λ in lams], "
        "Metrics(), X, y, return_convex=True, unitize_data=False, device='cpu', dtype='float32')`, λ largest "
        f"first (max_iters {args.scnn_max_iters} per λ). It builds the patterns once and warm-starts every λ from "
        "the previous solution (always: its `warm_start` argument is not read); the gates of every returned model "
        "are checked identical to the benchmark's. Its time is the wall time of the call (its solver-only time, "
        f"summed over λ, in the note); a path still running after {args.scnn_time_limit:g} s is stopped "
        "(the λ in progress is reported time_limit, later ones not_run, with their warm-start weights) and not "
        "repeated. **pyscnn** is the package as installed (mixed precision under NumPy ≥ 2); **pyscnn-f32** has "
        "its FISTA momentum scalar made a Python float (float32 throughout), as in gated_vs_scnn.py."
    )
    L.append("")
    for res in results:
        L.extend(size_markdown(res, args))
    return "\n".join(L) + "\n"


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated NxDxP (D includes the bias column)")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: sizes {QUICK_SIZES}, pyscnn paths cut at 30 s",
    )
    p.add_argument("--num-lams", type=int, default=16, help="points on the λ grid")
    p.add_argument("--lam-ratio", type=float, default=1e-3, help="smallest λ / λ_max")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", type=float, default=1e-4, help="worst-point relative suboptimality for 'matched'")
    p.add_argument("--repeats", type=int, default=3, help="runs per configuration (at least 3 is advised)")
    p.add_argument("--slow-repeats", type=int, default=3, help="runs per configuration when the first is slow")
    p.add_argument("--slow-s", type=float, default=60.0, help="seconds above which a configuration is 'slow'")
    p.add_argument("--cn-tols", type=parse_floats, default="1e-3,1e-4,1e-5,1e-6", help="convexnn tol sweep")
    p.add_argument("--cn-max-iters", type=int, default=10_000, help="convexnn max_iters per λ")
    p.add_argument(
        "--vmap-tols",
        type=parse_floats,
        default=None,
        help="the tols of --cn-tols at which the vmap path runs (default: all; a CPU vmap path at large sizes is slow)",
    )
    p.add_argument("--ref-tol", type=float, default=1e-10, help="tol of the float64 reference path")
    p.add_argument("--ref-max-iters", type=int, default=200_000, help="max_iters per λ of the reference path")
    p.add_argument(
        "--crosscheck",
        choices=("auto", "on", "off"),
        default="auto",
        help="cross-check p* with a float64 vmap path (auto: when n <= --crosscheck-max-n)",
    )
    p.add_argument("--crosscheck-max-n", type=int, default=5000, help="largest n cross-checked under 'auto'")
    p.add_argument("--scnn-default-tol", type=float, default=1e-6, help="pyscnn RFISTA's default tol")
    p.add_argument("--scnn-tols", type=parse_floats, default="1e-6,1e-8,1e-10", help="pyscnn tol sweep, loosest first")
    p.add_argument("--scnn-max-iters", type=int, default=10_000, help="pyscnn max_iters per λ")
    p.add_argument(
        "--scnn-time-limit",
        type=float,
        default=1800.0,
        help="wall-clock seconds after which a pyscnn path is stopped (run once; the sweep ends)",
    )
    p.add_argument(
        "--scnn-modes",
        default="pyscnn-f32,pyscnn",
        help="which pyscnn variants to run: pyscnn-f32 and/or pyscnn; empty for none",
    )
    p.add_argument(
        "--blas-threads",
        type=int,
        default=None,
        help="limit both OpenBLAS pools to this many threads via threadpoolctl (see gated_vs_scnn.py)",
    )
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "path.md")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = QUICK_SIZES
        args.scnn_time_limit = min(args.scnn_time_limit, 30.0)
    args.sizes = parse_sizes(args.sizes)
    args.scnn_modes = [m.strip() for m in args.scnn_modes.split(",") if m.strip()]
    unknown = set(args.scnn_modes) - {"pyscnn", "pyscnn-f32"}
    if unknown:
        p.error(f"unknown --scnn-modes {sorted(unknown)}")
    if args.num_lams < 2:
        p.error("need --num-lams >= 2")
    if not args.scnn_tols or not args.cn_tols:
        p.error("the tol sweeps must not be empty")
    args.date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with blas_limits(args.blas_threads):
        machine = machine_description()
        if args.blas_threads is not None:
            machine["BLAS threads limited to"] = f"{args.blas_threads} (--blas-threads)"
        load0 = os.getloadavg()[0]
        log("machine: " + "; ".join(f"{k}: {v}" for k, v in machine.items()))
        if load0 > 0.25 * (os.cpu_count() or 1):
            log(f"WARNING: load average {load0:.2f} at start: the machine is not quiet; timings will be noisy")
        results = [bench_size(n, d, P, args) for (n, d, P) in args.sizes]
        report = write_report(results, args, machine, (load0, os.getloadavg()[0]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    log("\n" + report)
    log(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
