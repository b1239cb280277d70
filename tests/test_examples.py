"""The examples run, and the λ tuner moves λ downhill on the validation loss."""

from __future__ import annotations

import importlib.util
import pathlib

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


def test_demo_prints_a_certified_table_and_plots(capsys, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from convexnn.__main__ import main

    png = tmp_path / "demo.png"
    main(["--dataset", "diabetes", "--gates", "16", "--tol", "1e-4", "--plot", str(png)])
    out = capsys.readouterr().out
    assert "status" in out and "converged" in out
    assert "duality gap (certified)" in out
    assert "Adam (same gated net)" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith("  objective")}
    convex, adam = (float(v) for v in rows["objective"][:2])
    gap = float(next(line.split()[3] for line in out.splitlines() if "duality gap (certified)" in line))
    assert adam >= convex - gap  # the same network: Adam cannot beat the certified optimum


@pytest.mark.parametrize("name", ["tune_lambda"])
def test_examples_have_docstrings(name):
    assert _load(name).__doc__.strip()
