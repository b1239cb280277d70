"""Train on data split across processes (one per host): each process loads only its own rows.

Every process runs this same script. `jax.distributed.initialize` connects them; `shard_rows(...,
process_local=True)` makes one global row-sharded array from every process's rows (padding each to the
same length), and `solve_gated` runs as one SPMD program over all devices of all hosts: per iteration
the hosts exchange one all-reduce of the (P, d) gradient and a few scalars, never rows.

Multi-host GPU cluster (one process per host, all GPUs of the host visible to it):

    # on every host, with the same coordinator (host 0's address and a free port) and its own id:
    python examples/multihost.py --coordinator 10.0.0.1:12345 --num-processes 4 --process-id $RANK \\
        --data /shared/rows-$RANK.npz            # this host's rows: arrays X (n_i, d), y (n_i,), masks (n_i, P)

    # under SLURM, Open MPI or on Cloud TPU, leave the three flags out: jax.distributed.initialize()
    # reads them from the environment (srun --ntasks-per-node=1 python examples/multihost.py --data ...).

What to set: the coordinator address must be reachable from every host (a TCP port on host 0); every
process must see the same d, P and number of outputs, and must pass the same lam/tol; each host needs
memory for its own rows only (see docs/scaling.md for the per-device budget). Masks must be computed
from the same gates on every host (draw them once, from a shared seed, and apply them to local rows).
With several GPUs per host, each process drives all of its local GPUs; rows are split over every GPU.

Two processes on one machine (CPU, two host devices each), as the tests run it:

    for i in 0 1; do
        JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
        python examples/multihost.py --coordinator 127.0.0.1:12345 --num-processes 2 --process-id $i \\
            --demo 203 --float64 --out /tmp/solution.npz &
    done; wait
"""

from __future__ import annotations

import argparse

import numpy as np

DEMO_D, DEMO_P = 6, 12


def demo_problem(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seeded planted-teacher data set (X, y, masks), identical in every process."""
    rng = np.random.default_rng(11)
    X = np.hstack([rng.standard_normal((n, DEMO_D - 1)), np.ones((n, 1))])
    y = np.maximum(X @ rng.standard_normal((DEMO_D, 3)), 0) @ rng.standard_normal(3) + 0.1 * rng.standard_normal(n)
    gates = rng.standard_normal((DEMO_D, DEMO_P))  # the same gates everywhere
    return X, y, X @ gates >= 0


def demo_rows(n: int, process_id: int, num_processes: int) -> slice:
    """This process's rows of the demo data: uneven contiguous blocks (the first is the shortest)."""
    edges = np.linspace(0, n, num_processes + 1).astype(int)
    edges[1] = max(1, edges[1] - n // (4 * num_processes))
    return slice(int(edges[process_id]), int(edges[process_id + 1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--coordinator", help="host:port of process 0 (default: from the cluster environment)")
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--process-id", type=int)
    data_source = parser.add_mutually_exclusive_group(required=True)
    data_source.add_argument("--data", help=".npz file with this process's X, y and masks")
    data_source.add_argument("--demo", type=int, metavar="N", help="a seeded demo data set of N rows, split")
    parser.add_argument("--lam-ratio", type=float, default=0.05, help="λ = ratio · λ_max")
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--float64", action="store_true")
    parser.add_argument("--out", help="process 0 writes the solution here (.npz)")
    args = parser.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", args.float64)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes (GPUs: NCCL)
    jax.distributed.initialize(
        coordinator_address=args.coordinator, num_processes=args.num_processes, process_id=args.process_id
    )

    import convexnn as cn

    me, count = jax.process_index(), jax.process_count()
    if args.demo:
        X, y, masks = (a[demo_rows(args.demo, me, count)] for a in demo_problem(args.demo))
    else:
        with np.load(args.data) as f:
            X, y, masks = f["X"], f["y"], f["masks"]
    dtype = np.float64 if args.float64 else np.float32
    mesh = jax.make_mesh((jax.device_count(),), ("data",))  # rows split over every device of every host
    data = cn.shard_rows(mesh, X.astype(dtype), y.astype(dtype), masks, process_local=True)
    lam = args.lam_ratio * float(cn.lam_max(data))
    sol = cn.solve_gated(data, lam=lam, tol=args.tol)
    if me == 0:
        print(f"{count} processes, {jax.device_count()} devices, {data.n} rows (this process: {len(X)})")
        print(sol)
        if args.out:
            np.savez(
                args.out,
                weights=np.asarray(sol.weights),
                objective=np.asarray(sol.objective),
                status=np.asarray(sol.status),
                lam=lam,
                devices=jax.device_count(),
                local_rows=len(X),
            )
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
