"""The scikit-learn estimators' defaults: do they converge, how fast, and do they generalize?

Measures, on scikit-learn's bundled data sets, each split once by `train_test_split(test_size=0.25,
random_state=0)` (the same split for every estimator):

1. `ConvexReLUClassifierCV()` on digits: the first call in the process (compiles included) and warm calls.
2. `ConvexReLUClassifier()` on digits (1347 training rows): status, gap, iterations and the warm fit's
   time (the second and later fits: compiled), against scikit-learn's `MLPClassifier(random_state=0)` on
   the same split; the two are timed alternately, median of `--repeats`.
3. Held-out scores of the default λ (`lam="auto"`: 0.1·λ_max for regression, 0.005·λ_max for
   classification) against the CV-tuned estimator (`*CV()`, default grid), on breast_cancer, wine,
   digits (accuracy) and diabetes (R²); the old fixed default λ = 1e-3 for reference; and the held-out
   score along λ/λ_max, from which the fractions were chosen.
4. The CV estimators with cv_tol=1e-5 (the refit's tol) instead of the default 1e-3: chosen λ, score, time.

Every convexnn fit uses random_state=0 (the gates), float32, and is checked (status) before its time is
used. Run pinned to one core for timings that do not depend on the other cores' load, e.g.

    taskset -c 0 python benchmarks/estimator_defaults.py --out benchmarks/results/estimators.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

from common import machine
from common.problems import REGRESSION, SKLEARN_DATASETS, sklearn_split
from common.tables import emit, report_head
from common.timing import log
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from convexnn.estimators import ConvexReLUClassifier, ConvexReLUClassifierCV, ConvexReLURegressor, ConvexReLURegressorCV

DATASETS = SKLEARN_DATASETS
PACKAGES = ("convexnn", "jax", "jaxlib", "equinox", "numpy", "scikit-learn")
FRACTIONS = (0.3, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)


def estimator(name: str, cv: bool = False, **params):
    if name in REGRESSION:
        return (ConvexReLURegressorCV if cv else ConvexReLURegressor)(random_state=0, **params)
    return (ConvexReLUClassifierCV if cv else ConvexReLUClassifier)(random_state=0, **params)


def timed_fit(est, X, y):
    """(fitted estimator, seconds, ConvergenceWarning messages)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        start = time.perf_counter()
        est.fit(X, y)
        seconds = time.perf_counter() - start
    return est, seconds, [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]


def progress(*parts) -> None:
    log(*parts, file=sys.stderr)


def section_cv_digits(repeats: int) -> list[str]:
    Xtr, Xte, ytr, yte = sklearn_split("digits")
    est, cold, warns = timed_fit(estimator("digits", cv=True), Xtr, ytr)
    progress(f"CV digits cold {cold:.1f} s, lam_ {est.lam_:.3g}")
    warm = [timed_fit(estimator("digits", cv=True), Xtr, ytr)[1] for _ in range(repeats)]
    rows = [
        "## `ConvexReLUClassifierCV()` on digits (budget: 30 s)",
        "",
        "Default grid (10 λ from λ_max·10^-0.3 down to 1e-3·λ_max), 5 stratified folds scored by held-out log loss,",
        "cv_tol 1e-3, refit at tol 1e-5. The first call is the first convexnn call of the process (compiles included).",
        "",
        "| call | time | lam_ (lam_/λ_max) | refit status, iterations | test accuracy | warnings |",
        "|---|---|---|---|---|---|",
        f"| first (cold) | {cold:.1f} s | {est.lam_:.3g} ({est.lam_ / est.lam_max_:.3g}) | {est.status_}, "
        f"{est.n_iter_} | {est.score(Xte, yte):.4f} | {len(warns)} |",
        f"| warm, median of {repeats} | {statistics.median(warm):.1f} s (min {min(warm):.1f}, max {max(warm):.1f}) "
        "| same | same | same | |",
        "",
        "Mean held-out score (−log loss) per λ: "
        + ", ".join(
            f"{lam / est.lam_max_:.3g}·λ_max: {s:.4f}" for lam, s in zip(est.lams_, est.cv_scores_.mean(1), strict=True)
        ),
        "",
    ]
    return rows


