"""Benchmark: row-sharded gated solves on 1, 2, 4 and 8 host devices, and peak memory at n = 10⁶.

Two measurements, in one process with 8 forced host devices (main() adds the XLA flag before JAX starts):

  time    (n, d, P) = (200000, 100, 256), float32, squared loss, planted-teacher data, Gaussian gates.
          For k = 1, 2, 4, 8 devices: `shard_rows` over k devices, then R-FISTA without polish run for
          M and 2M iterations (tol 0, so every run uses its whole budget); time per iteration =
          (t(2M) − t(M)) / M from medians of --repeats warmed-up runs (set-up and compile excluded).
          Beside it: the bare sharded GEMM pair (forward X Wᵀ + masked adjoint Xᵀ R with its psum) that
          bounds an iteration, the objective (checked equal across k), and the bytes all-reduced per
          iteration, read from the compiled HLO of the solve (`jax.jit(solve_gated).lower(...)`): the
          all-reduces in the body of its R-FISTA loop (the loop that all-reduces the (P, d, c) gradient),
          line-search trials left out (each adds one scalar): payload, and the 2(k−1)/k share a ring
          all-reduce sends per device. (results/sharding.md before 2026-12-06 counted the difference between
          the HLO of two and one unrolled R-FISTA steps instead: 3 arrays, one scalar fewer than the loop body.)
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

import argparse
import datetime
import os
import re
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
from common import machine
from common.problems import planted_rows
from common.records import status_name
from common.tables import machine_table, table
from common.timing import median_time
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as Spec

import convexnn as cn

HEAD = re.compile(r"^(?:ENTRY )?%(\S+) .*\{\s*$")
WHILE_BODY = re.compile(r" while\(.*\bbody=%([\w.\-]+)")
ALL_REDUCE = re.compile(r"= (\(.*?\)|\S+) all-reduce(?:-start)?\(")
ARRAY = re.compile(r"\b(pred|[a-z]+\d+)\[([\d,]*)\]")
BYTES = {"pred": 1, "s8": 1, "u8": 1, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "bf16": 2}


def mesh_of(k: int) -> jax.sharding.Mesh:
    return jax.make_mesh((k,), ("data",), devices=jax.devices()[:k])


def gemm_pair(data: cn.RowSharded):
    """The bare work bounding one iteration, per row shard under `shard_map`: ŷ = rowsum(masks ⊙ X Wᵀ) and
    Aᵀ(ŷ − y), with its psum over the rows' axis (padding rows have masks False: they add nothing)."""

    def local(X, Y, masks, W):
        z = cn.operators.gated_forward(X, masks, W)
        return jax.lax.psum(cn.operators.gated_adjoint(X, masks, z - Y), data.axis)

    rows = Spec(data.axis)
    mapped = jax.jit(jax.shard_map(local, mesh=data.mesh, in_specs=(rows, rows, rows, Spec()), out_specs=Spec()))
    return lambda W: mapped(data.X, data.y, data.masks, W)


def hlo_computations(hlo: str) -> dict[str, list[str]]:
    """The instructions of each computation of a compiled HLO module's text, by name."""
    comps: dict[str, list[str]] = {}
    current = None
    for line in hlo.splitlines():
        head = None if line.startswith(" ") else HEAD.match(line)
        if head:
            current = comps.setdefault(head.group(1), [])
        elif line.startswith("}"):
            current = None
        elif current is not None:
            current.append(line)
    return comps


def all_reduce_arrays(lines: list[str]) -> list[tuple[str, str]]:
    """(dtype, dims) of every array all-reduced by these instructions (a tuple all-reduce counts each)."""
    return [array for line in lines for shapes in ALL_REDUCE.findall(line) for array in ARRAY.findall(shapes)]


def bytes_per_iteration(data: cn.RowSharded, lam: float) -> tuple[int, int]:
    """(arrays, bytes) all-reduced by one R-FISTA iteration of the compiled sharded solve: the all-reduces in
    the body of the loop that all-reduces the (P, d, c) gradient (nested loops, the line search's trials, left
    out)."""
    solve = jax.jit(lambda data, lam: cn.solve_gated(data, lam=lam, tol=1e-30, max_iters=2, polish=False))
    comps = hlo_computations(solve.lower(data, lam).compile().as_text())
    gradient = ",".join(str(v) for v in data.shape)
    bodies = {body for lines in comps.values() for line in lines for body in WHILE_BODY.findall(line)}
    found = [
        arrays for b in bodies if (arrays := all_reduce_arrays(comps[b])) and any(d == gradient for _, d in arrays)
    ]
    if len(found) != 1:
        raise RuntimeError(f"expected one loop body all-reducing the ({gradient}) gradient; found {len(found)}")
    (arrays,) = found
    total = sum(BYTES[dtype] * int(np.prod([int(x) for x in dims.split(",") if x])) for dtype, dims in arrays)
    return len(arrays), total


