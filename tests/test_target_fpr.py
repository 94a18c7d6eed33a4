"""``target_fpr`` (an option, not the paper's): a threshold calibrated to a false-positive rate.

The paper flags an input below ``mu - tau sigma`` of its class's reference scores with a fixed tau (2.5),
whatever FPR that gives. With ``target_fpr=a`` the detector sets tau itself: on the standardised
*suspicion* scale (``(mu_t - score) / sigma_t``, the same for every class) it takes the split-conformal
order statistic of benign calibration scores. With ``n`` calibration scores sorted ascending, the threshold
is the ``k``-th, ``k = ceil((n + 1)(1 - a))``, and an input is flagged strictly above it: if a new benign
score is exchangeable with the ``n``, it lands strictly above the ``k``-th with probability at most
``(n + 1 - k) / (n + 1) <= a``.
"""
import numpy as np
import pytest
import torch

from analysis.detection import LayerwiseDetector, ReferenceWarning
from analysis.metrics import conformal_threshold
from analysis.similarity import cosine_to, leave_one_out_cosine

pytestmark = pytest.mark.filterwarnings("ignore::analysis.detection.ReferenceWarning")


# ---------------------------------------------------------------------- the order statistic, by hand
def test_the_threshold_is_the_k_th_smallest_calibration_score():
    scores = np.arange(1.0, 20.0)  # n = 19 scores 1..19
    # k = ceil(20 * 0.95) = 19: the largest; k = ceil(20 * 0.9) = 18; k = ceil(20 * 0.5) = 10
    assert conformal_threshold(scores, 0.05) == 19.0
    assert conformal_threshold(scores, 0.10) == 18.0
    assert conformal_threshold(scores, 0.50) == 10.0
    # the order of the calibration scores does not matter
    assert conformal_threshold(scores[::-1], 0.10) == 18.0


def test_too_few_calibration_scores_flag_nothing():
    # n = 18 at a = 0.05: k = ceil(19 * 0.95) = 19 > n, so no calibration score is high enough
    assert conformal_threshold(np.arange(18.0), 0.05) == np.inf


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, float("nan"), True, "0.05"])
def test_a_target_outside_0_1_is_refused(bad):
    with pytest.raises(ValueError, match="target_fpr"):
        conformal_threshold(np.arange(10.0), bad)
    with pytest.raises(ValueError, match="target_fpr"):
        LayerwiseDetector(target_fpr=bad).fit_features(*_reference())


def test_the_guarantee_holds_on_average_over_calibration_draws():
    """For exchangeable scores the FPR, averaged over calibration sets, is at most the target (and close to it)."""
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(2000):
        calibration, new = rng.standard_normal(39), rng.standard_normal(200)
        rates.append(np.mean(new > conformal_threshold(calibration, 0.05)))
    # n = 39: k = ceil(40 * 0.95) = 38, so the expected FPR is exactly (40 - 38) / 40 = 0.05
    assert np.mean(rates) == pytest.approx(0.05, abs=0.003)


# ---------------------------------------------------------------------- in the detector
rng = np.random.default_rng(1)


def _reference(per_class: int = 30, layers: int = 6):
    labels = np.repeat([0, 1], per_class)
    directions = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    features = [directions[labels] + rng.normal(scale=0.5, size=(len(labels), 3)) for _ in range(layers)]
    return features, labels


def test_the_default_is_the_papers_fixed_tau():
    assert LayerwiseDetector().target_fpr is None
    features, labels = _reference()
    assert not hasattr(LayerwiseDetector().fit_features(features, labels), "calibrated_tau_")


def test_leave_one_out_cosine_is_the_cosine_to_the_centroid_without_the_sample():
    features = rng.normal(size=(7, 4))
    center = torch.from_numpy(features.mean(0))
    expected = [cosine_to(features[[i]], torch.from_numpy(np.delete(features, i, 0).mean(0))).item() for i in range(7)]
    np.testing.assert_allclose(leave_one_out_cosine(features, center, 7).numpy(), expected)


def test_the_reference_calibration_scores_each_sample_as_if_left_out():
    """score="sum": sample i's suspicion is (mu - s) / sigma with s its summed leave-one-out cosine at the
    scored layers and mu, sigma the mean and std of the *other* samples' (in-sample) scores."""
    features, labels = _reference()
    det = LayerwiseDetector(target_fpr=0.1).fit_features(features, labels)
    columns = [layer - 1 for layer in det.score_layers_[0]]
    rows = np.flatnonzero(labels == 0)
    for k in (0, 5):
        center_without = [torch.from_numpy(np.delete(f[rows], k, 0).mean(0)) for f in features]
        held_out = sum(cosine_to(features[c][[rows[k]]], center_without[c]).item() for c in columns)
        others = np.delete(det.reference_scores_[0], k)
        assert det._leave_one_out_suspicion()[rows[k]] == pytest.approx((others.mean() - held_out) / others.std())


