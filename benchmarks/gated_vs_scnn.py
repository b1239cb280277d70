"""Benchmark: convexnn's gated ReLU solver against pyscnn's R-FISTA on the same problems.

For each size (n, d, P) it builds one planted-teacher problem (`common.problems.make_problem`), one set of
gates and one λ, and measures, in one process:

  (a) convexnn's time per R-FISTA iteration, (t(k2) − t(k1)) / (k2 − k1) with polish off and a tolerance
      it never meets, against the bare GEMM pair X Wᵀ (n×d · d×P) and Rᵀ X (P×n · n×d) that bounds it;
  (b) the time each library needs to reach a relative suboptimality of 1e-4 (default `--target`):
      convexnn over a sweep of its `tol`, pyscnn at its default tol and over a sweep of tighter ones;
  (c) the objective every run reaches, always evaluated here in float64 from the run's weights:
      obj64(W) = ½ mean((Σ_i D_i X w_i − y)²) + λ Σ_i ‖w_i‖₂.

The optimum p* comes from a long float64 convexnn solve (tol 1e-10), cross-checked on small sizes by a
float64 pyscnn solve at tol 1e-12. Timed runs are float32. Both libraries see the same float32 data and
the same activation patterns: the gates are those pyscnn keeps after its own de-duplication (sorted,
all-zero pattern dropped) and our masks are computed from them and checked equal to pyscnn's (pyscnn
uses X g > 0, convexnn X g ≥ 0; the smallest |X g| is reported to show no entry sits on the boundary).

pyscnn on NumPy ≥ 2 promotes its iterates to float64 after the first step (its momentum scalar is a
NumPy float64, and NEP 50 no longer demotes it against float32 arrays), so a "float32" pyscnn run is a
mixed-precision run. The benchmark times it as installed ("pyscnn") and with that one scalar cast to a
Python float ("pyscnn-f32": same iterates to float32 rounding, float32 arithmetic throughout, as under
NumPy 1.x), and compares convexnn with the faster of the two. Without pyscnn installed, its rows (and the
cross-check) are skipped.

Run `python benchmarks/gated_vs_scnn.py --help`; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from common import cli, peers
from common.problems import Problem, make_problem, make_single_objective64, rel_subopt
from common.records import Run, status_name, write_records
from common.timing import fmt_time, log, repeat_runs, timed
from gated_report import write_report

import convexnn as cn

# --------------------------------------------------------------------------------------------------
# convexnn
# --------------------------------------------------------------------------------------------------


def cn_solve(prob: Problem, lam: float, *, tol: float, max_iters: int, polish: bool, dtype=np.float32):
    """One blocking convexnn solve on the float32 (or float64) data; returns the Solution."""
    X, y = prob.data(dtype)
    sol = cn.solve_gated(X, y, prob.device["masks"], lam, tol=tol, max_iters=max_iters, polish=polish)
    return jax.block_until_ready(sol)


def bench_gemm_pair(prob: Problem, inner: int, repeats: int) -> dict[str, list[float]]:
    """Per-pair times of the float32 GEMM pair X Wᵀ (n×d · d×P) and Rᵀ X (P×n · n×d), two ways.

    "call": one jitted call per pair, blocked on (includes a dispatch, as a Python loop would pay).
    "loop": `inner` pairs chained inside one jitted fori_loop (R = X Wᵀ, W ← Rᵀ X / max|Rᵀ X|, so
    nothing can be hoisted), as a solver's while_loop runs them: the bound for an in-graph iteration.
    Both: `repeats` samples, each the mean over `inner` pairs.
    """
    rng = np.random.default_rng(0)
    X = prob.device["X32"]
    W = jnp.asarray(rng.standard_normal((prob.P, prob.d)), jnp.float32)
    R = jnp.asarray(rng.standard_normal((prob.n, prob.P)), jnp.float32)
    prec = cn.operators.PRECISION

    @jax.jit
    def pair(X, W, R):
        return jnp.matmul(X, W.T, precision=prec), jnp.matmul(R.T, X, precision=prec)

    @jax.jit
    def chained(X, W):
        def body(_, W):
            R = jnp.matmul(X, W.T, precision=prec)
            B = jnp.matmul(R.T, X, precision=prec)
            return B / jnp.max(jnp.abs(B))

        return jax.lax.fori_loop(0, inner, body, W)

    jax.block_until_ready(pair(X, W, R))  # compile
    jax.block_until_ready(chained(X, W))
    call, loop = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            jax.block_until_ready(pair(X, W, R))
        call.append((time.perf_counter() - t0) / inner)
        t0 = time.perf_counter()
        jax.block_until_ready(chained(X, W))
        loop.append((time.perf_counter() - t0) / inner)
    return {"call": call, "loop": loop}


def bench_per_iteration(prob: Problem, lam: float, k1: int, k2: int, repeats: int) -> dict:
    """convexnn's time per R-FISTA iteration by differencing max_iters = k2 and k1 runs (polish off).

    Pairs of (k1, k2) runs alternate so that slow drifts of the machine hit both alike; the per-iteration
    time of each pair uses the iterations actually run (a STALLED stop before k would show there).
    """
    cn_solve(prob, lam, tol=1e-12, max_iters=2, polish=False)  # compile
    per_iter, t1s, t2s = [], [], []
    for _ in range(repeats):
        t1, s1 = timed(lambda: cn_solve(prob, lam, tol=1e-12, max_iters=k1, polish=False))
        t2, s2 = timed(lambda: cn_solve(prob, lam, tol=1e-12, max_iters=k2, polish=False))
        i1, i2 = int(s1.iterations), int(s2.iterations)
        t1s.append(t1)
        t2s.append(t2)
        per_iter.append((t2 - t1) / max(i2 - i1, 1))
    return {
        "per_iter": per_iter,
        "t_k1": t1s,
        "t_k2": t2s,
        "iters": (i1, i2),
        "status": (status_name(s1.status), status_name(s2.status)),
    }


def reference_optimum(prob: Problem, lam: float, tol: float, max_iters: int, objective64) -> dict:
    """p* from a float64 convexnn solve (compiled first, so its time is the solve's)."""
    cn_solve(prob, lam, tol=tol, max_iters=1, polish=True, dtype=np.float64)  # compile
    t, sol = timed(lambda: cn_solve(prob, lam, tol=tol, max_iters=max_iters, polish=True, dtype=np.float64))
    return {
        "p_star": objective64(sol.weights),
        "gap": float(sol.gap),
        "status": status_name(sol.status),
        "iterations": int(sol.iterations),
        "time": t,
        "objective": float(sol.objective),
        "weights": np.asarray(sol.weights),
    }


def bench_convexnn_sweep(prob: Problem, objective64, p_star: float, args, polish: bool = True) -> list[Run]:
    """convexnn (float32; polish on by default) at each of args.cn_tols: times over repeats and the
    float64-evaluated objective of the weights."""
    method = "convexnn" if polish else "convexnn-nopolish"
    lam = args.lam
    cn_solve(prob, lam, tol=1e-2, max_iters=2, polish=polish)  # compile
    runs = []
    for tol in args.cn_tols:
        times, sols = repeat_runs(
            lambda: cn_solve(prob, lam, tol=tol, max_iters=args.cn_max_iters, polish=polish),
            args.repeats,
            args.slow_repeats,
            args.slow_s,
        )
        sol = sols[-1]
        obj = objective64(sol.weights)
        run = Run(
            method=method,
            tol=tol,
            times=times,
            iterations=int(sol.iterations),
            status=status_name(sol.status),
            rel=rel_subopt(obj, p_star),
            objective64=obj,
            gap=float(sol.gap),
            own_objective=float(sol.objective),
        )
        runs.append(run)
        log(f"  {method} tol={tol:g}: {fmt_time(run.median)} ({run.iterations} it, {run.status}, gap {run.gap:.2g})")
    return runs


# --------------------------------------------------------------------------------------------------
# pyscnn
# --------------------------------------------------------------------------------------------------


def bench_pyscnn(prob: Problem, method: str, keep_float32: bool, p_star: float, objective64, args) -> list[Run]:
    """pyscnn at its default tol, then at tighter tols (args.scnn_tols) until one reaches the target.

    pyscnn's iterates do not depend on tol (it only decides when to stop), so once a tol reaches the
    target, runs out of iterations or out of time, tighter tols can only take longer: the sweep stops.
    """
    lam, default_tol = args.lam, args.scnn_default_tol
    runs = []
    with peers.pyscnn_context(keep_float32) as budget:
        peers.scnn_solve(prob, lam, tol=default_tol, max_iters=3, budget=budget)  # warm-up (imports, einsum paths)
        for i, tol in enumerate([default_tol, *[t for t in args.scnn_tols if t < default_tol]]):
            times, outs = repeat_runs(
                lambda: peers.scnn_solve(
                    prob, lam, tol=tol, max_iters=args.scnn_max_iters, budget=budget, time_limit=args.scnn_time_limit
                ),
                args.repeats,
                args.slow_repeats,
                args.slow_s,
                once=lambda out: out["status"] == "time_limit",
            )
            out = outs[-1]
            obj = objective64(out["W"])
            run = Run(
                method=method,
                tol=tol,
                times=times,
                iterations=out["iterations"],
                status=out["status"],
                rel=rel_subopt(obj, p_star),
                objective64=obj,
                own_objective=out["own_objective"],
                solver_times=[o["solver_time"] for o in outs],
                note=("default tol; " if i == 0 else "") + f"iterates {out['weight_dtype']}",
                trajectory=out["trajectory"],
            )
            runs.append(run)
            log(
                f"  {method} tol={tol:g}: {fmt_time(run.median)} ({run.iterations} it, {run.status}, "
                f"rel. subopt {run.rel:.2g})"
            )
            if (i > 0 and run.rel <= args.target) or run.status in ("max_iters", "time_limit"):
                break
    return runs


def pyscnn_oracle(runs: list[Run], p_star: float, target: float) -> tuple[float, int] | None:
    """From the longest pyscnn run's own per-iteration log: the (solver time, iteration) of the first
    iterate whose pyscnn-computed objective is within `target` of p*. An oracle stopping rule, for
    information: no tolerance of pyscnn stops there."""
    longest = max(runs, key=lambda r: r.iterations)
    obj, cum_time = longest.trajectory
    hit = np.nonzero(rel_subopt(obj, p_star) <= target)[0]
    if hit.size == 0:
        return None
    return float(cum_time[hit[0]]), int(hit[0]) + 1


def crosscheck(prob: Problem, p_star: float, objective64, args) -> dict:
    """A float64 pyscnn solve at tol 1e-12 against p*, and pyscnn's own objective against ours."""
    with peers.pyscnn_context(keep_float32=False) as budget:
        t, out = timed(
            lambda: peers.scnn_solve(
                prob,
                args.lam,
                tol=1e-12,
                max_iters=args.scnn_max_iters,
                dtype="float64",
                budget=budget,
                time_limit=args.scnn_time_limit,
            )
        )
    obj = objective64(out["W"])
    c = {
        "objective64": obj,
        "own_objective": out["own_objective"],
        "rel_vs_p_star": rel_subopt(obj, p_star),
        "own_vs_ours": abs(out["own_objective"] - obj) / abs(obj),
        "iterations": out["iterations"],
        "status": out["status"],
        "time": t,
    }
    log(
        f"cross-check (pyscnn float64, tol 1e-12): objective {obj:.12g} ({c['rel_vs_p_star']:+.2g} rel. to p*), "
        f"{out['iterations']} it, {fmt_time(t)}; pyscnn's own objective differs from ours by "
        f"{c['own_vs_ours']:.1e} rel."
    )
    return c


# --------------------------------------------------------------------------------------------------
# one size, end to end
# --------------------------------------------------------------------------------------------------


def bench_costs(prob: Problem, args) -> dict:
    """(a): convexnn's time per iteration against the GEMM pair."""
    gemm = bench_gemm_pair(prob, inner=args.gemm_inner, repeats=max(args.repeats, 7))
    per = bench_per_iteration(prob, args.lam, args.k1, args.k2, max(args.repeats, 5))
    t_it, t_loop = statistics.median(per["per_iter"]), statistics.median(gemm["loop"])
    log(
        f"per iteration: convexnn {fmt_time(t_it)}, GEMM pair {fmt_time(t_loop)} in a jitted loop "
        f"({fmt_time(statistics.median(gemm['call']))} per jitted call), ratio {t_it / t_loop:.2f} "
        f"(iterations run {per['iters']}, {per['status']})"
    )
    return {"gemm": gemm, "per_iter": per}


def bench_size(n: int, d: int, P: int, args: argparse.Namespace) -> dict:
    """All measurements for one size; returns a dict the report writer consumes."""
    log(f"\n=== n={n}, d={d}, P={P} (lam={args.lam:g}) ===")
    t0 = time.perf_counter()
    prob = make_problem(n, d, P, args.seed)
    log(f"data ready: {prob.P} distinct non-zero patterns of {prob.P_sampled} gates; min |x·g| = {prob.min_margin:.2g}")
    objective64 = make_single_objective64(prob, args.lam)
    res: dict[str, Any] = {"size": (n, d, P), "problem": prob, **bench_costs(prob, args)}

    ref = res["ref"] = reference_optimum(prob, args.lam, args.ref_tol, args.ref_max_iters, objective64)
    p_star = ref["p_star"]
    log(
        f"reference (convexnn float64, tol {args.ref_tol:g}): p* = {p_star:.12g}, gap {ref['gap']:.2g}, "
        f"{ref['status']}, {ref['iterations']} it, {fmt_time(ref['time'])}"
    )
    if ref["status"] != "converged":
        log("WARNING: the reference solve did not converge; relative suboptimalities are against its objective")
    if cli.crosschecks(args, n) and args.pyscnn:
        res["crosscheck"] = crosscheck(prob, p_star, objective64, args)

    res["cn_runs"] = bench_convexnn_sweep(prob, objective64, p_star, args)
    res["cn_nopolish_runs"] = (
        bench_convexnn_sweep(prob, objective64, p_star, args, polish=False) if args.cn_no_polish else []
    )
    scnn_runs = res["scnn_runs"] = {
        method: bench_pyscnn(prob, method, method == "pyscnn-f32", p_star, objective64, args)
        for method in cli.SCNN_MODES
        if method in args.scnn_modes and args.pyscnn
    }
    res["oracle"] = {m: pyscnn_oracle(r, p_star, args.target) for m, r in scnn_runs.items()}
    res["wall"] = time.perf_counter() - t0
    res["load"] = os.getloadavg()
    runs = [*res["cn_runs"], *res["cn_nopolish_runs"], *(r for rs in scnn_runs.values() for r in rs)]
    write_records(args.records, runs, benchmark="gated", size=(n, d, P), lam=args.lam, p_star=p_star)
    return res


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    quick = f"smoke run: sizes {cli.QUICK_SIZES}, 3 repeats (1 when slow), pyscnn runs cut at 30 s"
    cli.add_problem_args(p, cli.GATED_SIZES, quick, "relative suboptimality for 'time to target'")
    p.add_argument("--lam", type=float, default=1e-3)
    cli.add_repeat_args(p, repeats=5, slow_repeats=3, slow_s=10.0)
    p.add_argument("--k1", type=int, default=100, help="shorter run for the per-iteration difference")
    p.add_argument("--k2", type=int, default=300, help="longer run for the per-iteration difference")
    p.add_argument("--gemm-inner", type=int, default=20, help="calls per GEMM-pair timing sample")
    p.add_argument("--cn-tols", type=cli.parse_floats, default="1e-2,1e-3,1e-4,1e-5,1e-6", help="convexnn tol sweep")
    p.add_argument("--cn-max-iters", type=int, default=10_000, help="convexnn max_iters in the sweep")
    cli.add_reference_args(
        p, "solve", "pyscnn float64 tol-1e-12 cross-check of p* (auto: when n <= --crosscheck-max-n)"
    )
    cli.add_scnn_args(p, "1e-8,1e-10,1e-12", "tighter pyscnn tols, in order", 900.0, "run")
    p.add_argument(
        "--cn-no-polish",
        action="store_true",
        help="also sweep convexnn with polish=False (reported as convexnn-nopolish; not in the headline)",
    )
    blas = (
        "limit both OpenBLAS pools (pyscnn's NumPy, jaxlib's LAPACK) to this many threads via threadpoolctl; "
        "default: leave them as they are. On an oversubscribed machine 1 avoids OpenBLAS's spin-wait collapse"
    )
    cli.add_output_args(p, cli.RESULTS / "gated.md", blas)
    args = p.parse_args(argv)
    cli.finish(p, args, argv, quick_repeats=True)
    if not args.k2 > args.k1 > 0:
        p.error("need k2 > k1 > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return cli.run_sizes(args, bench_size, write_report, args.blas_threads, "its runs and the cross-check are skipped")


if __name__ == "__main__":
    sys.exit(main())
