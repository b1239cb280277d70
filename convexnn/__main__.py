"""Demo: a two-layer network certified optimal over the sampled activation patterns, and Adam for the same time.

    python -m convexnn                       # digits, 10 classes, squared loss on one-hot targets, shared neurons
    python -m convexnn --penalty group       # one network per class instead (λ Σ_{i,k} ‖W[i,:,k]‖₂)
    python -m convexnn --dataset diabetes    # regression
    python -m convexnn --loss cross_entropy --lam 1e-3 --gates 64
    python -m convexnn --dataset diabetes --model relu --gates 32   # exact ReLU program (slower)

Both routes minimise L(f(X), y) + (λ/2)(‖W1‖² + ‖w2‖²) of a two-layer network whose hidden layer is shared by
the 10 classes (the convex program's penalty is λ Σ_i ‖U_i‖_*; the table counts the neurons it uses). The
convex one solves a convex reformulation over P sampled gates g_1, …, g_P, with a duality gap that bounds
objective − p*, where p* is the optimum over the networks it can represent: for the gated program, networks
whose neuron i is switched by 1[x·g_i ≥ 0]; for the exact ReLU program, ReLU networks whose neurons'
activation patterns on the training rows are among the P sampled ones. The certificate says nothing about
other networks. The non-convex route runs Adam from a random start for the wall time the convex solve took: on
the same gated network (its optimum is p*, so the certificate bounds Adam too), or with --model relu on an
unrestricted ReLU network, which is not covered by the certificate and may go below p*. A table compares them
and a PNG plots objective against time. The datasets ship with scikit-learn (no downloads).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import baselines, losses, patterns
from .certificates import objective_unit
from .networks import network_objective, to_network
from .solution import Status
from .solvers.gated import solve_gated
from .solvers.relu import solve_relu


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


class _Progress:
    """A tqdm bar when tqdm is installed, else one line per update on stderr."""

    def __init__(self, total: int, desc: str, bound: str = "gap"):
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover - exercised only without the extra
            self.bar = None
        else:
            self.bar = tqdm(total=total, desc=desc, unit="it", file=sys.stderr, dynamic_ncols=True, leave=True)
        self.desc, self.bound = desc, bound

    def update(self, iterations: int, objective: float, gap: float) -> None:
        """Advance by `iterations`; show the objective and the gap (an upper bound on objective − p*)."""
        if self.bar is None:
            print(f"{self.desc}: objective {objective:.8g}, {self.bound} {gap:.3g}", file=sys.stderr)
            return
        post = {"objective": f"{objective:.6g}"}
        if np.isfinite(gap):
            post[self.bound] = f"{gap:.2e}"
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(iterations)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _solve_convex(args, X, Y, masks, lam, loss, dtype):
    """Solve in chunks of `args.chunk` iterations, warm-started, to report progress between them.

    Returns the solution, its compile time and solve time, and the trace [(seconds, objective, gap)].
    """
    P, d = masks.shape[1], X.shape[1]
    shape = (P, d) if Y.ndim == 1 else (P, d, Y.shape[1])
    zero = jnp.zeros(shape, dtype)
    if args.model == "gated":
        chunk = args.chunk

        def solve(init, max_iters):
            return solve_gated(
                X, Y, masks, lam, loss=loss, penalty=args.penalty, tol=args.tol, max_iters=max_iters, init=init
            )

        init = zero
    else:
        # The augmented Lagrangian's multipliers do not survive a warm start: solve in one call.
        chunk = args.max_iters

        def solve(init, max_iters):
            return solve_relu(
                X, Y, masks, lam, loss=loss, penalty=args.penalty, tol=args.tol, max_iters=max_iters, init=init
            )

        init = (zero, zero)
    t0 = time.perf_counter()
    jax.block_until_ready(solve(init, 1))  # compile (max_iters is an array: no recompilation below)
    compile_time = time.perf_counter() - t0

    bar = _Progress(args.max_iters, f"convex ({args.model})")
    trace, used, elapsed = [], 0, 0.0
    while True:
        t0 = time.perf_counter()
        sol = jax.block_until_ready(solve(init, min(chunk, args.max_iters - used)))
        elapsed += time.perf_counter() - t0
        used += int(sol.iterations)
        trace.append((elapsed, float(sol.objective), float(sol.gap)))
        bar.update(int(sol.iterations), float(sol.objective), float(sol.gap))
        if int(sol.status) != Status.MAX_ITERS or used >= args.max_iters:
            break
        init = sol.weights
    bar.close()
    return sol, used, compile_time, elapsed, trace


def _train_adam(args, X, Y, lam, loss, structure, budget, lower):
    """Adam on the same objective from a He initialisation, in chunks of steps until `budget` seconds.

    `structure` = (width, gates, w2_mask) of the network; `lower` a certified lower bound of its objective
    (or None), to show how far above the optimum Adam still is.
    """
    width, gates, w2_mask = structure
    optimizer = optax.adam(args.adam_lr)
    key = jax.random.key(args.seed + 1)
    steps = args.adam_chunk

    settings = dict(optimizer=optimizer, steps=steps, key=key, loss=loss, gates=gates, w2_mask=w2_mask)

    def train(init, state):
        return baselines.train_network(X, Y, width, lam, init=init, opt_state=state, **settings)

    t0 = time.perf_counter()
    jax.block_until_ready(train(None, None))
    compile_time = time.perf_counter() - t0

    bar = _Progress(0, "Adam (non-convex)", bound="above p* by ≤")
    net, state, trace, elapsed, total = None, None, [], 0.0, 0
    while elapsed < budget or net is None:
        t0 = time.perf_counter()
        out = train(net, state)
        jax.block_until_ready(out)
        spent = time.perf_counter() - t0
        values = np.asarray(out.objective)
        times = elapsed + spent * (np.arange(1, steps + 1) / steps)  # steps cost the same: spread evenly
        trace.extend(zip(times.tolist(), values.tolist(), strict=True))
        elapsed += spent
        total += steps
        net, state = out.network, out.opt_state
        objective = float(out.final_objective)
        bar.update(steps, objective, float("nan") if lower is None else objective - lower)
    bar.close()
    trace.append((elapsed, float(out.final_objective)))
    return net, float(out.final_objective), total, compile_time, elapsed, trace


def _plot(path: str, convex_trace, adam_trace, title: str, model: str, adam_label: str, covered: bool) -> bool:
    """Objective against time (left) and its excess over the certified lower bound on p* (right).

    p* is the optimum over the networks the convex program represents (the sampled patterns); `covered`
    says whether Adam's network is one of them, so that the bound applies to it too.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - exercised only without the extra
        print("(matplotlib is not installed: no plot; pip install 'convexnn[demo]')", file=sys.stderr)
        return False
    t_c, obj_c, gap_c = (np.asarray(a) for a in zip(*convex_trace, strict=True))
    t_a, obj_a = (np.asarray(a) for a in zip(*adam_trace, strict=True))
    low = obj_c[-1] - gap_c[-1]  # p* ≥ low: certified by the final dual point
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    ax0.plot(t_a, obj_a, "-", color="tab:orange", lw=0.8, label=adam_label)
    ax0.plot(t_c, obj_c, "o-", color="tab:blue", label=f"convex ({model})")
    ax0.axhline(low, color="k", ls=":", lw=1, label="certified lower bound on p*")
    top = max(obj_c[0], obj_a[len(obj_a) // 10])
    bottom = low if covered else min(low, float(np.min(obj_a)))
    ax0.set_ylim(bottom - 0.05 * (top - bottom), top + 0.05 * (top - bottom))
    ax0.set(xlabel="time (s, compiled)", ylabel="objective  L + (λ/2)(‖W1‖² + ‖w2‖²)", title=title)
    ax0.legend(fontsize="small")
    floor = max(gap_c[-1], 1e-12)
    if covered:  # otherwise Adam's network is not bounded below by p*: its excess may be negative
        ax1.semilogy(t_a, np.maximum(obj_a - low, floor / 10), "-", color="tab:orange", lw=0.8, label=adam_label)
    ax1.semilogy(t_c, np.maximum(obj_c - low, floor / 10), "o-", color="tab:blue", label=f"convex ({model})")
    ax1.semilogy(t_c, gap_c, "v--", color="tab:blue", alpha=0.6, label="convex: duality gap")
    ax1.set(
        xlabel="time (s, compiled)",
        ylabel="objective − certified lower bound on p*",
        title="distance to p*, the optimum on the sampled patterns",
    )
    ax1.legend(fontsize="small")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m convexnn", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", choices=["digits", "diabetes"])
    parser.add_argument("--model", default="gated", choices=["gated", "relu"], help="convex program (default gated)")
    parser.add_argument("--loss", default=None, choices=["squared", "cross_entropy"], help="default: squared")
    parser.add_argument("--lam", type=float, default=None, help="λ (default 1e-3 digits, 1e-2 diabetes)")
    parser.add_argument("--gates", type=int, default=100, help="number of sampled gates P")
    parser.add_argument(
        "--penalty",
        default="nuclear",
        choices=["nuclear", "group"],
        help="nuclear: one hidden layer shared by all outputs (default); group: one network per output",
    )
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--max-iters", type=int, default=10_000, help="iteration budget of the convex solver")
    parser.add_argument("--chunk", type=int, default=100, help="convex iterations between progress updates")
    parser.add_argument("--adam-lr", type=float, default=3e-3, help="Adam's learning rate")
    parser.add_argument("--adam-chunk", type=int, default=100, help="Adam steps between progress updates")
    parser.add_argument("--no-baseline", action="store_true", help="skip the Adam baseline")
    parser.add_argument("--plot", default="convexnn_demo.png", help="PNG of objective vs time ('' for none)")
    parser.add_argument("--float64", action="store_true", help="solve in float64 (default float32)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def _targets(args, loss, ytr, yte):
    """(y to fit, train and test targets as (n, c) for scoring)."""
    if args.dataset == "digits":
        # One-hot targets for the squared loss, as scnn does for classification.
        ytr_fit = np.eye(10)[ytr] if isinstance(loss, losses.Squared) else ytr
        return ytr_fit, np.eye(10)[ytr], np.eye(10)[yte]
    if not isinstance(loss, losses.Squared):
        raise SystemExit("diabetes is a regression dataset: use --loss squared")
    return ytr, ytr[:, None], yte[:, None]


def _neurons(net) -> int:
    return int(jnp.sum(jnp.any(net.W1 != 0, axis=0) & jnp.any(net.w2 != 0, axis=1)))


class _Table:
    """The demo's result table: one column per method, the same rows in each."""

    def __init__(self, args, loss, data, unit: float, low: float):
        self.Xtr, self.Xte, self.Ytr, self.Yte, self.dtype = data
        classify_with_squares = args.dataset == "digits" and isinstance(loss, losses.Squared)
        self.metric = losses.CrossEntropy().metric if classify_with_squares else loss.metric
        self.name = "MSE (standardized y)" if args.dataset == "diabetes" else "accuracy"
        self.unit, self.low = unit, low
        self.columns: dict[str, dict[str, str]] = {}

    def _score(self, network, X, Y) -> str:
        pred = network(X)
        pred = pred[:, None] if pred.ndim == 1 else pred
        return f"{float(self.metric(pred, jnp.asarray(Y, self.dtype))):.4f}"

    def add(self, head, status, objective, bound, relative, steps, net, used, width, compile_time, run_time):
        self.columns[head] = {
            "status": status,
            "objective": f"{objective:.8g}",
            "objective − p* ≤ (certified)": bound,
            "relative: ÷ max(u, |objective|)": relative,
            "iterations / steps": f"{steps}",
            f"train {self.name}": self._score(net, self.Xtr, self.Ytr),
            f"test {self.name}": self._score(net, self.Xte, self.Yte),
            "neurons used": f"{used} of {width}",
            "time (with compile)": f"{compile_time + run_time:.2f} s",
            "time (compiled)": f"{run_time:.3f} s",
        }

    def print(self) -> None:
        keys = list(next(iter(self.columns.values())))
        key_width = max(len(k) for k in keys)
        widths = [max(len(head), *(len(col[k]) for k in keys)) for head, col in self.columns.items()]
        header = "  ".join(f"{head:<{w}}" for head, w in zip(self.columns, widths, strict=True))
        print(f"  {'':<{key_width}}  {header}")
        for k in keys:
            cells = "  ".join(f"{col[k]:<{w}}" for col, w in zip(self.columns.values(), widths, strict=True))
            print(f"  {k:<{key_width}}  {cells}")


def _baseline(args, table: _Table, net, neurons, fit, solve_time, trace) -> float:
    """Adam on the same objective for as long as the convex solve took; its column in the table, and its plot."""
    Xtr_j, ytr_fit, lam, loss = fit
    covered = args.model == "gated"
    if covered:
        # The same network: neuron (i, k) has gate g_i and feeds output k. Its global minimum is p*, the
        # convex optimum, so objective − (convex objective − gap) bounds Adam's distance to it.
        # With the nuclear penalty every neuron feeds every output; with the group one, output k alone.
        c = net.w2.shape[1]
        shared = args.penalty == "nuclear"
        feeds = np.ones((net.width, c), bool) if shared else np.tile(np.eye(c, dtype=bool), (args.gates, 1))
        structure = (net.width, net.gates, feeds)
        lower, head = table.low, "Adam (same gated net)"
    else:
        structure, lower, head = (max(neurons, 1), None, None), None, "Adam (unrestricted ReLU net)"
    adam_net, adam_obj, steps, adam_compile, adam_time, adam_trace = _train_adam(
        args, Xtr_j, ytr_fit, lam, loss, structure, solve_time, lower
    )
    above = adam_obj - table.low
    bound = f"{above:.3g}" if covered else "not covered"
    relative = f"{above / max(table.unit, abs(adam_obj)):.3g}" if covered else "—"
    used = _neurons(adam_net)
    table.add(
        head, "time budget", adam_obj, bound, relative, steps, adam_net, used, structure[0], adam_compile, adam_time
    )
    if args.plot:
        title = f"{args.dataset}: λ = {lam:g}, P = {args.gates}"
        if _plot(args.plot, trace, adam_trace, title, args.model, head, covered):
            print(f"plot of objective vs time: {args.plot}")
    return adam_obj


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    if args.float64:
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float64 if args.float64 else jnp.float32
    loss = losses.get_loss(args.loss or "squared")
    lam = args.lam if args.lam is not None else (1e-3 if args.dataset == "digits" else 1e-2)

    Xtr, Xte, ytr, yte = _load(args.dataset, args.seed)
    ytr_fit, Ytr, Yte = _targets(args, loss, ytr, yte)
    Xtr_j, Xte_j = jnp.asarray(Xtr, dtype), jnp.asarray(Xte, dtype)
    gates = patterns.sample_gates(jax.random.key(args.seed), Xtr.shape[1], args.gates, dtype=dtype)
    masks_tr = patterns.activation_masks(Xtr_j, gates)

    print(
        f"convexnn demo: {args.dataset}, n={Xtr.shape[0]} train / {Xte.shape[0]} test, d={Xtr.shape[1]}, "
        f"P={args.gates} gates, model={args.model}, loss={loss.name}, λ={lam:g}, {jnp.dtype(dtype).name}, "
        f"device={jax.devices()[0]}"
    )
    sol, iterations, compile_time, solve_time, trace = _solve_convex(args, Xtr_j, ytr_fit, masks_tr, lam, loss, dtype)
    net = to_network(sol, gates) if args.model == "gated" else to_network(sol, X=Xtr_j)
    neurons = _neurons(net)

    objective, gap = float(sol.objective), float(sol.gap)
    low = objective - gap  # p* ≥ low, certified by the dual point
    if args.model == "relu" and sol.penalty == "nuclear":
        # The convex program is the relaxation: report the ReLU network read off it, above p* by ≤ upper − low.
        objective = float(network_objective(net, Xtr_j, ytr_fit, lam, loss))
        gap = objective - low
    unit = float(objective_unit(ytr_fit, loss))  # the stopping rule's u: gap ≤ tol·max(u, |objective|)
    table = _Table(args, loss, (Xtr_j, Xte_j, Ytr, Yte, dtype), unit, low)
    status, relative = Status(int(sol.status)).name.lower(), f"{gap / max(unit, abs(objective)):.3g}"
    table.add(
        f"convex ({args.model})",
        status,
        objective,
        f"{gap:.3g}",
        relative,
        iterations,
        net,
        neurons,
        net.width,
        compile_time,
        solve_time,
    )
    adam_obj = None
    if not args.no_baseline:
        fit = (Xtr_j, ytr_fit, lam, loss)
        adam_obj = _baseline(args, table, net, neurons, fit, solve_time, trace)
    table.print()
    print(f"u = {unit:.4g}: the objective's unit in the stopping rule gap ≤ tol·max(u, |objective|)", end=" ")
    print("(the targets' variance for the squared loss, 1 for the label losses).")
    print(_what_is_certified(args, Xtr.shape[0], low, adam_obj))


def _what_is_certified(args, n: int, low: float, adam_obj: float | None) -> str:
    """The note under the table: which networks p* is the optimum of, and whether Adam's is one of them."""
    if args.model == "gated":
        note = (
            "p* is the least objective of networks whose neuron i is switched by 1[x·g_i ≥ 0], for the "
            f"P = {args.gates} sampled gates g_i. The certificate says nothing about networks with other gates or "
            "activation patterns, such as a ReLU net trained freely, which may do better."
        )
        if adam_obj is not None:
            note += " Adam trains a network of the sampled gates, so the bound covers it too."
        return textwrap.fill(note, width=110)
    note = (
        f"p* is the least objective of ReLU networks whose neurons' activation patterns on the {n} training rows "
        f"are among the P = {args.gates} sampled ones. The certificate says nothing about other networks."
    )
    if adam_obj is not None:
        note += " Adam's ReLU net is not restricted to those patterns, so it is not covered and may go below p*"
        note += f": it does, {adam_obj:.8g} < {low:.8g}, the certified lower bound on p*." if adam_obj < low else "."
    return textwrap.fill(note, width=110)


if __name__ == "__main__":
    main()
