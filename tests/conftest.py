import os

import numpy as np
import pytest
import torch

from analysis.data import load_digits


@pytest.fixture(autouse=True)
def _threads():
    # Two threads, or one per worker in a parallel run (pytest -n 2: the root conftest.py).
    torch.set_num_threads(1 if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1 else 2)


@pytest.fixture(scope="session")
def digits():
    return load_digits(seed=0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
