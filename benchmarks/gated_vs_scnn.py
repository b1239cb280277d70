"""Benchmark: convexnn's gated ReLU solver against pyscnn's R-FISTA on the same problems.

For each size (n, d, P) it builds one planted-teacher problem (tests/helpers.py `teacher`), one set of
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
NumPy 1.x), and compares convexnn with the faster of the two.

Run `python benchmarks/gated_vs_scnn.py --help`; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import logging
import math
import os
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax

jax.config.update("jax_enable_x64", True)  # the reference solve and all objective evaluations are float64

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import convexnn as cn  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SIZES = "2000x50x200,20000x100x500"
QUICK_SIZES = "500x20x50"


# --------------------------------------------------------------------------------------------------
# problem construction
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Problem:
    """One benchmark problem, in the forms both libraries need.

    Attributes:
        n, d: rows and columns of X (d counts the bias column).
        P_sampled: gates drawn; P: patterns kept (pyscnn's de-duplication, all-zero pattern dropped).
        X32, y32: the float32 data both libraries are timed on (NumPy).
        X64, y64: the same values upcast to float64 (exactly representable): the problem p* refers to.
        gates: (d, P) float64 gates pyscnn keeps (float32-representable values).
        masks: (n, P) bool, 1[X g ≥ 0] from those gates; equal to pyscnn's 1[X g > 0].
        min_margin: min |x_j · g_i| over all entries: how far the masks are from a ≥/> tie.
        device: the same X32, y32, X64, y64, masks as JAX arrays, placed once (not re-sent per solve).
    """

    n: int
    d: int
    P_sampled: int
    P: int
    X32: np.ndarray
    y32: np.ndarray
    X64: np.ndarray
    y64: np.ndarray
    gates: np.ndarray
    masks: np.ndarray
    min_margin: float
    device: dict = dataclasses.field(repr=False)


def load_teacher() -> Callable[..., Any]:
    """`teacher` from tests/helpers.py, loaded by path (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location("_convexnn_test_helpers", REPO / "tests" / "helpers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.teacher


def make_problem(n: int, d: int, P: int, seed: int) -> Problem:
    """Planted-teacher data and gates shared by both libraries, with the masks checked to agree.

    The teacher's own masks are not used: gates are drawn here (float32 values), passed through pyscnn's
    `compute_activation_patterns` (what `optimize_model` does internally: strict > 0, np.unique over
    patterns, all-zero pattern dropped), and convexnn's masks are computed from the gates it keeps.
    """
    from scnn.activations import compute_activation_patterns

    prob = load_teacher()(n=n, d=d, P=1, seed=seed, dtype=jnp.float64)
    X32 = np.asarray(prob.X, np.float32)
    y32 = np.asarray(prob.y, np.float32)
    X64, y64 = X32.astype(np.float64), y32.astype(np.float64)

    g32 = cn.sample_gates(jax.random.key(seed), d, P, dtype=jnp.float32)
    G = np.asarray(g32, np.float64)
    D_scnn, G_kept = compute_activation_patterns(X32, G)  # exactly pyscnn's call on float32 data
    G_kept = np.ascontiguousarray(G_kept)

    masks = np.asarray(cn.activation_masks(jnp.asarray(X64), jnp.asarray(G_kept)))
    if not np.array_equal(masks, D_scnn > 0):
        raise RuntimeError("convexnn's masks (X g >= 0, float64) differ from pyscnn's (X g > 0)")
    masks32 = np.asarray(cn.activation_masks(jnp.asarray(X32), jnp.asarray(G_kept, np.float32)))
    if not np.array_equal(masks, masks32):
        raise RuntimeError("masks computed in float32 and float64 differ: a pattern sits on a tie")
    margin = float(np.min(np.abs(X64 @ G_kept)))
    device = {k: jnp.asarray(v) for k, v in dict(X32=X32, y32=y32, X64=X64, y64=y64, masks=masks).items()}
    return Problem(n, d, P, G_kept.shape[1], X32, y32, X64, y64, G_kept, masks, margin, device)


def make_objective64(prob: Problem, lam: float) -> Callable[[Any], float]:
    """obj64(W) = ½ mean((gated_forward(X64, masks, W) − y64)²) + λ Σ_i ‖W_i‖₂, in float64, for (P, d) W."""
    X, y, masks = prob.device["X64"], prob.device["y64"], prob.device["masks"]

    @jax.jit
    def f(W):
        r = cn.operators.gated_forward(X, masks, W) - y
        return 0.5 * jnp.mean(r * r) + lam * jnp.sum(jnp.linalg.norm(W, axis=1))

    def objective64(W) -> float:
        W = np.asarray(W, np.float64)
        if W.shape != (prob.P, prob.d):
            raise ValueError(f"weights must be {(prob.P, prob.d)}; got {W.shape}")
        return float(f(jnp.asarray(W)))

    return objective64


# --------------------------------------------------------------------------------------------------
# timing helpers
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    """The record of one configuration: timings over repeats and the result of the last repeat."""

    method: str
    tol: float | None
    times: list[float]
    iterations: int
    status: str
    objective64: float
    rel_subopt: float = float("nan")
    gap: float | None = None  # convexnn's certified gap (as reported, in the run's dtype)
    own_objective: float | None = None  # the library's own objective at its final weights
    solver_times: list[float] | None = None  # pyscnn: its own solver time (excludes setup)
    note: str = ""
    trajectory: Any = dataclasses.field(default=None, repr=False)  # pyscnn: (objective, cumulative time) per iteration

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time of fn() (fn must block until its result is ready) and its result."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def repeat_runs(
    fn: Callable[[], Any], repeats: int, slow_repeats: int, slow_s: float, once: Callable[[Any], bool] | None = None
) -> tuple[list[float], list]:
    """Run fn `repeats` times, or `slow_repeats` times when the first run took longer than slow_s, or
    only once when `once(first_result)` is true (a run cut off by a time limit: repeating it costs the
    same and says nothing new)."""
    t, out = timed(fn)
    times, outs = [t], [out]
    total = 1 if once is not None and once(out) else slow_repeats if t > slow_s else repeats
    for _ in range(total - 1):
        t, out = timed(fn)
        times.append(t)
        outs.append(out)
    return times, outs


def fmt_time(t: float) -> str:
    """Seconds with three significant digits, in ms below 0.1 s, whole seconds from 1000 s (not 1.4e+03 s)."""
    if t >= 999.5:
        return f"{t:.0f} s"
    return f"{t * 1e3:.3g} ms" if t < 0.1 else f"{t:.3g} s"


def fmt_range(times: list[float]) -> str:
    return f"{fmt_time(min(times))} – {fmt_time(max(times))}"


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------------
# convexnn
# --------------------------------------------------------------------------------------------------


def cn_solve(prob: Problem, lam: float, *, tol: float, max_iters: int, polish: bool, dtype=np.float32):
    """One blocking convexnn solve on the float32 (or float64) data; returns the Solution."""
    dev = prob.device
    X, y = (dev["X32"], dev["y32"]) if dtype == np.float32 else (dev["X64"], dev["y64"])
    sol = cn.solve_gated(X, y, dev["masks"], lam, tol=tol, max_iters=max_iters, polish=polish)
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
        "status": (cn.Status(int(s1.status)).name.lower(), cn.Status(int(s2.status)).name.lower()),
    }


def reference_optimum(prob: Problem, lam: float, tol: float, max_iters: int, objective64) -> dict:
    """p* from a float64 convexnn solve (compiled first, so its time is the solve's)."""
    cn_solve(prob, lam, tol=tol, max_iters=1, polish=True, dtype=np.float64)  # compile
    t, sol = timed(lambda: cn_solve(prob, lam, tol=tol, max_iters=max_iters, polish=True, dtype=np.float64))
    p = objective64(sol.weights)
    return {
        "p_star": p,
        "gap": float(sol.gap),
        "status": cn.Status(int(sol.status)).name.lower(),
        "iterations": int(sol.iterations),
        "time": t,
        "objective": float(sol.objective),
        "weights": np.asarray(sol.weights),
    }


def bench_convexnn_sweep(prob: Problem, objective64, args: argparse.Namespace, polish: bool = True) -> list[Run]:
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
        run = Run(
            method=method,
            tol=tol,
            times=times,
            iterations=int(sol.iterations),
            status=cn.Status(int(sol.status)).name.lower(),
            objective64=objective64(sol.weights),
            gap=float(sol.gap),
            own_objective=float(sol.objective),
        )
        runs.append(run)
        log(f"  {method} tol={tol:g}: {fmt_time(run.median)} ({run.iterations} it, {run.status}, gap {run.gap:.2g})")
    return runs


# --------------------------------------------------------------------------------------------------
# pyscnn
# --------------------------------------------------------------------------------------------------


class _DropMaxIterWarning(logging.Filter):
    """Hide pyscnn's per-run 'Max iterations reached' warning: the status is recorded in the table."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Max iterations reached" not in record.getMessage()


@dataclasses.dataclass
class Budget:
    """A wall-clock limit for one pyscnn run: `deadline` (perf_counter seconds) and whether it was hit."""

    deadline: float = math.inf
    hit: bool = False


@contextlib.contextmanager
def pyscnn_context(keep_float32: bool) -> Iterator[Budget]:
    """Quiet pyscnn's logger, give its R-FISTA stopping test a wall-clock limit and, if keep_float32,
    make its FISTA momentum scalar a Python float. Yields the `Budget` that scnn_solve arms per run.

    pyscnn computes t⁺ = 1 + np.sqrt(1 + 4t²)/2 (scnn/private/methods/core/proximal_gradient.py); the
    np.float64 it returns makes v = w⁺ + β(w⁺ − w) float64 under NumPy ≥ 2 (NEP 50). Swapping the
    module's `np` for a namespace whose sqrt returns a Python float changes nothing else in the method.
    The time limit wraps GradientNorm.__call__ (checked once per iteration): past the deadline it says
    "stop", and the run is reported as time_limit. Everything patched is restored on exit.
    """
    import scnn.private.methods.core.proximal_gradient as pg
    from scnn.private.methods.termination_criteria import GradientNorm

    budget = Budget()
    logger = logging.getLogger("scnn")
    filt = _DropMaxIterWarning()
    logger.addFilter(filt)
    saved_np, saved_call = pg.np, GradientNorm.__call__

    def call_with_deadline(self, *a, **k):
        if time.perf_counter() > budget.deadline:
            budget.hit = True
            return True
        return saved_call(self, *a, **k)

    GradientNorm.__call__ = call_with_deadline
    if keep_float32:
        pg.np = types.SimpleNamespace(sqrt=lambda x: float(math.sqrt(x)))
    try:
        yield budget
    finally:
        pg.np = saved_np
        GradientNorm.__call__ = saved_call
        logger.removeFilter(filt)


def scnn_solve(
    prob: Problem,
    lam: float,
    *,
    tol: float,
    max_iters: int,
    dtype: str = "float32",
    budget: Budget | None = None,
    time_limit: float = math.inf,
) -> dict:
    """One pyscnn R-FISTA solve on the problem as given (unitize_data=False), returning its convex weights.

    Call inside `pyscnn_context`, passing its budget to enforce `time_limit` seconds.

    Returns a dict with W (P, d) float64 (pyscnn's (c=1, P, d) weights squeezed), iterations, status
    (converged, max_iters or time_limit), pyscnn's own final objective, its solver time and its
    per-iteration objective/time trajectory.
    """
    from scnn.metrics import Metrics
    from scnn.models import ConvexGatedReLU
    from scnn.optimize import optimize_model
    from scnn.regularizers import NeuronGL1
    from scnn.solvers import RFISTA

    X, y = (prob.X32, prob.y32) if dtype == "float32" else (prob.X64, prob.y64)
    model = ConvexGatedReLU(prob.gates.copy(), c=1, bias=False)
    solver = RFISTA(model, max_iters=max_iters, tol=tol)
    if budget is not None:
        budget.deadline, budget.hit = time.perf_counter() + time_limit, False
    model, metrics = optimize_model(
        model,
        solver,
        Metrics(),
        X,
        y,
        regularizer=NeuronGL1(lam),
        return_convex=True,
        unitize_data=False,
        verbose=False,
        device="cpu",
        dtype=dtype,
    )
    G = np.asarray(model.G, np.float64)
    if G.shape != prob.gates.shape or not np.array_equal(G, prob.gates):
        raise RuntimeError("pyscnn kept different gates (or reordered them) than the benchmark's masks")
    W = np.asarray(model.parameters[0])
    if W.shape != (1, prob.P, prob.d):
        raise RuntimeError(f"unexpected pyscnn weight shape {W.shape}; expected (1, {prob.P}, {prob.d})")
    iterations = len(metrics.objective) - 2  # one entry before, one per iteration, one after
    status = "max_iters" if iterations >= max_iters else "converged"
    if budget is not None:
        if budget.hit:
            status = "time_limit"
        budget.deadline = math.inf
    return {
        "W": W[0].astype(np.float64),
        "weight_dtype": str(W.dtype),
        "iterations": iterations,
        "status": status,
        "own_objective": float(metrics.objective[-1]),
        "solver_time": float(metrics.time[-1]),
        "trajectory": (np.asarray(metrics.objective[1:-1], np.float64), np.asarray(metrics.time[1:-1])),
    }


def bench_pyscnn(
    prob: Problem, method: str, keep_float32: bool, p_star: float, objective64, args: argparse.Namespace
) -> list[Run]:
    """pyscnn at its default tol, then at tighter tols (args.scnn_tols) until one reaches the target.

    pyscnn's iterates do not depend on tol (it only decides when to stop), so once a tol reaches the
    target, runs out of iterations or out of time, tighter tols can only take longer: the sweep stops.
    """
    lam, default_tol, target = args.lam, args.scnn_default_tol, args.target
    runs = []
    with pyscnn_context(keep_float32) as budget:
        scnn_solve(prob, lam, tol=default_tol, max_iters=3)  # warm-up (imports, einsum paths)
        for i, tol in enumerate([default_tol, *[t for t in args.scnn_tols if t < default_tol]]):
            times, outs = repeat_runs(
                lambda: scnn_solve(
                    prob, lam, tol=tol, max_iters=args.scnn_max_iters, budget=budget, time_limit=args.scnn_time_limit
                ),
                args.repeats,
                args.slow_repeats,
                args.slow_s,
                once=lambda out: out["status"] == "time_limit",
            )
            out = outs[-1]
            run = Run(
                method=method,
                tol=tol,
                times=times,
                iterations=out["iterations"],
                status=out["status"],
                objective64=objective64(out["W"]),
                own_objective=out["own_objective"],
                solver_times=[o["solver_time"] for o in outs],
                note=("default tol; " if i == 0 else "") + f"iterates {out['weight_dtype']}",
            )
            run.rel_subopt = (run.objective64 - p_star) / abs(p_star)
            run.trajectory = out["trajectory"]
            runs.append(run)
            log(
                f"  {method} tol={tol:g}: {fmt_time(run.median)} ({run.iterations} it, {run.status}, "
                f"rel. subopt {run.rel_subopt:.2g})"
            )
            if (i > 0 and run.rel_subopt <= target) or run.status in ("max_iters", "time_limit"):
                break
    return runs


def pyscnn_oracle(runs: list[Run], p_star: float, target: float) -> tuple[float, int] | None:
    """From the longest pyscnn run's own per-iteration log: the (solver time, iteration) of the first
    iterate whose pyscnn-computed objective is within `target` of p*. An oracle stopping rule, for
    information: no tolerance of pyscnn stops there."""
    longest = max(runs, key=lambda r: r.iterations)
    obj, cum_time = longest.trajectory
    hit = np.nonzero((obj - p_star) / abs(p_star) <= target)[0]
    if hit.size == 0:
        return None
    return float(cum_time[hit[0]]), int(hit[0]) + 1


# --------------------------------------------------------------------------------------------------
# one size, end to end
# --------------------------------------------------------------------------------------------------


def time_to_target(runs: list[Run], target: float) -> Run | None:
    """The run with the smallest median time among those within `target` relative suboptimality."""
    ok = [r for r in runs if r.rel_subopt <= target]
    return min(ok, key=lambda r: r.median) if ok else None


def bench_size(n: int, d: int, P: int, args: argparse.Namespace) -> dict:
    """All measurements for one size; returns a dict the report writer consumes."""
    log(f"\n=== n={n}, d={d}, P={P} (lam={args.lam:g}) ===")
    t0 = time.perf_counter()
    prob = make_problem(n, d, P, args.seed)
    log(f"data ready: {prob.P} distinct non-zero patterns of {prob.P_sampled} gates; min |x·g| = {prob.min_margin:.2g}")
    objective64 = make_objective64(prob, args.lam)
    res: dict[str, Any] = {"size": (n, d, P), "problem": prob}

    # (a) per-iteration cost against the GEMM pair
    gemm = bench_gemm_pair(prob, inner=args.gemm_inner, repeats=max(args.repeats, 7))
    per = bench_per_iteration(prob, args.lam, args.k1, args.k2, max(args.repeats, 5))
    res["gemm"], res["per_iter"] = gemm, per
    t_it, t_loop = statistics.median(per["per_iter"]), statistics.median(gemm["loop"])
    log(
        f"per iteration: convexnn {fmt_time(t_it)}, GEMM pair {fmt_time(t_loop)} in a jitted loop "
        f"({fmt_time(statistics.median(gemm['call']))} per jitted call), ratio {t_it / t_loop:.2f} "
        f"(iterations run {per['iters']}, {per['status']})"
    )

    # reference optimum
    ref = reference_optimum(prob, args.lam, args.ref_tol, args.ref_max_iters, objective64)
    res["ref"] = ref
    p_star = ref["p_star"]
    log(
        f"reference (convexnn float64, tol {args.ref_tol:g}): p* = {p_star:.12g}, gap {ref['gap']:.2g}, "
        f"{ref['status']}, {ref['iterations']} it, {fmt_time(ref['time'])}"
    )
    if ref["status"] != "converged":
        log("WARNING: the reference solve did not converge; relative suboptimalities are against its objective")

    crosscheck = args.crosscheck == "on" or (args.crosscheck == "auto" and n <= args.crosscheck_max_n)
    if crosscheck:
        with pyscnn_context(keep_float32=False) as budget:
            t, out = timed(
                lambda: scnn_solve(
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
        res["crosscheck"] = {
            "objective64": obj,
            "own_objective": out["own_objective"],
            "rel_vs_p_star": (obj - p_star) / abs(p_star),
            "own_vs_ours": abs(out["own_objective"] - obj) / abs(obj),
            "iterations": out["iterations"],
            "status": out["status"],
            "time": t,
        }
        c = res["crosscheck"]
        log(
            f"cross-check (pyscnn float64, tol 1e-12): objective {obj:.12g} ({c['rel_vs_p_star']:+.2g} rel. to p*), "
            f"{out['iterations']} it, {fmt_time(t)}; pyscnn's own objective differs from ours by "
            f"{c['own_vs_ours']:.1e} rel."
        )

    # (b), (c): convexnn tol sweep
    cn_runs = bench_convexnn_sweep(prob, objective64, args)
    res["cn_nopolish_runs"] = bench_convexnn_sweep(prob, objective64, args, polish=False) if args.cn_no_polish else []
    for r in cn_runs + res["cn_nopolish_runs"]:
        r.rel_subopt = (r.objective64 - p_star) / abs(p_star)
    res["cn_runs"] = cn_runs

    # pyscnn, as installed and with float32 kept
    scnn_runs: dict[str, list[Run]] = {}
    for method, keep in (("pyscnn-f32", True), ("pyscnn", False)):
        if method not in args.scnn_modes:
            continue
        scnn_runs[method] = bench_pyscnn(prob, method, keep, p_star, objective64, args)
    res["scnn_runs"] = scnn_runs
    res["oracle"] = {m: pyscnn_oracle(r, p_star, args.target) for m, r in scnn_runs.items()}
    res["wall"] = time.perf_counter() - t0
    res["load"] = os.getloadavg()
    return res


# --------------------------------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------------------------------


def load_blas_libraries() -> None:
    """Load both OpenBLAS builds in play (NumPy's, used by pyscnn; SciPy's, used by jaxlib's LAPACK
    custom calls such as the Cholesky in convexnn's Newton polish), so threadpoolctl can see and limit them."""
    import scipy.linalg  # noqa: F401

    jax.block_until_ready(jnp.linalg.cholesky(jnp.eye(2, dtype=jnp.float32)))
    np.linalg.cholesky(np.eye(2))


def machine_description() -> dict[str, str]:
    """CPU model, cores, RAM, load, library versions and thread settings."""
    info: dict[str, str] = {}
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info["CPU"] = cpu
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info["cores"] = f"{os.cpu_count()} logical ({affinity} usable by this process)"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["RAM"] = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    info["OS / Python"] = f"{platform.platform()} / {platform.python_version()}"
    versions = []
    for pkg in ("jax", "jaxlib", "equinox", "numpy", "pyscnn", "torch", "opt_einsum"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{pkg} {importlib.metadata.version(pkg)}")
    info["versions"] = ", ".join(versions)
    info["JAX backend"] = f"{jax.default_backend()} ({', '.join(str(d) for d in jax.devices())})"
    blas = "unknown (threadpoolctl not installed)"
    with contextlib.suppress(ImportError):
        import threadpoolctl

        load_blas_libraries()
        pools = threadpoolctl.threadpool_info()
        blas = "; ".join(
            f"{p.get('internal_api')} {p.get('version')} from {Path(p.get('filepath', '?')).parent.name}: "
            f"{p.get('num_threads')} threads"
            for p in pools
            if p.get("user_api") == "blas"
        )
    info["BLAS/LAPACK (numpy.libs: pyscnn's einsums; scipy.libs: jaxlib's LAPACK, e.g. convexnn's Cholesky)"] = blas
    with contextlib.suppress(ImportError):
        import torch

        info["torch threads"] = f"{torch.get_num_threads()} (pyscnn's CPU path runs on NumPy; torch is imported only)"
    for var in ("XLA_FLAGS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(var):
            info[var] = os.environ[var]
    return info


def _sci(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}e}"


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if not a or not b else f"{a / b:.2f}×"


def summarize_size(res: dict, target: float) -> dict:
    """Headline numbers for one size: per-iteration ratio, times to target and their ratios."""
    cn_best = time_to_target(res["cn_runs"], target)
    out: dict[str, Any] = {
        "per_iter": statistics.median(res["per_iter"]["per_iter"]),
        "gemm": statistics.median(res["gemm"]["loop"]),
        "gemm_call": statistics.median(res["gemm"]["call"]),
        "cn_best": cn_best,
        "scnn": {},
    }
    for method, runs in res["scnn_runs"].items():
        best = time_to_target(runs, target)
        default = runs[0]
        longest = max(runs, key=lambda r: r.median)
        out["scnn"][method] = {"best": best, "default": default, "longest": longest}
    bests = [m["best"] for m in out["scnn"].values() if m["best"]]
    out["scnn_best"] = min(bests, key=lambda r: r.median) if bests else None
    return out


def size_markdown(res: dict, args: argparse.Namespace) -> list[str]:
    """The markdown section for one size."""
    n, d, P = res["size"]
    prob: Problem = res["problem"]
    s = summarize_size(res, args.target)
    ref = res["ref"]
    L = [f"## n = {n}, d = {d}, P = {P}", ""]
    L.append(
        f"Planted teacher (tests/helpers.py, seed {args.seed}; d includes the bias column). {P} gates drawn, "
        f"**{prob.P} distinct non-zero patterns kept** (pyscnn's de-duplication), used by both libraries; masks "
        f"identical under ≥ 0 and > 0 (min |x·g| = {prob.min_margin:.2g}). λ = {args.lam:g}."
    )
    L.append("")
    L.append(
        f"Reference p* = {ref['p_star']:.12g} (convexnn float64, tol {args.ref_tol:g}: {ref['status']}, certified gap "
        f"{ref['gap']:.2g}, {ref['iterations']} iterations, {fmt_time(ref['time'])})."
    )
    if "crosscheck" in res:
        c = res["crosscheck"]
        L.append(
            f"Cross-check: pyscnn float64 at tol 1e-12 reaches {c['objective64']:.12g} ({c['rel_vs_p_star']:+.2e} "
            f"relative to p*; {c['status']}, {c['iterations']} iterations, {fmt_time(c['time'])}); pyscnn's own "
            f"objective for its weights equals ours to {c['own_vs_ours']:.1e} relative."
        )
    L.append("")
    pi = res["per_iter"]
    L.append("### Cost per iteration (float32)")
    L.append("")
    L.append("| quantity | median | min – max |")
    L.append("|---|---|---|")
    L.append(
        f"| convexnn R-FISTA, per iteration ((t({args.k2}) − t({args.k1}))/Δit, polish off) | "
        f"{fmt_time(s['per_iter'])} | {fmt_range(pi['per_iter'])} |"
    )
    L.append(
        f"| GEMM pair X Wᵀ + Rᵀ X, chained in a jitted loop (the bound) | {fmt_time(s['gemm'])} | "
        f"{fmt_range(res['gemm']['loop'])} |"
    )
    L.append(
        f"| GEMM pair, one jitted call per pair (dispatch included) | {fmt_time(s['gemm_call'])} | "
        f"{fmt_range(res['gemm']['call'])} |"
    )
    L.append(f"| **ratio per iteration / GEMM pair (loop)** | **{s['per_iter'] / s['gemm']:.2f}** | |")
    L.append("")
    L.append(f"(iterations run by the two differenced solves: {pi['iters']}, status {pi['status']}.)")
    L.append("")
    L.append("### Runs (float32; objective and suboptimality evaluated in float64 from each run's weights)")
    L.append("")
    L.append(
        "| method | tol | time median | min – max | runs | iterations | status | reported gap | objective (f64) "
        "| rel. subopt | note |"
    )
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = [*res["cn_runs"], *res["cn_nopolish_runs"], *(r for runs in res["scnn_runs"].values() for r in runs)]
    for r in rows:
        extra = r.note
        if r.solver_times:
            extra = (extra + "; " if extra else "") + f"solver-only {fmt_time(statistics.median(r.solver_times))}"
        L.append(
            f"| {r.method} | {r.tol:g} | {fmt_time(r.median)} | {fmt_range(r.times)} | {len(r.times)} | "
            f"{r.iterations} | {r.status} | {_sci(r.gap)} | {r.objective64:.10g} | {_sci(r.rel_subopt)} | {extra} |"
        )
    L.append("")
    L.append(f"### Time to {args.target:g} relative suboptimality")
    L.append("")
    cn_best = s["cn_best"]
    cn_t = cn_best.median if cn_best else None
    if cn_best:
        L.append(f"- convexnn: **{fmt_time(cn_t)}** (tol {cn_best.tol:g}, {cn_best.iterations} iterations).")
    else:
        L.append(f"- convexnn: no run of the sweep reached {args.target:g}.")
    if res["cn_nopolish_runs"]:
        nb = time_to_target(res["cn_nopolish_runs"], args.target)
        found = f"{fmt_time(nb.median)} (tol {nb.tol:g}, {nb.iterations} iterations)." if nb else "never reached it."
        L.append(f"- convexnn with polish=False (for information): {found}")
    for method, m in s["scnn"].items():
        best, default = m["best"], m["default"]
        if best:
            L.append(
                f"- {method}: **{fmt_time(best.median)}** (tol {best.tol:g}, {best.iterations} iterations); "
                f"**{method} / convexnn = {_ratio(best.median, cn_t)}**."
            )
        else:
            lo, runs = m["longest"], res["scnn_runs"][method]
            L.append(
                f"- {method}: never within {args.target:g} (best {_sci(min(r.rel_subopt for r in runs))} after up to "
                f"{max(r.iterations for r in runs)} iterations, last status {runs[-1].status}); its longest run took "
                f"{fmt_time(lo.median)}, **≥ {_ratio(lo.median, cn_t)}** convexnn's time."
            )
        L.append(
            f"- {method} at its default tol ({default.tol:g}): {fmt_time(default.median)}, rel. subopt "
            f"{_sci(default.rel_subopt)}; **{method} default-tol time / convexnn time to {args.target:g} = "
            f"{_ratio(default.median, cn_t)}**."
        )
        oracle = res["oracle"].get(method)
        if oracle:
            L.append(
                f"  (Oracle, for information: by pyscnn's own per-iteration log its iterate is first within "
                f"{args.target:g} at iteration {oracle[1]}, after {fmt_time(oracle[0])} of solver time; "
                "no tol stops there.)"
            )
    if len(s["scnn"]) > 1:
        b = s["scnn_best"]
        if b:
            L.append(
                f"- **Fastest pyscnn variant to {args.target:g}: {b.method} at tol {b.tol:g}, {fmt_time(b.median)}: "
                f"{_ratio(b.median, cn_t)} convexnn's time.**"
            )
        else:
            L.append(f"- No pyscnn variant reached {args.target:g}.")
    L.append("")
    L.append(
        f"Wall time for this size, everything included: {fmt_time(res['wall'])}; load average at its end "
        f"(1/5/15 min): {' / '.join(f'{x:.2f}' for x in res['load'])}."
    )
    L.append("")
    return L


def write_report(results: list[dict], args: argparse.Namespace, machine: dict, load: tuple) -> str:
    """The whole markdown report."""
    L = ["# Gated ReLU: convexnn vs pyscnn (R-FISTA)", ""]
    L.append(f"Generated by `benchmarks/gated_vs_scnn.py {' '.join(sys.argv[1:])}` on {args.date}.")
    L.append("")
    L.append("| machine | |")
    L.append("|---|---|")
    for k, v in machine.items():
        L.append(f"| {k} | {v} |")
    L.append(f"| load average (1 min) before / after | {load[0]:.2f} / {load[1]:.2f} |")
    L.append("")
    L.append(
        f"Timed runs: float32, CPU, medians of {args.repeats} runs ({args.slow_repeats} when a run takes more than "
        f"{args.slow_s:g} s), one process; convexnn compiled before timing. Suboptimality relative to p*: "
        f"(obj64(W) − p*)/|p*|, obj64(W) = ½ mean((Σ_i D_i X w_i − y)²) + λ Σ_i ‖w_i‖₂ in float64 for every "
        "run's weights (pyscnn's (1, P, d) convex weights squeezed to (P, d); its gates, read back from "
        "`model.G`, are checked identical to the benchmark's)."
    )
    L.append("")
    L.append(
        "pyscnn is called as `optimize_model(ConvexGatedReLU(G), RFISTA(model, max_iters, tol), Metrics(), X, y, "
        "NeuronGL1(λ), return_convex=True, unitize_data=False, device='cpu', dtype='float32')`; its time is the "
        f"wall time of that call (solver-only time, from its metrics, in the note); a run still going after "
        f"{args.scnn_time_limit:g} s is stopped and reported as time_limit. **pyscnn** is the package as "
        "installed: under NumPy ≥ 2 its FISTA momentum scalar (an np.float64) promotes the iterates to float64 "
        "after the first step, so it computes in mixed precision. **pyscnn-f32** is the same method with that "
        "scalar made a Python float (as under NumPy 1.x): float32 throughout, same iterates up to rounding."
        " convexnn's tol is on its duality gap: gap ≤ tol·max(1, |objective|)."
    )
    L.append("")
    for res in results:
        L.extend(size_markdown(res, args))
    return "\n".join(L) + "\n"


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------


def parse_sizes(text: str) -> list[tuple[int, int, int]]:
    """'2000x50x200,20000x100x500' → [(2000, 50, 200), (20000, 100, 500)]."""
    sizes = []
    for part in text.split(","):
        n, d, P = (int(v) for v in part.lower().split("x"))
        sizes.append((n, d, P))
    return sizes


def parse_floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated NxDxP (D includes the bias column)")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: sizes {QUICK_SIZES}, 3 repeats (1 when slow), pyscnn runs cut at 30 s",
    )
    p.add_argument("--lam", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", type=float, default=1e-4, help="relative suboptimality for 'time to target'")
    p.add_argument("--repeats", type=int, default=5, help="runs per configuration")
    p.add_argument("--slow-repeats", type=int, default=3, help="runs per configuration when the first is slow")
    p.add_argument("--slow-s", type=float, default=10.0, help="seconds above which a configuration is 'slow'")
    p.add_argument("--k1", type=int, default=100, help="shorter run for the per-iteration difference")
    p.add_argument("--k2", type=int, default=300, help="longer run for the per-iteration difference")
    p.add_argument("--gemm-inner", type=int, default=20, help="calls per GEMM-pair timing sample")
    p.add_argument("--cn-tols", type=parse_floats, default="1e-2,1e-3,1e-4,1e-5,1e-6", help="convexnn tol sweep")
    p.add_argument("--cn-max-iters", type=int, default=10_000, help="convexnn max_iters in the sweep")
    p.add_argument("--ref-tol", type=float, default=1e-10, help="tol of the float64 reference solve")
    p.add_argument("--ref-max-iters", type=int, default=200_000, help="max_iters of the float64 reference solve")
    p.add_argument("--scnn-default-tol", type=float, default=1e-6, help="pyscnn RFISTA's default tol")
    p.add_argument("--scnn-tols", type=parse_floats, default="1e-8,1e-10,1e-12", help="tighter pyscnn tols, in order")
    p.add_argument("--scnn-max-iters", type=int, default=10_000, help="pyscnn max_iters (all its runs)")
    p.add_argument(
        "--scnn-time-limit",
        type=float,
        default=900.0,
        help="wall-clock seconds after which a pyscnn run is stopped (status time_limit; run once, sweep ends)",
    )
    p.add_argument(
        "--scnn-modes", default="pyscnn-f32,pyscnn", help="which pyscnn variants to run: pyscnn-f32 and/or pyscnn"
    )
    p.add_argument(
        "--crosscheck",
        choices=("auto", "on", "off"),
        default="auto",
        help="pyscnn float64 tol-1e-12 cross-check of p* (auto: when n <= --crosscheck-max-n)",
    )
    p.add_argument("--crosscheck-max-n", type=int, default=5000, help="largest n cross-checked under 'auto'")
    p.add_argument(
        "--blas-threads",
        type=int,
        default=None,
        help="limit both OpenBLAS pools (pyscnn's NumPy, jaxlib's LAPACK) to this many threads via threadpoolctl; "
        "default: leave them as they are. On an oversubscribed machine 1 avoids OpenBLAS's spin-wait collapse",
    )
    p.add_argument(
        "--cn-no-polish",
        action="store_true",
        help="also sweep convexnn with polish=False (reported as convexnn-nopolish; not in the headline)",
    )
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gated.md")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = QUICK_SIZES
        args.repeats, args.slow_repeats = min(args.repeats, 3), 1
        args.scnn_time_limit = min(args.scnn_time_limit, 30.0)
    args.sizes = parse_sizes(args.sizes)
    args.scnn_modes = [m.strip() for m in args.scnn_modes.split(",") if m.strip()]
    unknown = set(args.scnn_modes) - {"pyscnn", "pyscnn-f32"}
    if unknown:
        p.error(f"unknown --scnn-modes {sorted(unknown)}")
    if not args.k2 > args.k1 > 0:
        p.error("need k2 > k1 > 0")
    args.date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return args


def blas_limits(threads: int | None) -> contextlib.AbstractContextManager:
    """threadpoolctl's limit on every loaded BLAS pool, or a no-op when threads is None."""
    if threads is None:
        return contextlib.nullcontext()
    import threadpoolctl

    load_blas_libraries()
    return threadpoolctl.threadpool_limits(limits=threads, user_api="blas")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with blas_limits(args.blas_threads):
        machine = machine_description()
        if args.blas_threads is not None:
            machine["BLAS threads limited to"] = f"{args.blas_threads} (--blas-threads)"
        load0 = os.getloadavg()[0]
        log("machine: " + "; ".join(f"{k}: {v}" for k, v in machine.items()))
        if load0 > 0.25 * (os.cpu_count() or 1):
            log(f"WARNING: load average {load0:.2f} at start: the machine is not quiet; timings will be noisy")
        results = [bench_size(n, d, P, args) for (n, d, P) in args.sizes]
        report = write_report(results, args, machine, (load0, os.getloadavg()[0]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    log("\n" + report)
    log(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
