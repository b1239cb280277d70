"""Exact ReLU program: convexnn's AL and ADMM vs pyscnn's AL and cvxpy + Clarabel (time to 1e-4).

Same planted-teacher data, same gates and masks as `gated_vs_scnn.py` (`common.problems.make_problem`),
squared loss, float32 timed runs. Accuracy of every run is measured in float64 from its weights (U, V)
with one formula for all:

    obj64(U, V) = ½ mean((Σ_i D_i X (u_i − v_i) − y)²) + λ Σ_i (‖u_i‖₂ + ‖v_i‖₂)
    viol64(U, V) = max_{i,j} (−s_ij (X w_i)_j)₊ / max_{i,j} |(X w_i)_j| over w ∈ {u_i, v_i}, s = 2m − 1

and a run "reaches the target" when |obj64 − p*| / |p*| ≤ target and viol64 ≤ target. p* is a float64
convexnn AL solve at tol 1e-10 (cross-checked by Clarabel where Clarabel runs). Each solver is swept over
its tolerances; the time to target is the median time of the fastest tolerance that reaches it. pyscnn and
cvxpy rows are skipped (reported not run) when those packages are not installed.

    python benchmarks/relu_vs_peers.py --quick       # 200×10×50 only, a few minutes
    python benchmarks/relu_vs_peers.py               # 200×10×50, 2000×50×200, 10000×100×300
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import sys
import time
from pathlib import Path

import jax
import numpy as np
from common import cli, machine, peers
from common.problems import Problem, make_problem, rel_subopt
from common.records import Run, fastest, status_name, write_records
from common.tables import document, report_head, table
from common.timing import blas_limits, fmt_range, fmt_time, log, repeat_runs, timed

import convexnn as cn

SOLVERS = ("convexnn-al", "convexnn-admm", "pyscnn-al", "cvxpy+clarabel")


def make_measures(prob: Problem, lam: float):
    """obj64 and viol64 of (U, V), each (P, d), in float64 (numpy, independent of convexnn's code)."""
    X, y, m = prob.X64, prob.y64, prob.masks
    S = 2.0 * m - 1.0

    def measure(U, V) -> tuple[float, float]:
        U, V = np.asarray(U, np.float64).reshape(prob.P, prob.d), np.asarray(V, np.float64).reshape(prob.P, prob.d)
        XU, XV = X @ U.T, X @ V.T
        r = np.sum(m * (XU - XV), axis=1) - y
        obj = 0.5 * np.mean(r * r) + lam * (np.linalg.norm(U, axis=1).sum() + np.linalg.norm(V, axis=1).sum())
        scale = max(np.abs(XU).max(), np.abs(XV).max())
        worst = max(np.maximum(-S * XU, 0).max(), np.maximum(-S * XV, 0).max())
        return float(obj), float(worst / scale) if scale > 0 else 0.0

    return measure


def measured_run(method, tol, times, iterations, status, measure, weights, p_star, note="") -> Run:
    """A `Run` of the exact program, its accuracy measured from its weights (U, V), and logged."""
    obj, viol = measure(*weights)
    run = Run(method, tol, times, iterations, status, rel_subopt(obj, p_star), obj, viol, note=note)
    tail = f"; {note}" if note else ""
    log(
        f"  {method}{'' if tol is None else f' tol={tol:g}'}: {fmt_time(run.median)} ({iterations} it, {status}, "
        f"rel {run.rel:+.1e}, viol {run.viol:.1e}{tail})"
    )
    return run


def not_run(method: str, status: str, note: str, seconds: float = math.nan) -> Run:
    """The row of a solver that did not run (or was stopped without an answer)."""
    log(f"  {method}: {status} ({note})")
    return Run(method, None, [seconds], 0, status, math.nan, math.nan, math.nan, note=note)


# ------------------------------------------------------------------------------------------------
# convexnn
# ------------------------------------------------------------------------------------------------


def cn_relu(prob, lam, *, method, tol, max_iters, dtype=np.float32, admm_options=None):
    X, y = prob.data(dtype)
    sol = cn.solve_relu(
        X,
        y,
        prob.device["masks"],
        lam,
        method=method,
        tol=tol,
        constraint_tol=tol,
        max_iters=max_iters,
        admm_options=admm_options,
    )
    return jax.block_until_ready(sol)


def sweep_convexnn(prob, lam, p_star, measure, args, method, tols, admm_options=None, label=None) -> list[Run]:
    label = label or f"convexnn-{method}"
    runs = []
    # Compile only: max_iters is a traced argument, so one iteration builds the same program as the timed runs.
    cn_relu(prob, lam, method=method, tol=tols[0], max_iters=1, admm_options=admm_options)
    for tol in tols:
        times, outs = repeat_runs(
            lambda tol=tol: cn_relu(
                prob, lam, method=method, tol=tol, max_iters=args.cn_max_iters, admm_options=admm_options
            ),
            args.repeats,
            args.slow_repeats,
            args.slow_s,
        )
        sol = outs[-1]
        note = f"gap {float(sol.gap):.1e}"
        if method == "admm":
            steps = int(sol.stats["admm_steps"])
            note += f"; {steps} ADMM steps, {int(sol.stats['cg_iterations']) / max(steps, 1):.1f} CG its/step"
        else:
            note += f"; {int(sol.stats['outer_steps'])} multiplier updates"
        status = status_name(sol.status)
        run = measured_run(label, tol, times, int(sol.iterations), status, measure, sol.weights, p_star, note)
        runs.append(run)
        if run.reaches(args.target) and tol <= args.target:
            break
    return runs


# ------------------------------------------------------------------------------------------------
# pyscnn
# ------------------------------------------------------------------------------------------------


def sweep_pyscnn(prob, lam, p_star, measure, args) -> list[Run]:
    if not peers.installed("scnn"):
        return [not_run("pyscnn-al", "not_run", "pyscnn not installed")]
    runs = []
    with blas_limits(args.blas_threads), peers.pyscnn_context(False, ("ConstrainedHeuristic",)) as budget:
        for tol in args.scnn_tols:
            times, outs = repeat_runs(
                lambda tol=tol: peers.scnn_al(
                    prob, lam, tol=tol, budget=budget, time_limit=args.scnn_time_limit, max_iters=args.scnn_max_iters
                ),
                args.repeats,
                args.slow_repeats if args.scnn_slow_repeats is None else args.scnn_slow_repeats,
                args.slow_s,
                once=lambda out: out["status"] == "time_limit",
            )
            out = outs[-1]
            weights = (out["U"], out["V"])
            run = measured_run("pyscnn-al", tol, times, out["iterations"], out["status"], measure, weights, p_star)
            runs.append(run)
            if run.reaches(args.target) or run.status == "time_limit":
                break
    return runs


# ------------------------------------------------------------------------------------------------
# cvxpy + Clarabel (in a child process, so that a time limit can stop it)
# ------------------------------------------------------------------------------------------------


def clarabel_child(X, y, masks, lam, queue):
    import cvxpy as cp

    n, d = X.shape
    P = masks.shape[1]
    m = masks.astype(np.float64)
    S = 2 * m - 1
    U, V = cp.Variable((P, d)), cp.Variable((P, d))
    t0 = time.perf_counter()
    pred = cp.sum(cp.multiply(m, X @ (U - V).T), axis=1)
    fit = cp.sum_squares(pred - y) / (2 * n)
    penalty = lam * (cp.sum(cp.norm(U, 2, axis=1)) + cp.sum(cp.norm(V, 2, axis=1)))
    problem = cp.Problem(cp.Minimize(fit + penalty), [cp.multiply(S, X @ U.T) >= 0, cp.multiply(S, X @ V.T) >= 0])
    problem.solve(solver=cp.CLARABEL)
    wall = time.perf_counter() - t0
    queue.put(
        {
            "wall": wall,
            "solve_time": problem.solver_stats.solve_time,
            "iterations": problem.solver_stats.num_iters,
            "status": problem.status,
            "U": U.value,
            "V": V.value,
        }
    )


def run_clarabel(prob, lam, p_star, measure, args) -> Run:
    name = "cvxpy+clarabel"
    if prob.n > args.clarabel_max_n:
        return not_run(name, "not_run", "n above --clarabel-max-n")
    if not (peers.installed("cvxpy") and peers.installed("clarabel")):
        return not_run(name, "not_run", "cvxpy or clarabel not installed")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=clarabel_child, args=(prob.X64, prob.y64, prob.masks, lam, queue))
    t0 = time.perf_counter()
    proc.start()
    try:
        out = queue.get(timeout=args.clarabel_time_limit)
    except Exception:  # queue.Empty: over the time limit
        proc.kill()
        proc.join()
        return not_run(name, "time_limit", "stopped at the time limit", time.perf_counter() - t0)
    proc.join()
    note = f"Clarabel's own solve time {out['solve_time']:.3g} s (the rest is cvxpy's canonicalization)"
    iterations = int(out["iterations"] or 0)
    return measured_run(
        name, None, [out["wall"]], iterations, out["status"], measure, (out["U"], out["V"]), p_star, note
    )


