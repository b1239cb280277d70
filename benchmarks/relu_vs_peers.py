"""Exact ReLU program: convexnn's AL and ADMM vs pyscnn's AL and cvxpy + Clarabel (time to 1e-4).

Same planted-teacher data, same gates and masks as `gated_vs_scnn.py` (whose problem construction,
timing and machine helpers are imported), squared loss, float32 timed runs. Accuracy of every run is
measured in float64 from its weights (U, V) with one formula for all:

    obj64(U, V) = ½ mean((Σ_i D_i X (u_i − v_i) − y)²) + λ Σ_i (‖u_i‖₂ + ‖v_i‖₂)
    viol64(U, V) = max_{i,j} (−s_ij (X w_i)_j)₊ / max_{i,j} |(X w_i)_j| over w ∈ {u_i, v_i}, s = 2m − 1

and a run "reaches the target" when |obj64 − p*| / |p*| ≤ target and viol64 ≤ target. p* is a float64
convexnn AL solve at tol 1e-10 (cross-checked by Clarabel where Clarabel runs). Each solver is swept over
its tolerances; the time to target is the median time of the fastest tolerance that reaches it.

    python benchmarks/relu_vs_peers.py --quick       # 200×10×50 only, a few minutes
    python benchmarks/relu_vs_peers.py               # 200×10×50, 2000×50×200, 10000×100×300
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import math
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(Path(__file__).resolve().parent))

import gated_vs_scnn as gv  # noqa: E402

import convexnn as cn  # noqa: E402
from convexnn.solvers.admm import ADMMOptions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Run:
    method: str
    tol: float | None
    times: list[float]
    iterations: int
    status: str
    rel: float  # (obj64 − p*) / |p*|
    viol: float
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def reaches(self, target: float) -> bool:
        return abs(self.rel) <= target and self.viol <= target


def make_measures(prob: gv.Problem, lam: float):
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


# ------------------------------------------------------------------------------------------------
# convexnn
# ------------------------------------------------------------------------------------------------


def cn_relu(prob, lam, *, method, tol, max_iters, dtype=np.float32, admm_options=None):
    dev = prob.device
    X, y = (dev["X32"], dev["y32"]) if dtype == np.float32 else (dev["X64"], dev["y64"])
    sol = cn.solve_relu(
        X,
        y,
        dev["masks"],
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
        times, outs = gv.repeat_runs(
            lambda tol=tol: cn_relu(
                prob, lam, method=method, tol=tol, max_iters=args.cn_max_iters, admm_options=admm_options
            ),
            args.repeats,
            args.slow_repeats,
            args.slow_s,
        )
        sol = outs[-1]
        obj, viol = measure(*sol.weights)
        note = f"gap {float(sol.gap):.1e}"
        if method == "admm":
            steps = int(sol.stats["admm_steps"])
            note += f"; {steps} ADMM steps, {int(sol.stats['cg_iterations']) / max(steps, 1):.1f} CG its/step"
        else:
            note += f"; {int(sol.stats['outer_steps'])} multiplier updates"
        run = Run(
            label,
            tol,
            times,
            int(sol.iterations),
            cn.Status(int(sol.status)).name.lower(),
            (obj - p_star) / abs(p_star),
            viol,
            note,
        )
        gv.log(
            f"  {label} tol={tol:g}: {gv.fmt_time(run.median)} ({run.iterations} it, {run.status}, "
            f"rel {run.rel:+.1e}, viol {run.viol:.1e}; {note})"
        )
        runs.append(run)
        if run.reaches(args.target) and tol <= args.target:
            break
    return runs


# ------------------------------------------------------------------------------------------------
# pyscnn
# ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def pyscnn_al_deadline():
    """Give pyscnn's AL a wall-clock limit: its outer test (ConstrainedHeuristic) says stop past it."""
    from scnn.private.methods.termination_criteria import ConstrainedHeuristic

    budget = gv.Budget()
    saved = ConstrainedHeuristic.__call__

    def call(self, *a, **k):
        if time.perf_counter() > budget.deadline:
            budget.hit = True
            return True
        return saved(self, *a, **k)

    ConstrainedHeuristic.__call__ = call
    try:
        with gv.pyscnn_context(keep_float32=False) as _:
            yield budget
    finally:
        ConstrainedHeuristic.__call__ = saved


