"""Cost against the number of patterns P: does a gated solve's time follow the active groups or P?

Planted-teacher rows (`common.problems.planted_rows`: Gaussian features with a bias column, a 4-neuron ReLU
teacher, noise 0.1), Gaussian gates, squared loss, float32, `solve_gated(..., tol=1e-5)`; λ as a fraction of
`lam_max(X, y, masks)` of each P. Reported per solve: the median wall time over repeats (compile excluded),
iterations (each one product with X and one with Xᵀ over all P groups: full passes over the data), the groups
active at the solution (‖w_i‖ > 0), objective, gap and status; per λ, the time ratio of the largest P to the
smallest. Paths: `solve_path` (mode "warm") over `lam_grid(λ_max, 16, ratio)`.

    python benchmarks/working_sets.py --part table           # 5000×50, P = 512 and 4096, λ = 0.3 and 0.1 λ_max
    python benchmarks/working_sets.py --part large           # 20000×100, P = 512, 2048, 8192: one λ and a path

`--composed` also times `composed_working_set`, a working set built from the public API (solves on gathered
masks, one full adjoint per outer step): the reference a library working set must beat.

Run pinned to one core, e.g. `OPENBLAS_NUM_THREADS=1 XLA_FLAGS=--xla_cpu_multi_thread_eigen=false taskset -c 0`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
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


def measure_solve(X, y, masks, lam, tol, args) -> dict:
    """One λ: compile, then repeats of the timed solve."""
    solve = blocking(lambda: cn.solve_gated(X, y, masks, lam, tol=tol))
    solve()  # compile
    times, outs = repeat_runs(solve, args.repeats, 1, args.slow_s)
    sol = outs[-1]
    return dict(
        time=statistics.median(times),
        times=times,
        iterations=int(sol.iterations),
        active=active_groups(sol.weights),
        objective=float(sol.objective),
        gap=float(sol.gap),
        status=status_name(int(sol.status)),
    )


def measure_path(X, y, masks, lams, tol, args) -> dict:
    """A warm path over `lams`: compile, then repeats."""
    solve = blocking(lambda: cn.solve_path(X, y, masks, lams, tol=tol, mode="warm"))
    solve()
    times, outs = repeat_runs(solve, args.repeats, 1, args.slow_s)
    path = outs[-1]
    status = np.asarray(path.status)
    return dict(
        time=statistics.median(times),
        times=times,
        iterations=int(np.sum(np.asarray(path.iterations))),
        active=max(active_groups(path.weights[k]) for k in range(len(lams))),
        objective=float(np.asarray(path.objective)[-1]),
        gap=float(np.max(np.asarray(path.gap) / np.maximum(1.0, np.abs(np.asarray(path.objective))))),
        status=f"{int(np.sum(status == cn.Status.CONVERGED))}/{len(lams)} converged",
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


def run_size(n: int, d: int, Ps: list[int], fractions: list[float], path: bool, args) -> list[str]:
    rows, by_fraction = [], {}
    for P in Ps:
        X, y, masks = rows_and_masks(n, d, P, args.seed)
        lam_max = float(cn.lam_max(X, y, masks))
        for frac in fractions:
            t0 = time.perf_counter()
            res = measure_solve(X, y, masks, jnp.float32(frac * lam_max), args.tol, args)
            log(f"  {n}×{d} P={P} λ={frac:g} λ_max: {fmt_time(res['time'])} {res} ({time.perf_counter() - t0:.0f} s)")
            by_fraction.setdefault(frac, []).append(res["time"])
            rows.append((f"{frac:g} λ_max", P, res))
            if args.composed:
                res = measure_composed(X, y, masks, jnp.float32(frac * lam_max), args.tol, args)
                log(f"  {n}×{d} P={P} λ={frac:g} λ_max, composed working set: {fmt_time(res['time'])} {res}")
                by_fraction.setdefault(f"{frac:g} composed", []).append(res["time"])
                rows.append((f"{frac:g} λ_max, composed working set", P, res))
        if path:
            lams = cn.lam_grid(jnp.float32(lam_max), 16, args.path_ratio)
            res = measure_path(X, y, masks, lams, args.tol, args)
            log(f"  {n}×{d} P={P} 16-λ path: {fmt_time(res['time'])} {res}")
            by_fraction.setdefault("path", []).append(res["time"])
            rows.append((f"16-λ path to {args.path_ratio:g} λ_max", P, res))
    header = ("λ", "P", "time (median)", "iterations", "active groups", "objective", "gap", "status")
    body = []
    for lam, P, r in rows:
        cells = (fmt_time(r["time"]), r["iterations"], r["active"], f"{r['objective']:.6g}", f"{r['gap']:.2g}")
        body.append((lam, P, *cells, r["status"]))
    ratios = []
    for key, t in by_fraction.items():
        what = key if isinstance(key, str) else f"{key:g} λ_max"
        what = "the 16-λ path" if key == "path" else what
        ratio = t[-1] / t[0]
        ratios.append(f"- {what}: P = {Ps[-1]} takes {ratio:.1f}× the time of P = {Ps[0]} ({Ps[-1] // Ps[0]}× P)")
    return [f"## n = {n}, d = {d}", "", *table(header, body), "", *ratios, ""]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("table", "large", "all"), default="table")
    p.add_argument("--tol", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--slow-s", type=float, default=20.0, help="solves slower than this run once")
    p.add_argument("--path-ratio", type=float, default=1e-2, help="the path's smallest λ over λ_max")
    p.add_argument("--large-patterns", type=lambda t: [int(x) for x in t.split(",")], default=[512, 2048, 8192])
    p.add_argument("--composed", action="store_true", help="also time `composed_working_set` at each λ")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    machine.enable_x64()  # float32 data; float64 only where the solver asks for it
    desc, load0 = machine.start()
    sections = []
    if args.part in ("table", "all"):
        sections += run_size(5000, 50, [512, 4096], [0.3, 0.1], False, args)
    if args.part in ("large", "all"):
        sections += run_size(20000, 100, args.large_patterns, [0.1], True, args)
    head = report_head("Cost against P: gated solves", "working_sets.py", args.argv, machine.now(), desc, (load0,))
    emit("\n".join([*head, f"Code: {machine.revision()}.", "", *sections]), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