# ------------------------------------------------------------------------------------------------
# one size
# ------------------------------------------------------------------------------------------------


def reference(prob, lam, args) -> dict:
    """The float64 reference solve, or its saved copy in --ref-cache.

    The file is keyed by the problem and the solve's settings, not by the code: clear the folder after
    changing the solver if p* should be re-derived (a converged p* does not depend on the code that found it).
    """
    path = None
    if args.ref_cache is not None:
        key = f"{prob.n}x{prob.d}x{prob.P}_seed{args.seed}_lam{lam:g}_tol{args.ref_tol:g}_it{args.ref_max_iters}"
        path = args.ref_cache / f"relu_reference_{key}.npz"
        if path.exists():
            with np.load(path) as saved:
                out = {k: saved[k].item() if saved[k].ndim == 0 else saved[k] for k in saved.files}
            return {**out, "path": path}
    t, sol = timed(
        lambda: cn_relu(prob, lam, method="al", tol=args.ref_tol, max_iters=args.ref_max_iters, dtype=np.float64)
    )
    U, V = (np.asarray(w, np.float64) for w in sol.weights)
    out = {
        "U": U,
        "V": V,
        "gap": float(sol.gap),
        "status": status_name(sol.status),
        "iterations": int(sol.iterations),
        "time": t,
    }
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **out)
    return {**out, "path": None}


