"""Settings for a parallel run of the whole suite (``pytest -n 2``, pytest-xdist, ``--dist loadfile``).

Each worker is one process. ``--dist loadfile`` (``pyproject.toml``) sends every item of a file to one worker,
in file order, so a notebook's nbval cells run in order in one kernel, on pytest 8 and 9 alike (the
``xdist_group`` marker this file used to add stopped taking effect under pytest 9: a notebook's cells were
spread over both workers and each ran as ``In[1]`` in a fresh kernel). That property is checked here on every
run: each notebook cell reports the worker and the kernel it ran in, and the session fails if one notebook
used two (``tests/test_notebook_grouping.py`` checks the same on a small notebook in a child run).

Under xdist every worker and every kernel it starts (nbval's, JupyterLab's) gets one OpenMP/torch thread, so
that two workers on a 2-core machine do not oversubscribe it.
"""
from __future__ import annotations

import os
from collections import defaultdict

import pytest
import torch

#: The user property a notebook cell's report carries: ``"<worker> <kernel id>"``.
KERNEL_PROPERTY = "notebook_kernel"


def xdist_workers() -> int:
    """How many xdist workers this run has (1 when it is not a parallel run)."""
    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


def pytest_configure(config):
    if "PYTEST_XDIST_WORKER" in os.environ and xdist_workers() > 1:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "PYTEST_XDIST_WORKER" not in os.environ:
        config.pluginmanager.register(NotebookKernels(), "notebook-kernels")


@pytest.fixture(autouse=True)
def _threads():
    """Two torch threads per test, or one per worker in a parallel run."""
    torch.set_num_threads(1 if xdist_workers() > 1 else 2)


def _is_notebook_cell(item) -> bool:
    return type(item).__name__ == "IPyNbCell"


def _kernel_id(item) -> str:
    """The kernel an nbval cell runs in: its connection file, unique to each kernel start."""
    kernel = getattr(item.parent, "kernel", None)
    return str(getattr(getattr(kernel, "km", None), "connection_file", None) or f"{os.getpid()}:{id(kernel)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Tag each executed notebook cell's report with the worker and the kernel that ran it."""
    outcome = yield
    if call.when == "call" and _is_notebook_cell(item):
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        outcome.get_result().user_properties.append((KERNEL_PROPERTY, f"{worker} {_kernel_id(item)}"))


class NotebookKernels:
    """On the controller (or the only process): the kernels each notebook's cells ran in; two fail the run."""

    def __init__(self):
        self.kernels = defaultdict(set)

    def pytest_runtest_logreport(self, report):
        for name, value in report.user_properties:
            if name == KERNEL_PROPERTY and report.when == "call":
                self.kernels[report.nodeid.split("::")[0]].add(value)

    def pytest_sessionfinish(self, session):
        split = {notebook: sorted(kernels) for notebook, kernels in self.kernels.items() if len(kernels) > 1}
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        for notebook, kernels in split.items():
            if reporter is not None:
                reporter.write_line(f"notebook cells split: {notebook} ran in {len(kernels)} kernels "
                                    f"({', '.join(kernels)})", red=True)
        if split:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
