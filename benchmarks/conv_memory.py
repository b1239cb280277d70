"""Memory of the gated solve: masks stored, or recomputed from the gates (`solve_gated(..., gates=G)`).

    python benchmarks/conv_memory.py [--n 5000] [--P 256] [--iters 200]                  # patches (MNIST scale)
    python benchmarks/conv_memory.py --data rows [--n 200000] [--d 100] [--P 2048] [--iters 50]

Each variant runs in its own process (peak resident memory is per process), a fixed budget of R-FISTA iterations
(polish and working sets off, so both do the same work). Patches: n random 28×28 images (5×5 windows, stride 1:
K = 576, h = 26 with a bias), float32, cross-entropy over 10 classes, nuclear penalty. Rows: X (n, d) Gaussian,
float32, the squared loss on a planted target; the masks are n×P bool, the gates' maps recompute them in row
blocks at every product with X.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def run_rows(variant: str, n: int, d: int, P: int, iters: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import convexnn as cn

    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.standard_normal((n, d), dtype=np.float32))
    y = jnp.maximum(X @ jnp.asarray(rng.standard_normal(d, dtype=np.float32)), 0)
    gates = cn.sample_gates(jax.random.key(0), d, P)
    X.block_until_ready()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    options = cn.GatedOptions(working_set=None)
    common = dict(max_iters=iters, polish=False, options=options)
    if variant == "masks":
        sol = cn.solve_gated(X, y, cn.activation_masks(X, gates), 1e-3, **common)
    else:
        sol = cn.solve_gated(X, y, lam=1e-3, gates=gates, **common)
    objective = float(sol.objective)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return dict(
        variant=variant, n=n, d=d, P=P, iterations=int(sol.iterations), objective=objective, seconds=seconds,
        peak_MiB=peak / 1024, above_data_MiB=(peak - base) / 1024, masks_MiB=n * P / 2**20, X_MiB=n * d * 4 / 2**20,
    )  # fmt: skip


def run(variant: str, n: int, P: int, iters: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import convexnn as cn

    rng = np.random.default_rng(0)
    images = rng.random((n, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, n)
    patches = cn.image_patches(jnp.asarray(images), 5)
    K = patches.shape[1]
    X = jnp.concatenate([patches, jnp.ones((n, K, 1), jnp.float32)], axis=2) / K
    gates = cn.sample_gates(jax.random.key(0), X.shape[-1], P)
    X.block_until_ready()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if variant == "masks":
        masks = cn.activation_masks(X, gates)
        sol = cn.solve_gated(
            X, labels, masks, 1e-3, loss="cross_entropy", penalty="nuclear", max_iters=iters, polish=False
        )
    else:
        sol = cn.solve_gated(
            X, labels, lam=1e-3, gates=gates, loss="cross_entropy", penalty="nuclear", max_iters=iters, polish=False
        )
    objective = float(sol.objective)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    h = X.shape[-1]
    return dict(
        variant=variant, n=n, K=K, h=h, P=P, iterations=int(sol.iterations), objective=objective, seconds=seconds,
        peak_MiB=peak / 1024, above_data_MiB=(peak - base) / 1024, masks_MiB=n * K * P / 2**20,
        pooled_MiB=n * P * h * 4 / 2**20, patches_MiB=n * K * h * 4 / 2**20,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", choices=["patches", "rows"], default="patches")
    parser.add_argument("--n", type=int, default=None, help="rows (patches: 5000 images; rows: 200 000)")
    parser.add_argument("--d", type=int, default=100, help="columns of X (rows only)")
    parser.add_argument("--P", type=int, default=None, help="gates (patches: 256; rows: 2048)")
    parser.add_argument("--iters", type=int, default=None, help="R-FISTA iterations (patches: 200; rows: 50)")
    parser.add_argument("--variant", choices=["masks", "gates"])
    args = parser.parse_args()
    rows_data = args.data == "rows"
    n = args.n or (200_000 if rows_data else 5000)
    P = args.P or (2048 if rows_data else 256)
    iters = args.iters or (50 if rows_data else 200)
    if args.variant:
        out = run_rows(args.variant, n, args.d, P, iters) if rows_data else run(args.variant, n, P, iters)
        print(json.dumps(out))
        return
    rows = []
    for variant in ("masks", "gates"):
        cmd = [sys.executable, __file__, "--data", args.data, "--variant", variant, "--n", str(n), "--P", str(P)]
        cmd += ["--d", str(args.d), "--iters", str(iters)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    if rows_data:
        r = rows[0]
        print(f"n = {n}, d = {args.d}, P = {P}, float32; X {r['X_MiB']:.0f} MiB, masks {r['masks_MiB']:.0f} MiB (bool)")
        print("| variant | iterations | objective | time (s) | peak RSS (MiB) | above X (MiB) |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['variant']} | {r['iterations']} | {r['objective']:.6f} | {r['seconds']:.1f} | "
                  f"{r['peak_MiB']:.0f} | {r['above_data_MiB']:.0f} |")  # fmt: skip
        return
    r = rows[0]
    print(f"n = {r['n']}, K = {r['K']}, h = {r['h']}, P = {r['P']}, float32; patches {r['patches_MiB']:.0f} MiB, "
          f"masks {r['masks_MiB']:.0f} MiB (bool), pooled Z {r['pooled_MiB']:.0f} MiB")  # fmt: skip
    print("| variant | iterations | objective | time (s) | peak RSS (MiB) | above the patches (MiB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['iterations']} | {r['objective']:.6f} | {r['seconds']:.1f} | "
              f"{r['peak_MiB']:.0f} | {r['above_data_MiB']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