def bench_size(n, d, P, args) -> dict:
    log(f"\n=== n={n}, d={d}, P={P} (lam={args.lam:g}) ===")
    prob = make_problem(n, d, P, args.seed)
    lam = args.lam
    measure = make_measures(prob, lam)
    ref = reference(prob, lam, args)
    p_star, ref_viol = measure(ref["U"], ref["V"])
    log(
        f"reference (convexnn AL float64, tol {args.ref_tol:g}): p* = {p_star:.12g}, gap {ref['gap']:.1e}, "
        f"viol {ref_viol:.1e}, {ref['status']}, {ref['iterations']} it, {ref['time']:.3g} s"
        + (f" (cached in {ref['path']})" if ref["path"] else "")
    )
    runs: list[Run] = []
    clarabel = run_clarabel(prob, lam, p_star, measure, args) if not args.no_clarabel else None
    methods = () if args.no_convexnn else args.cn_methods
    if "al" in methods:
        runs += sweep_convexnn(prob, lam, p_star, measure, args, "al", args.cn_tols)
    if "admm" in methods:
        admm = sweep_convexnn(prob, lam, p_star, measure, args, "admm", args.admm_tols)
        runs += admm
        # CG with and without the Nyström preconditioner, at the last ADMM tol run.
        no_nystrom = cn.ADMMOptions(precondition=False)
        label = "convexnn-admm (no Nyström)"
        runs += sweep_convexnn(prob, lam, p_star, measure, args, "admm", [admm[-1].tol], no_nystrom, label)
    if not args.no_scnn:
        runs += sweep_pyscnn(prob, lam, p_star, measure, args)
    if clarabel is not None:
        runs.append(clarabel)
    write_records(args.records, runs, benchmark="relu", size=(n, d, P), lam=lam, p_star=p_star)
    return {"size": (n, d, P), "P_kept": prob.P, "p_star": p_star, "ref_gap": ref["gap"], "runs": runs}


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------


def target_lines(runs: list[Run], target: float) -> list[str]:
    """Each solver's time to target (its fastest tolerance that reaches it), against convexnn's fastest."""
    best = {
        name: fastest(runs, lambda r, name=name: r.method.startswith(name) and r.reaches(target)) for name in SOLVERS
    }
    quickest = fastest([best["convexnn-al"], best["convexnn-admm"]])
    lines = ["", f"**Time to {target:g}** (fastest tolerance that reaches it):", ""]
    for name, b in best.items():
        longest = max((r.median for r in runs if r.method == name and r.ran), default=None)
        if b is not None:
            other = quickest and b is not quickest and not name.startswith("convexnn")
            ratio = f" — {b.median / quickest.median:.1f}× convexnn's fastest" if other else ""
            lines.append(f"- {name}: {fmt_time(b.median)} (tol {b.tol}){ratio}")
        elif longest is not None:
            ratio = f" — ≥ {longest / quickest.median:.1f}× convexnn's fastest" if quickest else ""
            lines.append(f"- {name}: does not reach it; its longest run took {fmt_time(longest)}{ratio}")
        else:
            lines.append(f"- {name}: not run")
    return lines + [""]


