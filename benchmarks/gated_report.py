"""The markdown report of gated_vs_scnn.py (benchmarks/results/gated.md) from its measurements."""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from common.problems import Problem
from common.records import Run, fastest
from common.tables import document, fmt_ratio, fmt_sci, report_head, size_sections, table
from common.timing import fmt_range, fmt_time

TITLE = "Gated ReLU: convexnn vs pyscnn (R-FISTA)"


def summarize_size(res: dict, target: float) -> dict:
    """Headline numbers for one size: per-iteration ratio, times to target and their ratios."""
    reached = lambda r: r.rel <= target  # noqa: E731
    out: dict[str, Any] = {
        "per_iter": statistics.median(res["per_iter"]["per_iter"]),
        "gemm": statistics.median(res["gemm"]["loop"]),
        "gemm_call": statistics.median(res["gemm"]["call"]),
        "cn_best": fastest(res["cn_runs"], reached),
        "scnn": {},
    }
    for method, runs in res["scnn_runs"].items():
        longest = max(runs, key=lambda r: r.median)
        out["scnn"][method] = {"best": fastest(runs, reached), "default": runs[0], "longest": longest}
    out["scnn_best"] = fastest(m["best"] for m in out["scnn"].values())
    return out


def problem_lines(res: dict, args: argparse.Namespace) -> list[str]:
    """The problem, the reference optimum and the cross-check."""
    P = res["size"][2]
    prob: Problem = res["problem"]
    ref = res["ref"]
    L = [
        f"Planted teacher (`common.problems.teacher_data`, the tests' `teacher`, seed {args.seed}; d includes the bias "
        f"column). {P} gates drawn, **{prob.P} distinct non-zero patterns kept** (pyscnn's de-duplication), used by "
        f"both libraries; masks identical under ≥ 0 and > 0 (min |x·g| = {prob.min_margin:.2g}). λ = {args.lam:g}.",
        "",
        f"Reference p* = {ref['p_star']:.12g} (convexnn float64, tol {args.ref_tol:g}: {ref['status']}, certified gap "
        f"{ref['gap']:.2g}, {ref['iterations']} iterations, {fmt_time(ref['time'])}).",
    ]
    if "crosscheck" in res:
        c = res["crosscheck"]
        L.append(
            f"Cross-check: pyscnn float64 at tol 1e-12 reaches {c['objective64']:.12g} ({c['rel_vs_p_star']:+.2e} "
            f"relative to p*; {c['status']}, {c['iterations']} iterations, {fmt_time(c['time'])}); pyscnn's own "
            f"objective for its weights equals ours to {c['own_vs_ours']:.1e} relative."
        )
    return L + [""]


def cost_lines(res: dict, s: dict, args: argparse.Namespace) -> list[str]:
    """(a): the cost per iteration against the GEMM pair."""
    pi = res["per_iter"]
    rows = [
        (
            f"convexnn R-FISTA, per iteration ((t({args.k2}) − t({args.k1}))/Δit, polish off)",
            fmt_time(s["per_iter"]),
            fmt_range(pi["per_iter"]),
        ),
        (
            "GEMM pair X Wᵀ + Rᵀ X, chained in a jitted loop (the bound)",
            fmt_time(s["gemm"]),
            fmt_range(res["gemm"]["loop"]),
        ),
        (
            "GEMM pair, one jitted call per pair (dispatch included)",
            fmt_time(s["gemm_call"]),
            fmt_range(res["gemm"]["call"]),
        ),
        ("**ratio per iteration / GEMM pair (loop)**", f"**{s['per_iter'] / s['gemm']:.2f}**", ""),
    ]
    return [
        "### Cost per iteration (float32)",
        "",
        *table(("quantity", "median", "min – max"), rows),
        "",
        f"(iterations run by the two differenced solves: {pi['iters']}, status {pi['status']}.)",
        "",
    ]


def runs_lines(res: dict) -> list[str]:
    """Every run: times, iterations, status, gap, float64 objective and suboptimality."""
    header = (
        "method",
        "tol",
        "time median",
        "min – max",
        "runs",
        "iterations",
        "status",
        "reported gap",
        "objective (f64)",
        "rel. subopt",
        "note",
    )
    rows = []
    for r in [*res["cn_runs"], *res["cn_nopolish_runs"], *(r for runs in res["scnn_runs"].values() for r in runs)]:
        extra = r.note
        if r.solver_times:
            extra = (extra + "; " if extra else "") + f"solver-only {fmt_time(statistics.median(r.solver_times))}"
        rows.append(
            (r.method, f"{r.tol:g}", fmt_time(r.median), fmt_range(r.times), len(r.times), r.iterations, r.status)
            + (fmt_sci(r.gap), f"{r.objective64:.10g}", fmt_sci(r.rel), extra)
        )
    title = "### Runs (float32; objective and suboptimality evaluated in float64 from each run's weights)"
    return [title, "", *table(header, rows), ""]