def per_device_budget(n: int, d: int, P: int, c: int, k: int, itemsize: int) -> int:
    """Bytes per device by docs/scaling.md: X, y, masks and validity of n/k rows, two n/k×P·c float buffers
    (GEMM output, masked residual; CPU row blocking makes them small), a few n/k×c vectors, ~20 (P, d, c)."""
    rows = -(-n // k)
    return rows * (d * itemsize + P + 1 + 8 * c * itemsize) + 2 * rows * P * c * itemsize + 20 * P * d * c * itemsize


def time_row(data: cn.RowSharded, k: int, lam: float, args) -> tuple:
    """One device count's row: time per iteration, spread, GEMM pair, objective and all-reduced bytes."""
    P, d, _ = data.shape
    results = {
        m: median_time(
            lambda iters=m * args.iters: cn.solve_gated(data, lam=lam, tol=1e-30, max_iters=iters, polish=False),
            args.repeats,
        )
        for m in (1, 2)
    }
    per_iter = (results[2][0] - results[1][0]) / args.iters
    spread = (results[2][1] + results[1][1]) / args.iters
    W0 = np.random.default_rng(1).standard_normal((P, d, 1)) * 0.01
    W = jax.device_put(jnp.asarray(W0, data.X.dtype), NamedSharding(data.mesh, Spec()))
    pair = gemm_pair(data)
    t_gemm, _, _ = median_time(lambda: pair(W), args.repeats)
    n_ar, b_ar = bytes_per_iteration(data, lam)
    return per_iter, spread, t_gemm, float(results[2][2].objective), n_ar, b_ar


def run_time(args, out: list[str]) -> None:
    n, d, P = args.time_size
    dtype = np.dtype(args.dtype)
    X, y, masks = planted_rows(n, d, P, dtype)
    lam = ref_objective = None
    out.append(f"\n### time per iteration, (n, d, P) = ({n}, {d}, {P}), {dtype.name}, R-FISTA without polish\n")
    header = (
        "devices",
        "rows/device",
        "time/iter",
        "spread",
        "GEMM pair",
        "iter/GEMM",
        "objective",
        "rel. to 1 device",
        "all-reduces/iter",
        "bytes/iter (payload)",
        "bytes/iter/device (ring)",
    )
    out += table(header, [])
    print("\n".join(out[-3:]), flush=True)
    for k in args.devices:
        data = cn.shard_rows(mesh_of(k), X, y, masks)
        lam = args.lam_ratio * float(cn.lam_max(data)) if lam is None else lam
        per_iter, spread, t_gemm, objective, n_ar, b_ar = time_row(data, k, lam, args)
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
    X, y, masks = planted_rows(n, d, P, dtype, seed=1)
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
    header = ("iterations", "seconds (incl. compile)", "objective", "status", "peak RSS", "budget × devices", "target")
    row = (
        int(sol.iterations),
        f"{seconds:.1f}",
        f"{float(sol.objective):.7g}",
        status_name(sol.status),
        f"{peak / gib:.2f} GiB (at start: {before / gib:.2f})",
        f"{k * budget / gib:.2f} GiB",
        f"{args.memory_target:g} GiB",
    )
    out += table(header, [row])
    print("\n".join(out[-4:]), flush=True)
    if peak > args.memory_target * gib:
        raise SystemExit(f"peak resident memory {peak / gib:.2f} GiB exceeds the {args.memory_target} GiB target")


def parse_args(argv=None) -> argparse.Namespace:
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
    args.time_size = (4000, 20, 32) if args.quick else (200_000, 100, 256)
    args.memory_size = (20_000, 20, 32) if args.quick else (1_000_000, 100, 256)
    if args.quick:
        args.iters, args.repeats, args.memory_iters = 50, 5, 3  # many cheap iterations: timer noise averages out
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    machine.force_host_devices(8)
    if args.dtype == "float64":
        machine.enable_x64()
    machine.check_devices(max(args.devices))
    out = [
        f"## convexnn sharding benchmark — {datetime.date.today()}",
        "",
        *machine_table(machine.machine_description(blas=False), (os.getloadavg()[0],)),
        "",
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
