"""Benchmark: row-sharded gated solves on 1, 2, 4 and 8 host devices, and peak memory at n = 10⁶.

Two measurements, in one process with 8 forced host devices (XLA_FLAGS is set before JAX loads):

  time    (n, d, P) = (200000, 100, 256), float32, squared loss, planted-teacher data, Gaussian gates.
          For k = 1, 2, 4, 8 devices: `shard_rows` over k devices, then R-FISTA without polish run for
          M and 2M iterations (tol 0, so every run uses its whole budget); time per iteration =
          (t(2M) − t(M)) / M from medians of --repeats warmed-up runs (set-up and compile excluded).
          Beside it: the bare sharded GEMM pair (forward X Wᵀ + masked adjoint Xᵀ R with its psum) that
          bounds an iteration, the objective (checked equal across k), and the bytes all-reduced per
          iteration, read from the compiled HLO of one R-FISTA step (payload, and the 2(k−1)/k share a
          ring all-reduce sends per device).
  memory  (n, d, P) = (10⁶, 100, 256), float32, over 8 host devices: a few R-FISTA iterations, with the
          peak resident memory of the process (getrusage ru_maxrss: host copies and all 8 host "devices")
          against the per-device budget of docs/scaling.md and the 24 GiB target.

Run `python benchmarks/sharding.py` for both at full size (minutes, ~10 GiB of RAM for `memory`), or
`--quick` for small sizes that finish in seconds; `--out FILE` appends the markdown table to FILE
(e.g. benchmarks/results/sharding.md). Each host device is a thread pool on the same CPU, so on a host
with few cores the time per iteration cannot drop with k: this measures the partitioning's overhead
and correctness, not a speed-up (that needs one accelerator per shard; see docs/scaling.md).
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import convexnn as cn  # noqa: E402
from convexnn import operators  # noqa: E402
from convexnn._rows import row_total  # noqa: E402
from convexnn.sharding import replicate, run_sharded  # noqa: E402
from convexnn.solvers import fista, objectives  # noqa: E402

_ALL_REDUCE = re.compile(r"= (\(.*?\)|\S+) all-reduce(?:-start)?\(")
_ARRAY = re.compile(r"\b(pred|[a-z]+\d+)\[([\d,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "bf16": 2}


def problem(n: int, d: int, P: int, dtype, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Planted teacher y = relu(X W*) α* + noise, with a bias column, and masks from Gaussian gates (host arrays)."""
    rng = np.random.default_rng(seed)
    X = np.empty((n, d), dtype)
    X[:, :-1] = rng.standard_normal((n, d - 1), dtype=np.float32)
    X[:, -1] = 1
    W_t = rng.standard_normal((d, 4)).astype(dtype)
    y = (np.maximum(X @ W_t, 0) @ rng.standard_normal(4).astype(dtype)).astype(dtype)
    y += 0.1 * rng.standard_normal(n).astype(dtype)
    gates = rng.standard_normal((d, P)).astype(dtype)
    masks = np.empty((n, P), bool)
    for start in range(0, n, 1 << 16):  # in blocks: no n×P float temporary
        masks[start : start + (1 << 16)] = X[start : start + (1 << 16)] @ gates >= 0
    return X, y, masks


def mesh_of(k: int) -> jax.sharding.Mesh:
    return jax.make_mesh((k,), ("data",), devices=jax.devices()[:k])


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """(median, spread max − min) of wall times of warmed-up fn(), and its last result."""
    out = jax.block_until_ready(fn())  # warm-up: compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), max(times) - min(times), out


def gemm_pair(data: cn.RowSharded):
    """The bare work bounding one iteration: ŷ = rowsum(masks ⊙ X Wᵀ) and Aᵀ(ŷ − y) with its psum."""

    def local(X, Y, masks, rows, W):
        z = operators.gated_forward(X, masks, W)
        return row_total(operators.gated_adjoint(X, masks, z - Y), rows)

    return jax.jit(lambda data, W: run_sharded(local, data, W))


def step_hlo(data: cn.RowSharded, loss: cn.Squared, steps: int) -> str:
    """Compiled HLO of the solver's set-up plus `steps` R-FISTA steps on the sharded data."""
    P, d, c = data.shape
    N = data.normaliser(loss)

    def run(data, lam, W):
        def local(X, Y, masks, rows, lam, W):
            obj = objectives.GatedObjective(X=X, masks=masks, y=Y, loss=loss, N=N, rows=rows)
            s = fista.init_state(obj, lam, W, step0=jnp.ones((), W.dtype))
            for _ in range(steps):
                s = fista.fista_step(obj, lam, s, fista.FistaOptions())
            return s.W, s.G_v, s.objective, s.gap, s.step

        return run_sharded(local, data, lam, W)

    W0 = jnp.zeros((P, d, c), data.X.dtype)
    return jax.jit(run).lower(data, jnp.asarray(0.1, data.X.dtype), W0).compile().as_text()


def all_reduce_bytes(hlo: str) -> tuple[int, int]:
    """(number of arrays all-reduced, their total bytes) in a compiled HLO module."""
    count = total = 0
    for shapes in _ALL_REDUCE.findall(hlo):
        for dtype, dims in _ARRAY.findall(shapes):
            count += 1
            total += _BYTES[dtype] * int(np.prod([int(x) for x in dims.split(",") if x]))
    return count, total


def bytes_per_iteration(data: cn.RowSharded) -> tuple[int, int]:
    """All-reduced arrays and bytes one R-FISTA step adds (two steps' HLO minus one step's)."""
    one, two = (all_reduce_bytes(step_hlo(data, cn.Squared(), k)) for k in (1, 2))
    return two[0] - one[0], two[1] - one[1]


