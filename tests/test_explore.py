"""The Fig. 2 explorer: precomputed curves, histograms and TPR/FPR, and the widget app wired to them.

A tiny ResNet-18 (width 4) trained for 3 epochs is enough: every fact checked here holds for any model
whose predictions cover several classes.
"""
import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from sklearn.metrics import auc

from analysis.attacks import BadNets
from analysis.detection import LayerwiseDetector
from analysis.apps import show_figure
from analysis.explore import LayerwiseExplorer
from analysis.models import build_model
from analysis.training import TrainConfig, train

TARGET = 1


@pytest.fixture(scope="module")
def setup(digits):
    torch.manual_seed(0)
    model = build_model("resnet18", 10, 4)
    poisoned_train = BadNets(target=TARGET).poison_training_set(digits.train)
    train(model, poisoned_train.data, TrainConfig(epochs=3, seed=0), device="cpu", progress=False)
    detector = LayerwiseDetector().fit(model, digits.reference)
    benign = digits.test.subset(np.arange(80))
    poisoned = BadNets(target=TARGET).poisoned_test_set(benign)
    explorer = LayerwiseExplorer(model, detector, benign, poisoned, TARGET, batch_size=32)
    return model, detector, benign, poisoned, explorer


# ---------------------------------------------------------------------- plain data
def test_curves_have_one_row_per_input_and_one_column_per_layer(setup):
    _, _, benign, poisoned, explorer = setup
    for class_ in (TARGET, 7):
        on_benign, on_poisoned = explorer.curves(class_)
        # the inputs the model classifies as class_ (paper, Sec. 3)
        assert on_benign.shape == (int((explorer.benign_predicted == class_).sum()), 10)
        assert on_poisoned.shape == (int((explorer.poisoned_predicted == class_).sum()), 10)


def test_curves_are_the_detectors_layerwise_similarities(setup):
    model, detector, benign, poisoned, explorer = setup
    # the two classes the tiny model predicts most often among the benign inputs
    for class_ in np.argsort(np.bincount(explorer.benign_predicted))[::-1][:2].tolist():
        on_benign, on_poisoned = explorer.curves(class_)
        as_class = benign.subset(np.flatnonzero(explorer.benign_predicted == class_))
        np.testing.assert_allclose(on_benign, detector.layerwise_similarity(model, as_class, class_), atol=1e-12)
        poisoned_as_class = np.flatnonzero(explorer.poisoned_predicted == class_)
        if len(poisoned_as_class):
            np.testing.assert_allclose(on_poisoned, detector.layerwise_similarity(
                model, poisoned.subset(poisoned_as_class), class_), atol=1e-12)


def test_histogram_data_is_one_column_of_the_curves(setup):
    explorer = setup[4]
    on_benign, on_poisoned = explorer.histogram_data(3, 5)
    np.testing.assert_array_equal(on_benign, explorer.curves(5)[0][:, 2])  # layer 3 = column index 2
    np.testing.assert_array_equal(on_poisoned, explorer.curves(5)[1][:, 2])


def test_rates_at_the_detectors_tau_match_the_detectors_flags(setup):
    model, detector, benign, poisoned, explorer = setup
    on_benign, on_poisoned = detector.detect(model, benign), detector.detect(model, poisoned)
    np.testing.assert_allclose(explorer.benign_scores, on_benign.scores)
    np.testing.assert_array_equal(explorer.poisoned_predicted, on_poisoned.predicted)
    rates = explorer.rates(detector.tau)
    assert rates["tpr"] == pytest.approx(on_poisoned.flagged.mean()) and rates["fpr"] == pytest.approx(on_benign.flagged.mean())
    assert rates["tpr"] == rates["flagged_poisoned"] / rates["n_poisoned"]
    assert (rates["n_benign"], rates["n_poisoned"]) == (80, len(poisoned))


def test_a_larger_tau_never_flags_more_and_a_huge_one_flags_nothing(setup):
    explorer = setup[4]
    rates = [explorer.rates(tau) for tau in (0.0, 0.5, 1.0, 2.5, 4.0, 1e9)]
    for looser, stricter in zip(rates, rates[1:]):
        assert stricter["flagged_poisoned"] <= looser["flagged_poisoned"]
        assert stricter["flagged_benign"] <= looser["flagged_benign"]
    assert rates[-1]["tpr"] == 0.0 and rates[-1]["fpr"] == 0.0
    assert rates[0]["flagged_benign"] + rates[0]["flagged_poisoned"] > 0  # tau = 0: everything below the mean


def test_summary_counts_ma_and_asr_from_the_predictions(setup):
    _, detector, benign, _, explorer = setup
    summary = explorer.summary()
    assert summary["ma"] == pytest.approx(np.mean(explorer.benign_predicted == benign.y.numpy()))
    assert summary["asr"] == pytest.approx(np.mean(explorer.poisoned_predicted == TARGET))
    assert summary["loi"] == detector.loi_[TARGET]
    assert summary["score_layers"] == [detector.loi_[TARGET] - 2, detector.loi_[TARGET] - 1, detector.loi_[TARGET]]
    assert summary["tau"] == 2.5