def section_default_digits(repeats: int) -> list[str]:
    Xtr, Xte, ytr, yte = sklearn_split("digits")
    first, cold, _ = timed_fit(ConvexReLUClassifier(random_state=0), Xtr, ytr)
    MLPClassifier(random_state=0).fit(Xtr, ytr)  # warm-up (imports, allocations)
    ours, theirs, runs = [], [], []
    for _ in range(repeats):
        est, t, warns = timed_fit(ConvexReLUClassifier(random_state=0), Xtr, ytr)
        if est.status_ != "converged":
            raise RuntimeError(f"the default fit did not converge: {warns}")
        ours.append(t)
        runs.append(est)
        mlp, t, _ = timed_fit(MLPClassifier(random_state=0), Xtr, ytr)
        theirs.append(t)
    est = runs[-1]
    ratio = statistics.median(ours) / statistics.median(theirs)
    progress(f"default digits {statistics.median(ours):.2f} s vs MLP {statistics.median(theirs):.2f} s")
    return [
        "## `ConvexReLUClassifier()` on digits (budget: CONVERGED in float32, warm fit ≤ 5× MLPClassifier)",
        "",
        f'1347 training rows, 64 features (+ bias), P = 64 gates, 10 classes (cross-entropy), lam="auto" = '
        f"0.005·λ_max = {est.lam_:.4g}. Warm fits and MLP fits alternate; median of {repeats} (min–max).",
        "",
        "| estimator | fit time | status | iterations | gap | neurons | test accuracy |",
        "|---|---|---|---|---|---|---|",
        f"| ConvexReLUClassifier() first fit (compiles) | {cold:.2f} s | {first.status_} | {first.n_iter_} | "
        f"{first.gap_:.2g} | {first.n_neurons_} | {first.score(Xte, yte):.4f} |",
        f"| ConvexReLUClassifier() warm | {statistics.median(ours):.2f} s ({min(ours):.2f}–{max(ours):.2f}) | "
        f"{est.status_} | {est.n_iter_} | {est.gap_:.2g} | {est.n_neurons_} | {est.score(Xte, yte):.4f} |",
        f"| MLPClassifier(random_state=0) | {statistics.median(theirs):.2f} s ({min(theirs):.2f}–{max(theirs):.2f}) "
        f"| n_iter_ {mlp.n_iter_} | | | 100 | {mlp.score(Xte, yte):.4f} |",
        "",
        f"**Warm fit / MLP: {ratio:.2f}×** (budget 5×).",
        "",
    ]


def section_defaults_vs_cv(with_curves: bool) -> list[str]:
    rows = [
        "## Default λ against the CV-tuned estimator (budget: within 0.02)",
        "",
        "Test score on the held-out quarter: accuracy (classifiers), R² (regressor). `*CV()` uses its defaults on",
        "the training rows: 10 λ, 5 folds (stratified for classifiers), held-out log loss (classifiers) or R²",
        "(regressor). λ = 1e-3 was the default before.",
        "",
        '| data (n_train × d) | λ_max | default lam="auto" | CV-tuned: lam_/λ_max, score | difference | λ = 1e-3 |',
        "|---|---|---|---|---|---|",
    ]
    curves = ["", "Held-out score along λ/λ_max (single fits), from which the fractions were chosen:", ""]
    curves += ["| data | " + " | ".join(f"{f:g}" for f in FRACTIONS) + " |", "|---" * (len(FRACTIONS) + 1) + "|"]
    for name in DATASETS:
        Xtr, Xte, ytr, yte = sklearn_split(name)
        auto, _, w1 = timed_fit(estimator(name), Xtr, ytr)
        tuned, t_cv, w2 = timed_fit(estimator(name, cv=True), Xtr, ytr)
        old, _, w3 = timed_fit(estimator(name, lam=1e-3), Xtr, ytr)
        a, c = auto.score(Xte, yte), tuned.score(Xte, yte)
        progress(f"{name}: auto {a:.4f} cv {c:.4f} ({t_cv:.1f} s)")
        flags = " (warned)" if w1 or w2 else ""
        rows.append(
            f"| {name} ({Xtr.shape[0]} × {Xtr.shape[1]}) | {auto.lam_max_:.3g} | {a:.4f} ({auto.status_}){flags} | "
            f"{tuned.lam_ / tuned.lam_max_:.3g}, {c:.4f} ({tuned.status_}) | {a - c:+.4f} | "
            f"{old.score(Xte, yte):.4f} ({old.status_}) |"
        )
        if with_curves:
            scores = [estimator(name, lam=f * auto.lam_max_).fit(Xtr, ytr).score(Xte, yte) for f in FRACTIONS]
            curves.append(f"| {name} | " + " | ".join(f"{s:.4f}" for s in scores) + " |")
    return rows + (curves if with_curves else []) + [""]


def section_cv_tol() -> list[str]:
    rows = [
        "## The folds' tolerance: cv_tol = 1e-3 (default) against 1e-5 (the refit's tol)",
        "",
        "| data | cv_tol | CV time | lam_/λ_max | test score | fold iterations in total |",
        "|---|---|---|---|---|---|",
    ]
    for name in DATASETS:
        Xtr, Xte, ytr, yte = sklearn_split(name)
        for cv_tol in (1e-3, 1e-5):
            est, t, _ = timed_fit(estimator(name, cv=True, cv_tol=cv_tol), Xtr, ytr)
            rows.append(
                f"| {name} | {cv_tol:g} | {t:.1f} s | {est.lam_ / est.lam_max_:.3g} | {est.score(Xte, yte):.4f} | "
                f"{int(est.cv_n_iter_.sum())} |"
            )
            progress(rows[-1])
    return rows + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed warm fits (median reported)")
    parser.add_argument("--no-curves", action="store_true", help="skip the score-along-λ table")
    parser.add_argument("--no-cv-tol", action="store_true", help="skip the cv_tol comparison")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    args = parser.parse_args(argv)
    load_at_start, date = os.getloadavg()[0], machine.now()
    body = section_cv_digits(args.repeats) + section_default_digits(args.repeats)
    body += section_defaults_vs_cv(not args.no_curves)
    if not args.no_cv_tol:
        body += section_cv_tol()
    description = machine.machine_description(PACKAGES, blas=False)
    load = (load_at_start, os.getloadavg()[0])
    command = argv if argv is not None else sys.argv[1:]
    head = report_head("scikit-learn estimators: defaults", "estimator_defaults.py", command, date, description, load)
    emit("\n".join(head + body), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
