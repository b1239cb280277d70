"""Two processes (jax.distributed on 127.0.0.1, CPU collectives by gloo), each holding only its own rows,
give the single-process solution. The processes run examples/multihost.py, the script users copy."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np

import convexnn as cn

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "multihost.py"
N_ROWS = 203
TIMEOUT = 240  # seconds for both processes, compilation included


def _example():
    spec = importlib.util.spec_from_file_location("multihost", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
    out = tmp_path / "solution.npz"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    port = _free_port()
    flags = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--demo", str(N_ROWS), "--float64"]
    flags += ["--tol", "1e-10", "--out", str(out)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), *flags, "--process-id", str(i)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = ["", ""]
    try:
        for i, p in enumerate(procs):
            logs[i] = p.communicate(timeout=TIMEOUT)[0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for i, p in enumerate(procs):
        assert p.returncode == 0, f"process {i} failed:\n{logs[i][-3000:]}"

    example = _example()
    got = np.load(out)
    assert int(got["devices"]) == 4
    rows0 = example.demo_rows(N_ROWS, 0, 2)
    assert int(got["local_rows"]) == rows0.stop - rows0.start < N_ROWS // 2  # uneven: padded per process
    X, y, masks = example.demo_problem(N_ROWS)
    lam = 0.05 * float(cn.lam_max(X, y, masks))
    np.testing.assert_allclose(float(got["lam"]), lam, rtol=1e-12)
    ref = cn.solve_gated(X, y, masks, lam, tol=1e-10)
    assert int(got["status"]) == cn.Status.CONVERGED
    W, W_ref = got["weights"], np.asarray(ref.weights)
    assert W.shape == W_ref.shape
    assert np.linalg.norm(W - W_ref) <= 1e-6 * np.linalg.norm(W_ref)
    np.testing.assert_allclose(float(got["objective"]), float(ref.objective), rtol=1e-9)
