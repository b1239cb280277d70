"""The examples run, and the λ tuner moves λ downhill on the validation loss."""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tune_lambda_lowers_the_validation_loss(capsys):
    _load("tune_lambda").main(steps=3, learning_rate=4.0)
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip()[:1].isdigit()]
    losses = [float(r[2]) for r in rows[:4]]
    assert len(losses) == 4
    assert losses[-1] < losses[0]


def _table(out: str) -> dict[str, list[str]]:
    """The demo's table: row label -> cells (columns are separated by two or more spaces)."""
    rows = (re.split(r" {2,}", line.strip()) for line in out.splitlines() if line.startswith("  "))
    return {cells[0]: cells[1:] for cells in rows}


def test_demo_prints_a_certified_table_and_plots(capsys, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from convexnn.__main__ import main

    png = tmp_path / "demo.png"
    main(["--dataset", "diabetes", "--gates", "16", "--tol", "1e-4", "--plot", str(png)])
    out = capsys.readouterr().out
    rows = _table(out)
    assert rows["status"][0] == "converged"
    assert "Adam (same gated net)" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    convex, adam = (float(v) for v in rows["objective"][:2])
    gap, adam_bound = (float(v) for v in rows["objective − p* ≤ (certified)"][:2])
    assert adam >= convex - gap  # the same network: Adam cannot beat the certified optimum
    assert adam_bound == pytest.approx(adam - (convex - gap), rel=1e-2, abs=1e-6)
    # The note under the table says which networks p* is the optimum of: those of the sampled gates only.
    note = " ".join(out.split())
    assert "p* is the least objective of networks whose neuron i is switched by 1[x·g_i ≥ 0], for the P = 16" in note
    assert "says nothing about networks with other gates or activation patterns" in note


def test_demo_says_an_unrestricted_relu_net_is_not_covered():
    from convexnn.__main__ import _what_is_certified

    args = argparse.Namespace(model="relu", gates=32)
    below = " ".join(_what_is_certified(args, 331, low=0.5, adam_obj=0.4).split())
    assert "patterns on the 331 training rows are among the P = 32 sampled ones" in below
    assert "not covered and may go below p*: it does, 0.4 < 0.5" in below
    above = " ".join(_what_is_certified(args, 331, low=0.5, adam_obj=0.6).split())
    assert "not covered and may go below p*." in above and "it does" not in above


@pytest.mark.parametrize("name", ["tune_lambda"])
def test_examples_have_docstrings(name):
    assert _load(name).__doc__.strip()


def test_readme_quick_start_prints_what_the_readme_shows():
    """The README's quick start, run as a user runs it (a fresh process, float64 off): it converges, and prints
    the status, objective and weights its comment shows (it used to print status=stalled under a comment
    promising converged)."""
    import subprocess
    import sys

    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Quick start", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    shown = " ".join(line.lstrip("# ").strip() for line in block.splitlines() if line.startswith("#"))
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("JAX_", "XLA_"))}
    out = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, env=env, check=True).stdout
    printed = out.strip().splitlines()[-1]
    field = lambda text, name: re.search(rf"{name}=(\w+\[[^\]]*\]|[^,)]+)", text).group(1)  # noqa: E731
    assert field(printed, "status") == field(shown, "status") == "converged", printed
    assert field(printed, "weights") == field(shown, "weights") == "float32[100, 10]"
    assert float(field(printed, "objective")) == pytest.approx(float(field(shown, "objective")), rel=1e-5)
