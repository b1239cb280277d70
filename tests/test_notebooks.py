"""The notebooks in notebooks/ run top to bottom without an error (executed here at their committed sizes).

Each runs in a fresh kernel process, driven by a child process of the test, so a notebook may set XLA_FLAGS in
its first cell, before it imports JAX (04_sharded_training asks for 8 host devices that way and fails if it
does not get them).
"""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

import pytest

for _module in ("nbformat", "nbclient", "ipykernel"):  # found, not imported: the runs happen in child processes
    if importlib.util.find_spec(_module) is None:
        pytest.skip(f"{_module} is not installed", allow_module_level=True)

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4 and "04_sharded_training" in {p.stem for p in NOTEBOOKS}


_RUNNER = """
import sys, nbformat, nbclient
nb = nbformat.read(sys.argv[1], as_version=4)
client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}})
client.execute()  # raises CellExecutionError, naming the cell, on any error
errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
sys.exit(1 if errors else 0)
"""


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path):
    # The kernel client (zmq sockets, an event loop and their threads) runs in a child process: in the test
    # worker itself it left state behind that later made XLA abort while compiling another test's program.
    # The kernel inherits this process's environment (CPU devices); it runs in a scratch directory.
    run = subprocess.run(
        [sys.executable, "-c", _RUNNER, str(path), str(tmp_path)], capture_output=True, text=True, timeout=1200
    )
    assert run.returncode == 0, run.stderr[-4000:]