def scnn_al(prob, lam, *, tol, budget, time_limit, max_iters):
    from scnn.metrics import Metrics
    from scnn.models import ConvexReLU
    from scnn.optimize import optimize_model
    from scnn.regularizers import NeuronGL1
    from scnn.solvers import AL

    model = ConvexReLU(prob.gates.copy(), c=1, bias=False)
    solver = AL(model, max_primal_iters=max_iters, tol=tol, constraint_tol=tol)
    budget.deadline, budget.hit = time.perf_counter() + time_limit, False
    model, metrics = optimize_model(
        model,
        solver,
        Metrics(),
        prob.X32,
        prob.y32,
        regularizer=NeuronGL1(lam),
        return_convex=True,
        unitize_data=False,
        verbose=False,
        device="cpu",
        dtype="float32",
    )
    hit, budget.deadline = budget.hit, math.inf
    G = np.asarray(model.G, np.float64)
    if G.shape != prob.gates.shape or not np.array_equal(G, prob.gates):
        raise RuntimeError("pyscnn kept different gates (or reordered them) than the benchmark's masks")
    U, V = (np.asarray(w, np.float64)[0] for w in model.parameters)
    return {"U": U, "V": V, "iterations": len(metrics.objective) - 2, "status": "time_limit" if hit else "done"}


def sweep_pyscnn(prob, lam, p_star, measure, args) -> list[Run]:
    runs = []
    with gv.blas_limits(args.blas_threads), pyscnn_al_deadline() as budget:
        for tol in args.scnn_tols:
            times, outs = gv.repeat_runs(
                lambda tol=tol: scnn_al(
                    prob, lam, tol=tol, budget=budget, time_limit=args.scnn_time_limit, max_iters=args.scnn_max_iters
                ),
                args.repeats,
                args.slow_repeats if args.scnn_slow_repeats is None else args.scnn_slow_repeats,
                args.slow_s,
                once=lambda out: out["status"] == "time_limit",
            )
            out = outs[-1]
            obj, viol = measure(out["U"], out["V"])
            run = Run("pyscnn-al", tol, times, out["iterations"], out["status"], (obj - p_star) / abs(p_star), viol)
            gv.log(
                f"  pyscnn-al tol={tol:g}: {gv.fmt_time(run.median)} ({run.iterations} it, {run.status}, "
                f"rel {run.rel:+.1e}, viol {run.viol:.1e})"
            )
            runs.append(run)
            if run.reaches(args.target) or run.status == "time_limit":
                break
    return runs


# ------------------------------------------------------------------------------------------------
# cvxpy + Clarabel (in a child process, so that a time limit can stop it)
# ------------------------------------------------------------------------------------------------


def _clarabel_child(X, y, masks, lam, queue):
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


def run_clarabel(prob, lam, p_star, measure, args) -> Run | None:
    if prob.n > args.clarabel_max_n:
        gv.log(f"  clarabel: not run (n = {prob.n} > --clarabel-max-n {args.clarabel_max_n})")
        return Run("cvxpy+clarabel", None, [math.nan], 0, "not_run", math.nan, math.nan, "n above --clarabel-max-n")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_clarabel_child, args=(prob.X64, prob.y64, prob.masks, lam, queue))
    t0 = time.perf_counter()
    proc.start()
    try:
        out = queue.get(timeout=args.clarabel_time_limit)
    except Exception:  # queue.Empty: over the time limit
        proc.kill()
        proc.join()
        wall = time.perf_counter() - t0
        gv.log(f"  clarabel: stopped after {wall:.0f} s (time limit)")
        return Run("cvxpy+clarabel", None, [wall], 0, "time_limit", math.nan, math.nan, "stopped at the time limit")
    proc.join()
    obj, viol = measure(out["U"], out["V"])
    run = Run(
        "cvxpy+clarabel",
        None,
        [out["wall"]],
        int(out["iterations"] or 0),
        out["status"],
        (obj - p_star) / abs(p_star),
        viol,
        f"Clarabel's own solve time {out['solve_time']:.3g} s (the rest is cvxpy's canonicalization)",
    )
    gv.log(
        f"  cvxpy+clarabel: {gv.fmt_time(run.median)} ({run.iterations} it, {run.status}, rel {run.rel:+.1e}, "
        f"viol {run.viol:.1e}; {run.note})"
    )
    return run


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
    t, sol = gv.timed(
        lambda: cn_relu(prob, lam, method="al", tol=args.ref_tol, max_iters=args.ref_max_iters, dtype=np.float64)
    )
    U, V = (np.asarray(w, np.float64) for w in sol.weights)
    out = {
        "U": U,
        "V": V,
        "gap": float(sol.gap),
        "status": cn.Status(int(sol.status)).name.lower(),
        "iterations": int(sol.iterations),
        "time": t,
    }
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **out)
    return {**out, "path": None}


