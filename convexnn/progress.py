"""Progress from inside the jitted solvers: a host callback every `every` iterations, and once at the end.

    report after a step  ⇔  ⌊iterations / every⌋ grew in it   (a lax.cond around one jax.debug.callback)

`solve_gated`, `solve_relu` and `solve_path` take `verbose` (False/0: off, the default; k: every k
iterations; True: every 100), which prints one line per report (`print_progress`), and `callback`, a
function of one `Progress` called at the same points instead of printing (every 100 iterations unless
`verbose` sets the cadence). Plain R-FISTA steps count one each and report at the exact multiples of the
cadence; a Newton polish, an augmented-Lagrangian subproblem or an ADMM step with its CG iterations count
more, and report at the first iterate past each multiple. A last call comes after the loop, with the final
status and the values of the returned `Solution` (the last iterate is not also reported from the loop).

The solvers stay pure: the options are static (a hashable `Monitor`; changing them recompiles), nothing
reported feeds back into the iterates, so results are bit for bit those of a silent solve, and with both
options off no callback is traced at all. The calls are asynchronous; the public solvers wait for them
before returning when called eagerly, and under a caller's `jax.jit` `jax.effects_barrier()` does.

Under `jax.vmap` (over λ, y, masks; a "vmap" path) every lane reports on its own: at each cadence point
at which some lane is due there is one host call, and the callback is called once per due lane, in lane
order, with that lane's scalars and its `Progress.index`. Lanes that have stopped report nothing more
(their loop body still runs, its result discarded); every lane's last call comes once all have stopped.
(JAX's own rules would turn the `lax.cond` into a select, so the callback would run at every iteration,
unrolled once per lane; a `custom_vmap` rule keeps one call per cadence point.) Under `shard_map` (data
from `shard_rows`) every device holds the same replicated values and only the mesh's first device reports,
so one line per cadence point; with several processes, process 0 prints.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_batching import custom_vmap

from .solution import RUNNING, Status

__all__ = [
    "Progress",
    "Callback",
    "Monitor",
    "DEFAULT_EVERY",
    "monitor",
    "print_progress",
    "report",
    "reporter",
    "flush",
]

DEFAULT_EVERY = 100  # the cadence of verbose=True, and of a callback given without verbose


class Progress(NamedTuple):
    """What a solver reports: Python scalars of one solve (one lane under vmap).

    Attributes:
        solver: "gated", "relu-al" or "relu-admm".
        iteration: iterations done so far (R-FISTA and Newton–CG steps, AL inner steps, ADMM and CG steps).
        objective: the objective at the current iterate.
        gap: its duality gap, objective − optimum ≤ gap (for exact ReLU once the violation is small).
        violation: the relative cone violation (exact ReLU); 0 for gated.
        step: the R-FISTA step size η (gated); the penalty ρ (AL: of the cone constraints; ADMM: of u = v).
        lam: λ.
        status: None while the loop runs; at the last call the `Status` the solver stopped with.
        index: the lane's index under vmap (one int per vmapped axis); () otherwise.
    """

    solver: str
    iteration: int
    objective: float
    gap: float
    violation: float
    step: float
    lam: float
    status: Status | None
    index: tuple[int, ...]


Callback = Callable[[Progress], Any]


class Monitor(NamedTuple):
    """The static progress settings a solver is traced with: report every `every` iterations to `callback`.

    `axes` names the mesh axes of an enclosing `shard_map` (set by the sharded entry points): only the
    device at index 0 along all of them reports.
    """

    every: int
    callback: Callback
    solver: str = ""
    axes: tuple[str, ...] = ()


def print_progress(p: Progress) -> None:
    """The default callback (verbose=k): one line per report on stdout."""
    lane = f"[{','.join(map(str, p.index))}] " if p.index else ""
    line = f"{p.solver:<9} {lane}it {p.iteration:>6}  objective {p.objective:.8e}  gap {p.gap:.2e}  "
    if p.solver == "gated":
        line += f"step {p.step:.2e}  λ {p.lam:.3g}"
    else:
        line += f"violation {p.violation:.1e}  rho {p.step:.2e}  λ {p.lam:.3g}"
    if p.status is not None:
        line += f"  {p.status.name.lower()}"
    print(line, flush=True)


def monitor(verbose: Any, callback: Any, solver: str) -> Monitor | None:
    """The public options as a static `Monitor`, or None when both are off (then nothing is traced).

    verbose: False/0 (off), True (every `DEFAULT_EVERY` iterations) or an int k ≥ 1 (every k); it prints
    with `print_progress` unless `callback` is given, which is then called instead at the same cadence.
    """
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be a function of one Progress, or None; got {type(callback).__name__}")
    if isinstance(verbose, (bool, np.bool_)):
        every = DEFAULT_EVERY if verbose else 0
    elif isinstance(verbose, (int, np.integer)) and verbose >= 0:
        every = int(verbose)
    else:
        raise ValueError(f"verbose must be a bool or an int >= 0 (a cadence in iterations); got {verbose!r}")
    if callback is None:
        return Monitor(every, print_progress, solver) if every else None
    return Monitor(every or DEFAULT_EVERY, callback, solver)


def on_mesh(m: Monitor | None, mesh: jax.sharding.Mesh) -> Monitor | None:
    """The monitor of a solve that runs under `shard_map` over every axis of `mesh`: one device reports."""
    return None if m is None else m._replace(axes=tuple(mesh.axis_names))


def _deliver(m: Monitor, due, values) -> None:
    """Host side: call m.callback for every lane that is due (one lane when not vmapped)."""
    due = np.asarray(due)
    values = {k: np.asarray(v) for k, v in values.items()}
    for index in np.ndindex(due.shape):
        if not due[index]:
            continue
        code = int(values["status"][index])
        m.callback(
            Progress(
                solver=m.solver,
                iteration=int(values["iteration"][index]),
                objective=float(values["objective"][index]),
                gap=float(values["gap"][index]),
                violation=float(values["violation"][index]),
                step=float(values["step"][index]),
                lam=float(values["lam"][index]),
                status=None if code == RUNNING else Status(code),
                index=tuple(int(i) for i in index),
            )
        )


def _emitter(m: Monitor) -> Callable[..., Any]:
    """emit(due, values): one host call if any entry of `due` is set, none otherwise.

    Under vmap the default rules would turn the `lax.cond` into a select (the callback then runs at every
    iteration) and unroll the callback per lane; this rule instead stacks the lanes, so the predicate stays
    `any(due)` and one host call carries every lane.
    """

    @custom_vmap
    def emit(due, values):
        host = functools.partial(_deliver, m)
        lax.cond(jnp.any(due), lambda: jax.debug.callback(host, due, values), lambda: None)
        return ()

    @emit.def_vmap
    def _batched(axis_size, in_batched, due, values):
        def front(x, batched):
            return x if batched else jnp.broadcast_to(x, (axis_size,) + jnp.shape(x))

        due_batched, values_batched = in_batched
        return emit(front(due, due_batched), jax.tree.map(front, values, values_batched)), ()

    return emit


def report(
    m: Monitor | None, values: dict[str, Any], *, since: Any = None, when: Any = True, status: Any = None
) -> None:
    """Inside a loop body: report the new iterate if ⌊iteration / every⌋ > ⌊since / every⌋ and `when` holds
    (the loop ran this step, and goes on: a last iterate is reported once, after the loop). After the loop
    (`since` None): report the final iterate with its `status`.

    `values` holds the arrays of `Progress`: iteration, objective, gap, step, lam and (optionally) violation.
    A no-op without a monitor, so that a silent solver traces no callback at all.
    """
    if m is None:
        return
    iteration = values["iteration"]
    if since is None:
        due = jnp.asarray(when)
        status = jnp.asarray(status, jnp.int32)
    else:
        due = jnp.asarray(when) & (iteration // m.every > since // m.every)
        status = jnp.asarray(RUNNING, jnp.int32)
    if m.axes:
        due = due & (lax.axis_index(m.axes) == 0)
    violation = values.get("violation")
    values = {
        **values,
        "violation": jnp.zeros_like(values["objective"]) if violation is None else violation,
        "status": status,
    }
    _emitter(m)(due, values)


def reporter(
    m: Monitor | None, lam: Any, units: Any, read: Callable[[Any], dict[str, Any]], step_out: str | None = None
) -> Callable[..., None] | None:
    """The `report(carry, **when)` of a solver's loop (`solvers._loop.iterate`), or None without a monitor.

    `read(carry)` gives the carry's iteration, objective, gap, step (and violation) in the solver's units;
    with `units` (`convexnn._units.Units`) objective, gap and λ are reported in the user's, and the step
    through the `Units` method named `step_out` (None: the step has no units).
    """
    if m is None:
        return None

    def report_carry(carry: Any, **when: Any) -> None:
        values = {**read(carry), "lam": lam}
        if units is not None:
            values["objective"] = units.objective_out(values["objective"])
            values["gap"] = units.objective_out(values["gap"])
            if step_out is not None:
                values["step"] = getattr(units, step_out)(values["step"])
            values["lam"] = units.lam_out(lam)
        report(m, values, **when)

    return report_carry


def flush(m: Monitor | None, result: Any) -> None:
    """After an eager solve with progress: wait for its callbacks, so every line is out before it returns."""
    if m is not None and not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(result)):
        jax.effects_barrier()
