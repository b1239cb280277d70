"""Benchmark: regularisation paths. convexnn's solve_path (vmap, warm) against independent solves, one
solve, and pyscnn's optimize_path, on the same problems and the same λ grid.

For each size (n, d, P) it builds one planted-teacher problem and one set of gates exactly as
benchmarks/gated_vs_scnn.py does (`common.problems.make_problem`), one λ grid

    lams = lam_grid(lam_max(X, y, masks), 16, 1e-3)   (λ_max … λ_max/1000, log-spaced, largest first)

rounded once to float32 values that every run uses, and measures, in one process:

  (a) the optimum p*(λ) of every grid point, from a float64 convexnn warm path at tol 1e-10
      (cross-checked on small sizes by a float64 vmap path at the same tol);
  (b) float32 timed runs of: convexnn solve_path mode="vmap" (one compiled program, all λ in lockstep),
      mode="warm" (a scan from large to small λ, warm-started), 16 independent solve_gated calls (sum of
      their times; the times of single solves at the smallest and the median λ come from the same calls),
      each over a sweep of convexnn's tol; and pyscnn's optimize_path (R-FISTA, unitize_data=False,
      float32, same gates, same 16 λ) over a sweep of its tol, as installed ("pyscnn") and with its
      FISTA momentum scalar kept float32 ("pyscnn-f32"; see gated_vs_scnn.py), skipped without pyscnn;
  (c) every point's relative suboptimality (obj64(W) − p*(λ)) / |p*(λ)|, evaluated in float64 from the
      run's weights, and the worst and median over the path. "Matched accuracy" is the fastest run
      whose worst point is within --target (1e-4).

Compile time is excluded (one warm-up call with the same shapes before timing); times are medians of
≥ 3 runs. Run `python benchmarks/path.py --help`; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from common import cli, peers
from common.problems import Problem, make_objective64, make_problem, rel_subopt
from common.records import Run, status_names, write_records
from common.timing import fmt_range, fmt_time, log, repeat_runs, repeat_timed, timed
from path_report import CN_MODES, iteration_summary, status_summary, write_report

import convexnn as cn


def make_grid(prob: Problem, num: int, ratio: float) -> tuple[np.ndarray, np.ndarray, float]:
    """cn.lam_grid(cn.lam_max(X, y, masks), num, ratio) computed in float64, rounded once to float32.

    Returns (lams32, lams64, lam_max64): the float32 values every timed run uses and the same values
    upcast (exactly) for the reference, so p*(λ) is the optimum of the very problem each run solves.
    """
    X64, y64 = prob.data(np.float64)
    lam_max64 = float(cn.lam_max(X64, y64, prob.device["masks"]))
    grid = np.asarray(cn.lam_grid(jnp.asarray(lam_max64), num, ratio), np.float64)
    lams32 = grid.astype(np.float32)
    return lams32, lams32.astype(np.float64), lam_max64


def cn_path(prob: Problem, lams, mode: str, *, tol: float, max_iters: int, dtype=np.float32) -> cn.Solution:
    """One blocking cn.solve_path on the device arrays (float32 timed data, or the float64 upcast)."""
    X, y = prob.data(dtype)
    sol = cn.solve_path(X, y, prob.device["masks"], lams, mode=mode, tol=tol, max_iters=max_iters)
    return jax.block_until_ready(sol)


def cn_solve(prob: Problem, lam: float, *, tol: float, max_iters: int) -> cn.Solution:
    """One blocking cold-started solve_gated (polish on) on the float32 data."""
    X, y = prob.data(np.float32)
    return jax.block_until_ready(cn.solve_gated(X, y, prob.device["masks"], lam, tol=tol, max_iters=max_iters))


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


def log_run(label: str, run: Run) -> None:
    log(
        f"  {label} tol={run.tol:g}: {fmt_time(run.median)} ({fmt_range(run.times)}), iterations "
        f"{iteration_summary(run.iterations)}, {status_summary(run.status)}, worst rel. subopt "
        f"{run.worst:.2g} (median {run.median_rel:.2g})"
    )


# --------------------------------------------------------------------------------------------------
# convexnn
# --------------------------------------------------------------------------------------------------


def independent(prob: Problem, lams32: np.ndarray, tol: float, max_iters: int) -> tuple[float, dict]:
    """m independent cold-started solve_gated calls, each timed on its own: (sum of times, per-λ results)."""
    times, sols = [], []
    for lam in lams32:
        t, s = timed(lambda: cn_solve(prob, float(lam), tol=tol, max_iters=max_iters))
        times.append(t)
        sols.append(s)
    return sum(times), {
        "point_times": times,
        "W": np.stack([np.asarray(s.weights) for s in sols]),
        "iterations": np.array([int(s.iterations) for s in sols]),
        "status": [status_names(s.status)[0] for s in sols],
        "gap": np.array([float(s.gap) for s in sols]),
    }


def one_path(prob: Problem, lams, mode: str, tol: float, max_iters: int) -> tuple[float, dict]:
    """One timed solve_path: (seconds, per-λ results)."""
    t, sol = timed(lambda: cn_path(prob, lams, mode, tol=tol, max_iters=max_iters))
    return t, {
        "W": np.asarray(sol.weights),
        "iterations": np.asarray(sol.iterations),
        "status": status_names(sol.status),
        "gap": np.asarray(sol.gap, np.float64),
    }


def bench_convexnn(prob: Problem, lams32: np.ndarray, p_star: np.ndarray, objective64, args) -> dict[str, list[Run]]:
    """vmap path, warm path and independent solves at every tol of args.cn_tols (float32).

    Each is compiled first by a call with the same shapes (tol, max_iters and λ are traced, so one
    compile serves the whole sweep). At each tol the three methods run one after another, `repeats`
    times each (`slow_repeats` when the first run takes more than `slow_s`).
    """
    lams = jnp.asarray(lams32)
    for mode in ("vmap", "warm"):
        cn_path(prob, lams, mode, tol=1e-2, max_iters=2)  # compile
    cn_solve(prob, float(lams32[0]), tol=1e-2, max_iters=2)  # compile
    out: dict[str, list[Run]] = {m: [] for m in CN_MODES}
    for tol in args.cn_tols:
        for mode in CN_MODES:
            if mode == "vmap" and args.vmap_tols is not None and tol not in args.vmap_tols:
                continue
            if mode == "independent":
                run = lambda: independent(prob, lams32, tol, args.cn_max_iters)  # noqa: E731
            else:
                run = lambda: one_path(prob, lams, mode, tol, args.cn_max_iters)  # noqa: E731
            times, outs = repeat_timed(run, args.repeats, args.slow_repeats, args.slow_s)
            last = outs[-1]
            obj = objective64(last["W"])
            point_times = [o["point_times"] for o in outs] if mode == "independent" else None
            r = Run(mode, tol, times, last["iterations"], last["status"], rel_subopt(obj, p_star), obj)
            r.gap, r.point_times = last["gap"], point_times
            out[mode].append(r)
            log_run(f"convexnn {mode}", r)
    return out


# --------------------------------------------------------------------------------------------------
# pyscnn optimize_path
# --------------------------------------------------------------------------------------------------


def bench_pyscnn_path(
    prob: Problem, lams32: np.ndarray, method: str, keep_float32: bool, p_star: np.ndarray, objective64, args
) -> list[Run]:
    """optimize_path at each of args.scnn_tols (loosest first). The sweep stops after a tol whose worst
    point reaches the target, or after a run cut by --scnn-time-limit (a tighter tol can only take longer);
    a cut run is not repeated."""
    runs: list[Run] = []
    cut = ("time_limit", "not_run")
    with peers.pyscnn_context(keep_float32) as budget:
        peers.scnn_path(prob, lams32[:2], tol=args.scnn_tols[0], max_iters=3, budget=budget)  # warm-up
        for tol in args.scnn_tols:
            times, outs = repeat_runs(
                lambda: peers.scnn_path(
                    prob, lams32, tol=tol, max_iters=args.scnn_max_iters, budget=budget, time_limit=args.scnn_time_limit
                ),
                args.repeats,
                args.slow_repeats,
                args.slow_s,
                once=lambda out: any(s in cut for s in out["status"]),
            )
            out = outs[-1]
            obj = objective64(out["W"])
            run = Run(method, tol, times, out["iterations"], out["status"], rel_subopt(obj, p_star), obj)
            run.point_times = [o["solver_time"] for o in outs]
            run.note = ("default tol; " if tol == args.scnn_default_tol else "") + f"iterates {out['weight_dtype']}"
            runs.append(run)
            log_run(f"{method} optimize_path", run)
            if run.worst <= args.target or any(s in cut for s in run.status):
                break
    return runs


# --------------------------------------------------------------------------------------------------
# one size, end to end
# --------------------------------------------------------------------------------------------------


def references(prob: Problem, lams64: np.ndarray, objective64, args) -> dict:
    """The float64 reference path and (when asked) its vmap cross-check, logged."""
    ref = reference_path(prob, lams64, "warm", args.ref_tol, args.ref_max_iters, objective64)
    log(
        f"reference (convexnn float64 warm path, tol {args.ref_tol:g}): {status_summary(ref['status'])}, max gap "
        f"{np.max(ref['gap']):.2g}, iterations {iteration_summary(ref['iterations'])}, {fmt_time(ref['time'])}"
    )
    if any(s != "converged" for s in ref["status"]):
        log("WARNING: some reference points did not converge; their suboptimalities are against their objective")
    out = {"ref": ref}
    if cli.crosschecks(args, prob.n):
        chk = reference_path(prob, lams64, "vmap", args.ref_tol, args.ref_max_iters, objective64)
        chk["rel_diff"] = rel_subopt(chk["p_star"], ref["p_star"])
        out["crosscheck"] = chk
        log(
            f"cross-check (float64 vmap path, tol {args.ref_tol:g}): {status_summary(chk['status'])}, max |Δp*|/p* "
            f"{np.max(np.abs(chk['rel_diff'])):.2g}, iterations {iteration_summary(chk['iterations'])}, "
            f"{fmt_time(chk['time'])}"
        )
    return out


def bench_size(n: int, d: int, P: int, args: argparse.Namespace) -> dict:
    """All measurements for one size; returns a dict the report writer consumes."""
    log(f"\n=== n={n}, d={d}, P={P} ({args.num_lams} λ from λ_max to λ_max·{args.lam_ratio:g}) ===")
    t0 = time.perf_counter()
    prob = make_problem(n, d, P, args.seed)
    lams32, lams64, lam_max64 = make_grid(prob, args.num_lams, args.lam_ratio)
    objective64 = make_objective64(prob, lams64)
    log(
        f"data ready: {prob.P} distinct non-zero patterns of {prob.P_sampled} gates; min |x·g| = "
        f"{prob.min_margin:.2g}; λ_max = {lam_max64:.6g}"
    )
    res: dict[str, Any] = {"size": (n, d, P), "problem": prob, "lams": lams64, "lam_max": lam_max64}
    res.update(references(prob, lams64, objective64, args))
    p_star = res["ref"]["p_star"]
    res["cn"] = bench_convexnn(prob, lams32, p_star, objective64, args)
    res["scnn"] = {
        method: bench_pyscnn_path(prob, lams32, method, method == "pyscnn-f32", p_star, objective64, args)
        for method in cli.SCNN_MODES
        if method in args.scnn_modes and args.pyscnn
    }
    res["wall"] = time.perf_counter() - t0
    res["load"] = os.getloadavg()
    runs = [r for group in (res["cn"], res["scnn"]) for rs in group.values() for r in rs]
    write_records(args.records, runs, benchmark="path", size=(n, d, P), lams=lams64, p_star=p_star)
    return res


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    quick = f"smoke run: sizes {cli.QUICK_SIZES}, pyscnn paths cut at 30 s"
    cli.add_problem_args(p, cli.GATED_SIZES, quick, "worst-point relative suboptimality for 'matched'")
    p.add_argument("--num-lams", type=int, default=16, help="points on the λ grid")
    p.add_argument("--lam-ratio", type=float, default=1e-3, help="smallest λ / λ_max")
    cli.add_repeat_args(p, repeats=3, slow_repeats=3, slow_s=60.0)
    p.add_argument("--cn-tols", type=cli.parse_floats, default="1e-3,1e-4,1e-5,1e-6", help="convexnn tol sweep")
    p.add_argument("--cn-max-iters", type=int, default=10_000, help="convexnn max_iters per λ")
    p.add_argument(
        "--vmap-tols",
        type=cli.parse_floats,
        default=None,
        help="the tols of --cn-tols at which the vmap path runs (default: all; a CPU vmap path at large sizes is slow)",
    )
    cli.add_reference_args(p, "path", "cross-check p* with a float64 vmap path (auto: when n <= --crosscheck-max-n)")
    cli.add_scnn_args(p, "1e-6,1e-8,1e-10", "pyscnn tol sweep, loosest first", 1800.0, "path")
    blas = "limit both OpenBLAS pools to this many threads via threadpoolctl (see gated_vs_scnn.py)"
    cli.add_output_args(p, cli.RESULTS / "path.md", blas)
    args = p.parse_args(argv)
    cli.finish(p, args, argv, quick_repeats=False)
    if args.num_lams < 2:
        p.error("need --num-lams >= 2")
    if not args.scnn_tols or not args.cn_tols:
        p.error("the tol sweeps must not be empty")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return cli.run_sizes(args, bench_size, write_report, args.blas_threads, "its optimize_path runs are skipped")


if __name__ == "__main__":
    sys.exit(main())
