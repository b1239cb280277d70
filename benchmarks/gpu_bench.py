"""The accelerator checks of `gpu.sh`: four timings that a CPU cannot give, each against its own baseline.

    iteration   n = 50 000, d = 3 072, P = 1 000 (CIFAR-10's shape; Gaussian data, since no download is allowed):
                one R-FISTA iteration of `solve_gated` (polish off, fixed iteration counts, the time per
                iteration from the difference of two budgets) against the bare GEMM pair X Wᵀ, Xᵀ R of the
                same shapes: how close the solver runs to the hardware.
    path        20 000 × 100, P = 512: a 16-λ `solve_path(mode="vmap")` against one `solve_gated` at the path's
                middle λ: what the batched lanes cost against one.
    working     20 000 × 100, P = 8 192, λ = 0.1 λ_max: the working-set solve (the default) against the solve on
                every pattern at once.
    relu        10 000 × 100 × 300, λ = 1e-3: `solve_relu` (AL) at its defaults, float32, tol 1e-4.

Each part reports medians of `--repeats` runs after a compiling one, and the status and gap of what it timed
(an answer is checked before its time is read). `--smoke` shrinks every size for a CPU check of the script.

    python benchmarks/gpu_bench.py --out benchmarks/results/gpu.md [--parts iteration,path,working,relu]
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
from common.timing import blocking, fmt_time, log

import convexnn as cn

PARTS = ("iteration", "path", "working", "relu")


def timed_median(fn, repeats: int) -> tuple[float, float, object]:
    """(median wall time, first run's time with compilation, last result) of a blocking fn."""
    fn = blocking(fn)
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), first, out


def rows_and_masks(n: int, d: int, P: int, seed: int = 0):
    X, y, _ = planted_rows(n, d, 1, np.float32, seed)
    gates = np.random.default_rng(seed + 1).standard_normal((d, P)).astype(np.float32)
    X, y = jnp.asarray(X), jnp.asarray(y)
    return X, y, X @ jnp.asarray(gates) >= 0


def part_iteration(args) -> list[str]:
    n, d, P = (2000, 64, 100) if args.smoke else (50_000, 3072, 1000)
    key = jax.random.PRNGKey(0)
    X = jax.random.normal(key, (n, d), jnp.float32) / np.sqrt(d)
    y = jnp.tanh(X[:, 0] * 3)
    masks = X @ jax.random.normal(jax.random.PRNGKey(1), (d, P), jnp.float32) >= 0
    lam = 0.1 * float(cn.lam_max(X, y, masks))
    few, many = 10, 60

    def solve(iters):
        return cn.solve_gated(X, y, masks, lam, tol=1e-12, max_iters=iters, polish=False)

    t_few, _, _ = timed_median(lambda: solve(few), args.repeats)
    t_many, first, sol = timed_median(lambda: solve(many), args.repeats)
    per_iteration = (t_many - t_few) / (int(sol.iterations) - few)

    W = jnp.asarray(np.random.default_rng(2).standard_normal((P, d)), jnp.float32)
    prec = cn.operators.PRECISION
    inner = 20

    @jax.jit
    def chained(W):  # `inner` pairs X Wᵀ, Rᵀ X in a jitted loop, nothing hoistable: gated_vs_scnn.py's bound
        def body(_, W):
            B = jnp.matmul(jnp.matmul(X, W.T, precision=prec).T, X, precision=prec)
            return B / jnp.max(jnp.abs(B))

        return jax.lax.fori_loop(0, inner, body, W)

    t_loop, _, _ = timed_median(lambda: chained(W), args.repeats)
    t_gemm = t_loop / inner
    head = ("shape", "R-FISTA iteration", "bare GEMM pair", "ratio", "status at 60 iterations")
    row = (
        f"{n}×{d}×{P}",
        fmt_time(per_iteration),
        fmt_time(t_gemm),
        f"{per_iteration / t_gemm:.2f}×",
        status_name(int(sol.status)),
    )
    return ["## One iteration against the bare GEMM pair", "", *table(head, [row]), ""]


