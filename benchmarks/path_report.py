"""The markdown report of path.py (benchmarks/results/path.md) from its measurements."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from common.problems import Problem
from common.records import Run, fastest
from common.tables import document, fmt_ratio, fmt_sci, report_head, size_sections, table
from common.timing import fmt_range, fmt_time

CN_MODES = ("vmap", "warm", "independent")

TITLE = "Regularisation paths: convexnn solve_path vs independent solves vs pyscnn optimize_path"


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


def matched(runs: list[Run], target: float) -> Run | None:
    """The fastest run (median time) whose every point is within `target` relative suboptimality."""
    return fastest(runs, lambda r: r.worst <= target)


def one_solve_matched(indep: list[Run], k: int, target: float) -> Run | None:
    """The independent-solve run (tol) whose point k reaches `target` in the least time for that point."""
    ok = [r for r in indep if r.rel[k] <= target]
    return min(ok, key=lambda r: r.point_median(k)) if ok else None


def summarize_size(res: dict, target: float) -> dict:
    """Headline numbers: matched runs, one-solve times and the ratios."""
    m = len(res["lams"])
    k_small, k_med = m - 1, m // 2  # the smallest λ and the (upper) median λ of the largest-first grid
    cn_runs = res["cn"]
    s: dict[str, Any] = {"k_small": k_small, "k_med": k_med}
    s["matched"] = {mode: matched(cn_runs[mode], target) for mode in CN_MODES}
    s["by_tol"] = {mode: {r.tol: r for r in cn_runs[mode]} for mode in CN_MODES}
    s["one_matched"] = {k: one_solve_matched(cn_runs["independent"], k, target) for k in (k_small, k_med)}
    s["fastest_path"] = fastest(s["matched"][mo] for mo in ("vmap", "warm"))
    s["fastest_cn"] = fastest(s["matched"].values())
    s["scnn_matched"] = {mo: matched(runs, target) for mo, runs in res["scnn"].items()}
    s["scnn_best"] = fastest(s["scnn_matched"].values())
    return s


def labels(m: int) -> dict[str, str]:
    return {"vmap": "convexnn vmap path", "warm": "convexnn warm path", "independent": f"convexnn {m} independent"}


def problem_lines(res: dict, s: dict, args: argparse.Namespace) -> list[str]:
    """The problem, the grid, the reference and the lowest suboptimality seen."""
    prob: Problem = res["problem"]
    lams, ref = res["lams"], res["ref"]
    k_small, k_med = s["k_small"], s["k_med"]
    L = [
        f"Planted teacher (`common.problems.teacher_data`, the tests' `teacher`, seed {args.seed}; d includes the bias "
        f"column). {res['size'][2]} gates drawn, **{prob.P} distinct non-zero patterns kept** (pyscnn's "
        f"de-duplication), used by every method; masks identical under ≥ 0 and > 0 (min |x·g| = "
        f"{prob.min_margin:.2g}).",
        "",
        f"λ grid: `lam_grid(lam_max(X, y, masks), {len(lams)}, {args.lam_ratio:g})`, λ_max = {res['lam_max']:.6g} "
        f"(float64), rounded to float32 values used by every run: {', '.join(f'{v:.3g}' for v in lams)}. "
        f'"Smallest λ" = {lams[k_small]:.3g} (#{k_small}), "median λ" = {lams[k_med]:.3g} (#{k_med}, '
        "counting from 0 at λ_max).",
        "",
        f"Reference p*(λ): convexnn float64 warm path at tol {args.ref_tol:g} on the upcast data: "
        f"{status_summary(ref['status'])}, max certified gap {np.max(ref['gap']):.2g}, iterations "
        f"{iteration_summary(ref['iterations'])}, {fmt_time(ref['time'])}. Active neurons along the path: "
        f"{', '.join(str(int(v)) for v in ref['neurons'])}.",
    ]
    if "crosscheck" in res:
        c = res["crosscheck"]
        L.append(
            f"Cross-check: a float64 vmap path at the same tol ({status_summary(c['status'])}, iterations "
            f"{iteration_summary(c['iterations'])}, {fmt_time(c['time'])}) agrees to max |Δp*|/p* = "
            f"{np.max(np.abs(c['rel_diff'])):.1e}."
        )
    all_runs = [r for group in (res["cn"], res["scnn"]) for runs in group.values() for r in runs]
    lowest = min(float(np.min(r.rel)) for r in all_runs)
    L.append(
        f"Lowest relative suboptimality of any timed run at any point: {lowest:.1e} (negative values down to "
        "float64 rounding mean p* is as low as anything found)."
    )
    return L + [""]


def runs_lines(res: dict, target: float) -> list[str]:
    """Every run: total time, iterations, status, worst and median suboptimality."""
    m = len(res["lams"])
    header = (
        "method",
        "tol",
        "total time median",
        "min – max",
        "runs",
        "iterations Σ (min / median / max per λ)",
        "status",
        "worst rel. subopt (at λ #)",
        "median rel. subopt",
        f"all ≤ {target:g}",
        "note",
    )
    named = [(labels(m)[mode], r, f"max gap {np.max(r.gap):.2g}") for mode in CN_MODES for r in res["cn"][mode]]
    for method, runs in res["scnn"].items():
        for r in runs:
            solver = sum(r.point_median(k) for k in range(m))
            named.append((f"{method} optimize_path", r, f"{r.note}; solver-only Σ {fmt_time(solver)}"))
    rows = [
        (name, f"{r.tol:g}", fmt_time(r.median), fmt_range(r.times), len(r.times), iteration_summary(r.iterations))
        + (status_summary(r.status), f"{fmt_sci(r.worst)} (#{r.worst_at})", fmt_sci(r.median_rel))
        + ("yes" if r.worst <= target else "no", note)
        for name, r, note in named
    ]
    title = "### Runs (float32; suboptimality evaluated in float64 from each run's weights, against p*(λ))"
    return [title, "", *table(header, rows), ""]


def per_tol_lines(s: dict, m: int, args: argparse.Namespace) -> list[str]:
    """Path modes against independent solves and one solve, at each convexnn tol."""
    header = (
        "tol",
        "vmap path",
        "warm path",
        f"{m} independent",
        "one solve, smallest λ",
        "one solve, median λ",
        "vmap / one (smallest)",
        "vmap / one (median)",
        "warm / one (smallest)",
        "warm / one (median)",
        "vmap / warm",
        "independent / vmap",
        "independent / warm",
    )
    rows = []
    for tol in args.cn_tols:
        v, w, ind = (s["by_tol"][mo].get(tol) for mo in CN_MODES)
        if not (w and ind):
            continue
        o_s, o_m = ind.point_median(s["k_small"]), ind.point_median(s["k_med"])
        vt = v.median if v else None
        rows.append(
            (f"{tol:g}", fmt_time(vt) if v else "not run", fmt_time(w.median), fmt_time(ind.median))
            + (fmt_time(o_s), fmt_time(o_m), fmt_ratio(vt, o_s), fmt_ratio(vt, o_m), fmt_ratio(w.median, o_s))
            + (fmt_ratio(w.median, o_m), fmt_ratio(vt, w.median), fmt_ratio(ind.median, vt))
            + (fmt_ratio(ind.median, w.median),)
        )
    intro = (
        "One solve = the median time of that λ's cold-started solve_gated call within the independent runs at "
        "the same tol."
    )
    return ["### convexnn per tol: path modes against independent solves and one solve", "", intro, ""] + [
        *table(header, rows),
        "",
    ]


def one_solve_lines(res: dict, s: dict, target: float) -> list[str]:
    """Each convexnn mode at matched accuracy, one solve at matched accuracy, and path / one solve."""
    lams, m = res["lams"], len(res["lams"])
    points = ((s["k_small"], "smallest"), (s["k_med"], "median"))
    L = []
    for mode in CN_MODES:
        r = s["matched"][mode]
        if r:
            L.append(
                f"- {labels(m)[mode]}: **{fmt_time(r.median)}** (tol {r.tol:g}; worst {r.worst:.1e}, median "
                f"{r.median_rel:.1e}; iterations {iteration_summary(r.iterations)}; {status_summary(r.status)})."
            )
        else:
            L.append(f"- {labels(m)[mode]}: no tol of the sweep put every point within {target:g}.")
    for k, name in points:
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
        for k, name in points:
            same = ind.point_median(k) if ind else None
            own = s["one_matched"][k].point_median(k) if s["one_matched"][k] else None
            parts.append(
                f"{name} λ: {fmt_ratio(r.median, same)} at the same tol, {fmt_ratio(r.median, own)} against the one "
                "solve at its own matched tol"
            )
        L.append(f"- **{mode} path / one solve**: " + "; ".join(parts) + ".")
    return L


def versus_lines(res: dict, s: dict, target: float) -> list[str]:
    """vmap vs warm vs independent, and pyscnn against the fastest convexnn path, at matched accuracy."""
    m = len(res["lams"])
    L = []
    v, w, ind = (s["matched"][mo] for mo in CN_MODES)
    if v and w:
        tail = (
            f"; **independent / vmap**: {fmt_ratio(ind.median, v.median)}; **independent / warm**: "
            f"{fmt_ratio(ind.median, w.median)}"
            if ind
            else ""
        )
        L.append(f"- **vmap / warm** (each at matched accuracy): {fmt_ratio(v.median, w.median)}{tail}.")
    fp, fc = s["fastest_path"], s["fastest_cn"]
    fp_t = fp.median if fp else None
    if fp:
        L.append(f"- Fastest convexnn path mode: **{fp.method}** at tol {fp.tol:g}, {fmt_time(fp.median)}.")
    if fc and fc is not fp:
        L.append(
            f"- (The {m} independent solves are faster still: {fmt_time(fc.median)} at tol {fc.tol:g}; pyscnn "
            f"against them: multiply the ratios below by {fmt_ratio(fp_t, fc.median)}.)"
        )
    for method, runs in res["scnn"].items():
        r = s["scnn_matched"][method]
        if r:
            L.append(
                f"- {method} optimize_path: **{fmt_time(r.median)}** (tol {r.tol:g}; worst {r.worst:.1e}); "
                f"**{method} / fastest convexnn path = {fmt_ratio(r.median, fp_t)}**."
            )
        else:
            longest, best = max(runs, key=lambda q: q.median), min(runs, key=lambda q: q.worst)
            L.append(
                f"- {method} optimize_path: never had every point within {target:g} (best worst-point "
                f"{best.worst:.1e} at tol {best.tol:g}, {status_summary(best.status)}); its longest run took "
                f"{fmt_time(longest.median)}, **≥ {fmt_ratio(longest.median, fp_t)}** the fastest convexnn path."
            )
    b = s["scnn_best"]
    if res["scnn"] and b:
        L.append(
            f"- **Fastest pyscnn path at matched accuracy: {b.method} at tol {b.tol:g}, {fmt_time(b.median)}: "
            f"{fmt_ratio(b.median, fp_t)} the fastest convexnn path.**"
        )
    elif res["scnn"]:
        L.append(f"- No pyscnn variant put every point within {target:g}.")
    else:
        L.append("- pyscnn: not run (not installed, or no --scnn-modes).")
    return L


def per_lambda_lines(res: dict, s: dict) -> list[str]:
    """Per λ: iterations and suboptimality of the matched runs, and every run's iterations."""
    lams, ref, m = res["lams"], res["ref"], len(res["lams"])
    cols: list[tuple[str, Run]] = []
    for mode in CN_MODES:
        r = s["matched"][mode] or min(res["cn"][mode], key=lambda q: q.worst)
        cols.append((f"{mode} (tol {r.tol:g})", r))
    for method, runs in res["scnn"].items():
        r = s["scnn_matched"][method] or min(runs, key=lambda q: q.worst)
        cols.append((f"{method} (tol {r.tol:g})", r))
    ind_r = cols[2][1]
    header = (
        "#",
        "λ",
        "p*(λ)",
        "active",
        *(f"{name}: it / rel" for name, _ in cols),
        f"independent (tol {ind_r.tol:g}): time",
    )
    rows = [
        (k, f"{lams[k]:.3g}", f"{ref['p_star'][k]:.8g}", int(ref["neurons"][k]))
        + tuple(
            f"{int(r.iterations[k])} / {fmt_sci(float(r.rel[k]), 1)}"
            + ("" if r.status[k] == "converged" else f" ({r.status[k]})")
            for _, r in cols
        )
        + (fmt_time(ind_r.point_median(k)),)
        for k in range(m)
    ]
    every = [(labels(m)[mo], r) for mo in CN_MODES for r in res["cn"][mo]]
    every += [(f"{mo} optimize_path", r) for mo, runs in res["scnn"].items() for r in runs]
    iters = [(name, f"{r.tol:g}", *(int(i) for i in r.iterations)) for name, r in every]
    return [
        "### Per λ (matched-accuracy runs; pyscnn: its best-accuracy run)",
        "",
        *table(header, rows),
        "",
        f"### Iterations per λ, every run (λ #0 = λ_max … #{m - 1} = smallest)",
        "",
        *table(("method", "tol", *(f"#{k}" for k in range(m))), iters),
        "",
    ]


