"""Memory of the convolutional gated solve at MNIST scale: masks (n, K, P) stored, or recomputed from the gates.

    python benchmarks/conv_memory.py [--n 5000] [--P 256] [--iters 200]

Each variant runs in its own process (peak resident memory is per process): patches of n random 28×28
images (5×5 windows, stride 1: K = 576, h = 26 with a bias), P gates, float32, cross-entropy over 10
classes, nuclear penalty, a fixed budget of R-FISTA iterations (polish off, so both do the same work).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


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
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--P", type=int, default=256)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--variant", choices=["masks", "gates"])
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run(args.variant, args.n, args.P, args.iters)))
        return
    rows = []
    for variant in ("masks", "gates"):
        cmd = [sys.executable, __file__, "--variant", variant, "--n", str(args.n), "--P", str(args.P)]
        out = subprocess.run(cmd + ["--iters", str(args.iters)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
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
