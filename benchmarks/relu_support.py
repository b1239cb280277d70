"""How many patterns the exact ReLU program's optimum uses, against the gated program's (issue 26, item 1).

A working set pays when the optimum's non-zero blocks are a small share of P. For each problem (float64 teacher
data, `teacher_data`, y standardized; gates N(0, I) with `sample_gates(PRNGKey(seed))`; λ a fraction of the
exact program's λ_max), this reports:

- the time of the AL on every pattern (a compiling run, and a second one when the first took under two minutes)
  and on working sets (`ALOptions.working_set`, a compiling run and a second one);
- the gated optimum's non-zero patterns (`solve_gated`, tol 1e-8) and the exact optimum's (`solve_relu`, AL,
  tol 1e-7): a pattern counts when u_i or v_i is non-zero, and how many patterns carry 90 / 99 / 99.9 % of
  Σ_i (‖u_i‖ + ‖v_i‖);
- the exact program restricted to the k patterns of largest gated norm (what a working set seeded by the gated
  solution, or by the γ = 0 scores, would solve), and to the k of largest norm at the exact optimum itself (an
  oracle: the best set of that size a working set could find): its objective's excess over the full optimum,
  and how many patterns outside the k fail the γ = 0 test ‖Xᵀ D_i ∇L‖ ≤ λ there (those a working set would have
  to add, or certify with multipliers of their own: min_{γ ≥ 0} ‖Xᵀ (D_i ∇L − (2D_i − I) γ)‖ ≤ λ).

    taskset -c 0 python benchmarks/relu_support.py --out benchmarks/results/relu_support.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from common import machine
from common.problems import teacher_data
from common.tables import emit, report_head, table
from common.timing import log

import convexnn as cn

PROBLEMS = {  # name: (n, d, P, λ / λ_max of the exact program, restricted sizes k, first working-set capacity)
    "1000×20×256": (1000, 20, 256, 0.3, (16, 32, 64, 128), 32),
    "300×10×64": (300, 10, 64, 0.3, (8, 16, 32), 16),
    "300×10×512": (300, 10, 512, 0.3, (16, 64, 256), 32),
    "2000×20×1024": (2000, 20, 1024, 0.3, (), 64),  # the AL on every pattern takes over ten minutes
}
DEFAULT = ("1000×20×256", "300×10×64", "300×10×512")


def load(n: int, d: int, P: int, seed: int):
    X, y = teacher_data(n, d, seed)
    X, y = jnp.asarray(X), jnp.asarray((y - y.mean()) / y.std())
    masks = cn.activation_masks(X, cn.sample_gates(jax.random.PRNGKey(seed), d, P, jnp.float64))
    return X, y, masks


def status_name(sol) -> str:
    return cn.Status(int(sol.status)).name.lower()


def block_norms(sol) -> np.ndarray:
    """‖u_i‖ + ‖v_i‖ for an exact solution, ‖w_i‖ for a gated one."""
    if isinstance(sol.weights, tuple):
        return sum(np.linalg.norm(np.asarray(w), axis=1) for w in sol.weights)
    return np.linalg.norm(np.asarray(sol.weights), axis=1)


def carrying(norms: np.ndarray, shares=(0.9, 0.99, 0.999)) -> str:
    """How many of the largest blocks carry each share of Σ norms."""
    c = np.cumsum(np.sort(norms)[::-1]) / max(norms.sum(), np.finfo(float).tiny)
    return " / ".join(str(int(np.searchsorted(c, s) + 1)) for s in shares)


def gamma0_scores(X, y, masks, idx, sol, lam) -> np.ndarray:
    """‖Xᵀ D_i ∇L‖ / λ for every pattern, at a solution on the patterns `idx` (squared loss, ∇L = (z − y)/n)."""
    U, V = sol.weights
    z = jnp.sum(jnp.where(masks[:, idx], X @ (U - V).T, 0.0), axis=1)
    grad = (z - y) / X.shape[0]
    return np.asarray(jnp.linalg.norm(jnp.einsum("nd,np->pd", X, jnp.where(masks, grad[:, None], 0.0)), axis=1)) / lam


def working_set_row(X, y, masks, lam, tol, capacity, p_full) -> tuple:
    """`solve_relu` on working sets (`ALOptions.working_set`, sets of capacity · 2^k): a compiling run, then the
    timed one."""
    options = cn.ALOptions(working_set=cn.WorkingSetOptions(min_patterns=1, capacity=capacity))
    t0 = time.perf_counter()
    cn.solve_relu(X, y, masks, lam, tol=tol, options=options).objective.block_until_ready()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    sol = cn.solve_relu(X, y, masks, lam, tol=tol, options=options)
    sol.objective.block_until_ready()
    seconds = time.perf_counter() - t0
    on = block_norms(sol) > 0
    return (
        f"working sets from {capacity} (ended in {int(sol.stats['capacity'])}, {int(sol.stats['outer_steps'])} steps)",
        f"{int(np.sum(on))}",
        carrying(block_norms(sol)),
        f"{float(sol.objective):.7g}",
        f"{(float(sol.objective) - p_full) / abs(p_full):+.2e}",
        f"certified: gap {float(sol.gap):.1e}",
        f"{status_name(sol)}, {seconds:.1f} s ({first:.0f} s first), {int(sol.iterations)} it.",
    )


def run(name: str, seed: int, tol: float) -> list[str]:
    n, d, P, frac, ks, capacity = PROBLEMS[name]
    X, y, masks = load(n, d, P, seed)
    lam = frac * float(cn.lam_max(X, y, masks, model="relu"))
    gated = cn.solve_gated(X, y, masks, lam, tol=1e-8)
    t0 = time.perf_counter()
    full = cn.solve_relu(X, y, masks, lam, tol=tol)
    seconds = first = time.perf_counter() - t0
    if first < 120:  # a second, compiled run where that is cheap
        t0 = time.perf_counter()
        full = cn.solve_relu(X, y, masks, lam, tol=tol)
        full.objective.block_until_ready()
        seconds = time.perf_counter() - t0
    g_norms, r_norms = block_norms(gated), block_norms(full)
    log(f"  {name}: gated {int(np.sum(g_norms > 0))} on, exact {int(np.sum(r_norms > 0))} on, {seconds:.0f} s")
    p_full = float(full.objective)
    rows = [
        (
            "all P",
            f"{int(np.sum(r_norms > 0))}",
            carrying(r_norms),
            f"{p_full:.7g}",
            "—",
            "—",
            f"{status_name(full)}, {seconds:.1f} s ({first:.0f} s first), {int(full.iterations)} it.",
        )
    ]
    rows.append(working_set_row(X, y, masks, lam, tol, capacity, p_full))
    log(f"    {rows[-1]}")
    ranks = {"gated": np.argsort(-g_norms, kind="stable"), "exact": np.argsort(-r_norms, kind="stable")}
    for (by, order), k in ((r, k) for r in ranks.items() for k in ks):
        idx = np.sort(order[:k])
        t0 = time.perf_counter()
        sub = cn.solve_relu(X, y, masks[:, idx], lam, tol=tol)
        seconds = time.perf_counter() - t0
        outside = np.setdiff1d(np.arange(P), idx)
        scores = gamma0_scores(X, y, masks, idx, sub, lam)[outside]
        rows.append(
            (
                f"top {k} by {by} norm",
                f"{int(np.sum(block_norms(sub) > 0))}",
                carrying(block_norms(sub)),
                f"{float(sub.objective):.7g}",
                f"{(float(sub.objective) - p_full) / abs(p_full):+.2e}",
                f"{int(np.sum(scores > 1))} of {outside.size} (max {scores.max():.2f})",
                f"{status_name(sub)}, {seconds:.0f} s",
            )
        )
        log(f"    {rows[-1]}")
    head = ("patterns", "on", "carry 90/99/99.9 %", "objective", "excess", "outside: γ = 0 test fails", "status, time")
    return [
        f"## {name}, λ = {frac:g} λ_max (exact: {lam:.4g}), seed {seed}",
        "",
        f"Gated optimum: {int(np.sum(g_norms > 0))} of {P} patterns on ({carrying(g_norms)} carry 90/99/99.9 %).",
        "",
        *table(head, rows),
        "",
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", type=lambda t: t.split(","), default=list(DEFAULT), help=", ".join(PROBLEMS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=1e-7)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    machine.enable_x64()
    desc, load0 = machine.start()
    sections = [line for name in args.problems for line in run(name, args.seed, args.tol)]
    argv_shown = list(sys.argv[1:] if argv is None else argv)
    title = "Patterns on at the exact ReLU optimum"
    head = report_head(title, "relu_support.py", argv_shown, machine.now(), desc, (load0,))
    emit("\n".join([*head, f"Code: {machine.revision()}.", "", *sections]), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
