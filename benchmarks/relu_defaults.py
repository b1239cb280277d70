"""The exact ReLU solver at its defaults: `solve_relu` (AL, ADMM) vs cvxpy + Clarabel on six small real problems.

Each problem is float64 with X standardized per column (zero-variance columns left at 0), gates from
`sample_gates(jax.random.key(0), d, P)` and masks from `activation_masks(X, gates)`:

    wine       load_wine (178×13) + bias column, y = +1 for class 0 else −1, logistic, P = 40, λ = 1e-3
    diabetes2  load_diabetes, first 300 rows, 10 features (no bias), y standardized, squared, P = 60, λ = 1e-2
    diabetes4  the same, λ = 1e-4
    teacher    planted ReLU teacher, n = 200, 5 Gaussian features + bias, 3 neurons, noise 0.01, seed 0,
               squared, P = 20, λ = 1e-2
    digits     load_digits, first 200 rows, 64 pixels, one-hot 10 outputs, squared, P = 20, λ = 1e-3
    linnerud   load_linnerud (20×3) + bias, 3 standardized targets, squared, P = 12, λ = 1e-2

p* is Clarabel's optimum of the same program (cone-constrained group lasso, c separate networks; tolerances
1e-10, max_iter 400), built with cvxpy; "Clarabel time" is `problem.solver_stats.solve_time`, Clarabel's
own solve time (cvxpy's compile excluded). For each method, `solve_relu(X, y, masks, lam, loss=...,
method=m, tol=1e-8)` with every other argument at its default is called twice: the first call's wall time
includes compiling (JAX's caches are cleared before it), the second call's wall time is the run time
(skipped, and the run time taken as the first call's, when the first call takes longer than --slow-s).
Reported: status, iterations, relative error (objective − p*) / max(1, |p*|), the violation and certified
gap the solver reports, whether the gap bounds objective − p* from above (as a certificate must once the
violation is small), and Clarabel time / run time. The objective is also re-evaluated in numpy from the
returned weights (JSON only; the report names any disagreement). Run pinned to one core, e.g.

    OPENBLAS_NUM_THREADS=1 XLA_FLAGS=--xla_cpu_multi_thread_eigen=false taskset -c 1 \\
        python benchmarks/relu_defaults.py --out /tmp/relu_defaults.md --json /tmp/relu_defaults.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from common import machine
from common.records import status_name
from common.tables import emit, report_head, table
from common.timing import fmt_time, log

import convexnn as cn

PACKAGES = ("convexnn", "jax", "jaxlib", "numpy", "scipy", "scikit-learn", "cvxpy", "clarabel")
PROBLEMS = ("wine", "diabetes2", "diabetes4", "teacher", "digits", "linnerud")


# ------------------------------------------------------------------------------------------------
# the problems
# ------------------------------------------------------------------------------------------------


def standardized(A: np.ndarray) -> np.ndarray:
    """Columns centred and scaled to unit variance; zero-variance columns become 0."""
    A = np.asarray(A, np.float64)
    sd = A.std(0)
    return (A - A.mean(0)) / np.where(sd > 0, sd, 1.0)


def with_bias(X: np.ndarray) -> np.ndarray:
    return np.hstack([X, np.ones((X.shape[0], 1))])


def problem_data(name: str) -> tuple[str, np.ndarray, np.ndarray, str, int, float]:
    """(description, X, y, loss, P, λ) of one problem; y is (n,) or (n, c) float64."""
    from sklearn import datasets

    if name == "wine":
        X, y = datasets.load_wine(return_X_y=True)
        X, y = with_bias(standardized(X)), np.where(y == 0, 1.0, -1.0)
        return "wine (class 0 vs rest)", X, y, "logistic", 40, 1e-3
    if name in ("diabetes2", "diabetes4"):
        X, y = datasets.load_diabetes(return_X_y=True)
        lam = 1e-2 if name == "diabetes2" else 1e-4
        return f"diabetes[:300], λ={lam:g}", standardized(X[:300]), standardized(y[:300]), "squared", 60, lam
    if name == "teacher":
        rng = np.random.default_rng(0)
        X = with_bias(rng.standard_normal((200, 5)))
        W, a = rng.standard_normal((6, 3)), rng.standard_normal(3)
        y = np.maximum(X @ W, 0) @ a + 0.01 * rng.standard_normal(200)
        return "planted teacher (3 neurons)", X, y, "squared", 20, 1e-2
    if name == "digits":
        X, labels = datasets.load_digits(return_X_y=True)
        Y = np.eye(10)[labels[:200]]
        return "digits[:200], one-hot", standardized(X[:200]), Y, "squared", 20, 1e-3
    if name == "linnerud":
        X, Y = datasets.load_linnerud(return_X_y=True)
        return "linnerud", with_bias(standardized(X)), standardized(Y), "squared", 12, 1e-2
    raise ValueError(f"unknown problem {name!r}; choose from {', '.join(PROBLEMS)}")


# ------------------------------------------------------------------------------------------------
# the reference and an independent objective
# ------------------------------------------------------------------------------------------------


def clarabel_relu(X, y, masks, lam, loss: str) -> dict:
    """p* of the exact ReLU program (group penalty: c separate networks) by cvxpy + Clarabel.

    Returns p*, Clarabel's own solve time (cvxpy's compile excluded), the wall time of the whole
    `problem.solve` (compile included), Clarabel's iterations and cvxpy's status.
    """
    import cvxpy as cp

    X = np.asarray(X, np.float64)
    Y = np.asarray(y, np.float64).reshape(X.shape[0], -1)
    m = np.asarray(masks, np.float64)
    n, d = X.shape
    P, c = m.shape[1], Y.shape[1]
    S = 2 * m - 1
    Us = [cp.Variable((P, d)) for _ in range(c)]
    Vs = [cp.Variable((P, d)) for _ in range(c)]
    preds = [cp.sum(cp.multiply(m, X @ (U - V).T), axis=1) for U, V in zip(Us, Vs, strict=True)]
    if loss == "squared":
        fit = sum(cp.sum_squares(preds[k] - Y[:, k]) for k in range(c)) / (2 * n * c)
    elif loss == "logistic":
        fit = sum(cp.sum(cp.logistic(-cp.multiply(Y[:, k], preds[k]))) for k in range(c)) / (n * c)
    else:
        raise ValueError(loss)
    penalty = lam * sum(cp.sum(cp.norm(W, 2, axis=1)) for W in Us + Vs)
    cones = [cp.multiply(S, X @ W.T) >= 0 for W in Us + Vs]
    problem = cp.Problem(cp.Minimize(fit + penalty), cones)
    start = time.perf_counter()
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10, max_iter=400)
    wall = time.perf_counter() - start
    if problem.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"Clarabel failed: {problem.status}")
    stats = problem.solver_stats
    return {
        "p_star": float(problem.value),
        "solve_time": float(stats.solve_time),
        "wall_with_compile": wall,
        "iterations": int(stats.num_iters),
        "status": problem.status,
    }


def numpy_objective(U, V, X, y, masks, lam, loss: str) -> float:
    """The objective of weights (U, V), each (P, d) or (P, d, c), evaluated in float64 numpy."""
    X = np.asarray(X, np.float64)
    Y = np.asarray(y, np.float64).reshape(X.shape[0], -1)
    m = np.asarray(masks, np.float64)
    P, d = m.shape[1], X.shape[1]
    U = np.asarray(U, np.float64).reshape(P, d, -1)
    V = np.asarray(V, np.float64).reshape(P, d, -1)
    Z = np.einsum("np,nd,pdc->nc", m, X, U - V)
    N = Z.size
    fit = 0.5 * np.sum((Z - Y) ** 2) / N if loss == "squared" else np.sum(np.logaddexp(0.0, -Y * Z)) / N
    return float(fit + lam * (np.linalg.norm(U, axis=1).sum() + np.linalg.norm(V, axis=1).sum()))


# ------------------------------------------------------------------------------------------------
# convexnn
# ------------------------------------------------------------------------------------------------


def run_convexnn(X, y, masks, lam, loss, method, tol, max_iters, slow_s, p_star) -> dict:
    def call():
        sol = cn.solve_relu(X, y, masks, lam, loss=loss, method=method, tol=tol, max_iters=max_iters)
        return jax.block_until_ready(sol)

    jax.clear_caches()  # so the first call compiles even when an earlier problem had the same shapes
    start = time.perf_counter()
    sol = call()
    first = time.perf_counter() - start
    first_objective = float(sol.objective)
    repeated = first <= slow_s
    if repeated:
        start = time.perf_counter()
        sol = call()
        run = time.perf_counter() - start
    else:
        run = first
    objective, gap = float(sol.objective), float(sol.gap)
    excess = objective - p_star
    U, V = sol.weights
    stats = {k: np.asarray(v).item() for k, v in (sol.stats or {}).items() if np.ndim(v) == 0}
    return {
        "method": method,
        "status": status_name(sol.status),
        "iterations": int(sol.iterations),
        "first_call_s": first,
        "run_s": run,
        "run_repeated": repeated,
        "same_objective_both_calls": objective == first_objective,
        "objective": objective,
        "objective_numpy": numpy_objective(U, V, X, y, masks, lam, loss),
        "rel_error": excess / max(1.0, abs(p_star)),
        "violation": float(sol.violation),
        "gap": gap,
        "gap_bounds_excess": gap >= excess,
        "stats": stats,
    }


# ------------------------------------------------------------------------------------------------
# the report
# ------------------------------------------------------------------------------------------------


def table_rows(results: list[dict]) -> list[list[str]]:
    rows = []
    for res in results:
        ref = res["clarabel"]
        for r in res["runs"]:
            excess = r["objective"] - ref["p_star"]
            bounds = "yes" if r["gap_bounds_excess"] else f"**no** (by {excess - r['gap']:.1e})"
            run = fmt_time(r["run_s"]) + ("" if r["run_repeated"] else " (1st call)")
            rows.append(
                [
                    res["problem"],
                    f"{res['n']}×{res['d']}×{res['P']}" + (f", c={res['c']}" if res["c"] > 1 else ""),
                    f"{res['lam']:g}",
                    f"{ref['p_star']:.10g}",
                    fmt_time(ref["solve_time"]),
                    r["method"],
                    r["status"],
                    str(r["iterations"]),
                    fmt_time(r["first_call_s"]),
                    run,
                    f"{r['rel_error']:+.1e}",
                    f"{r['violation']:.1e}",
                    f"{r['gap']:+.1e}",
                    bounds,
                    f"{ref['solve_time'] / r['run_s']:.3g}×",
                ]
            )
    return rows


HEADER = (
    "problem",
    "n×d×P",
    "λ",
    "Clarabel p*",
    "Clarabel time",
    "method",
    "status",
    "iterations",
    "1st call (compile + run)",
    "run (2nd call)",
    "rel. error",
    "violation",
    "gap",
    "gap ≥ obj − p*",
    "speed vs Clarabel",
)


def notes(results: list[dict]) -> list[str]:
    """Anything odd: Clarabel not "optimal", convexnn statuses other than converged, negative or invalid
    gaps, objectives that differ."""
    out = []
    for res in results:
        ref = res["clarabel"]
        if ref["status"] != "optimal":
            out.append(f"- {res['name']} / Clarabel: status {ref['status']} after {ref['iterations']} iterations.")
        for r in res["runs"]:
            where = f"{res['name']} / {r['method']}"
            if r["status"] != "converged":
                out.append(f"- {where}: status {r['status']} after {r['iterations']} iterations.")
            if r["gap"] < 0:
                out.append(f"- {where}: negative gap {r['gap']:.2e}.")
            if not r["gap_bounds_excess"]:
                excess = r["objective"] - res["clarabel"]["p_star"]
                out.append(f"- {where}: gap {r['gap']:.2e} < objective − p* = {excess:.2e}.")
            diff = abs(r["objective"] - r["objective_numpy"]) / max(1.0, abs(r["objective"]))
            if diff > 1e-10:
                out.append(f"- {where}: reported objective differs from numpy's by {diff:.1e} (relative).")
            if not r["same_objective_both_calls"]:
                out.append(f"- {where}: the two calls returned different objectives.")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", default=",".join(PROBLEMS), help=f"comma-separated subset of {PROBLEMS}")
    parser.add_argument("--methods", default="al,admm", help="comma-separated solve_relu methods")
    parser.add_argument("--tol", type=float, default=1e-8, help="solve_relu's tol (default 1e-8)")
    parser.add_argument("--max-iters", type=int, default=None, help="solve_relu's max_iters (default: its own)")
    parser.add_argument(
        "--slow-s", type=float, default=180.0, help="no second call when the first takes longer (default 180)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    parser.add_argument("--json", type=Path, default=None, help="dump the raw rows here")
    args = parser.parse_args(argv)
    names = [p.strip() for p in args.problems.split(",") if p.strip()]
    unknown = sorted(set(names) - set(PROBLEMS))
    if unknown:
        parser.error(f"unknown --problems {unknown}; choose from {', '.join(PROBLEMS)}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]

    machine.enable_x64()
    info, load0 = machine.start(packages=PACKAGES)
    info["convexnn source"] = machine.revision()
    t_all = time.perf_counter()
    results = []
    for name in names:
        title, X, y, loss, P, lam = problem_data(name)
        n, d = X.shape
        c = 1 if y.ndim == 1 else y.shape[1]
        Xj, yj = jnp.asarray(X), jnp.asarray(y)
        gates = cn.sample_gates(jax.random.key(0), d, P, dtype=jnp.float64)
        masks = cn.activation_masks(Xj, gates)
        log(f"{name}: {title}, n={n} d={d} P={P} c={c} {loss} λ={lam:g}")
        ref = clarabel_relu(X, y, masks, lam, loss)
        log(f"  clarabel: p* {ref['p_star']:.12g}, {ref['iterations']} it, solve_time {fmt_time(ref['solve_time'])}")
        runs = []
        for method in methods:
            r = run_convexnn(Xj, yj, masks, lam, loss, method, args.tol, args.max_iters, args.slow_s, ref["p_star"])
            log(
                f"  {method}: {r['status']}, {r['iterations']} it, first {fmt_time(r['first_call_s'])}, "
                f"run {fmt_time(r['run_s'])}, rel {r['rel_error']:+.2e}, viol {r['violation']:.1e}, "
                f"gap {r['gap']:+.2e}"
            )
            runs.append(r)
        results.append(
            {
                "name": name,
                "problem": title,
                "loss": loss,
                "n": n,
                "d": d,
                "P": P,
                "c": c,
                "lam": lam,
                "clarabel": ref,
                "runs": runs,
            }
        )
    total = time.perf_counter() - t_all

    argv = sys.argv[1:] if argv is None else argv
    title = "The exact ReLU solver at its defaults vs cvxpy + Clarabel"
    lines = report_head(title, "relu_defaults.py", argv, machine.now(), info, (load0, os.getloadavg()[0]))
    tol = f"tol={args.tol:g}" + ("" if args.max_iters is None else f", max_iters={args.max_iters}")
    lines += [
        f"float64; `solve_relu(X, y, masks, lam, loss=..., method=m, {tol})`, every other argument at its default. "
        "Clarabel: tolerances 1e-10, max_iter 400; its time is `solver_stats.solve_time` (cvxpy's compile "
        "excluded). rel. error = (objective − p*) / max(1, |p*|); speed vs Clarabel = Clarabel time / run time.",
        "",
        *table(HEADER, table_rows(results)),
        "",
        f"Total wall time (Clarabel with cvxpy's compile, both convexnn calls): {fmt_time(total)}.",
        "",
    ]
    odd = notes(results)
    lines += ["Notes:", "", *odd] if odd else ["Nothing odd: every run converged with a valid, non-negative gap."]
    emit("\n".join(lines), args.out)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"argv": argv, "total_s": total, "machine": info, "results": results}
        args.json.write_text(json.dumps(payload, indent=1, default=_plain) + "\n")
        log(f"raw rows written to {args.json}")


def _plain(value):
    """numpy scalars as Python numbers, for json.dumps."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value))


if __name__ == "__main__":
    main()