def per_device_budget(n: int, d: int, P: int, c: int, k: int, itemsize: int) -> int:
    """Bytes per device by docs/scaling.md: X, y, masks and validity of n/k rows, two n/k×P·c float buffers
    (GEMM output, masked residual; CPU row blocking makes them small), a few n/k×c vectors, ~20 (P, d, c)."""
    rows = -(-n // k)
    return rows * (d * itemsize + P + 1 + 8 * c * itemsize) + 2 * rows * P * c * itemsize + 20 * P * d * c * itemsize


def run_time(args, out: list[str]) -> None:
    n, d, P = args.time_size
    dtype = np.dtype(args.dtype)
    X, y, masks = problem(n, d, P, dtype)
    lam = None
    ref_objective = None
    out.append(f"\n### time per iteration, (n, d, P) = ({n}, {d}, {P}), {dtype.name}, R-FISTA without polish\n")
    out.append(
        "| devices | rows/device | time/iter | spread | GEMM pair | iter/GEMM | objective | rel. to 1 device "
        "| all-reduces/iter | bytes/iter (payload) | bytes/iter/device (ring) |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(out[-3:]), flush=True)
    for k in args.devices:
        data = cn.shard_rows(mesh_of(k), X, y, masks)
        if lam is None:
            lam = args.lam_ratio * float(cn.lam_max(data))
        budget = {m: m * args.iters for m in (1, 2)}
        results = {}
        for m, iters in budget.items():
            results[m] = timed(
                lambda iters=iters: cn.solve_gated(data, lam=lam, tol=1e-30, max_iters=iters, polish=False),
                args.repeats,
            )
        sol = results[2][2]
        per_iter = (results[2][0] - results[1][0]) / args.iters
        spread = (results[2][1] + results[1][1]) / args.iters
        W = replicate(data, jnp.asarray(np.random.default_rng(1).standard_normal((P, d, 1)) * 0.01, dtype))
        f = gemm_pair(data)
        t_gemm, _, _ = timed(lambda f=f, W=W: f(data, W), args.repeats)
        n_ar, b_ar = bytes_per_iteration(data)
        objective = float(sol.objective)
        ref_objective = objective if ref_objective is None else ref_objective
        rel = abs(objective - ref_objective) / abs(ref_objective)
        out.append(
            f"| {k} | {data.X.shape[0] // k} | {per_iter * 1e3:.2f} ms | {spread * 1e3:.2f} ms | {t_gemm * 1e3:.2f} ms "
            f"| {per_iter / t_gemm:.2f} | {objective:.7g} | {rel:.1e} | {n_ar} | {b_ar} | {2 * (k - 1) * b_ar // k} |"
        )
        print(out[-1], flush=True)


def run_memory(args, out: list[str]) -> None:
    n, d, P = args.memory_size
    k = max(args.devices)
    dtype = np.dtype(args.dtype)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    X, y, masks = problem(n, d, P, dtype, seed=1)
    data = cn.shard_rows(mesh_of(k), X, y, masks)
    del X, y, masks  # the host copies go; the device shards stay
    lam = args.lam_ratio * float(cn.lam_max(data))
    t0 = time.perf_counter()
    sol = jax.block_until_ready(cn.solve_gated(data, lam=lam, tol=1e-30, max_iters=args.memory_iters, polish=False))
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    budget = per_device_budget(n, d, P, 1, k, dtype.itemsize)
    gib = 1 << 30
    out.append(f"\n### memory, (n, d, P) = ({n}, {d}, {P}), {dtype.name}, {k} host devices\n")
    out.append("| iterations | seconds (incl. compile) | objective | status | peak RSS | budget × devices | target |")
    out.append("|---|---|---|---|---|---|---|")
    print("\n".join(out[-3:]), flush=True)
    status = cn.Status(int(sol.status)).name.lower()
    out.append(
        f"| {int(sol.iterations)} | {seconds:.1f} | {float(sol.objective):.7g} | {status} | {peak / gib:.2f} GiB "
        f"(at start: {before / gib:.2f}) | {k * budget / gib:.2f} GiB | {args.memory_target:g} GiB |"
    )
    print(out[-1], flush=True)
    if peak > args.memory_target * gib:
        raise SystemExit(f"peak resident memory {peak / gib:.2f} GiB exceeds the {args.memory_target} GiB target")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run of both measurements")
    parser.add_argument("--only", choices=["time", "memory"], help="run one measurement")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--iters", type=int, default=20, help="M: timed runs use M and 2M iterations")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lam-ratio", type=float, default=0.05, help="λ = ratio · λ_max")
    parser.add_argument("--memory-iters", type=int, default=10)
    parser.add_argument("--memory-target", type=float, default=24.0, help="GiB")
    parser.add_argument("--out", help="append the markdown tables to this file")
    args = parser.parse_args(argv)
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    args.time_size = (4000, 20, 32) if args.quick else (200_000, 100, 256)
    args.memory_size = (20_000, 20, 32) if args.quick else (1_000_000, 100, 256)
    if args.quick:
        args.iters, args.repeats, args.memory_iters = 50, 5, 3  # many cheap iterations: timer noise averages out
    out = [
        f"## convexnn sharding benchmark — {datetime.date.today()}",
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; jax {jax.__version__}; "
        f"{jax.device_count()} host devices; {'quick' if args.quick else 'full'} sizes",
    ]
    print("\n".join(out), flush=True)
    if args.only in (None, "memory"):  # first: its peak resident memory is then its own
        run_memory(args, out)
    if args.only in (None, "time"):
        run_time(args, out)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