@pytest.mark.parametrize("score", ["sum", "trajectory"])
def test_after_fit_the_effective_tau_is_the_conformal_threshold_of_the_pooled_left_out_suspicion(score):
    features, labels = _reference()
    det = LayerwiseDetector(score=score, target_fpr=0.1).fit_features(features, labels)
    pooled = det._leave_one_out_suspicion()
    # n = 60 pooled scores: k = ceil(61 * 0.9) = 55
    assert det.calibrated_tau_ == pytest.approx(np.sort(pooled)[54])
    assert det.calibration_ == "leave-one-out" and det.calibration_size_ == 60
    # left out, a sample looks less normal than in-sample
    in_sample = np.concatenate([det.suspicion_from_scores(det.reference_scores_[t], np.full(30, t)) for t in (0, 1)])
    assert np.mean(pooled) > np.mean(in_sample[np.argsort(np.r_[np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)])])
    # the calibrated tau replaces tau everywhere a threshold is applied ...
    probe = [f[:10] for f in features]
    scores = det.score_features(probe, labels[:10])
    np.testing.assert_array_equal(det.flag_scores(scores, labels[:10]),
                                  det.suspicion_from_scores(scores, labels[:10]) > det.calibrated_tau_)
    assert det.thresholds() == det.thresholds(tau=det.calibrated_tau_)
    # ... unless a tau is passed explicitly
    np.testing.assert_array_equal(det.flag_scores(scores, labels[:10], tau=2.5),
                                  LayerwiseDetector(score=score).fit_features(features, labels)
                                  .flag_scores(scores, labels[:10]))


@pytest.mark.parametrize("score", ["sum", "trajectory"])
def test_new_benign_inputs_are_flagged_at_about_the_target_rate(score):
    features, labels = _reference(per_class=100)
    fresh, fresh_labels = _reference(per_class=2000)
    det = LayerwiseDetector(score=score, target_fpr=0.05).fit_features(features, labels)
    fpr = det.predict_features(fresh, fresh_labels).mean()
    assert 0.02 <= fpr <= 0.08, fpr


def test_calibrate_on_held_out_benign_scores():
    features, labels = _reference()
    held_out, held_labels = _reference(per_class=50)
    det = LayerwiseDetector(target_fpr=0.05).fit_features(features, labels)
    scores = det.score_features(held_out, held_labels)
    assert det.calibrate_scores(scores, held_labels) is det
    assert det.calibration_ == "held-out" and det.calibration_size_ == 100
    # n = 100: k = ceil(101 * 0.95) = 96
    assert det.calibrated_tau_ == pytest.approx(np.sort(det.suspicion_from_scores(scores, held_labels))[95])
    assert det.flag_scores(scores, held_labels).mean() <= 0.05


def test_calibration_needs_a_target_and_enough_scores():
    features, labels = _reference()
    with pytest.raises(ValueError, match="target_fpr"):
        LayerwiseDetector().fit_features(features, labels).calibrate_scores(np.zeros(4), [0, 0, 1, 1])
    det = LayerwiseDetector(target_fpr=0.01).fit_features(features, labels)  # 60 < 1 / 0.01 - 1 = 99
    assert det.calibrated_tau_ == np.inf
    with pytest.warns(ReferenceWarning, match="too few"):
        LayerwiseDetector(target_fpr=0.01).fit_features(features, labels)
    assert not det.predict_features([f[:5] for f in features], labels[:5]).any()


def test_target_fpr_set_after_fit_is_not_silently_ignored():
    features, labels = _reference()
    det = LayerwiseDetector().fit_features(features, labels)
    det.target_fpr = 0.05
    with pytest.raises(RuntimeError, match="fit again"):
        det.predict_features([f[:5] for f in features], labels[:5])


@pytest.mark.parametrize("settings", [{}, {"metric": "euclidean"}, {"score": "trajectory"}, {"target_fpr": 0.1}])
def test_decision_function_is_negative_exactly_for_flagged_inputs(settings):
    """scikit-learn's convention, whatever the raw score's direction: tau - suspicion, < 0 = flagged."""
    features, labels = _reference()
    det = LayerwiseDetector(**settings).fit_features(features, labels)
    probe, probe_labels = _reference(per_class=40)
    decision = det.decision_function_features(probe, probe_labels)
    flagged = det.predict_features(probe, probe_labels)
    assert flagged.any() and (~flagged).any()
    np.testing.assert_array_equal(decision < 0, flagged)


@pytest.mark.parametrize("settings", [{}, {"spread": "mad"}, {"metric": "euclidean"}])
def test_left_out_statistics_are_those_of_the_other_samples(settings):
    """Each sample's mu and sigma come from the other n - 1 in-sample scores (mean/std, or median/MAD)."""
    features, labels = _reference()
    det = LayerwiseDetector(target_fpr=0.1, **settings).fit_features(features, labels)
    rows = np.flatnonzero(labels == 1)
    columns = [layer - 1 for layer in det.score_layers_[1]]
    n = len(rows)
    for k in (0, 7):
        others = np.delete(det.reference_scores_[1], k)
        mu, sigma = det._location_spread(others)
        if det.metric == "euclidean":  # the distance to the centroid without the sample grows by n / (n - 1)
            held_out, sign = det.reference_distance_[rows[k], columns].sum() * n / (n - 1), 1.0
        else:
            held_out, sign = det.reference_similarity_loo_[rows[k], columns].sum(), -1.0
        assert det._leave_one_out_suspicion()[rows[k]] == pytest.approx(sign * (held_out - mu) / sigma)
