"""Command-line options several benchmark scripts share (each script keeps its own defaults)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from . import machine, peers
from .tables import emit
from .timing import blas_limits, log

RESULTS = Path(__file__).resolve().parents[1] / "results"  # benchmarks/results
GATED_SIZES = "2000x50x200,20000x100x500"  # gated_vs_scnn.py and path.py
QUICK_SIZES = "500x20x50"
SCNN_MODES = ("pyscnn-f32", "pyscnn")


def parse_sizes(text: str) -> list[tuple[int, int, int]]:
    """'2000x50x200,20000x100x500' → [(2000, 50, 200), (20000, 100, 500)]."""
    sizes = []
    for part in text.split(","):
        n, d, P = (int(v) for v in part.lower().split("x"))
        sizes.append((n, d, P))
    return sizes


def parse_floats(text: str) -> list[float]:
    """'1e-3,1e-4' → [0.001, 0.0001]."""
    return [float(v) for v in text.split(",") if v]


def parser(doc: str, raw: bool = False) -> argparse.ArgumentParser:
    """An ArgumentParser described by the first paragraph of `doc` (the whole of it when raw)."""
    if raw:
        return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    return argparse.ArgumentParser(
        description=doc.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )


def add_problem_args(p: argparse.ArgumentParser, sizes: str, quick_help: str, target_help: str) -> None:
    """--sizes, --quick, --seed, --target."""
    p.add_argument("--sizes", default=sizes, help="comma-separated NxDxP (D includes the bias column)")
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", type=float, default=1e-4, help=target_help)


def add_repeat_args(p: argparse.ArgumentParser, repeats: int, slow_repeats: int, slow_s: float) -> None:
    """--repeats, --slow-repeats, --slow-s."""
    p.add_argument("--repeats", type=int, default=repeats, help="runs per configuration")
    p.add_argument(
        "--slow-repeats", type=int, default=slow_repeats, help="runs per configuration when the first is slow"
    )
    p.add_argument("--slow-s", type=float, default=slow_s, help="seconds above which a configuration is 'slow'")


def add_reference_args(p: argparse.ArgumentParser, what: str, crosscheck_help: str | None) -> None:
    """--ref-tol, --ref-max-iters and (when crosscheck_help is given) --crosscheck, --crosscheck-max-n."""
    p.add_argument("--ref-tol", type=float, default=1e-10, help=f"tol of the float64 reference {what}")
    p.add_argument("--ref-max-iters", type=int, default=200_000, help=f"max_iters of the float64 reference {what}")
    if crosscheck_help is None:
        return
    p.add_argument("--crosscheck", choices=("auto", "on", "off"), default="auto", help=crosscheck_help)
    p.add_argument("--crosscheck-max-n", type=int, default=5000, help="largest n cross-checked under 'auto'")


def add_scnn_args(p: argparse.ArgumentParser, tols: str, tols_help: str, time_limit: float, what: str) -> None:
    """--scnn-default-tol, --scnn-tols, --scnn-max-iters, --scnn-time-limit, --scnn-modes (pyscnn's R-FISTA)."""
    p.add_argument("--scnn-default-tol", type=float, default=1e-6, help="pyscnn RFISTA's default tol")
    p.add_argument("--scnn-tols", type=parse_floats, default=tols, help=tols_help)
    p.add_argument("--scnn-max-iters", type=int, default=10_000, help=f"pyscnn max_iters ({what})")
    p.add_argument(
        "--scnn-time-limit",
        type=float,
        default=time_limit,
        help=f"wall-clock seconds after which a pyscnn {what} is stopped (status time_limit; run once, sweep ends)",
    )
    p.add_argument(
        "--scnn-modes",
        default=",".join(SCNN_MODES),
        help="which pyscnn variants to run: pyscnn-f32 and/or pyscnn; empty for none",
    )


def add_output_args(p: argparse.ArgumentParser, out: Path | None, blas_help: str) -> None:
    """--blas-threads, --out, --records."""
    p.add_argument("--blas-threads", type=int, default=None, help=blas_help)
    p.add_argument("--out", type=Path, default=out, help="write the markdown report here")
    p.add_argument("--records", type=Path, default=None, help="append one JSON line per timed run to this file")


def finish(p: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None, quick_repeats: bool) -> None:
    """Apply --quick (sizes QUICK_SIZES, pyscnn runs cut at 30 s and, when quick_repeats, at most 3 repeats,
    1 when slow); parse --sizes and --scnn-modes in place (an unknown mode is an error); record the command
    line's arguments (args.argv) and the date (args.date) for the report."""
    if args.quick:
        args.sizes = QUICK_SIZES
        args.scnn_time_limit = min(args.scnn_time_limit, 30.0)
        if quick_repeats:
            args.repeats, args.slow_repeats = min(args.repeats, 3), 1
    args.sizes = parse_sizes(args.sizes)
    args.scnn_modes = [m.strip() for m in args.scnn_modes.split(",") if m.strip()]
    unknown = set(args.scnn_modes) - set(SCNN_MODES)
    if unknown:
        p.error(f"unknown --scnn-modes {sorted(unknown)}")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.date = machine.now()


def crosschecks(args: argparse.Namespace, n: int) -> bool:
    """Whether size n gets the reference cross-check (--crosscheck on, or auto and n ≤ --crosscheck-max-n)."""
    return args.crosscheck == "on" or (args.crosscheck == "auto" and n <= args.crosscheck_max_n)


def run_sizes(
    args: argparse.Namespace, bench_size: Callable, write_report: Callable, blas_threads, skipped: str
) -> int:
    """The main() of the per-size benchmarks: float64 on, pyscnn looked for (args.pyscnn; without it the log
    says what is `skipped`), BLAS pools limited to `blas_threads` (None: as they are), the machine described,
    every size of args.sizes measured by bench_size(n, d, P, args), and the report of
    write_report(results, args, machine, load) printed and written to args.out."""
    machine.enable_x64()
    args.pyscnn = peers.installed("scnn")
    if not args.pyscnn:
        log(f"pyscnn is not installed: {skipped} (see benchmarks/README.md)")
    with blas_limits(blas_threads):
        description, load0 = machine.start(blas_threads)
        results = [bench_size(n, d, P, args) for (n, d, P) in args.sizes]
        report = write_report(results, args, description, (load0, os.getloadavg()[0]))
    emit(report, args.out)
    return 0
