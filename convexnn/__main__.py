"""Demo: train a two-layer (gated) ReLU network to a certified optimum on a real dataset.

    python -m convexnn                       # digits, 10 classes, squared loss on one-hot targets
    python -m convexnn --dataset diabetes    # regression
    python -m convexnn --loss cross_entropy --lam 1e-3 --gates 64

The datasets ship with scikit-learn (no downloads).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from . import losses, operators, patterns, prox
from .solution import Status
from .solvers.gated import solve_gated


def _load(name: str, seed: int):
    try:
        from sklearn.datasets import load_diabetes, load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise SystemExit("the demo needs scikit-learn: pip install 'convexnn[demo]'") from err
    if name == "digits":
        X, y = load_digits(return_X_y=True)
    elif name == "diabetes":
        X, y = load_diabetes(return_X_y=True)
    else:
        raise SystemExit(f"unknown dataset {name!r}: choose digits or diabetes")
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=seed)
    mean, std = Xtr.mean(0), Xtr.std(0)
    std = np.where(std > 0, std, 1.0)

    def prep(A):  # standardize with training statistics, add a bias column
        return np.hstack([(A - mean) / std, np.ones((A.shape[0], 1))])

    if name == "diabetes":
        mu, sd = ytr.mean(), ytr.std()
        return prep(Xtr), prep(Xte), (ytr - mu) / sd, (yte - mu) / sd
    return prep(Xtr), prep(Xte), ytr, yte


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m convexnn", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", choices=["digits", "diabetes"])
    parser.add_argument("--loss", default=None, choices=["squared", "cross_entropy"], help="default: squared")
    parser.add_argument("--lam", type=float, default=None, help="λ (default 1e-3 digits, 1e-2 diabetes)")
    parser.add_argument("--gates", type=int, default=100, help="number of sampled gates P")
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--float64", action="store_true", help="solve in float64 (default float32)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.float64:
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float64 if args.float64 else jnp.float32
    loss = losses.get_loss(args.loss or "squared")
    lam = args.lam if args.lam is not None else (1e-3 if args.dataset == "digits" else 1e-2)

    Xtr, Xte, ytr, yte = _load(args.dataset, args.seed)
    if args.dataset == "digits":
        if isinstance(loss, losses.Squared):  # one-hot targets, as scnn does for classification
            ytr_fit = np.eye(10)[ytr]
        else:
            ytr_fit = ytr
        Ytr, Yte = np.eye(10)[ytr], np.eye(10)[yte]
    else:
        if not isinstance(loss, losses.Squared):
            raise SystemExit("diabetes is a regression dataset: use --loss squared")
        ytr_fit, Ytr, Yte = ytr, ytr[:, None], yte[:, None]

    Xtr_j, Xte_j = jnp.asarray(Xtr, dtype), jnp.asarray(Xte, dtype)
    gates = patterns.sample_gates(jax.random.key(args.seed), Xtr.shape[1], args.gates, dtype=dtype)
    masks_tr = patterns.activation_masks(Xtr_j, gates)
    masks_te = patterns.activation_masks(Xte_j, gates)

    print(
        f"convexnn demo: {args.dataset}, n={Xtr.shape[0]} train / {Xte.shape[0]} test, d={Xtr.shape[1]}, "
        f"P={args.gates} gates, loss={loss.name}, λ={lam:g}, {jnp.dtype(dtype).name}, device={jax.devices()[0]}"
    )
    t0 = time.perf_counter()
    sol = jax.block_until_ready(solve_gated(Xtr_j, ytr_fit, masks_tr, lam, loss=loss, tol=args.tol))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    sol = jax.block_until_ready(solve_gated(Xtr_j, ytr_fit, masks_tr, lam, loss=loss, tol=args.tol))
    warm = time.perf_counter() - t0

    W = sol.weights if sol.weights.ndim == 3 else sol.weights[..., None]
    pred_tr = operators.gated_forward(Xtr_j, masks_tr, W)
    pred_te = operators.gated_forward(Xte_j, masks_te, W)
    classify_with_squares = args.dataset == "digits" and isinstance(loss, losses.Squared)
    metric = losses.CrossEntropy().metric if classify_with_squares else loss.metric
    name = "MSE (standardized y)" if args.dataset == "diabetes" else "accuracy"
    neurons = int(jnp.sum(jnp.any(prox.group_norms(W) > 0, axis=-1)))
    rows = [
        ("status", Status(int(sol.status)).name.lower()),
        ("objective", f"{float(sol.objective):.8g}"),
        ("duality gap (certified)", f"{float(sol.gap):.3g}"),
        ("relative gap", f"{float(sol.gap) / max(1.0, abs(float(sol.objective))):.3g}"),
        ("iterations", f"{int(sol.iterations)}"),
        (f"train {name}", f"{float(metric(pred_tr, jnp.asarray(Ytr, dtype))):.4f}"),
        (f"test {name}", f"{float(metric(pred_te, jnp.asarray(Yte, dtype))):.4f}"),
        ("neurons used", f"{neurons} of {args.gates}"),
        ("time (with compile)", f"{first:.2f} s"),
        ("time (compiled)", f"{warm:.3f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


if __name__ == "__main__":
    main()
