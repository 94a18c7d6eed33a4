"""The layer-wise detector on precomputed features (Algorithm 2), with hand-computed numbers."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sklearn.exceptions import NotFittedError

from analysis.detection import LayerwiseDetector

# The hand-computed cases use classes of 2 to 6 samples on purpose, small enough to follow by hand: the
# detector warns (ReferenceWarning) that such classes give unreliable thresholds; tests/test_reference_classes.py
# tests that warning.
pytestmark = pytest.mark.filterwarnings("ignore::analysis.detection.ReferenceWarning")

# Two reference samples (a, b) of class 0, L = 4 layers, 2-D features per layer.
#   layer 1: a=[1,0] b=[0,1] -> centroid [.5,.5]  -> cos a = cos b = 1/sqrt(2)
#   layer 2: a=[1,0] b=[1,1] -> centroid [1,.5]   -> cos a = 1/sqrt(1.25), cos b = 1.5/(sqrt(2) sqrt(1.25))
#   layer 3: a=[1,0] b=[2,0] -> centroid [1.5,0]  -> cos = 1, 1
#   layer 4: a=[1,0] b=[1,0] -> centroid [1,0]    -> cos = 1, 1
# floor(L/2) = 2, so the LOI is 3 or 4: layer 3 rises by 1 - mean(layer 2) > 0, layer 4 by 0 -> LOI = 3,
# and the scored layers are 1, 2, 3.
FEATURES = [
    np.array([[1.0, 0.0], [0.0, 1.0]]),
    np.array([[1.0, 0.0], [1.0, 1.0]]),
    np.array([[1.0, 0.0], [2.0, 0.0]]),
    np.array([[1.0, 0.0], [1.0, 0.0]]),
]
LABELS = np.array([0, 0])
COS_A = [1 / np.sqrt(2), 1 / np.sqrt(1.25), 1.0, 1.0]
COS_B = [1 / np.sqrt(2), 1.5 / (np.sqrt(2) * np.sqrt(1.25)), 1.0, 1.0]
SCORE_A, SCORE_B = sum(COS_A[:3]), sum(COS_B[:3])
MU, SIGMA = (SCORE_A + SCORE_B) / 2, abs(SCORE_A - SCORE_B) / 2  # population std of two values


def test_hand_computed_fit():
    det = LayerwiseDetector().fit_features(FEATURES, LABELS)
    assert det.n_layers_ == 4 and det.classes_.tolist() == [0]
    np.testing.assert_allclose(det.centroids_[0][1].numpy(), [1.0, 0.5])
    np.testing.assert_allclose(det.mean_similarity_[0], (np.array(COS_A) + COS_B) / 2)
    assert det.loi_[0] == 3
    assert det.score_layers_[0] == (1, 2, 3)
    np.testing.assert_allclose(det.reference_scores_[0], [SCORE_A, SCORE_B])
    assert det.mu_[0] == pytest.approx(MU)
    assert det.sigma_[0] == pytest.approx(SIGMA)  # ddof = 0


def test_threshold_is_mu_minus_tau_sigma():
    det = LayerwiseDetector(tau=2.5).fit_features(FEATURES, LABELS)
    assert det.thresholds()[0] == pytest.approx(MU - 2.5 * SIGMA)
    # An input orthogonal to every centroid scores 0 and is flagged; a reference sample is not.
    probe = [np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([[-0.5, 1.0], [1.0, 0.0]]),
             np.array([[0.0, 1.0], [2.0, 0.0]]), np.array([[0.0, 1.0], [1.0, 0.0]])]
    scores = det.score_features(probe, [0, 0])
    assert scores[0] == pytest.approx(1 / np.sqrt(2) + 0.0 + 0.0)  # (0,1)·(.5,.5); (-.5,1)·(1,.5) = 0; (0,1)·(1.5,0)
    assert scores[1] == pytest.approx(SCORE_A)
    assert det.predict_features(probe, [0, 0]).tolist() == [True, False]


def test_tau_moves_the_threshold():
    det = LayerwiseDetector().fit_features(FEATURES, LABELS)
    score = MU - 1.5 * SIGMA  # between the tau = 1 and tau = 2 thresholds
    assert det.flag_scores([score], [0], tau=1.0).tolist() == [True]
    assert det.flag_scores([score], [0], tau=2.0).tolist() == [False]


def test_a_score_exactly_at_the_threshold_is_benign():
    """The paper flags a score *below* mu - tau sigma (strict <); above mu + tau sigma for Euclidean distances."""
    det = LayerwiseDetector(tau=2.0).fit_features(FEATURES, LABELS)
    at = det.thresholds()[0]
    assert det.flag_scores([at, np.nextafter(at, -np.inf)], [0, 0]).tolist() == [False, True]
    far = LayerwiseDetector(tau=2.0, metric="euclidean").fit_features(FEATURES, LABELS)
    at = far.thresholds()[0]
    assert far.flag_scores([at, np.nextafter(at, np.inf)], [0, 0]).tolist() == [False, True]


@pytest.mark.parametrize("bad", [float("nan"), -0.5, float("inf"), True, "2.5"])
def test_tau_is_checked_where_it_is_used(bad):
    # NaN would flag nothing and a negative tau everything, silently: both are refused at scoring time too,
    # whether passed to the call or set on the detector after fit.
    det = LayerwiseDetector().fit_features(FEATURES, LABELS)
    with pytest.raises(ValueError, match=r"^tau: expected a finite number >= 0"):
        det.flag_scores([MU], [0], tau=bad)
    with pytest.raises(ValueError, match=r"^tau: expected a finite number >= 0"):
        det.thresholds(tau=bad)
    det.tau = bad
    with pytest.raises(ValueError, match=r"^tau \(the detector's setting\): expected a finite number >= 0"):
        det.predict_features(FEATURES, LABELS)


def test_euclidean_metric_flags_large_distances():
    det = LayerwiseDetector(metric="euclidean").fit_features(FEATURES, LABELS)
    # distances to centroids: layer 1: sqrt(.5) each; layer 2: .5 each; layer 3: .5 each
    np.testing.assert_allclose(det.reference_scores_[0], [np.sqrt(0.5) + 1.0] * 2)
    assert det.loi_[0] == 3  # located with cosine, as in the paper
    far = [np.array([[9.0, 9.0]]), np.array([[9.0, 9.0]]), np.array([[9.0, 9.0]]), np.array([[1.0, 0.0]])]
    assert det.predict_features(far, [0]).tolist() == [True]
    assert det.thresholds()[0] == pytest.approx(np.sqrt(0.5) + 1.0)  # sigma = 0


def test_fixed_score_layers_replace_the_loi_rule():
    det = LayerwiseDetector(score_layers=[4]).fit_features(FEATURES, LABELS)
    assert det.loi_[0] == 3  # still reported
    assert det.score_layers_[0] == (4,)
    np.testing.assert_allclose(det.reference_scores_[0], [1.0, 1.0])


def test_classes_are_fitted_separately(rng):
    feats = [rng.normal(size=(40, 5)) for _ in range(6)]
    labels = np.repeat([0, 1], 20)
    feats_one = [f[:20] for f in feats]
    both = LayerwiseDetector().fit_features(feats, labels)
    alone = LayerwiseDetector().fit_features(feats_one, labels[:20])
    assert both.loi_[0] == alone.loi_[0] and both.mu_[0] == pytest.approx(alone.mu_[0])


def test_numpy_and_torch_features_agree(rng):
    feats = [rng.normal(size=(30, 4)) + 2 for _ in range(6)]
    labels = np.repeat([0, 1, 2], 10)
    a = LayerwiseDetector().fit_features(feats, labels)
    b = LayerwiseDetector().fit_features([torch.from_numpy(f).float() for f in feats], torch.from_numpy(labels))
    assert a.loi_ == b.loi_
    np.testing.assert_allclose([a.mu_[t] for t in range(3)], [b.mu_[t] for t in range(3)], rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(1e-3, 1e3), seed=st.integers(0, 1000))
def test_cosine_scores_ignore_feature_scale(scale, seed):
    """Scaling every feature vector by a positive number changes no cosine, so nothing learned changes."""
    rng = np.random.default_rng(seed)
    feats = [np.abs(rng.normal(size=(12, 3))) + 0.1 for _ in range(5)]
    labels = np.repeat([0, 1], 6)
    a = LayerwiseDetector().fit_features(feats, labels)
    b = LayerwiseDetector().fit_features([f * scale for f in feats], labels)
    assert a.loi_ == b.loi_
    for t in (0, 1):
        assert b.mu_[t] == pytest.approx(a.mu_[t], rel=1e-9)
        assert b.sigma_[t] == pytest.approx(a.sigma_[t], rel=1e-6, abs=1e-12)
    # scaling a single input does not change its score either
    one = [f[:1] for f in feats]
    assert b.score_features([f * 7.0 for f in one], [0])[0] == pytest.approx(a.score_features(one, [0])[0])


def test_layerwise_similarity_matrix():
    det = LayerwiseDetector().fit_features(FEATURES, LABELS)
    matrix = det.layerwise_similarity_features(FEATURES, LABELS)
    np.testing.assert_allclose(matrix, [COS_A, COS_B])


# ---------------------------------------------------------------------- bad input
def test_a_class_with_one_reference_sample_is_refused():
    with pytest.raises(ValueError, match=r"at least 2 reference samples.*\{3: 1\}"):
        LayerwiseDetector().fit_features([np.ones((3, 2))] * 4, [0, 0, 3])


def test_empty_nan_and_mismatched_inputs_are_refused():
    det = LayerwiseDetector()
    with pytest.raises(ValueError, match="no samples"):
        det.fit_features([np.ones((0, 2))] * 4, np.array([], dtype=int))
    bad = [f.copy() for f in FEATURES]
    bad[2][0, 0] = np.nan
    with pytest.raises(ValueError, match=r"features\[2\] \(layer 3\): contains NaN"):
        det.fit_features(bad, LABELS)
    with pytest.raises(ValueError, match=r"features\[0\] \(layer 1\): 2 rows, but 3 labels"):
        det.fit_features(FEATURES, [0, 0, 0])
    with pytest.raises(ValueError, match="at least 4 layers"):
        det.fit_features(FEATURES[:3], LABELS)
    with pytest.raises(TypeError, match="one \\[N, D_l\\] array per layer"):
        det.fit_features(np.ones((2, 2)), LABELS)
    det.fit_features(FEATURES, LABELS)
    with pytest.raises(ValueError, match="fitted on 4 layers, got 3"):
        det.score_features(FEATURES[:3], LABELS)
    with pytest.raises(ValueError, match="1-D"):
        det.score_features(FEATURES, [[0, 0]])


def test_a_class_without_reference_samples_cannot_be_scored():
    with pytest.raises(ValueError, match="class 5: .*no reference samples"):
        LayerwiseDetector().fit_features(FEATURES, LABELS).predict_features(FEATURES, [0, 5])
    flagged = LayerwiseDetector(unknown_class="flag").fit_features(FEATURES, LABELS)
    assert flagged.predict_features(FEATURES, [0, 5]).tolist() == [False, True]
    ignored = LayerwiseDetector(unknown_class="ignore").fit_features(FEATURES, LABELS)
    assert ignored.predict_features(FEATURES, [0, 5]).tolist() == [False, False]
    assert np.isnan(ignored.score_features(FEATURES, [0, 5])[1])


# Six reference samples of class 0 whose layer-1 features are unit vectors at 0° (three times),
# ±60° and 180°: the centroid lies on the x-axis, so each cosine is cos(angle) = 1, 1, 1, .5, .5, -1.
# Scored on layer 1 only, the 180° sample is an outlier:
#   std: mu = mean = 0.5, sigma = sqrt(mean(x^2) - mu^2) = sqrt(0.75 - 0.25) = 0.7071
#   mad: mu = median = 0.75, sigma = 1.4826 * median(|x - 0.75|) = 1.4826 * 0.25 = 0.37065
_ANGLES = np.deg2rad([0, 0, 0, 60, -60, 180])
OUTLIER_FEATURES = [np.stack([np.cos(_ANGLES), np.sin(_ANGLES)], 1)] + [np.tile([[1.0, 0.0]], (6, 1))] * 3


def test_mad_spread_resists_an_outlying_reference_sample():
    std = LayerwiseDetector(tau=1.5, score_layers=[1]).fit_features(OUTLIER_FEATURES, np.zeros(6, int))
    mad = LayerwiseDetector(tau=1.5, score_layers=[1], spread="mad").fit_features(OUTLIER_FEATURES, np.zeros(6, int))
    np.testing.assert_allclose(std.reference_scores_[0], [1, 1, 1, 0.5, 0.5, -1], atol=1e-12)
    assert (std.mu_[0], std.sigma_[0]) == (pytest.approx(0.5), pytest.approx(np.sqrt(0.5)))
    assert (mad.mu_[0], mad.sigma_[0]) == (pytest.approx(0.75), pytest.approx(1.4826 * 0.25))
    # An input at 90° scores cos = 0: below the robust threshold 0.75 - 1.5 * 0.371 = 0.194,
    # above the paper's 0.5 - 1.5 * 0.707 = -0.561, which the outlier pulled down.
    probe = [np.array([[0.0, 1.0]])] + [np.array([[1.0, 0.0]])] * 3
    assert mad.predict_features(probe, [0]).tolist() == [True]
    assert std.predict_features(probe, [0]).tolist() == [False]


def test_bad_settings_and_unfitted_use():
    with pytest.raises(ValueError, match="metric"):
        LayerwiseDetector(metric="manhattan").fit_features(FEATURES, LABELS)
    with pytest.raises(ValueError, match="tau"):
        LayerwiseDetector(tau=-1).fit_features(FEATURES, LABELS)
    with pytest.raises(ValueError, match="spread: expected 'std' or 'mad', got 'iqr'"):
        LayerwiseDetector(spread="iqr").fit_features(FEATURES, LABELS)
    with pytest.raises(ValueError, match="score_layers"):
        LayerwiseDetector(score_layers=[0, 5]).fit_features(FEATURES, LABELS)
    with pytest.raises(NotFittedError, match="not fitted"):  # scikit-learn's error (and a RuntimeError)
        LayerwiseDetector().predict_features(FEATURES, LABELS)


def test_float64_sums_run_where_the_device_has_float64():
    """Apple's MPS has no float64: sums of its features run on the CPU; every other device keeps its own."""
    from analysis.similarity import float64_device

    assert float64_device(torch.device("mps")) == torch.device("cpu")
    assert float64_device(torch.device("cpu")) == torch.device("cpu")
    assert float64_device(torch.device("cuda", 1)) == torch.device("cuda", 1)


def test_fit_and_fit_features_are_one_computation(rng):
    """fit() streams the model's features through the same code as fit_features(): the same numbers."""
    from analysis.data import LabeledImages
    from analysis.features import extract_features
    from analysis.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet18", 3, 2).eval()
    reference = LabeledImages(torch.rand(30, 3, 32, 32), torch.arange(30) % 3)
    streamed = LayerwiseDetector(batch_size=7).fit(model, reference)  # 5 batches
    features, _ = extract_features(model, reference, streamed.layer_names_)
    whole = LayerwiseDetector().fit_features(features, reference.y)
    np.testing.assert_allclose(streamed.reference_similarity_, whole.reference_similarity_, atol=1e-6)
    assert streamed.loi_ == whole.loi_ and streamed.mu_ == pytest.approx(whole.mu_, abs=1e-6)


def test_settings_after_tau_are_keyword_only():
    assert LayerwiseDetector(3.0).tau == 3.0
    with pytest.raises(TypeError):
        LayerwiseDetector(2.5, "euclidean")  # which setting would "euclidean" be? name it
