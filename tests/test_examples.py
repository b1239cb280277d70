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


def test_demo_prints_a_certified_table(capsys):
    from convexnn.__main__ import main

    main(["--dataset", "diabetes", "--gates", "16", "--tol", "1e-4"])
    out = capsys.readouterr().out
    assert "status" in out and "converged" in out
    assert "duality gap (certified)" in out


@pytest.mark.parametrize("name", ["tune_lambda"])
def test_examples_have_docstrings(name):
    assert _load(name).__doc__.strip()
