"""The operating point a readout shows is the one the detector flags with (issue 33, class 4).

A detector built with ``target_fpr`` flags beyond its calibrated τ, not beyond ``tau`` = 2.5. The explorer's
rates, summary and readout, and the apps' labels, take the τ in effect from one function
(``analysis.operating_point.detector_tau``) and let the detector flag; here they are compared with
``detector.predict`` on the same images.
"""
import numpy as np
import pytest
import torch

from analysis.data import LabeledImages
from analysis.detection import LayerwiseDetector
from analysis.explore import LayerwiseExplorer
from analysis.models import build_model
from analysis.operating_point import detector_tau, tau_label


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = build_model("resnet18", 3, 2).eval()
    reference = LabeledImages(torch.rand(60, 3, 32, 32), torch.arange(60) % 3)
    benign = LabeledImages(torch.rand(60, 3, 32, 32), torch.arange(60) % 3)
    poisoned = torch.rand(30, 3, 32, 32)
    poisoned[:, :, -6:, -6:] = 1.0  # a white corner, as BadNets stamps
    return model, reference, benign, LabeledImages(poisoned, torch.zeros(30, dtype=torch.long))


@pytest.fixture(scope="module")
def calibrated(setup):
    model, reference, benign, poisoned = setup
    detector = LayerwiseDetector(target_fpr=0.2).fit(model, reference)
    return detector, LayerwiseExplorer(model, detector, benign, poisoned, target=0)


def test_the_calibrated_tau_is_not_the_default_tau(calibrated):
    detector, explorer = calibrated
    assert detector_tau(detector) == detector.calibrated_tau_
    # else this file could not tell a readout at the detector's threshold from one at tau = 2.5
    assert explorer.rates()["flagged_benign"] != explorer.rates(detector.tau)["flagged_benign"]


def test_the_explorer_reports_the_rates_the_detector_flags(setup, calibrated):
    model, _, benign, poisoned = setup
    detector, explorer = calibrated
    rates = explorer.rates()
    assert rates["flagged_benign"] == int(detector.predict(model, benign).sum())
    assert rates["flagged_poisoned"] == int(detector.predict(model, poisoned).sum())
    assert rates["tau"] == detector.calibrated_tau_
    assert explorer.summary()["fpr"] == rates["fpr"]


def test_a_chosen_tau_is_still_that_tau(calibrated):
    detector, explorer = calibrated
    flagged = detector.flag_scores(explorer.benign_scores, explorer.benign_predicted, 2.5)
    assert explorer.rates(2.5)["flagged_benign"] == int(flagged.sum())
    assert explorer.rates(2.5)["tau_label"] == "tau = 2.5"


def test_the_readouts_name_the_calibration(calibrated):
    detector, explorer = calibrated
    label = f"tau = {detector.calibrated_tau_:.2f} (calibrated to FPR 20 %)"
    assert tau_label(detector) == label
    assert label in explorer.summary_text()
    assert explorer.readout().startswith(f"<b>&tau; = {detector.calibrated_tau_:.2f} (calibrated to FPR 20 %)</b>")
    assert explorer.threshold(0) == detector.thresholds()[0]


def test_an_uncalibrated_detector_reads_its_tau(setup):
    model, reference, benign, poisoned = setup
    detector = LayerwiseDetector(tau=1.5).fit(model, reference)
    explorer = LayerwiseExplorer(model, detector, benign, poisoned, target=0)
    assert detector_tau(detector) == 1.5 and tau_label(detector, symbol="τ") == "τ = 1.5"
    assert explorer.rates()["flagged_benign"] == int(detector.predict(model, benign).sum())


def test_a_stale_calibration_is_refused_by_the_readout_as_by_the_detector(setup):
    model, reference, benign, _ = setup
    detector = LayerwiseDetector(target_fpr=0.2).fit(model, reference)
    detector.target_fpr = 0.1
    with pytest.raises(ValueError, match="target_fpr: changed after fit"):
        detector.predict(model, benign)
    with pytest.raises(ValueError, match="target_fpr: changed after fit"):
        detector_tau(detector)


def test_too_few_calibration_scores_read_as_nothing_flagged(setup):
    model, reference, _, _ = setup
    with pytest.warns(UserWarning, match="too few"):
        detector = LayerwiseDetector(target_fpr=0.001).fit(model, reference)
    assert np.isinf(detector_tau(detector))
    assert tau_label(detector) == "tau = inf (too few calibration scores for FPR 0.1 %: nothing is flagged)"
