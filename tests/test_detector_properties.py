"""Properties the detector must have on any input (hypothesis draws the inputs).

* the LOI is the brute-force argmax of the rise over layers floor(L/2)+1..L, ties to the first;
* raising tau never flags more inputs (the flags are monotone in tau);
* the order of the reference samples changes nothing.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.detection import LayerwiseDetector, layer_of_interest

pytestmark = pytest.mark.filterwarnings("ignore::analysis.detection.ReferenceWarning")

similarities = st.lists(st.floats(-1, 1, allow_nan=False), min_size=4, max_size=30)


@given(similarities)
def test_loi_is_the_first_largest_rise_in_the_second_half(values):
    n = len(values)
    candidates = range(n // 2 + 1, n + 1)  # 1-indexed layers
    rises = [values[layer - 1] - values[layer - 2] for layer in candidates]
    assert layer_of_interest(values) == list(candidates)[int(np.argmax(rises))]  # argmax keeps the first


def _reference(seed: int, n_per_class: int = 6, n_layers: int = 5):
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n_per_class)
    features = [rng.normal(size=(len(labels), 3)) + 2 * labels[:, None] for _ in range(n_layers)]
    return features, labels


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.floats(0, 4), st.floats(0, 4))
def test_flags_are_monotone_in_tau(seed, tau_a, tau_b):
    features, labels = _reference(seed)
    detector = LayerwiseDetector().fit_features(features, labels)
    probes, _ = _reference(seed + 1)
    scores = detector.score_features(probes, labels)
    low, high = sorted((tau_a, tau_b))
    flagged_low = detector.flag_scores(scores, labels, tau=low)
    flagged_high = detector.flag_scores(scores, labels, tau=high)
    assert not np.any(flagged_high & ~flagged_low)  # everything flagged at the higher tau is flagged at the lower


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.permutations(range(12)))
def test_the_order_of_reference_samples_changes_nothing(seed, order):
    features, labels = _reference(seed)
    order = np.asarray(order)
    a = LayerwiseDetector().fit_features(features, labels)
    b = LayerwiseDetector().fit_features([f[order] for f in features], labels[order])
    assert a.loi_ == b.loi_
    for t in (0, 1):
        assert a.mu_[t] == pytest.approx(b.mu_[t], abs=1e-12) and a.sigma_[t] == pytest.approx(b.sigma_[t], abs=1e-12)
    probes, _ = _reference(seed + 1)
    np.testing.assert_allclose(a.score_features(probes, labels), b.score_features(probes, labels), atol=1e-12)
