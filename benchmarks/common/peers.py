"""pyscnn (the reference package of Pilanci's lab) called on a `Problem`, as a user calls it, with time limits.

Every call uses the problem's gates (`ConvexGatedReLU(G)` / `ConvexReLU(G)`), `unitize_data=False` (pyscnn's
default rescales the columns, which changes the problem), `return_convex=True`, CPU and float32 (or float64
for cross-checks); the gates pyscnn keeps are checked identical to the problem's after every fit. Call the
solvers inside `pyscnn_context`, which quiets pyscnn's logger, arms a wall-clock limit on its stopping tests
and, optionally, keeps its FISTA momentum scalar float32. `installed("scnn")` tells whether pyscnn is there:
the scripts skip its rows when it is not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import math
import time
import types
from collections.abc import Iterator
from typing import Any

import numpy as np

from .problems import Problem


def installed(module: str) -> bool:
    """Whether `module` imports (pyscnn: "scnn", which needs torch; cvxpy: "cvxpy")."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


class DropMaxIterWarning(logging.Filter):
    """Hide pyscnn's per-run 'Max iterations reached' warning: the status is recorded in the table."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Max iterations reached" not in record.getMessage()


@dataclasses.dataclass
class Budget:
    """A wall-clock limit for one pyscnn run: `deadline` (perf_counter seconds) and whether it was hit."""

    deadline: float = math.inf
    hit: bool = False

    def arm(self, seconds: float) -> None:
        self.deadline, self.hit = time.perf_counter() + seconds, False

    def disarm(self) -> bool:
        """Lift the limit; returns whether it was hit."""
        self.deadline = math.inf
        return self.hit


@contextlib.contextmanager
def pyscnn_context(keep_float32: bool, stop_tests: tuple[str, ...] = ("GradientNorm",)) -> Iterator[Budget]:
    """Quiet pyscnn's logger, give its stopping tests `stop_tests` (classes of
    scnn.private.methods.termination_criteria: GradientNorm for R-FISTA, ConstrainedHeuristic for AL's outer
    loop) a wall-clock limit and, if keep_float32, make its FISTA momentum scalar a Python float. Yields the
    `Budget` the solvers arm per run.

    pyscnn computes t⁺ = 1 + np.sqrt(1 + 4t²)/2 (scnn/private/methods/core/proximal_gradient.py); the
    np.float64 it returns makes v = w⁺ + β(w⁺ − w) float64 under NumPy ≥ 2 (NEP 50). Swapping the module's
    `np` for a namespace whose sqrt returns a Python float changes nothing else in the method. A stopping
    test past the deadline says "stop", and the run is reported as time_limit. Everything patched is
    restored on exit.
    """
    import scnn.private.methods.core.proximal_gradient as pg
    import scnn.private.methods.termination_criteria as tc

    budget = Budget()
    logger = logging.getLogger("scnn")
    filt = DropMaxIterWarning()
    logger.addFilter(filt)
    saved_np = pg.np
    saved = {name: getattr(tc, name).__call__ for name in stop_tests}

    def with_deadline(call):
        def checked(self, *a, **k):
            if time.perf_counter() > budget.deadline:
                budget.hit = True
                return True
            return call(self, *a, **k)

        return checked

    for name, call in saved.items():
        getattr(tc, name).__call__ = with_deadline(call)
    if keep_float32:
        pg.np = types.SimpleNamespace(sqrt=lambda x: float(math.sqrt(x)))
    try:
        yield budget
    finally:
        pg.np = saved_np
        for name, call in saved.items():
            getattr(tc, name).__call__ = call
        logger.removeFilter(filt)


def fit_kwargs(dtype: str) -> dict[str, Any]:
    """The keyword arguments of every optimize_model / optimize_path call here."""
    return dict(return_convex=True, unitize_data=False, verbose=False, device="cpu", dtype=dtype)


def convex_weights(model: Any, prob: Problem, where: str = "") -> list[np.ndarray]:
    """The fitted model's convex weights, each (P, d) float64 (pyscnn's (c = 1, P, d) squeezed), after
    checking that it kept the problem's gates in the problem's order."""
    G = np.asarray(model.G, np.float64)
    if G.shape != prob.gates.shape or not np.array_equal(G, prob.gates):
        raise RuntimeError(f"pyscnn kept different gates{where} (or reordered them) than the benchmark's masks")
    weights = []
    for W in model.parameters:
        W = np.asarray(W)
        if W.shape != (1, prob.P, prob.d):
            raise RuntimeError(f"unexpected pyscnn weight shape {W.shape}; expected (1, {prob.P}, {prob.d})")
        weights.append(W[0].astype(np.float64))
    return weights


def scnn_solve(
    prob: Problem,
    lam: float,
    *,
    tol: float,
    max_iters: int,
    budget: Budget,
    time_limit: float = math.inf,
    dtype="float32",
) -> dict:
    """One pyscnn R-FISTA solve (gated ReLU, group penalty NeuronGL1(λ)) on the problem as given.

    Returns a dict with W (P, d) float64, iterations, status (converged, max_iters or time_limit), pyscnn's
    own final objective, its solver time and its per-iteration (objective, cumulative time) trajectory.
    """
    from scnn.metrics import Metrics
    from scnn.models import ConvexGatedReLU
    from scnn.optimize import optimize_model
    from scnn.regularizers import NeuronGL1
    from scnn.solvers import RFISTA

    X, y = (prob.X32, prob.y32) if dtype == "float32" else (prob.X64, prob.y64)
    model = ConvexGatedReLU(prob.gates.copy(), c=1, bias=False)
    solver = RFISTA(model, max_iters=max_iters, tol=tol)
    budget.arm(time_limit)
    model, metrics = optimize_model(model, solver, Metrics(), X, y, regularizer=NeuronGL1(lam), **fit_kwargs(dtype))
    hit = budget.disarm()
    (W,) = convex_weights(model, prob)
    iterations = len(metrics.objective) - 2  # one entry before, one per iteration, one after
    return {
        "W": W,
        "weight_dtype": str(np.asarray(model.parameters[0]).dtype),
        "iterations": iterations,
        "status": "time_limit" if hit else "max_iters" if iterations >= max_iters else "converged",
        "own_objective": float(metrics.objective[-1]),
        "solver_time": float(metrics.time[-1]),
        "trajectory": (np.asarray(metrics.objective[1:-1], np.float64), np.asarray(metrics.time[1:-1])),
    }


def scnn_al(prob: Problem, lam: float, *, tol: float, max_iters: int, budget: Budget, time_limit: float) -> dict:
    """One pyscnn AL solve of the exact ReLU program (tol and constraint_tol = tol, max_primal_iters =
    max_iters), float32. Returns U, V (P, d) float64, iterations and status (done or time_limit)."""
    from scnn.metrics import Metrics
    from scnn.models import ConvexReLU
    from scnn.optimize import optimize_model
    from scnn.regularizers import NeuronGL1
    from scnn.solvers import AL

    model = ConvexReLU(prob.gates.copy(), c=1, bias=False)
    solver = AL(model, max_primal_iters=max_iters, tol=tol, constraint_tol=tol)
    budget.arm(time_limit)
    X, y = prob.X32, prob.y32
    model, metrics = optimize_model(model, solver, Metrics(), X, y, regularizer=NeuronGL1(lam), **fit_kwargs("float32"))
    hit = budget.disarm()
    U, V = convex_weights(model, prob)
    return {"U": U, "V": V, "iterations": len(metrics.objective) - 2, "status": "time_limit" if hit else "done"}


@contextlib.contextmanager
def track_path_points(budget: Budget) -> Iterator[list[bool]]:
    """Record, at the start of each λ of optimize_path, whether the time limit had already passed.

    optimize_path builds one optimizer per regularizer (scnn.optimize.build_optimizer) just before
    solving it; wrapping that call tells which λ were cut by the deadline and which never ran.
    """
    import scnn.optimize as so

    starts: list[bool] = []
    saved = so.build_optimizer

    def tracking(*a, **k):
        starts.append(budget.hit)
        return saved(*a, **k)

    so.build_optimizer = tracking
    try:
        yield starts
    finally:
        so.build_optimizer = saved


def point_status(started_late: bool, hit_after: bool, iterations: int, max_iters: int) -> str:
    """A path point's status: not_run (deadline passed before it started), time_limit (passed during it),
    max_iters or converged."""
    if started_late:
        return "not_run"
    if hit_after:
        return "time_limit"
    return "max_iters" if iterations >= max_iters else "converged"


def scnn_path(
    prob: Problem, lams32: np.ndarray, *, tol: float, max_iters: int, budget: Budget, time_limit: float = math.inf
) -> dict:
    """One pyscnn optimize_path over the grid (in the order given: largest λ first), float32, as a user calls it.

    optimize_path(model, solver, path, metrics, X, y, ...) takes a list of regularizers, builds the
    patterns once from the first, and always warm-starts each λ from the previous solution (its
    `warm_start` argument is never read). It returns one deep-copied model and one Metrics per λ.

    Returns per-λ W (m, P, d) float64, iterations, status (`point_status`), pyscnn's own objective and
    solver time.
    """
    from scnn.metrics import Metrics
    from scnn.models import ConvexGatedReLU
    from scnn.optimize import optimize_path
    from scnn.regularizers import NeuronGL1
    from scnn.solvers import RFISTA

    model = ConvexGatedReLU(prob.gates.copy(), c=1, bias=False)
    solver = RFISTA(model, max_iters=max_iters, tol=tol)
    path = [NeuronGL1(float(lam)) for lam in lams32]
    budget.arm(time_limit)
    with track_path_points(budget) as starts:
        models, metrics = optimize_path(model, solver, path, Metrics(), prob.X32, prob.y32, **fit_kwargs("float32"))
    end_hit = budget.disarm()
    m = len(lams32)
    if len(models) != m or len(metrics) != m or len(starts) != m:
        raise RuntimeError(f"optimize_path returned {len(models)} models / {len(metrics)} metrics for {m} λ")
    iters = [len(met.objective) - 2 for met in metrics]
    hit_after = [*starts[1:], end_hit]
    return {
        "W": np.stack([convex_weights(mod, prob, f" at λ #{k}")[0] for k, mod in enumerate(models)]),
        "weight_dtype": str(np.asarray(models[-1].parameters[0]).dtype),
        "iterations": np.array(iters),
        "status": [point_status(s, h, it, max_iters) for s, h, it in zip(starts, hit_after, iters, strict=True)],
        "own_objective": np.array([float(met.objective[-1]) for met in metrics]),
        "solver_time": [float(met.time[-1]) for met in metrics],
    }
