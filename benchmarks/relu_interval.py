"""The vector-output exact ReLU network: how tight is the certified interval on its optimum?

With c outputs sharing the hidden layer, the exact ReLU network's convex program is copositive; convexnn
solves its relaxation (`solve_relu(..., penalty="nuclear")`: every column of U_i, V_i in pattern i's cone)
and reads a true ReLU network off the solution (`relu_interval`). The optimum over networks with these
activation patterns then lies in

    [lower, upper] = [relaxation objective − gap, the network's objective]

and this script reports the interval's relative width (upper − lower) / upper on the vector-output problems
of the tests and benchmarks (float64, tol 1e-6, λ a fraction of the gated nuclear λ_max), with the solve's
status, violation, time and the network's neurons. A solve that stops short (MAX_ITERS) returns its best
point within the constraint tolerance, which may be the zero start: its interval is then that wide.
mnist1d rows are used when the package is installed.

    taskset -c 0 python benchmarks/relu_interval.py --out benchmarks/results/relu_interval.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from common import machine
from common.problems import teacher_data
from common.records import status_name
from common.tables import emit, report_head

import convexnn as cn

PACKAGES = ("convexnn", "jax", "jaxlib", "numpy", "scikit-learn")


def standardized_with_bias(X: np.ndarray) -> np.ndarray:
    X = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1)
    return np.hstack([X, np.ones((X.shape[0], 1))])


def problems(quick: bool) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    """name → (X with a bias column, targets as the solvers take them, loss)."""
    from sklearn.datasets import load_digits, load_linnerud

    out = {}
    X, Y = load_linnerud(return_X_y=True)
    out["linnerud (20×4, 3 outputs, squared)"] = (standardized_with_bias(X), (Y - Y.mean(0)) / Y.std(0), "squared")
    X, y = teacher_data(200, 8, outputs=3)
    out["planted teacher (200×8, 3 outputs, squared)"] = (X, y, "squared")
    X, y = load_digits(return_X_y=True)
    n = 300 if quick else 1000
    out[f"digits ({n}×65, 10 classes, cross-entropy)"] = (standardized_with_bias(X[:n]), y[:n], "cross_entropy")
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        return out
    data = make_dataset(get_dataset_args())
    n = 300 if quick else 1000
    out[f"mnist1d ({n}×41, 10 classes, cross-entropy)"] = (
        standardized_with_bias(data["x"][:n]),
        data["y"][:n],
        "cross_entropy",
    )
    return out


def measure(X, y, loss: str, P: int, fraction: float, max_iters: int) -> dict[str, str]:
    Xj = jnp.asarray(X)
    gates = cn.sample_gates(jax.random.key(0), X.shape[1], P, dtype=jnp.float64)
    masks = cn.activation_masks(Xj, gates)
    lam = fraction * float(cn.lam_max(Xj, y, masks, loss, penalty="nuclear"))
    start = time.perf_counter()
    sol = cn.solve_relu(Xj, y, masks, lam, loss=loss, penalty="nuclear", tol=1e-6, max_iters=max_iters)
    jax.block_until_ready(sol.objective)
    seconds = time.perf_counter() - start
    interval = cn.relu_interval(sol, Xj, y, loss)
    lower, upper = float(interval.lower), float(interval.upper)
    group = cn.solve_relu(Xj, y, masks, lam, loss=loss, tol=1e-6)
    return {
        "P": str(P),
        "λ / λ_max": f"{fraction:g}",
        "status": status_name(sol.status),
        "violation": f"{float(sol.violation):.1e}",
        "time (s, with compile)": f"{seconds:.1f}",
        "lower": f"{lower:.6g}",
        "upper (ReLU net)": f"{upper:.6g}",
        "width (upper−lower)/upper": f"{(upper - lower) / abs(upper):.2%}",
        "neurons": str(interval.network.prune().width),
        "group program's optimum (separate nets)": f"{float(group.objective):.6g} ({status_name(group.status)})",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller digits and mnist1d")
    parser.add_argument("--gates", type=int, default=24)
    parser.add_argument("--fractions", default="0.1,0.02")
    parser.add_argument("--max-iters", type=int, default=100_000, help="the relaxation's budget (default 100 000)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    machine.enable_x64()
    info, load0 = machine.start(packages=PACKAGES)
    rows = []
    for name, (X, y, loss) in problems(args.quick).items():
        for fraction in (float(f) for f in args.fractions.split(",")):
            row = {"problem": name, **measure(X, y, loss, args.gates, fraction, args.max_iters)}
            print(row, flush=True)
            rows.append(row)
    argv = sys.argv[1:] if argv is None else argv
    title = "Vector-output exact ReLU: the certified interval"
    lines = report_head(title, "relu_interval.py", argv, machine.now(), info, (load0, os.getloadavg()[0]))
    keys = list(rows[0])
    lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(row[k] for k in keys) + " |" for row in rows]
    emit("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
