"""Degenerate reference classes: too few samples, or samples so alike that sigma is ~0.

A class's threshold is mu - tau * sigma of its reference scores. With 2 samples, or with duplicated
images (sigma = 0), that threshold is noise or sits exactly at mu, and the class's benign inputs are
flagged wholesale. The detector warns (ReferenceWarning, which a user can turn into an error) and
``reproduce`` checks the counts before it trains anything.
"""
import warnings

import numpy as np
import pytest
import torch

from analysis import reproduce as rep
from analysis.data import DatasetSplits, LabeledImages
from analysis.detection import LayerwiseDetector
from analysis.reference_checks import MIN_CLASS_SAMPLES, ReferenceWarning, check_reference_counts

rng = np.random.default_rng(0)


def _features(labels, duplicate_class=None):
    """Four layers of random 3-D features; the rows of ``duplicate_class`` are all the same vector."""
    layers = []
    for _ in range(4):
        f = rng.normal(size=(len(labels), 3)) + 5
        if duplicate_class is not None:
            f[labels == duplicate_class] = f[labels == duplicate_class][0]
        layers.append(f)
    return layers


def test_counts_per_class():
    labels = np.array([0] * 12 + [1] * 10)
    assert check_reference_counts(labels) == {0: 12, 1: 10}


def test_a_class_with_one_sample_is_refused():
    with pytest.raises(ValueError, match=r"at least 2 reference samples; too few for \{1: 1\}"):
        check_reference_counts(np.array([0] * 12 + [1]))


def test_a_class_missing_from_the_reference_is_refused_when_the_classes_are_known():
    with pytest.raises(ValueError, match=r"classes \[2\] have no reference samples \(of 3 classes\)"):
        check_reference_counts(np.array([0] * 12 + [1] * 12), num_classes=3)


def test_fewer_than_the_minimum_warns_and_the_warning_can_refuse():
    labels = np.array([0] * MIN_CLASS_SAMPLES + [1] * 3)
    with pytest.warns(ReferenceWarning, match=r"fewer than 10 reference samples in classes \{1: 3\}"):
        LayerwiseDetector().fit_features(_features(labels), labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReferenceWarning)  # how a user refuses such a reference set
        with pytest.raises(ReferenceWarning):
            LayerwiseDetector().fit_features(_features(labels), labels)


def test_enough_distinct_samples_fit_without_a_word():
    labels = np.array([0] * 10 + [1] * 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LayerwiseDetector().fit_features(_features(labels), labels)


def test_duplicated_samples_give_sigma_zero_and_a_warning():
    labels = np.array([0] * 10 + [1] * 10)
    with pytest.warns(ReferenceWarning, match=r"classes \[1\] have \(almost\) no spread"):
        detector = LayerwiseDetector().fit_features(_features(labels, duplicate_class=1), labels)
    assert detector.sigma_[1] == pytest.approx(0.0, abs=1e-12) and detector.sigma_[0] > 0


def test_reproduce_checks_the_reference_before_training_anything(tmp_path, digits, monkeypatch):
    keep = np.flatnonzero(digits.reference.y.numpy() != 7)  # class 7 has no reference sample left
    data = DatasetSplits("digits", digits.train, digits.reference.subset(keep), digits.test, 10)
    monkeypatch.setattr(rep, "Study", lambda *a, **k: pytest.fail("a model would be trained"))
    with pytest.raises(ValueError, match=r"reference: classes \[7\] have no reference samples"):
        rep.reproduce(data, tmp_path, only=["table3"], archs=["resnet18"], progress=False, epochs=1)


def test_the_images_themselves_need_not_be_distinct_for_labeled_images():
    """LabeledImages holds any valid images; the detector, not the container, judges them as a reference."""
    images = torch.full((4, 3, 8, 8), 0.5)
    assert len(LabeledImages(images, torch.tensor([0, 0, 1, 1]))) == 4
