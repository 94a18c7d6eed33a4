import numpy as np
import pytest
import torch

from analysis.data import load_digits


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def digits():
    return load_digits(seed=0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
