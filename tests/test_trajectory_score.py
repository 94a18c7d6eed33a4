"""``score="trajectory"`` (an option, not the paper's): the whole layer-wise trajectory, standardised per layer.

The paper sums an input's cosine similarity at LOI-2..LOI. The trajectory score standardises the
similarity at *every* layer by the predicted class's reference mean and std there, and measures the
squared Mahalanobis distance of that vector of z-scores (one pooled, shrunk covariance). A trigger that
makes its inputs diverge at a layer outside LOI-2..LOI is invisible to the sum and plain to the
trajectory; the default stays the paper's.
"""
import numpy as np
import pytest
from sklearn.covariance import LedoitWolf

from analysis.detection import LayerwiseDetector
from analysis.detection_options import TRAJECTORY_STD_FLOOR

pytestmark = pytest.mark.filterwarnings("ignore::analysis.detection.ReferenceWarning")
rng = np.random.default_rng(0)
N_PER_CLASS, L = 40, 6


def _reference():
    """Two classes; at layer l a sample's feature is its class direction plus noise that shrinks with depth."""
    labels = np.repeat([0, 1], N_PER_CLASS)
    directions = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    features = [directions[labels] + rng.normal(scale=0.6 / (1 + l), size=(len(labels), 3)) for l in range(L)]
    return features, labels


def test_the_default_is_the_papers_sum():
    assert LayerwiseDetector().score == "sum"


def test_scores_are_squared_mahalanobis_distances_of_standardised_similarities():
    features, labels = _reference()
    det = LayerwiseDetector(score="trajectory").fit_features(features, labels)
    assert det.score_layers_[0] == tuple(range(1, L + 1))  # every layer, not LOI-2..LOI
    cos = det.reference_similarity_  # [N, L]
    z = np.zeros_like(cos)
    for t in (0, 1):
        rows = labels == t
        mean, std = cos[rows].mean(0), np.maximum(cos[rows].std(0), TRAJECTORY_STD_FLOOR)
        np.testing.assert_allclose(det.trajectory_mean_[t], mean)
        z[rows] = (cos[rows] - mean) / std
    precision = LedoitWolf(assume_centered=True).fit(z).precision_
    expected = np.einsum("ij,jk,ik->i", z, precision, z)
    np.testing.assert_allclose(det.reference_scores_[0], expected[labels == 0])
    # a new input's score is computed the same way, from its similarities to its predicted class's centroids
    probe = [f[:3] for f in features]
    np.testing.assert_allclose(det.score_features(probe, [0, 0, 0]), expected[:3])
    # higher = more suspicious: flagged above mu + tau sigma, from the reference distances of all classes together
    assert det.mu_[0] == det.mu_[1] == pytest.approx(expected.mean())
    assert det.sigma_[1] == pytest.approx(expected.std())
    assert det.thresholds()[0] == pytest.approx(expected.mean() + 2.5 * expected.std())


def test_a_divergence_outside_loi_minus_2_to_loi_is_caught_by_the_trajectory_only():
    features, labels = _reference()
    paper = LayerwiseDetector().fit_features(features, labels)
    trajectory = LayerwiseDetector(score="trajectory").fit_features(features, labels)
    outside = max(layer for layer in range(1, L + 1) if layer not in paper.score_layers_[0])  # after the LOI
    # an input of class 0 that looks like class 0 everywhere but points elsewhere at one unscored layer, where
    # the class's reference samples agree closely (small std): the sum never reads it, the trajectory does
    probe = [np.array([[1.0, 0.0, 0.0]]) for _ in range(L)]
    probe[outside - 1] = np.array([[0.0, 0.0, 1.0]])
    assert paper.predict_features(probe, [0]).tolist() == [False]
    assert trajectory.predict_features(probe, [0]).tolist() == [True]


def test_the_trajectory_needs_cosine_similarities():
    features, labels = _reference()
    with pytest.raises(ValueError, match="score: 'trajectory' standardises cosine similarities; it needs metric='cosine'"):
        LayerwiseDetector(score="trajectory", metric="euclidean").fit_features(features, labels)
    with pytest.raises(ValueError, match="score: expected 'sum' or 'trajectory', got 'max'"):
        LayerwiseDetector(score="max").fit_features(features, labels)


def test_score_layers_restrict_the_trajectory():
    features, labels = _reference()
    det = LayerwiseDetector(score="trajectory", score_layers=[4, 5, 6]).fit_features(features, labels)
    assert det.trajectory_precision_.shape == (3, 3) and det.score_layers_[1] == (4, 5, 6)
