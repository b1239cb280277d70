"""Run records: `Run`, the one record of a timed configuration, and its JSON-lines form (`--records FILE`).

A run is one method at one tolerance: its wall times over repeats and what its last repeat reached. For a
single solve `iterations`, `status`, `rel`, ... are scalars; for a regularisation path they hold one value per
λ (arrays / lists) and `point_times` holds the per-λ times of every repeat.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

import convexnn as cn

from .timing import log


def status_names(status: Any) -> list[str]:
    """convexnn's status codes (a scalar or an array of them) as lower-case names, e.g. ['converged']."""
    return [cn.Status(int(s)).name.lower() for s in np.asarray(status).reshape(-1)]


def status_name(status: Any) -> str:
    """One convexnn status code as a lower-case name."""
    (name,) = status_names(status)
    return name


@dataclasses.dataclass
class Run:
    """One configuration: timings over repeats and the result of the last repeat.

    Attributes:
        method: e.g. "convexnn", "warm", "pyscnn-f32", "cvxpy+clarabel".
        tol: the method's own tolerance (None: the solver's defaults).
        times: wall time per repeat (a path of independent solves: the sum of their times).
        iterations, status: as the method reports them (per λ on a path).
        rel: relative suboptimality (obj64 − p*) / |p*|, evaluated in float64 from the run's weights.
        objective64: the float64 objective of the run's weights.
        viol: relative cone violation (the exact ReLU program), NaN elsewhere.
        gap: convexnn's certified gap, as reported in the run's dtype; None for peers.
        own_objective: the library's own objective at its final weights.
        solver_times: pyscnn's own solver time (setup excluded), per repeat.
        point_times: per repeat, per λ: each independent solve's time, or pyscnn's solver time per λ.
        note: free text for the report.
        trajectory: pyscnn: (objective, cumulative solver time) per iteration of the last repeat.
    """

    method: str
    tol: float | None
    times: list[float]
    iterations: Any
    status: Any
    rel: Any = math.nan
    objective64: Any = math.nan
    viol: float = math.nan
    gap: Any = None
    own_objective: Any = None
    solver_times: list[float] | None = None
    point_times: list[list[float]] | None = None
    note: str = ""
    trajectory: Any = dataclasses.field(default=None, repr=False)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def ran(self) -> bool:
        """False for a placeholder row of a method that was not run (times [NaN])."""
        return not math.isnan(self.times[0])

    @property
    def worst(self) -> float:
        """The largest relative suboptimality (over the path's λ)."""
        return float(np.max(self.rel))

    @property
    def worst_at(self) -> int:
        return int(np.argmax(self.rel))

    @property
    def median_rel(self) -> float:
        return float(np.median(self.rel))

    def point_median(self, k: int) -> float:
        """Median over repeats of point k's own time (independent solves / pyscnn solver time)."""
        return statistics.median(pt[k] for pt in self.point_times)

    def reaches(self, target: float) -> bool:
        """|rel| ≤ target and (where measured) the violation too."""
        return abs(self.rel) <= target and not self.viol > target

    def record(self) -> dict[str, Any]:
        """The run as plain JSON values (arrays become lists; the trajectory is left out)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "trajectory"}
        return {k: _plain(v) for k, v in out.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    return value


def fastest(runs: Iterable[Run], ok: Callable[[Run], bool] = lambda r: True) -> Run | None:
    """The run with the smallest median time among those for which ok(run) holds; None if none does."""
    kept = [r for r in runs if r is not None and ok(r)]
    return min(kept, key=lambda r: r.median) if kept else None


def write_records(path: Path | None, runs: Iterable[Run], **context: Any) -> None:
    """Append one JSON line per run to `path` (nothing when path is None), each with `context` (e.g. the size)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for run in runs:
            f.write(json.dumps({**{k: _plain(v) for k, v in context.items()}, **run.record()}) + "\n")
    log(f"run records appended to {path}")
