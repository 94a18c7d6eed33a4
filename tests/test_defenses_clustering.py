"""Activation Clustering and SCAn on a model whose latent features are written into the image.

``FeatureModel`` reads its "latent" features from the first row of channel 0: pixels
0..K-1 hold a one-hot class (the head predicts it), pixels K..K+D-1 the feature vector
that AC and SCAn see, stored as ``(feature + OFFSET) / SCALE`` so that pixels stay in [0, 1]
(the images' contract) and decoded by the model. So the clusters are known exactly: the poisoned
inputs of the target class sit at a far-away point of feature space.
"""
import numpy as np
import pytest
import torch
import torch.nn as nn

from analysis.data import LabeledImages
from analysis.defenses import SCAn, ActivationClustering

K, D, TARGET = 6, 8, 2
OFFSET, SCALE = 10.0, 25.0  # features in (-10, 15) <-> pixels in (0, 1)


class Slice(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        row = x[:, 0, 0, : K + D]
        return torch.cat([row[:, :K], row[:, K:] * SCALE - OFFSET], 1)


class FeatureModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.latent = Slice()
        self.head = nn.Linear(K + D, K, bias=False)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.weight[:, :K] = 10 * torch.eye(K)
        self.latent_layer = "latent"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.latent(x))


CENTRES = np.random.default_rng(0).normal(0, 1, (K, D))
TRIGGER_CENTRE = CENTRES[TARGET] + 6.0  # far from every benign centre


def images(classes: np.ndarray, features: np.ndarray) -> torch.Tensor:
    x = torch.zeros(len(classes), 3, 32, 32)
    x[np.arange(len(classes)), 0, 0, classes] = 1.0
    x[:, 0, 0, K : K + D] = (torch.as_tensor(features, dtype=torch.float32) + OFFSET) / SCALE
    return x


def benign(n_per_class: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    classes = np.repeat(np.arange(K), n_per_class)
    return images(classes, CENTRES[classes] + 0.3 * rng.normal(size=(len(classes), D))), classes


def poisoned(n: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return images(np.full(n, TARGET), TRIGGER_CENTRE + 0.3 * rng.normal(size=(n, D)))


@pytest.fixture(scope="module")
def case():
    model = FeatureModel().eval()
    ref_x, ref_y = benign(15, seed=1)
    test_x, _ = benign(30, seed=2)
    bad = poisoned(12, seed=3)  # 12 of the 42 inputs predicted as the target: 29% < 35%
    return model, LabeledImages(ref_x, torch.as_tensor(ref_y)), torch.cat([test_x, bad]), len(test_x)


def test_activation_clustering_flags_the_small_far_cluster(case):
    model, reference, x, n_benign = case
    for reduction in ("ica", "pca"):
        ac = ActivationClustering(n_components=4, reduction=reduction).fit(model, reference)
        flagged = ac.predict(model, x)
        assert flagged[n_benign:].all(), reduction
        assert flagged[:n_benign].mean() < 0.15, reduction  # unimodal classes rarely split below 35%
        scores = ac.suspicion(model, x)  # 1 - relative size of the input's cluster
        assert scores[n_benign:].min() == pytest.approx(1 - 12 / 42)


def test_activation_clustering_misses_a_poisoned_majority(case):
    # Chen et al.'s relative-size rule judges a cluster by its share: when the batch holds
    # more poisoned than benign inputs of the target, the benign ones form the small cluster.
    model, reference, _, _ = case
    x = torch.cat([benign(5, seed=4)[0], poisoned(30, seed=5)])
    flagged = ActivationClustering(n_components=4).fit(model, reference).predict(model, x)
    assert not flagged[-30:].any()


def test_activation_clustering_reference_criterion_follows_the_benign_samples(case):
    # With the reference samples clustered alongside (App. D.4), the cluster without them is
    # flagged whatever its size: the poisoned majority is caught.
    model, reference, _, _ = case
    x = torch.cat([benign(5, seed=4)[0], poisoned(30, seed=5)])
    ac = ActivationClustering(n_components=4, reduction="pca", criterion="reference").fit(model, reference)
    flagged = ac.predict(model, x)
    assert flagged[-30:].all()
    assert not flagged[:-30][np.arange(len(x) - 30) // 5 == TARGET].any()  # benign inputs of the target
    np.testing.assert_array_equal(ac.suspicion(model, x)[-30:], 1.0)  # no reference in their cluster


def test_scan_finds_the_target_class_and_its_poisoned_subgroup(case):
    model, reference, x, n_benign = case
    scan = SCAn().fit(model, reference)
    flagged = scan.predict(model, x)
    assert scan.targets_ == [TARGET]
    assert scan.class_score_[TARGET] > np.e
    assert flagged[n_benign:].all()
    assert not flagged[:n_benign].any()
    scores = scan.suspicion(model, x)
    assert scores[n_benign:].min() > scores[:n_benign].max()


def test_scan_flags_nothing_on_benign_inputs(case):
    model, reference, x, n_benign = case
    scan = SCAn().fit(model, reference)
    assert not scan.predict(model, x[:n_benign]).any()


def test_scan_global_model_separates_identity_from_variation(case):
    model, reference, _, _ = case
    scan = SCAn(n_components=D).fit(model, reference)
    # Class centres spread with variance ~1 per dimension, within-class noise with 0.3^2 = 0.09.
    assert np.trace(scan.s_e_) / D == pytest.approx(0.09, rel=0.35)
    assert np.trace(scan.s_mu_) / D > 5 * np.trace(scan.s_e_) / D


def test_features_from_named_layers(case):
    model, reference, x, n_benign = case
    scan = SCAn(layers=["latent"]).fit(model, reference)
    assert scan.layers_ == ["latent"]
    with pytest.raises(ValueError, match="layers"):
        SCAn(layers=["no.such.layer"]).fit(model, reference)
    with pytest.raises(ValueError, match="layers"):
        ActivationClustering(layers=[]).fit(model, reference)
