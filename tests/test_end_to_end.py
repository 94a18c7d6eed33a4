"""From data to a detected backdoor on digits with a small training budget, through the public API and the CLI."""
import re

import numpy as np
import pytest

from analysis.attacks import BadNets
from analysis.detection import LayerwiseDetector
from analysis.features import extract_features, paper_layers
from analysis.metrics import attack_metrics, detection_metrics
from analysis.pipeline import attacked_model
from analysis.training import TrainConfig


@pytest.fixture(scope="module")
def small_run(digits):
    # 15 epochs of ResNet-18 width 16: ~30 s on two CPU cores (8 epochs are too few to learn the trigger)
    return attacked_model(data=digits, config=TrainConfig(epochs=15, seed=0), checkpoints=None, progress=False)


def test_backdoor_is_learned_and_detected(small_run, digits):
    model, target = small_run.model, small_run.attack.target
    detector = LayerwiseDetector(tau=2.5).fit(model, digits.reference)
    on_benign, on_poisoned = detector.detect(model, digits.test), detector.detect(model, small_run.poisoned_test)
    attack = attack_metrics(model, digits.test, small_run.poisoned_test, target)
    found = detection_metrics(on_benign.flagged, on_poisoned.flagged,
                              on_benign.suspicion, on_poisoned.suspicion)
    assert attack["ma"] > 0.9 and attack["asr"] > 0.8
    assert found["tpr"] > 0.5 and found["fpr"] < 0.15
    assert found["auroc"] > 0.9
    # the paper's observation behind the score: at LOI-2..LOI, triggered inputs sent to the target are less similar
    # to the target's benign centroids than the target's own benign inputs
    reached = on_poisoned.scores[on_poisoned.predicted == target]
    benign_target = on_benign.scores[on_benign.predicted == target]
    assert np.median(reached) < np.percentile(benign_target, 10)


def test_model_path_equals_feature_path(small_run, digits):
    """fit(model, reference) is exactly fit_features on the extracted features of all paper layers."""
    model = small_run.model
    from_model = LayerwiseDetector().fit(model, digits.reference)
    feats, _ = extract_features(model, digits.reference, paper_layers(model))
    from_features = LayerwiseDetector().fit_features(feats, digits.reference.y)
    assert from_model.loi_ == from_features.loi_
    for t in range(10):
        assert from_model.mu_[t] == pytest.approx(from_features.mu_[t], rel=1e-9)
        assert from_model.sigma_[t] == pytest.approx(from_features.sigma_[t], rel=1e-6)
    sample = small_run.poisoned_test.subset(np.arange(50))
    test_feats, predicted = extract_features(model, sample, paper_layers(model))
    np.testing.assert_allclose(from_model.detect(model, sample).scores, from_features.score_features(test_feats, predicted))


def test_scoring_hooks_only_the_needed_layers(small_run, digits, monkeypatch):
    import analysis.detection as detection

    detector = LayerwiseDetector().fit(small_run.model, digits.reference)
    requested = []
    original = detection.iter_features

    def spy(model, data, layers, batch_size=256, **options):
        requested.append(list(layers))
        return original(model, data, layers, batch_size, **options)

    monkeypatch.setattr(detection, "iter_features", spy)
    detector.predict(small_run.model, digits.test)
    needed = sorted({layer for layers in detector.score_layers_.values() for layer in layers})
    assert requested == [[paper_layers(small_run.model)[layer - 1] for layer in needed]]
    assert len(needed) < 10


def test_demo_command_with_a_checkpoint(tmp_path, small_run, digits):
    from analysis.checkpoints import save_checkpoint
    from analysis.cli import main

    from analysis.pipeline import model_definition

    # saved as what `demo` asks for (BadNets, the cpu profile, digits' training split): it is loaded, not trained
    definition = model_definition("digits", "resnet18", 16, 10, BadNets(), TrainConfig.cpu("resnet18"), digits.train)
    save_checkpoint(small_run.model, "digits-resnet18-badnets", definition, tmp_path)
    out = tmp_path / "report.html"
    assert main(["demo", "--checkpoints", str(tmp_path), "--out", str(out), "--no-progress"]) == 0
    html = out.read_text()
    assert "Layer-wise cosine similarity" in html and "LOI" in html
    # opens offline: plotly.js is inside the page, no script comes from outside
    assert not re.search(r"<script[^>]*\ssrc=", html) and html.count("Plotly.newPlot") == 2
    # the paper's BadNets numbers (CIFAR-10 ResNet-18: Table 3 MA/ASR, Table 1 TPR/FPR) beside ours, and captions
    assert "paper (CIFAR-10, ResNet-18)" in html and "99.38" in html and "97.20" in html
    assert html.count("class='caption'") == 2
    assert str(tmp_path) not in html  # no absolute local path
