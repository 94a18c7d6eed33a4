import numpy as np
import pytest
import torch

from analysis.data import load_digits


@pytest.fixture(scope="session")
def digits():
    return load_digits(seed=0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