def size_markdown(res: dict, args: argparse.Namespace) -> list[str]:
    """The markdown section for one size."""
    s = summarize_size(res, args.target)
    return [
        *problem_lines(res, s, args),
        *runs_lines(res, args.target),
        *per_tol_lines(s, len(res["lams"]), args),
        f"### At matched accuracy (every point within {args.target:g} of p*(λ))",
        "",
        *one_solve_lines(res, s, args.target),
        *versus_lines(res, s, args.target),
        "",
        *per_lambda_lines(res, s),
    ]


def intro(args: argparse.Namespace) -> tuple[str, ...]:
    """The paragraphs that say how every number of the report was measured."""
    timing = (
        f"Timed runs: float32, CPU, one process, medians of {args.repeats} runs ({args.slow_repeats} when a "
        f"configuration's first run takes more than {args.slow_s:g} s); every convexnn program is compiled by a "
        "call with the same shapes before anything is timed (λ, tol and max_iters are traced: one compile per "
        f"program). Every path covers the same {args.num_lams} float32 λ values. Relative suboptimality of point λ: "
        "(obj64(W_λ) − p*(λ))/|p*(λ)|, obj64(W) = ½ mean((Σ_i D_i X w_i − y)²) + λ Σ_i ‖w_i‖₂ in float64."
    )
    convexnn = (
        'convexnn: `solve_path(X, y, masks, lams, mode="vmap"|"warm", tol, max_iters)` (polish on) and '
        f"`solve_gated(X, y, masks, λ, tol, max_iters)` per λ from zero (max_iters {args.cn_max_iters} per λ); "
        "tol bounds the certified duality gap: gap ≤ tol·max(1, |objective|) at every point."
    )
    pyscnn = (
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
    return (timing, convexnn, pyscnn)


def write_report(results: list[dict], args: argparse.Namespace, machine: dict, load: tuple) -> str:
    """The whole markdown report."""
    head = report_head(TITLE, "path.py", args.argv, args.date, machine, load)
    return document(head, intro(args), size_sections(results, lambda res: size_markdown(res, args)))
