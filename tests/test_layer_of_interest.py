"""Algorithm 1: the layer of interest is where benign similarity to the class centroid jumps most.

Layers are 1-indexed as in the paper; ``mean_similarity[0]`` is layer 1.
"""
import numpy as np
import pytest

from analysis.detection import layer_of_interest


def test_largest_increase_wins():
    # L = 10, so candidates are layers 6..10, each compared with the layer before it.
    #           layer: 1    2    3    4    5    6    7     8    9     10
    cs = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.6, 0.65, 0.9, 0.95, 0.97])
    # increases: l6 = 0.10, l7 = 0.05, l8 = 0.25, l9 = 0.05, l10 = 0.02
    assert layer_of_interest(cs) == 8


def test_ties_keep_the_first_layer():
    # binary fractions, so the three equal increases are exactly equal in floating point
    cs = np.array([0.5] * 5 + [0.625, 0.75, 0.75, 0.875, 0.875])  # l6, l7 and l9 all rise by 0.125
    assert layer_of_interest(cs) == 6


def test_first_half_is_ignored():
    # A huge jump at layer 3 (and at layer 5 = floor(L/2), which only serves as the baseline of layer 6).
    cs = np.array([0.0, 0.0, 0.9, 0.9, 0.2, 0.3, 0.35, 0.36, 0.37, 0.38])
    assert layer_of_interest(cs) == 6  # +0.1 at layer 6 is the largest candidate increase


def test_all_decreasing_returns_smallest_drop():
    cs = np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.3, 0.1, 0.0])
    # increases: l6 -0.10, l7 -0.05, l8 -0.15, l9 -0.2, l10 -0.1
    assert layer_of_interest(cs) == 7


def test_odd_number_of_layers_uses_the_integer_part():
    # L = 19 (MobileNetV2): floor(19 / 2) = 9, candidates are layers 10..19.
    cs = np.zeros(19)
    cs[8] = 1.0  # layer 9 rises by 1.0 over layer 8, the largest rise, but layer 9 is not a candidate
    cs[9] = 1.5  # layer 10 rises by 0.5 over layer 9; layer 11 falls by 1.5; the others stay flat
    assert layer_of_interest(cs) == 10


def test_loi_minus_two_always_exists():
    for n_layers in range(4, 30):
        cs = np.zeros(n_layers)
        cs[n_layers // 2] = 1.0  # makes layer floor(L/2)+1 the LOI, the earliest possible
        loi = layer_of_interest(cs)
        assert loi == n_layers // 2 + 1 and loi - 2 >= 1


def test_too_few_layers_or_nan_raise():
    with pytest.raises(ValueError, match="at least 4 layers"):
        layer_of_interest([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="non-finite"):
        layer_of_interest([0.1, 0.2, 0.3, np.nan, 0.5, 0.6])