def test_layer_table_marks_the_loi_and_its_two_predecessors(setup):
    _, detector, _, _, explorer = setup
    table = explorer.layer_table(TARGET)
    loi = detector.loi_[TARGET]
    assert list(table.index) == list(range(1, 11)) and table.loc[1, "module"] == "stem"
    assert table.loc[loi, "mark"] == "LOI" and table.loc[loi - 2, "mark"] == "LOI-2"
    assert (table["mark"] != "").sum() == 3
    np.testing.assert_allclose(table["gap"], table["benign"] - table["poisoned"])
    np.testing.assert_allclose(table["benign"], explorer.curves(TARGET)[0].mean(0))


# ---------------------------------------------------------------------- thresholds, ROC, single layers
def test_threshold_is_mu_minus_tau_sigma_and_splits_the_score_distribution(setup):
    _, detector, _, _, explorer = setup
    assert explorer.threshold(TARGET, 2.0) == pytest.approx(detector.mu_[TARGET] - 2.0 * detector.sigma_[TARGET])
    benign, poisoned = explorer.score_distribution(TARGET)
    assert len(benign) == int((explorer.benign_predicted == TARGET).sum())
    flagged = detector.flag_scores(poisoned, np.full(len(poisoned), TARGET), 2.0)
    np.testing.assert_array_equal(flagged, poisoned < explorer.threshold(TARGET, 2.0))


def test_every_operating_point_lies_on_the_roc_curve(setup):
    explorer = setup[4]
    roc = explorer.roc()
    assert roc["fpr"][0] == 0.0 and roc["fpr"][-1] == 1.0 and np.all(np.diff(roc["fpr"]) >= 0)
    assert roc["auroc"] == pytest.approx(auc(roc["fpr"], roc["tpr"]))
    points = set(zip(roc["fpr"].round(12), roc["tpr"].round(12)))
    for tau in (0.5, 1.5, 2.5):
        # suspicion is standardised per class, so tau is one threshold on it: (FPR, TPR) is a point of the curve
        here = explorer.rates(tau)
        assert (round(here["fpr"], 12), round(here["tpr"], 12)) in points


def test_single_layer_table_scores_one_layer_and_ends_with_the_loi_rule(setup):
    model, detector, benign, poisoned, explorer = setup
    from analysis.data import load_digits

    table = explorer.single_layer_table(2.5)
    assert list(table.index) == list(range(1, 11)) + ["LOI rule"]
    assert table.loc["LOI rule", "TPR %"] == pytest.approx(100 * explorer.rates(2.5)["tpr"])
    single = LayerwiseDetector(score_layers=[4]).fit(model, load_digits().reference)
    assert table.loc[4, "TPR %"] == pytest.approx(100 * single.predict(model, poisoned).mean())
    assert table.loc[4, "FPR %"] == pytest.approx(100 * single.predict(model, benign).mean())
    # the cheap copy equals a detector refitted on the model for that layer
    assert single.mu_ == detector.with_score_layers([4]).mu_ and single.sigma_ == detector.with_score_layers([4]).sigma_


def test_show_figure_replaces_traces_when_their_number_changes():
    widget = go.FigureWidget(go.Figure([go.Scatter(y=[1, 2]), go.Scatter(y=[3, 4])]))
    show_figure(widget, go.Figure([go.Bar(y=[5])], layout=dict(title="new")))
    assert [t.type for t in widget.data] == ["bar"] and widget.data[0].y == (5,)
    assert len(widget._widget_data) == 1 and widget._widget_layout["title"]["text"] == "new"


# ---------------------------------------------------------------------- bad input
def test_unknown_class_layer_and_tau_are_refused(setup):
    explorer = setup[4]
    with pytest.raises(ValueError, match=r"class_: expected one of the detector's classes \[0, 1, .*got 12"):
        explorer.curves(12)
    with pytest.raises(ValueError, match=r"layer: expected an integer in 1\.\.10, got 0"):
        explorer.histogram_data(0, TARGET)
    with pytest.raises(ValueError, match=r"tau: expected a finite number >= 0, got -1"):
        explorer.rates(-1.0)


def test_a_detector_that_does_not_know_the_models_layers_is_refused(setup):
    model, _, benign, poisoned, _ = setup
    with pytest.raises(ValueError, match="detector: expected a detector fitted with fit"):
        LayerwiseExplorer(model, LayerwiseDetector(), benign, poisoned, TARGET)
    with pytest.raises(TypeError, match="poisoned_test: expected LabeledImages, got Tensor"):
        LayerwiseExplorer(model, setup[1], benign, poisoned.x, TARGET)


def test_summary_text_and_rates_table_report_the_same_rates(setup):
    explorer = setup[4]
    rates = explorer.rates(1.0)
    text = explorer.summary_text(1.0)
    assert f"tau = 1.0: TPR {100 * rates['tpr']:.1f} % ({rates['flagged_poisoned']}/{rates['n_poisoned']}" in text
    assert text.splitlines()[0] == f"benign / poisoned evaluation images: 80 / {rates['n_poisoned']}"
    table = explorer.rates_table([1.0, 2.0])
    assert list(table.index) == [1.0, 2.0]
    assert table.loc[1.0, "FPR %"] == pytest.approx(100 * rates["fpr"])
