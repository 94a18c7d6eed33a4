"""Settings for a parallel run of the whole suite (``pytest -n 2``, pytest-xdist, ``--dist loadgroup``).

Each worker is one process; test functions are spread over the workers one by one, but a notebook's nbval
cells run in order in one kernel, so all the cells of a notebook are put in one group (one worker). Under
xdist every worker and every kernel it starts (nbval's, JupyterLab's) gets one OpenMP/torch thread, so that
two workers on a 2-core machine do not oversubscribe it.
"""
from __future__ import annotations

import os

import pytest
import torch


def xdist_workers() -> int:
    """How many xdist workers this run has (1 when it is not a parallel run)."""
    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


def pytest_configure(config):
    if "PYTEST_XDIST_WORKER" in os.environ and xdist_workers() > 1:
        os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _threads():
    """Two torch threads per test, or one per worker in a parallel run."""
    torch.set_num_threads(1 if xdist_workers() > 1 else 2)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return
    for item in items:
        if type(item).__name__ == "IPyNbCell":
            item.add_marker(pytest.mark.xdist_group(name=f"notebook-{item.path.name}"))