def part_path(args) -> list[str]:
    n, d, P = (2000, 20, 64) if args.smoke else (20_000, 100, 512)
    X, y, masks = rows_and_masks(n, d, P)
    lams = cn.lam_grid(cn.lam_max(X, y, masks), 16, 1e-2)
    t_path, first_path, path = timed_median(
        lambda: cn.solve_path(X, y, masks, lams, mode="vmap", tol=1e-5), args.repeats
    )
    mid = lams[8]
    t_one, first_one, one = timed_median(lambda: cn.solve_gated(X, y, masks, mid, tol=1e-5), args.repeats)
    converged = int(np.sum(np.asarray(path.status) == cn.Status.CONVERGED))
    head = ("solve", "time (median)", "first run", "status")
    rows = [
        (f"16-λ vmapped path, {n}×{d}×{P}", fmt_time(t_path), fmt_time(first_path), f"{converged}/16 converged"),
        ("one solve at the middle λ", fmt_time(t_one), fmt_time(first_one), status_name(int(one.status))),
    ]
    return [
        "## A 16-λ vmapped path against one solve",
        "",
        *table(head, rows),
        "",
        f"Ratio: {t_path / t_one:.2f}×.",
        "",
    ]


def part_working(args) -> list[str]:
    n, d, P = (2000, 20, 1024) if args.smoke else (20_000, 100, 8192)
    X, y, masks = rows_and_masks(n, d, P)
    lam = 0.1 * float(cn.lam_max(X, y, masks))
    rows = []
    for name, ws in (("working sets (default)", cn.WorkingSetOptions()), ("every pattern", None)):
        opts = cn.GatedOptions(working_set=ws)
        t, first, sol = timed_median(lambda: cn.solve_gated(X, y, masks, lam, tol=1e-5, options=opts), args.repeats)
        rows.append(
            (
                name,
                fmt_time(t),
                fmt_time(first),
                int(sol.iterations),
                f"{float(sol.objective):.6g}",
                f"{float(sol.gap):.2g}",
                status_name(int(sol.status)),
            )
        )
    head = ("solve", "time (median)", "first run", "iterations", "objective", "gap", "status")
    return [f"## Working sets at {n}×{d}, P = {P}, 0.1 λ_max", "", *table(head, rows), ""]


def part_relu(args) -> list[str]:
    n, d, P = (500, 10, 30) if args.smoke else (10_000, 100, 300)
    X, y, masks = rows_and_masks(n, d, P)
    t, first, sol = timed_median(lambda: cn.solve_relu(X, y, masks, 1e-3, tol=1e-4), max(1, args.repeats // 3))
    head = ("solve", "time", "first run", "iterations", "objective", "gap", "violation", "status")
    row = (
        f"AL {n}×{d}×{P}",
        fmt_time(t),
        fmt_time(first),
        int(sol.iterations),
        f"{float(sol.objective):.6g}",
        f"{float(sol.gap):.2g}",
        f"{float(sol.violation):.2g}",
        status_name(int(sol.status)),
    )
    return ["## Exact ReLU", "", *table(head, [row]), ""]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", type=lambda t: t.split(","), default=list(PARTS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="tiny sizes: a CPU check of the script itself")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    desc, load0 = machine.start()
    sections = []
    for part in args.parts:
        t0 = time.perf_counter()
        sections += globals()[f"part_{part}"](args)
        log(f"{part}: {time.perf_counter() - t0:.0f} s")
    argv_used = list(sys.argv[1:] if argv is None else argv)
    head = report_head("Accelerator checks", "gpu_bench.py", argv_used, machine.now(), desc, (load0,))
    emit("\n".join([*head, f"Code: {machine.revision()}.", "", *sections]), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
