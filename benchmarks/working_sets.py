"""Cost against the number of patterns P: does a gated solve's time follow the active groups or P?

Planted-teacher rows (`common.problems.planted_rows`: Gaussian features with a bias column, a 4-neuron ReLU
teacher, noise 0.1), Gaussian gates, squared loss, float32, `solve_gated(..., tol=1e-5)`; λ as a fraction of
`lam_max(X, y, masks)` of each P. Reported per solve: the median wall time over repeats (compile excluded),
iterations (for solves on all patterns each one product with X and one with Xᵀ over all P groups: full passes over
the data; for working-set solves the inner iterations, on at most the capacity's groups, and the outer steps, one
full pass each), the groups
active at the solution (‖w_i‖ > 0), objective, gap and status; per λ, the time ratio of the largest P to the
smallest. Paths: `solve_path` (mode "warm") over `lam_grid(λ_max, 16, ratio)`.

    python benchmarks/working_sets.py --part table           # 5000×50, P = 512 and 4096, λ = 0.3 and 0.1 λ_max
    python benchmarks/working_sets.py --part large           # 20000×100, P = 512, 2048, 8192: one λ and a path
    python benchmarks/working_sets.py --part dense           # 2000×50, P = 200 and 1024, λ = 1e-3: a dense solution

Each λ is solved on every pattern at once ("all patterns") and on working sets ("working sets", forced at every
P; the library's default uses them from `WorkingSetOptions().min_patterns` patterns on); `--modes` picks. The
first run's time (compilation included) is reported too: a working-set solve compiles one program per capacity.

`--composed` also times `composed_working_set`, a working set built from the public API (solves on gathered
masks, one full adjoint per outer step): the reference a library working set must beat.

Run pinned to one core, e.g. `OPENBLAS_NUM_THREADS=1 XLA_FLAGS=--xla_cpu_multi_thread_eigen=false taskset -c 0`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from common import machine
from common.problems import planted_rows
from common.records import status_name
from common.tables import emit, report_head, table
from common.timing import blocking, fmt_time, log, repeat_runs

import convexnn as cn


def rows_and_masks(n: int, d: int, P: int, seed: int):
    """float32 X (n, d), y (n,) and masks (n, P) of Gaussian gates (the same X and y for every P)."""
    X, y, _ = planted_rows(n, d, 1, np.float32, seed)
    gates = np.random.default_rng(seed + 1).standard_normal((d, P)).astype(np.float32)
    return jnp.asarray(X), jnp.asarray(y), jnp.asarray(X @ gates >= 0)


def active_groups(W) -> int:
    W = np.asarray(W)
    return int(np.sum(np.linalg.norm(W.reshape(W.shape[0], -1), axis=1) > 0))


# The solves compared: on every pattern at once, and on working sets at every P (the library's default uses them
# from `WorkingSetOptions().min_patterns` patterns on).
MODES = {
    "all patterns": cn.GatedOptions(working_set=None),
    "working sets": cn.GatedOptions(working_set=cn.WorkingSetOptions(min_patterns=1)),
}


def solve_counts(sol, k=None) -> str:
    """Iterations, and for working-set solves their outer steps (full adjoints) and last capacity."""
    if "outer_steps" not in sol.stats:
        return str(int(np.sum(np.asarray(sol.iterations))))
    outer = np.asarray(sol.stats["outer_steps"])
    capacity = int(np.max(np.asarray(sol.stats["capacity"])))
    return f"{int(np.sum(np.asarray(sol.iterations)))} ({int(np.sum(outer))} outer steps, capacity ≤ {capacity})"


def measure_solve(X, y, masks, lam, tol, options, args) -> dict:
    """One λ: a compiling run (its time kept), then repeats of the timed solve."""
    solve = blocking(lambda: cn.solve_gated(X, y, masks, lam, tol=tol, options=options))
    t0 = time.perf_counter()
    solve()
    first = time.perf_counter() - t0
    times, outs = repeat_runs(solve, args.repeats, 1, args.slow_s)
    sol = outs[-1]
    return dict(
        time=statistics.median(times),
        times=times,
        first=first,
        iterations=solve_counts(sol),
        active=active_groups(sol.weights),
        objective=float(sol.objective),
        gap=float(sol.gap),
        status=status_name(int(sol.status)),
    )


def measure_path(X, y, masks, lams, tol, options, args) -> dict:
    """A warm path over `lams`: a compiling run, then repeats."""
    solve = blocking(lambda: cn.solve_path(X, y, masks, lams, tol=tol, mode="warm", options=options))
    t0 = time.perf_counter()
    solve()
    first = time.perf_counter() - t0
    times, outs = repeat_runs(solve, args.repeats, 1, args.slow_s)
    path = outs[-1]
    status = np.asarray(path.status)
    return dict(
        time=statistics.median(times),
        times=times,
        first=first,
        iterations=solve_counts(path),
        active=max(active_groups(path.weights[k]) for k in range(len(lams))),
        objective=float(np.asarray(path.objective)[-1]),
        gap=float(np.max(np.asarray(path.gap) / np.maximum(1.0, np.abs(np.asarray(path.objective))))),
        status=f"{int(np.sum(status == cn.Status.CONVERGED))}/{len(lams)} converged",
        weights=np.asarray(path.weights),
    )


def composed_working_set(X, y, masks, lam, tol, capacity: int = 64):
    """A working-set solve built from the public API, the reference a library working set must beat.

    Outer steps: rank the groups by their dual score ‖Xᵀ D_i ∇L‖ (one full adjoint), solve the gated program
    on the `capacity` best (`solve_gated` on masks[:, set], warm from the current weights, tol/4), then keep
    the active groups and add the worst violators (score > λ), doubling the capacity when they do not fit,
    until no group outside the set violates. The certificate is the full problem's gap at the result (one
    more `solve_gated` iteration from it, polish off). Returns (solution of that check, outer steps, capacity).
    """
    n, P = masks.shape
    mf = masks.astype(X.dtype)

    @jax.jit
    def scores(W):
        r = (jnp.einsum("nd,pd,np->n", X, W, mf) - y) / n
        return jnp.linalg.norm(jnp.einsum("nd,n,np->pd", X, r, mf), axis=1)

    W = jnp.zeros((P, X.shape[1]), X.dtype)
    score = np.asarray(scores(W))
    chosen = np.sort(np.argsort(-score)[:capacity])
    steps = 0
    while True:
        steps += 1
        sub = cn.solve_gated(X, y, masks[:, chosen], lam, tol=tol / 4, init=W[chosen])
        W = W.at[chosen].set(sub.weights)
        score = np.asarray(scores(W))
        violators = np.setdiff1d(np.flatnonzero(score > float(lam)), chosen)
        if violators.size == 0 or capacity >= P:
            break
        active = np.flatnonzero(np.linalg.norm(np.asarray(W), axis=1) > 0)
        keep = np.union1d(active, violators[np.argsort(-score[violators])][: max(capacity // 2, 1)])
        while keep.size > capacity:
            capacity = min(2 * capacity, P)
        fill = np.setdiff1d(np.argsort(-score), keep)[: capacity - keep.size]
        chosen = np.sort(np.union1d(keep, fill))
    check = cn.solve_gated(X, y, masks, lam, tol=tol, init=W, max_iters=1, polish=False)
    return check, steps, capacity


def measure_composed(X, y, masks, lam, tol, args) -> dict:
    run = blocking(lambda: composed_working_set(X, y, masks, lam, tol))
    run()  # compiles every capacity it reaches
    times, outs = repeat_runs(run, args.repeats, 1, args.slow_s)
    check, steps, capacity = outs[-1]
    return dict(
        time=statistics.median(times),
        times=times,
        iterations=f"{steps} outer steps, capacity {capacity}",
        active=active_groups(check.weights),
        objective=float(check.objective),
        gap=float(check.gap),
        status=status_name(int(check.status)),
    )


def fraction(f: float):
    """λ = f · λ_max, labelled so."""
    return f"{f:g} λ_max", lambda lam_max: f * lam_max


def absolute(lam: float):
    """λ as given."""
    return f"λ = {lam:g}", lambda lam_max: lam


def run_size(n: int, d: int, Ps: list[int], lam_rules: list, path: bool, args) -> list[str]:
    rows, by_mode, extra = [], {}, []
    for P in Ps:
        X, y, masks = rows_and_masks(n, d, P, args.seed)
        lam_max = float(cn.lam_max(X, y, masks))
        for what, rule in lam_rules:
            lam = jnp.float32(rule(lam_max))
            for mode in args.modes:
                t0 = time.perf_counter()
                res = measure_solve(X, y, masks, lam, args.tol, MODES[mode], args)
                log(f"  {n}×{d} P={P} {what}, {mode}: {fmt_time(res['time'])} {res} ({time.perf_counter() - t0:.0f} s)")
                by_mode.setdefault(f"{what}, {mode}", []).append(res["time"])
                rows.append((f"{what}, {mode}", P, res))
            if args.composed:
                res = measure_composed(X, y, masks, lam, args.tol, args)
                log(f"  {n}×{d} P={P} {what}, composed working set: {fmt_time(res['time'])} {res}")
                by_mode.setdefault(f"{what}, composed", []).append(res["time"])
                rows.append((f"{what}, composed working set", P, res))
        if path:
            lams = cn.lam_grid(jnp.float32(lam_max), 16, args.path_ratio)
            for mode in args.modes:
                res = measure_path(X, y, masks, lams, args.tol, MODES[mode], args)
                shown = {k: v for k, v in res.items() if k != "weights"}
                log(f"  {n}×{d} P={P} 16-λ path, {mode}: {fmt_time(res['time'])} {shown}")
                by_mode.setdefault(f"the 16-λ path, {mode}", []).append(res["time"])
                rows.append((f"16-λ path to {args.path_ratio:g} λ_max, {mode}", P, res))
                if args.adelie and mode == "working sets":
                    extra += run_adelie(X, y, masks, lams, res, args)
    header = ("λ, solve", "P", "time (median)", "first run", "iterations", "active", "objective", "gap", "status")
    body = []
    for lam, P, r in rows:
        first = fmt_time(r["first"]) if "first" in r else "—"
        cells = (fmt_time(r["time"]), first, r["iterations"], r["active"], f"{r['objective']:.6g}", f"{r['gap']:.2g}")
        body.append((lam, P, *cells, r["status"]))
    ratios = []
    if len(Ps) > 1:
        for what, t in by_mode.items():
            ratio = t[-1] / t[0]
            ratios.append(f"- {what}: P = {Ps[-1]} takes {ratio:.2f}× the time of P = {Ps[0]} ({Ps[-1] // Ps[0]}× P)")
    return [f"## n = {n}, d = {d}", "", *table(header, body), "", *ratios, *extra, ""]


def gated_objectives(X, y, masks, lams, weights) -> np.ndarray:
    """The squared-loss gated objective of each λ's weights (L, P, d), in float64."""
    X, y, m = (np.asarray(a, np.float64) for a in (X, y, masks))
    out = []
    for lam, W in zip(np.asarray(lams, np.float64), np.asarray(weights, np.float64), strict=True):
        z = np.sum(m * (X @ W.T), axis=1)
        out.append(np.sum((z - y) ** 2) / (2 * len(y)) + lam * np.sum(np.linalg.norm(W, axis=1)))
    return np.asarray(out)