def bench_size(n, d, P, args) -> dict:
    gv.log(f"\n=== n={n}, d={d}, P={P} (lam={args.lam:g}) ===")
    prob = gv.make_problem(n, d, P, args.seed)
    lam = args.lam
    measure = make_measures(prob, lam)
    ref = reference(prob, lam, args)
    p_star, ref_viol = measure(ref["U"], ref["V"])
    gv.log(
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
        runs += sweep_convexnn(
            prob,
            lam,
            p_star,
            measure,
            args,
            "admm",
            [admm[-1].tol],
            admm_options=ADMMOptions(precondition=False),
            label="convexnn-admm (no Nyström)",
        )
    if not args.no_scnn:
        runs += sweep_pyscnn(prob, lam, p_star, measure, args)
    if clarabel is not None:
        runs.append(clarabel)
    return {"size": (n, d, P), "P_kept": prob.P, "p_star": p_star, "ref_gap": ref["gap"], "runs": runs}


def best(runs, method_prefix, target):
    ok = [r for r in runs if r.method.startswith(method_prefix) and r.reaches(target)]
    return min(ok, key=lambda r: r.median) if ok else None


def report(results, args, machine, load) -> str:
    lines = [
        "# Exact ReLU: convexnn (AL, ADMM) vs pyscnn AL and cvxpy + Clarabel",
        "",
        f"`python benchmarks/relu_vs_peers.py {' '.join(args.argv)}` on {args.date}; load average "
        f"{load[0]:.2f} at start, {load[1]:.2f} at end.",
        "",
        "| machine | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in machine.items()],
        "",
        f"Squared loss, λ = {args.lam:g}, planted-teacher data, same gates and masks for every solver; timed runs "
        "in float32 (Clarabel: float64, its default tolerances). A run reaches the target when "
        f"|obj64 − p*|/|p*| ≤ {args.target:g} **and** the relative cone violation ≤ {args.target:g}, both "
        "measured in float64 from its weights. Times are medians over repeats (wall time of the call, "
        "compile excluded for convexnn; pyscnn's includes its data conversion).",
        "",
    ]
    for res in results:
        n, d, P = res["size"]
        lines += [
            f"## n = {n}, d = {d}, P = {P} ({res['P_kept']} distinct patterns)",
            "",
            f"p* = {res['p_star']:.12g} (convexnn AL, float64, certified gap {res['ref_gap']:.1e})",
            "",
            "| solver | tol | median time | runs (min–max) | iterations | status | rel. subopt | violation | notes |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in res["runs"]:
            times = "–" if math.isnan(r.times[0]) else gv.fmt_time(r.median)
            rng = "–" if math.isnan(r.times[0]) else f"{gv.fmt_range(r.times)} ({len(r.times)})"
            lines.append(
                f"| {r.method} | {'' if r.tol is None else f'{r.tol:g}'} | {times} | {rng} | {r.iterations} | "
                f"{r.status} | {r.rel:+.1e} | {r.viol:.1e} | {r.note} |"
            )
        cn_best = [
            b
            for b in (best(res["runs"], "convexnn-al", args.target), best(res["runs"], "convexnn-admm", args.target))
            if b
        ]
        fastest = min(cn_best, key=lambda r: r.median) if cn_best else None
        lines += ["", f"**Time to {args.target:g}** (fastest tolerance that reaches it):", ""]
        for name in ("convexnn-al", "convexnn-admm", "pyscnn-al", "cvxpy+clarabel"):
            b = best(res["runs"], name, args.target)
            longest = max(
                (r.median for r in res["runs"] if r.method == name and not math.isnan(r.times[0])), default=None
            )
            if b is not None:
                ratio = (
                    f" — {b.median / fastest.median:.1f}× convexnn's fastest"
                    if fastest and b is not fastest and not name.startswith("convexnn")
                    else ""
                )
                lines.append(f"- {name}: {gv.fmt_time(b.median)} (tol {b.tol}){ratio}")
            elif longest is not None:
                ratio = f" — ≥ {longest / fastest.median:.1f}× convexnn's fastest" if fastest else ""
                lines.append(f"- {name}: does not reach it; its longest run took {gv.fmt_time(longest)}{ratio}")
            else:
                lines.append(f"- {name}: not run")
        lines.append("")
    return "\n".join(lines)


def _methods(text: str) -> tuple[str, ...]:
    """--cn-methods: a comma-separated subset of al, admm (a typo is an error, not a silently empty table)."""
    methods = tuple(m.strip() for m in text.split(","))
    unknown = set(methods) - {"al", "admm"}
    if unknown or not methods:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of al,admm; got {text!r}")
    return methods


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=gv.parse_sizes, default="200x10x50,2000x50x200,10000x100x300")
    p.add_argument("--quick", action="store_true", help="200x10x50 only, 3 repeats, short limits")
    p.add_argument("--lam", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", type=float, default=1e-4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--slow-repeats", type=int, default=1)
    p.add_argument("--slow-s", type=float, default=20.0)
    p.add_argument("--cn-tols", type=gv.parse_floats, default="1e-3,1e-4,1e-5,1e-6")
    p.add_argument("--admm-tols", type=gv.parse_floats, default="1e-3,1e-4,1e-5")
    p.add_argument("--cn-max-iters", type=int, default=20_000)
    p.add_argument("--ref-tol", type=float, default=1e-10)
    p.add_argument("--ref-max-iters", type=int, default=200_000)
    p.add_argument("--ref-cache", type=Path, default=None, help="folder to keep reference solves in, and reuse them")
    p.add_argument("--scnn-tols", type=gv.parse_floats, default="1e-6,1e-8,1e-10", help="first is pyscnn's default")
    p.add_argument("--scnn-time-limit", type=float, default=600.0)
    p.add_argument("--scnn-max-iters", type=int, default=10_000, help="AL's max_primal_iters (pyscnn's default)")
    p.add_argument("--scnn-slow-repeats", type=int, default=None, help="slow pyscnn runs' repeats (or --slow-repeats)")
    p.add_argument("--no-scnn", action="store_true")
    p.add_argument("--no-convexnn", action="store_true", help="peers only (e.g. beside a process with --no-scnn)")
    p.add_argument("--cn-methods", type=_methods, default=("al", "admm"), help="convexnn methods to run (al,admm)")
    p.add_argument("--clarabel-max-n", type=int, default=2000)
    p.add_argument("--clarabel-time-limit", type=float, default=600.0)
    p.add_argument("--no-clarabel", action="store_true")
    p.add_argument("--blas-threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "relu.md")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.sizes, args.repeats = [(200, 10, 50)], 3
        args.scnn_time_limit = min(args.scnn_time_limit, 60.0)
        args.clarabel_time_limit = min(args.clarabel_time_limit, 120.0)
    args.date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    machine = gv.machine_description()
    load0 = os.getloadavg()[0]
    gv.log("machine: " + "; ".join(f"{k}: {v}" for k, v in machine.items()))
    results = [bench_size(n, d, P, args) for (n, d, P) in args.sizes]
    text = report(results, args, machine, (load0, os.getloadavg()[0]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    gv.log("\n" + text)
    gv.log(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
