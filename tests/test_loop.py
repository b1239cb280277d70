"""The one loop driver (solvers/_loop.py): status, the last finite iterate, counters, phases and reports."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from convexnn.solution import RUNNING, Status
from convexnn.solvers._loop import iterate


class _Carry(NamedTuple):
    x: jax.Array
    iterations: jax.Array
    steps: jax.Array
    status: jax.Array


def _start(x=1.0):
    zero = jnp.zeros((), jnp.int32)
    return _Carry(jnp.asarray(x), zero, zero, jnp.asarray(RUNNING, jnp.int32))


def _halve(c: _Carry) -> _Carry:
    x = c.x / 2
    done = x < 1e-3
    status = jnp.where(done, Status.CONVERGED, RUNNING).astype(jnp.int32)
    return c._replace(x=x, iterations=c.iterations + 1, steps=c.steps + 1, status=status)


def test_converged_and_max_iters():
    out = iterate(_halve, _start(), jnp.asarray(100))
    assert int(out.status) == Status.CONVERGED and int(out.iterations) == 10 and float(out.x) == 2.0**-10
    out = iterate(_halve, _start(), jnp.asarray(4))
    assert int(out.status) == Status.MAX_ITERS and int(out.iterations) == 4


def test_a_non_finite_step_keeps_the_last_finite_carry_and_its_counters_advance():
    def explode(c: _Carry) -> _Carry:
        x = jnp.where(c.iterations >= 3, jnp.inf, c.x * 3)
        return c._replace(x=x, iterations=c.iterations + 2, steps=c.steps + 1)

    out = iterate(
        explode, _start(), jnp.asarray(100), finite=lambda c: jnp.isfinite(c.x), counters=("iterations", "steps")
    )
    assert int(out.status) == Status.NONFINITE and float(out.x) == 9.0  # the carry after the last finite step
    assert int(out.iterations) == 6 and int(out.steps) == 3  # the refused step is counted


def test_phases_run_between_until_the_loop_stops():
    """Steps until `pause` (here: `steps` marks the next pause), then `between` once, which sets the next."""
    calls = []

    def step(c: _Carry) -> _Carry:
        return _halve(c)._replace(steps=c.steps)

    def between(c: _Carry) -> _Carry:
        jax.debug.callback(lambda i: calls.append(int(i)), c.iterations)
        return c._replace(x=c.x * 1.5, steps=c.iterations + 4)

    out = iterate(step, _start(), jnp.asarray(100), pause=lambda c: c.iterations >= c.steps, between=between)
    assert int(out.status) == Status.CONVERGED
    jax.effects_barrier()
    assert calls[:3] == [0, 4, 8]  # a pause every 4 iterations, from the start


def test_reports_after_steps_and_once_at_the_end():
    seen = []

    def report(c, since=None, when=True, status=None):
        kind = "end" if since is None else "step"
        jax.debug.callback(lambda i, w: seen.append((kind, int(i), bool(w))), c.iterations, when)

    iterate(_halve, _start(), jnp.asarray(3), report=report)
    jax.effects_barrier()
    assert [s for s in seen if s[0] == "end"] == [("end", 3, True)]
    steps = [s for s in seen if s[0] == "step"]
    assert [s[1] for s in steps] == [1, 2, 3] and [s[2] for s in steps] == [True, True, False]


def test_vmapped_lanes_stop_on_their_own():
    starts = jnp.asarray([1.0, 1e-2, 1e6])
    out = jax.vmap(lambda x: iterate(_halve, _start(x), jnp.asarray(25)))(starts)
    np.testing.assert_array_equal(np.asarray(out.iterations), [10, 4, 25])
    np.testing.assert_array_equal(np.asarray(out.status), [Status.CONVERGED, Status.CONVERGED, Status.MAX_ITERS])