def run_adelie(X, y, masks, lams, ours: dict, args) -> list[str]:
    """adelie's path (its own environment, `adelie_path.py`) at each of `args.adelie_tols`, against our float32
    path (`ours`, from `measure_path`): times, and each one's worst relative excess over the path above the
    certified lower bound objective − gap of a float64 path at tol 1e-9 (ours, on working sets)."""
    x64 = (jnp.asarray(np.asarray(X, np.float64)), jnp.asarray(np.asarray(y, np.float64)))
    lams64 = jnp.asarray(np.asarray(lams, np.float64))
    t0 = time.perf_counter()
    ref = cn.solve_path(*x64, masks, lams64, tol=1e-9, options=MODES["working sets"])
    log(f"  float64 reference path: {time.perf_counter() - t0:.0f} s, status {np.asarray(ref.status).tolist()}")
    lower = np.asarray(ref.objective) - np.asarray(ref.gap)

    def excess(weights):
        return float(np.max((gated_objectives(X, y, masks, lams, weights) - lower) / np.abs(lower)))

    rows = [("convexnn float32 warm path, working sets", fmt_time(ours["time"]), f"{excess(ours['weights']):.2g}")]
    with tempfile.TemporaryDirectory() as tmp:
        problem, result = Path(tmp, "problem.npz"), Path(tmp, "result.npz")
        np.savez(problem, X=np.asarray(x64[0]), y=np.asarray(x64[1]), masks=np.asarray(masks), lams=np.asarray(lams64))
        script = Path(__file__).with_name("adelie_path.py")
        for tol in args.adelie_tols:
            command = [args.adelie, str(script), str(problem), str(result), "--tol", f"{tol:g}"]
            try:
                subprocess.run(command, check=True, timeout=args.adelie_timeout)
            except subprocess.TimeoutExpired:
                rows.append((f"adelie float64, tol {tol:g}", f"> {args.adelie_timeout:g} s (stopped)", "no answer"))
            else:
                out = np.load(result)
                rows.append(
                    (f"adelie float64, tol {tol:g}", fmt_time(float(out["seconds"])), f"{excess(out['weights']):.2g}")
                )
            log(f"  adelie tol {tol:g}: {rows[-1]}")
    head = ("solver", "time (one run)", "worst excess over the path")
    return ["", f"adelie on the same 16-λ path, P = {masks.shape[1]}:", "", *table(head, rows), ""]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("table", "large", "dense", "all"), default="table")
    p.add_argument("--modes", type=lambda t: t.split(","), default=list(MODES), help="of: " + ", ".join(MODES))
    p.add_argument("--tol", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--slow-s", type=float, default=20.0, help="solves slower than this run once")
    p.add_argument("--path-ratio", type=float, default=1e-2, help="the path's smallest λ over λ_max")
    p.add_argument("--large-patterns", type=lambda t: [int(x) for x in t.split(",")], default=[512, 2048, 8192])
    p.add_argument("--dense-patterns", type=lambda t: [int(x) for x in t.split(",")], default=[200, 1024])
    p.add_argument("--composed", action="store_true", help="also time `composed_working_set` at each λ")
    p.add_argument("--adelie", default=None, help="python of adelie's environment: compare its path (`--part large`)")
    p.add_argument("--adelie-tols", type=lambda t: [float(x) for x in t.split(",")], default=[1e-10, 1e-12])
    p.add_argument("--adelie-timeout", type=float, default=None, help="seconds before an adelie run is stopped")
    p.add_argument("--growth", type=int, default=None, help="WorkingSetOptions.growth of the working-set mode")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.growth is not None:
        MODES["working sets"] = cn.GatedOptions(working_set=cn.WorkingSetOptions(min_patterns=1, growth=args.growth))
    machine.enable_x64()  # float32 data; float64 only where the solver asks for it
    desc, load0 = machine.start()
    sections = []
    if args.part in ("table", "all"):
        sections += run_size(5000, 50, [512, 4096], [fraction(0.3), fraction(0.1)], False, args)
    if args.part in ("dense", "all"):  # a dense solution
        sections += run_size(2000, 50, args.dense_patterns, [absolute(1e-3)], False, args)
    if args.part in ("large", "all"):
        sections += run_size(20000, 100, args.large_patterns, [fraction(0.1)], True, args)
    head = report_head("Cost against P: gated solves", "working_sets.py", args.argv, machine.now(), desc, (load0,))
    emit("\n".join([*head, f"Code: {machine.revision()}.", "", *sections]), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