def scnn_target_lines(method: str, m: dict, runs: list[Run], cn_t: float | None, oracle, target: float) -> list[str]:
    """One pyscnn variant's time to target (or how far it got), its default tol, and the oracle time."""
    best, default = m["best"], m["default"]
    if best:
        L = [
            f"- {method}: **{fmt_time(best.median)}** (tol {best.tol:g}, {best.iterations} iterations); "
            f"**{method} / convexnn = {fmt_ratio(best.median, cn_t)}**."
        ]
    else:
        lo = m["longest"]
        L = [
            f"- {method}: never within {target:g} (best {fmt_sci(min(r.rel for r in runs))} after up to "
            f"{max(r.iterations for r in runs)} iterations, last status {runs[-1].status}); its longest run took "
            f"{fmt_time(lo.median)}, **≥ {fmt_ratio(lo.median, cn_t)}** convexnn's time."
        ]
    L.append(
        f"- {method} at its default tol ({default.tol:g}): {fmt_time(default.median)}, rel. subopt "
        f"{fmt_sci(default.rel)}; **{method} default-tol time / convexnn time to {target:g} = "
        f"{fmt_ratio(default.median, cn_t)}**."
    )
    if oracle:
        L.append(
            f"  (Oracle, for information: by pyscnn's own per-iteration log its iterate is first within "
            f"{target:g} at iteration {oracle[1]}, after {fmt_time(oracle[0])} of solver time; no tol stops there.)"
        )
    return L


def target_lines(res: dict, s: dict, target: float) -> list[str]:
    """(b): the time each method needs to reach the target."""
    L = [f"### Time to {target:g} relative suboptimality", ""]
    cn_best = s["cn_best"]
    cn_t = cn_best.median if cn_best else None
    if cn_best:
        L.append(f"- convexnn: **{fmt_time(cn_t)}** (tol {cn_best.tol:g}, {cn_best.iterations} iterations).")
    else:
        L.append(f"- convexnn: no run of the sweep reached {target:g}.")
    if res["cn_nopolish_runs"]:
        nb = fastest(res["cn_nopolish_runs"], lambda r: r.rel <= target)
        found = f"{fmt_time(nb.median)} (tol {nb.tol:g}, {nb.iterations} iterations)." if nb else "never reached it."
        L.append(f"- convexnn with polish=False (for information): {found}")
    if not res["scnn_runs"]:
        L.append("- pyscnn: not run (not installed, or no --scnn-modes).")
    for method, m in s["scnn"].items():
        L += scnn_target_lines(method, m, res["scnn_runs"][method], cn_t, res["oracle"].get(method), target)
    if len(s["scnn"]) > 1:
        b = s["scnn_best"]
        if b:
            L.append(
                f"- **Fastest pyscnn variant to {target:g}: {b.method} at tol {b.tol:g}, {fmt_time(b.median)}: "
                f"{fmt_ratio(b.median, cn_t)} convexnn's time.**"
            )
        else:
            L.append(f"- No pyscnn variant reached {target:g}.")
    return L + [""]


def size_markdown(res: dict, args: argparse.Namespace) -> list[str]:
    """The markdown section for one size."""
    s = summarize_size(res, args.target)
    return [
        *problem_lines(res, args),
        *cost_lines(res, s, args),
        *runs_lines(res),
        *target_lines(res, s, args.target),
    ]


def intro(args: argparse.Namespace) -> tuple[str, ...]:
    """The paragraphs that say how every number of the report was measured."""
    timing = (
        f"Timed runs: float32, CPU, medians of {args.repeats} runs ({args.slow_repeats} when a run takes more than "
        f"{args.slow_s:g} s), one process; convexnn compiled before timing. Suboptimality relative to p*: "
        f"(obj64(W) − p*)/|p*|, obj64(W) = ½ mean((Σ_i D_i X w_i − y)²) + λ Σ_i ‖w_i‖₂ in float64 for every "
        "run's weights (pyscnn's (1, P, d) convex weights squeezed to (P, d); its gates, read back from "
        "`model.G`, are checked identical to the benchmark's)."
    )
    pyscnn = (
        "pyscnn is called as `optimize_model(ConvexGatedReLU(G), RFISTA(model, max_iters, tol), Metrics(), X, y, "
        "NeuronGL1(λ), return_convex=True, unitize_data=False, device='cpu', dtype='float32')`; its time is the "
        f"wall time of that call (solver-only time, from its metrics, in the note); a run still going after "
        f"{args.scnn_time_limit:g} s is stopped and reported as time_limit. **pyscnn** is the package as "
        "installed: under NumPy ≥ 2 its FISTA momentum scalar (an np.float64) promotes the iterates to float64 "
        "after the first step, so it computes in mixed precision. **pyscnn-f32** is the same method with that "
        "scalar made a Python float (as under NumPy 1.x): float32 throughout, same iterates up to rounding."
        " convexnn's tol is on its duality gap: gap ≤ tol·max(1, |objective|)."
    )
    return (timing, pyscnn)


def write_report(results: list[dict], args: argparse.Namespace, machine: dict, load: tuple) -> str:
    """The whole markdown report."""
    head = report_head(TITLE, "gated_vs_scnn.py", args.argv, args.date, machine, load)
    return document(head, intro(args), size_sections(results, lambda res: size_markdown(res, args)))