def size_lines(res: dict, target: float) -> list[str]:
    """One size's section: p*, every run, and the times to target."""
    n, d, P = res["size"]
    header = ("solver", "tol", "median time", "runs (min–max)", "iterations", "status", "rel. subopt", "violation")
    rows = [
        (r.method, "" if r.tol is None else f"{r.tol:g}", fmt_time(r.median) if r.ran else "–")
        + (f"{fmt_range(r.times)} ({len(r.times)})" if r.ran else "–", r.iterations, r.status)
        + (f"{r.rel:+.1e}", f"{r.viol:.1e}", r.note)
        for r in res["runs"]
    ]
    return [
        f"## n = {n}, d = {d}, P = {P} ({res['P_kept']} distinct patterns)",
        "",
        f"p* = {res['p_star']:.12g} (convexnn AL, float64, certified gap {res['ref_gap']:.1e})",
        "",
        *table((*header, "notes"), rows),
        *target_lines(res["runs"], target),
    ]


def report(results, args, machine, load) -> str:
    title = "Exact ReLU: convexnn (AL, ADMM) vs pyscnn AL and cvxpy + Clarabel"
    head = report_head(title, "relu_vs_peers.py", args.argv, args.date, machine, load)
    intro = (
        f"Squared loss, λ = {args.lam:g}, planted-teacher data, same gates and masks for every solver; timed runs "
        "in float32 (Clarabel: float64, its default tolerances). A run reaches the target when "
        f"|obj64 − p*|/|p*| ≤ {args.target:g} **and** the relative cone violation ≤ {args.target:g}, both "
        "measured in float64 from its weights. Times are medians over repeats (wall time of the call, "
        "compile excluded for convexnn; pyscnn's includes its data conversion)."
    )
    return document(head, (intro,), (size_lines(res, args.target) for res in results))


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------


def cn_methods(text: str) -> tuple[str, ...]:
    """--cn-methods: a comma-separated subset of al, admm (a typo is an error, not a silently empty table)."""
    methods = tuple(m.strip() for m in text.split(","))
    unknown = set(methods) - {"al", "admm"}
    if unknown or not methods:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of al,admm; got {text!r}")
    return methods


def parse_args(argv=None):
    p = cli.parser(__doc__, raw=True)
    p.add_argument("--sizes", type=cli.parse_sizes, default="200x10x50,2000x50x200,10000x100x300")
    p.add_argument("--quick", action="store_true", help="200x10x50 only, 3 repeats, short limits")
    p.add_argument("--lam", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", type=float, default=1e-4)
    cli.add_repeat_args(p, repeats=5, slow_repeats=1, slow_s=20.0)
    p.add_argument("--cn-tols", type=cli.parse_floats, default="1e-3,1e-4,1e-5,1e-6")
    p.add_argument("--admm-tols", type=cli.parse_floats, default="1e-3,1e-4,1e-5")
    p.add_argument("--cn-max-iters", type=int, default=20_000)
    cli.add_reference_args(p, "solve", None)
    p.add_argument("--ref-cache", type=Path, default=None, help="folder to keep reference solves in, and reuse them")
    p.add_argument("--scnn-tols", type=cli.parse_floats, default="1e-6,1e-8,1e-10", help="first is pyscnn's default")
    p.add_argument("--scnn-time-limit", type=float, default=600.0)
    p.add_argument("--scnn-max-iters", type=int, default=10_000, help="AL's max_primal_iters (pyscnn's default)")
    p.add_argument("--scnn-slow-repeats", type=int, default=None, help="slow pyscnn runs' repeats (or --slow-repeats)")
    p.add_argument("--no-scnn", action="store_true")
    p.add_argument("--no-convexnn", action="store_true", help="peers only (e.g. beside a process with --no-scnn)")
    p.add_argument("--cn-methods", type=cn_methods, default=("al", "admm"), help="convexnn methods to run (al,admm)")
    p.add_argument("--clarabel-max-n", type=int, default=2000)
    p.add_argument("--clarabel-time-limit", type=float, default=600.0)
    p.add_argument("--no-clarabel", action="store_true")
    cli.add_output_args(p, cli.RESULTS / "relu.md", "limit pyscnn's OpenBLAS pools to this many threads")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats = [(200, 10, 50)], 3
        args.scnn_time_limit = min(args.scnn_time_limit, 60.0)
        args.clarabel_time_limit = min(args.clarabel_time_limit, 120.0)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.date = machine.now()
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    # BLAS pools are limited around pyscnn's runs only (sweep_pyscnn), not around convexnn's.
    return cli.run_sizes(args, bench_size, report, None, "its AL rows are reported not run")


if __name__ == "__main__":
    sys.exit(main())
