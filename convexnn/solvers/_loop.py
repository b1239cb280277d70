"""The one loop driver: every solver is a step function that this runs until its status leaves RUNNING.

    while status = RUNNING and iterations < max_iters:      (optionally in phases: see `iterate`)
        new = step(carry)
        carry = new if finite(new) else carry, flagged NONFINITE   (the counters always advance)
    status: RUNNING → MAX_ITERS

A step sets CONVERGED or STALLED in the carry's `status`; the driver owns NONFINITE and MAX_ITERS, keeps the
last finite iterate, and reports progress after steps (`convexnn.progress`) and once at the end. Loop carries
are NamedTuples with `status` and `iterations` fields.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Bool, Int

from ..solution import RUNNING, Status

__all__ = ["iterate", "select", "running"]

Carry = Any
Report = Callable[..., None]


def select(pred: Bool[Array, ""], a: Any, b: Any) -> Any:
    """a where pred holds, else b, leaf by leaf."""
    return jax.tree.map(lambda x, y: jnp.where(pred, x, y), a, b)


def running(c: Carry, max_iters: Int[Array, ""]) -> Bool[Array, ""]:
    """The loop goes on: no status yet, and budget left."""
    return (c.status == RUNNING) & (c.iterations < max_iters)


def iterate(
    step: Callable[[Carry], Carry],
    carry: Carry,
    max_iters: Int[Array, ""],
    *,
    finite: Callable[[Carry], Bool[Array, ""]] | None = None,
    counters: tuple[str, ...] = ("iterations",),
    pause: Callable[[Carry], Bool[Array, ""]] | None = None,
    between: Callable[[Carry], Carry] | None = None,
    report: Report | None = None,
    finish: Callable[[Carry], Carry] | None = None,
) -> Carry:
    """Run `step` from `carry` until its status leaves RUNNING or `iterations` reaches `max_iters`.

    Args:
        step: carry ↦ next carry, with `status` CONVERGED/STALLED when it stops the loop (else RUNNING) and
            its counters advanced.
        finite: whether a new carry is finite; when it is not, the loop keeps the previous carry (with the new
            `counters`) and stops as NONFINITE. None: steps are never non-finite (they guard themselves).
        pause, between: run in phases: steps while `pause` is false, then `between` (a polish, say) once,
            and again while running. Under vmap each lane's phases stay its own.
        report: `report(carry, since=..., when=...)` after a step that leaves the loop running, and
            `report(carry, status=...)` once at the end (`convexnn.progress.report`'s protocol).
        finish: applied to the final carry (status set) before the last report.

    Returns:
        the final carry, status CONVERGED, STALLED, NONFINITE or MAX_ITERS.
    """

    def go(c):
        return running(c, max_iters)

    within = go if pause is None else (lambda c: go(c) & ~pause(c))

    def guarded(c):
        new = step(c)
        if finite is not None:
            ok = finite(new)
            kept = select(ok, new, c)
            status = jnp.where(ok, new.status, Status.NONFINITE).astype(jnp.int32)
            new = kept._replace(status=status, **{k: getattr(new, k) for k in counters})
        if report is not None:  # not a lane that had stopped (vmap), nor the last iterate (reported below)
            report(new, since=c.iterations, when=within(c) & go(new))
        return new

    if pause is None:
        out = lax.while_loop(go, guarded, carry)
    else:
        out = lax.while_loop(go, lambda c: between(lax.while_loop(within, guarded, c)), carry)
    out = out._replace(status=jnp.where(out.status == RUNNING, Status.MAX_ITERS, out.status).astype(jnp.int32))
    if finish is not None:
        out = finish(out)
    if report is not None:
        report(out, status=out.status)
    return out
