"""Settings the scripts switch on from main(), and the machine description every report starts with."""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import jax

from .timing import load_blas_libraries, log

# Every package whose version a report may name; those not installed are left out.
PACKAGES = (
    "convexnn",
    "jax",
    "jaxlib",
    "equinox",
    "numpy",
    "scipy",
    "scikit-learn",
    "pyscnn",
    "torch",
    "opt_einsum",
    "cvxpy",
    "clarabel",
    "adelie",
    "skglm",
)
BLAS_KEY = "BLAS/LAPACK (numpy.libs: pyscnn's einsums; scipy.libs: jaxlib's LAPACK, e.g. convexnn's Cholesky)"


def enable_x64() -> None:
    """Switch on float64 in JAX: the reference solves and every objective evaluation are float64."""
    jax.config.update("jax_enable_x64", True)


def force_host_devices(count: int) -> None:
    """Make the CPU backend show `count` devices (each a thread pool on the same CPU), on the CPU platform.

    Adds --xla_force_host_platform_device_count to XLA_FLAGS unless it is there; takes effect only if no
    JAX computation has run yet in this process, which `check_devices` verifies.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()
    if not os.environ.get("JAX_PLATFORMS"):
        jax.config.update("jax_platforms", "cpu")


def check_devices(count: int) -> None:
    """Raise SystemExit unless JAX sees at least `count` devices."""
    if jax.device_count() < count:
        raise SystemExit(
            f"{count} devices needed, JAX sees {jax.device_count()}: set XLA_FLAGS="
            f"--xla_force_host_platform_device_count={count} before anything runs a JAX computation"
        )


def now() -> str:
    """The local date and time, e.g. '2026-12-01 14:03 UTC'."""
    return datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def _blas_pools() -> str:
    try:
        import threadpoolctl
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    load_blas_libraries()
    return "; ".join(
        f"{p.get('internal_api')} {p.get('version')} from {Path(p.get('filepath', '?')).parent.name}: "
        f"{p.get('num_threads')} threads"
        for p in threadpoolctl.threadpool_info()
        if p.get("user_api") == "blas"
    )


def versions(packages: tuple[str, ...] = PACKAGES) -> str:
    """'jax 0.4.1, numpy 2.0.0, ...' for the installed ones among `packages`."""
    found = []
    for pkg in packages:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found.append(f"{pkg} {importlib.metadata.version(pkg)}")
    return ", ".join(found)


def machine_description(packages: tuple[str, ...] = PACKAGES, blas: bool = True) -> dict[str, str]:
    """CPU model, cores (and this process's affinity), RAM, OS, library versions, JAX devices, BLAS pools
    (when `blas`: this loads both OpenBLAS builds) and thread settings, as {row name: value}."""
    info = {"CPU": _cpu_model()}
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    info["cores"] = f"{os.cpu_count()} logical ({len(usable) or os.cpu_count()} usable by this process: {usable})"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["RAM"] = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    info["OS / Python"] = f"{platform.platform()} / {platform.python_version()}"
    info["versions"] = versions(packages)
    devices = jax.devices()
    shown = ", ".join(str(d) for d in devices[:4]) + (f", … ({len(devices)} in all)" if len(devices) > 4 else "")
    info["JAX backend"] = f"{jax.default_backend()} ({shown})"
    if blas:
        info[BLAS_KEY] = _blas_pools()
    with contextlib.suppress(ImportError):
        import torch

        info["torch threads"] = f"{torch.get_num_threads()} (pyscnn's CPU path runs on NumPy; torch is imported only)"
    for var in ("XLA_FLAGS", "JAX_PLATFORMS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(var):
            info[var] = os.environ[var]
    return info


def start(blas_threads: int | None = None, packages: tuple[str, ...] = PACKAGES) -> tuple[dict[str, str], float]:
    """The machine description, logged, and the 1-minute load average at the start, with a warning when the
    machine is busy. Call inside `timing.blas_limits(blas_threads)` so the BLAS row shows the limit."""
    machine = machine_description(packages)
    if blas_threads is not None:
        machine["BLAS threads limited to"] = f"{blas_threads} (--blas-threads)"
    load0 = os.getloadavg()[0]
    log("machine: " + "; ".join(f"{k}: {v}" for k, v in machine.items()))
    if load0 > 0.25 * (os.cpu_count() or 1):
        log(f"WARNING: load average {load0:.2f} at start: the machine is not quiet; timings will be noisy")
    return machine, load0


def revision() -> str:
    """The repository's commit and whether convexnn/ differs from it (the code the numbers measure)."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "convexnn"], cwd=root, capture_output=True, text=True)
    except OSError:
        return "unknown (no git)"
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    return f"commit {head.stdout.strip()}, convexnn/ " + ("modified" if dirty.stdout.strip() else "as committed")
