"""Timing: wall times of blocking calls, repeats with medians, BLAS thread limits, time formats, logging."""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def log(*parts: Any, file=None) -> None:
    """print, flushed (progress lines of a long benchmark must show as they happen)."""
    print(*parts, file=file or sys.stdout, flush=True)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time of fn() and its result; fn must block until its result is ready (see `blocking`)."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def blocking(fn: Callable[[], Any]) -> Callable[[], Any]:
    """fn, made to wait for every JAX array of its result (`jax.block_until_ready`)."""
    return lambda: jax.block_until_ready(fn())


def repeat_timed(
    run: Callable[[], tuple[float, Any]],
    repeats: int,
    slow_repeats: int,
    slow_s: float,
    once: Callable[[Any], bool] | None = None,
) -> tuple[list[float], list]:
    """Call run() (which returns (seconds, result)) `repeats` times, or `slow_repeats` times when the first
    call took longer than slow_s, or only once when `once(first_result)` is true (a run cut off by a time
    limit: repeating it costs the same and says nothing new). Returns every time and every result."""
    t, out = run()
    times, outs = [t], [out]
    total = 1 if once is not None and once(out) else slow_repeats if t > slow_s else repeats
    for _ in range(total - 1):
        t, out = run()
        times.append(t)
        outs.append(out)
    return times, outs


def repeat_runs(
    fn: Callable[[], Any], repeats: int, slow_repeats: int, slow_s: float, once: Callable[[Any], bool] | None = None
) -> tuple[list[float], list]:
    """`repeat_timed` on the wall time of fn() (fn must block until its result is ready)."""
    return repeat_timed(lambda: timed(fn), repeats, slow_repeats, slow_s, once)


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[float, float, Any]:
    """(median, spread max − min) of the wall times of `repeats` calls of fn() after `warmup` untimed ones
    (compiles), each blocked until its JAX arrays are ready; and the last result."""
    call = blocking(fn)
    out = None
    for _ in range(warmup):
        out = call()
    times = []
    for _ in range(repeats):
        t, out = timed(call)
        times.append(t)
    return statistics.median(times), max(times) - min(times), out


def fmt_time(t: float) -> str:
    """Seconds with three significant digits, in ms below 0.1 s, whole seconds from 1000 s (not 1.4e+03 s)."""
    if t >= 999.5:
        return f"{t:.0f} s"
    return f"{t * 1e3:.3g} ms" if t < 0.1 else f"{t:.3g} s"


def fmt_range(times: list[float]) -> str:
    """'min – max' of the times."""
    return f"{fmt_time(min(times))} – {fmt_time(max(times))}"


def load_blas_libraries() -> None:
    """Load both OpenBLAS builds in play (NumPy's, used by pyscnn; SciPy's, used by jaxlib's LAPACK custom
    calls such as the Cholesky in convexnn's Newton polish), so threadpoolctl can see and limit them."""
    import scipy.linalg  # noqa: F401

    jax.block_until_ready(jnp.linalg.cholesky(jnp.eye(2, dtype=jnp.float32)))
    np.linalg.cholesky(np.eye(2))


def blas_limits(threads: int | None) -> contextlib.AbstractContextManager:
    """threadpoolctl's limit on every loaded BLAS pool, or a no-op when threads is None."""
    if threads is None:
        return contextlib.nullcontext()
    import threadpoolctl

    load_blas_libraries()
    return threadpoolctl.threadpool_limits(limits=threads, user_api="blas")
