"""The layer-wise Gaussian detector (not in the paper): per-layer class Gaussians, cross-fitted, a threshold for a target FPR.

Read top to bottom, these tests state the method (:mod:`analysis.defenses.gaussian`):

1. at each layer, an input's score is its squared Mahalanobis distance to the mean of the class it is predicted
   as, under one Ledoit-Wolf covariance pooled over the classes, divided by ``1 + 1/n_c``;
2. the reference samples' distances are cross-fitted (each fold scored by Gaussians fitted on the others);
3. per layer, ``log`` distances are standardised by the median and 1.4826 × MAD of those cross-fitted values;
4. the per-layer z-scores are combined (max by default) and thresholded at the split-conformal order statistic
   of the cross-fitted reference scores for ``target_fpr``: no triggered input is ever needed.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from sklearn.covariance import LedoitWolf

from analysis.data import LabeledImages
from analysis.defenses import LayerwiseGaussianDetector, build_defense
from analysis.defenses.gaussian import _stratified_folds, layer_distances
from analysis.metrics import conformal_threshold

L, D, CLASSES = 6, 4, 3


def benign_features(n_per_class: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Every layer: class c's features scattered around 6·e_c (+ unit noise), as a well-trained model's would be."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(CLASSES), n_per_class)
    centres = 6.0 * np.eye(CLASSES, D)
    return [centres[labels] + rng.normal(size=(len(labels), D)) for _ in range(L)], labels


def test_distance_is_the_shrunk_mahalanobis_distance_to_the_class_mean_over_one_plus_one_over_n():
    features, labels = benign_features(20, seed=0)
    layer = features[0]
    means = np.stack([layer[labels == c].mean(0) for c in range(CLASSES)])
    precision = LedoitWolf(assume_centered=True).fit(layer - means[labels]).precision_
    x = np.array([[1.0, -2.0, 0.5, 0.0]])
    expected = (x[0] - means[2]) @ precision @ (x[0] - means[2]) / (1 + 1 / 20)
    got = layer_distances([layer], labels, [x], np.array([2]))
    assert got.shape == (1, 1)
    assert got[0, 0] == pytest.approx(expected)
    assert np.isnan(layer_distances([layer], labels, [x], np.array([7]))[0, 0])  # a class never seen: NaN, not 0


def test_folds_are_stratified_and_seeded():
    labels = np.repeat([0, 1, 2], [6, 9, 30])
    folds = _stratified_folds(labels, 5, seed=0)
    for c in (0, 1, 2):
        counts = np.bincount(folds[labels == c], minlength=5)
        assert counts.max() - counts.min() <= 1  # each class dealt evenly over the folds
    np.testing.assert_array_equal(folds, _stratified_folds(labels, 5, seed=0))


def test_threshold_is_the_conformal_statistic_of_the_cross_fitted_reference_scores():
    features, labels = benign_features(40, seed=1)
    detector = LayerwiseGaussianDetector(target_fpr=0.05).fit_features(features, labels)
    assert detector.calibration_ == "cross-fitted" and detector.calibration_size_ == len(labels)
    assert detector.threshold_ == conformal_threshold(detector.reference_suspicion_, 0.05)
    # step 3: per layer, the cross-fitted log distances have median 0 and MAD-scale 1
    z = detector.location_, detector.scale_
    assert z[0].shape == (L,) and np.all(z[1] > 0)


def test_an_input_whose_middle_layers_belong_to_another_class_is_flagged_and_benign_inputs_mostly_are_not():
    """The backdoor's signature: predicted (and last layers) as the target, intermediate layers still the source."""
    features, labels = benign_features(40, seed=2)
    detector = LayerwiseGaussianDetector(target_fpr=0.01).fit_features(features, labels)
    new, new_labels = benign_features(400, seed=3)
    benign_flags = detector.suspicion_features(new, new_labels) > detector.threshold_
    assert benign_flags.mean() <= 0.03  # target 1 %: finite-sample slack on 1,200 inputs
    poisoned = [f[new_labels == 0][:50].copy() for f in new]  # source class 0
    for layer in (4, 5):  # the last two layers have moved to the target class 2
        poisoned[layer] += 3.0 * (np.eye(CLASSES, D)[2] - np.eye(CLASSES, D)[0])
    suspicion = detector.suspicion_features(poisoned, np.full(50, 2))
    assert np.all(suspicion > detector.threshold_)


@pytest.mark.parametrize("aggregate", ["max", "mean", "mahalanobis"])
def test_every_aggregate_separates_the_planted_inputs(aggregate):
    features, labels = benign_features(40, seed=4)
    detector = LayerwiseGaussianDetector(aggregate=aggregate).fit_features(features, labels)
    shifted = [f[labels == 0][:10] for f in features]
    shifted = [f + (5.0 if i < 3 else 0.0) for i, f in enumerate(shifted)]
    assert np.all(detector.suspicion_features(shifted, np.zeros(10, int)) > detector.threshold_)


def test_settings_are_checked_with_their_names():
    features, labels = benign_features(10, seed=5)
    with pytest.raises(ValueError, match="aggregate"):
        LayerwiseGaussianDetector(aggregate="median").fit_features(features, labels)
    with pytest.raises(ValueError, match="folds"):
        LayerwiseGaussianDetector(folds=1).fit_features(features, labels)
    with pytest.raises(ValueError, match="target_fpr"):
        LayerwiseGaussianDetector(target_fpr=1.5).fit_features(features, labels)
    few = np.array([0] * 3 + [1] * 10)
    with pytest.raises(ValueError, match=r"folds=5 samples .*\{0: 3\}"):
        LayerwiseGaussianDetector().fit_features([f[:13] for f in features], few)


class Tiny(nn.Module):
    """A small CNN with the paper-layer attribute the detectors read; counts its forward passes."""

    paper_layers = ["conv1", "conv2", "conv3", "conv4", "fc"]

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.conv3, self.conv4 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)
        self.passes = 0

    def forward(self, x):
        self.passes += 1
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = torch.relu(conv(x))
        return self.fc(x.mean((2, 3)))


def test_on_a_model_detection_costs_one_forward_pass_and_is_registered():
    torch.manual_seed(0)
    model = Tiny().eval()
    reference = LabeledImages(torch.rand(30, 3, 8, 8), torch.arange(30) % 3)
    detector = build_defense("layerwise-gaussian", target_fpr=0.1).fit(model, reference)
    assert detector.layer_names_ == Tiny.paper_layers and detector.n_layers_ == 5
    model.passes = 0
    found = detector.detect(model, torch.rand(12, 3, 8, 8))
    assert model.passes == 1  # one batch, one pass: features and the prediction together
    assert found.scores.shape == (12,) and found.flagged.dtype == bool
    np.testing.assert_array_equal(found.flagged, found.scores > detector.threshold_)


def test_target_fpr_changed_after_fit_is_recomputed_and_structural_settings_are_refused():
    torch.manual_seed(0)
    model = Tiny().eval()
    reference = LabeledImages(torch.rand(30, 3, 8, 8), torch.arange(30) % 3)
    detector = LayerwiseGaussianDetector(target_fpr=0.1).fit(model, reference)
    x = torch.rand(6, 3, 8, 8)
    detector.set_params(target_fpr=0.2)
    found = detector.detect(model, x)
    assert detector.threshold_ == conformal_threshold(detector.reference_suspicion_, 0.2)
    np.testing.assert_array_equal(found.flagged, found.scores > detector.threshold_)
    detector.aggregate = "mean"
    with pytest.raises(ValueError, match="aggregate: changed after fit.*refit"):
        detector.detect(model, x)
