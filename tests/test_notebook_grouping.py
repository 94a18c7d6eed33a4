"""A notebook's cells run in order, on one worker, in one kernel, under ``pytest -n 2`` (the README's command).

nbval runs each cell as one test item and shares one kernel between the items of a notebook; if pytest-xdist
spreads them over workers, every cell after the first meets a fresh kernel and fails with ``NameError``. These
tests run a child ``pytest -n 2`` on small notebooks with the project's own settings (``pyproject.toml``):
one whose cells depend on each other must pass, and the root ``conftest.py``'s guard must fail a run whose
cells were split (forced here with ``--dist load``).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("xdist")
pytest.importorskip("nbval")

ROOT = Path(__file__).resolve().parent.parent


def _notebook(path: Path, cells: list[str]) -> None:
    path.write_text(json.dumps({
        "cells": [{"cell_type": "code", "execution_count": None, "id": f"cell-{i}", "metadata": {}, "outputs": [],
                   "source": source} for i, source in enumerate(cells)],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }), encoding="utf-8")


def _child_pytest(folder: Path, *extra: str) -> subprocess.CompletedProcess:
    """``pytest -n 2`` on ``folder`` with the project's addopts and the root conftest (its guard) loaded."""
    (folder / "tests").mkdir(exist_ok=True)  # the addopts name the sanitize file relative to the run's folder
    shutil.copy(ROOT / "tests" / "nbval_sanitize.cfg", folder / "tests")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_ADDOPTS"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(folder),
         "-p", "conftest", "-n", "2", *extra, str(folder / "notebooks")],
        cwd=folder, env=env, capture_output=True, text=True, timeout=300)


def test_dependent_cells_of_each_notebook_run_in_one_kernel(tmp_path):
    (tmp_path / "notebooks").mkdir()
    for name in ("first", "second", "third"):
        _notebook(tmp_path / "notebooks" / f"{name}.ipynb", [
            "import os\nkernel_pid = os.getpid()\nsteps = [1]",
            "steps.append(2)\nassert os.getpid() == kernel_pid",
            "steps.append(3)\nassert os.getpid() == kernel_pid",
            "assert steps == [1, 2, 3], steps",
        ])
    run = _child_pytest(tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "12 passed" in run.stdout
    assert "notebook cells split" not in run.stdout


def test_the_guard_fails_a_run_whose_notebook_cells_were_split(tmp_path):
    """Independent cells pass anywhere; spread over two workers (``--dist load``), the guard fails the run."""
    (tmp_path / "notebooks").mkdir()
    _notebook(tmp_path / "notebooks" / "independent.ipynb", ["import time\ntime.sleep(0.5)"] * 8)
    run = _child_pytest(tmp_path, "--dist", "load")
    assert "8 passed" in run.stdout, run.stdout[-3000:]
    assert "notebook cells split: notebooks/independent.ipynb ran in 2 kernels" in run.stdout
    assert run.returncode == 1
