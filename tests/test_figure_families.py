"""Compute once, plot many (issue 32): the live app and the batch experiment of a figure family share its functions.

Each consolidated family has one compute function (:mod:`analysis.explore`) and one plot function
(:mod:`analysis.plotting`). A spy replaces each, and both the app (on the workbench's explorer) and the
experiment (on a one-run study of the committed digits zoo) must go through it.
"""
import numpy as np
import pandas as pd
import pytest

from analysis import experiments, explore, plotting
from analysis.apps import RateApp, ScoreApp, ThresholdApp
from analysis.detection import LayerwiseDetector
from analysis.workbench import Workbench


@pytest.fixture(scope="module")
def workbench():
    return Workbench(progress=False)


@pytest.fixture(scope="module")
def study(digits):
    return experiments.Study(digits, archs=("resnet18",), runs=1, progress=False, attacks=("badnets",))


def _spy(monkeypatch, module, name):
    """Replace ``module.name`` by a wrapper that records each call's caller and returns the real result."""
    real, calls = getattr(module, name), []

    def spy(*args, **kwargs):
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


@pytest.mark.parametrize("family, compute, plot", [
    ("fig5", "threshold_sweep", "plot_threshold_sweep"),
    ("fig6", "score_distribution", "plot_score_distribution"),
])
def test_the_app_and_the_experiment_call_the_same_compute_and_plot(monkeypatch, workbench, study, family, compute,
                                                                   plot):
    computed, plotted = _spy(monkeypatch, explore, compute), _spy(monkeypatch, plotting, plot)
    app = ThresholdApp(workbench) if family == "fig5" else ScoreApp(workbench)
    assert computed and plotted, f"the app does not call {compute} and {plot}"
    computed.clear(), plotted.clear()
    if family == "fig5":
        experiments.fig5_threshold(study)
    else:
        experiments.fig6_scores(study)
    assert computed and plotted, f"the experiment does not call {compute} and {plot}"
    assert app.figure.data  # the spies returned the real figures


def test_tables_4_and_7_rows_of_the_app_and_of_table4_come_from_model_rates(monkeypatch, workbench, study):
    computed = _spy(monkeypatch, explore, "model_rates")
    app = RateApp(workbench)
    table = app.table()
    assert len(computed) >= len(table) > 0
    computed.clear()
    experiments.table4_rates(study, rates=(0.05,))
    assert computed == ["model_rates"]


def test_the_app_sweep_is_the_compute_on_the_explorers_arrays(workbench):
    explorer = workbench.explorer("resnet18", "badnets")
    taus = (0.5, 2.5, None)
    sweep = explore.threshold_sweep(explorer.detector, explorer.benign_scores, explorer.benign_predicted,
                                    explorer.poisoned_scores, explorer.poisoned_predicted, taus)
    pd.testing.assert_frame_equal(explorer.threshold_sweep(taus), sweep)
    assert sweep.tau.tolist() == [0.5, 2.5, explorer.detector.tau]
    at = explorer.rates(2.5)
    assert sweep.TPR[1] == 100 * at["tpr"] and sweep.FPR[1] == 100 * at["fpr"]
    table = explorer.rates_table(taus)
    assert table.index.name == "tau" and table["TPR %"].tolist() == sweep.TPR.tolist()
    rates = explorer.model_rates()
    summary = explorer.summary()
    assert rates == {"MA": 100 * summary["ma"], "ASR": 100 * summary["asr"], "TPR": 100 * summary["tpr"],
                     "FPR": 100 * summary["fpr"], "LOI": summary["loi"]}


def test_plot_threshold_sweep_draws_one_pair_per_model_or_one_pair(digits):
    sweep = pd.DataFrame({"tau": [1.0, 2.0], "TPR": [90.0, 80.0], "FPR": [10.0, 5.0]})
    single = plotting.plot_threshold_sweep(sweep)
    assert [t.name for t in single.data] == ["TPR", "FPR"] and single.layout.xaxis.title.text == "tau"
    assert list(single.data[1].y) == [10.0, 5.0] and single.layout.title.text == "Fig. 5: impact of the threshold tau"
    grouped = pd.concat([sweep.assign(arch="resnet18", attack=a) for a in ("badnets", "wanet")], ignore_index=True)
    fig = plotting.plot_threshold_sweep(grouped, "title")
    assert [t.name for t in fig.data] == ["TPR resnet18 badnets", "FPR resnet18 badnets", "TPR resnet18 wanet",
                                          "FPR resnet18 wanet"]
    assert fig.data[1].line.dash == "dash" and fig.layout.yaxis.title.text == "%"


def test_score_distribution_keeps_the_inputs_predicted_as_the_class():
    benign, poisoned = explore.score_distribution(np.array([1.0, 2.0, 3.0]), np.array([0, 1, 1]),
                                                  np.array([4.0, 5.0]), np.array([1, 2]), 1)
    assert benign.tolist() == [2.0, 3.0] and poisoned.tolist() == [4.0]
    fig = plotting.plot_score_distribution(benign, poisoned, 2.5, "t", "score")
    assert [t.name for t in fig.data] == ["benign (n=2)", "poisoned (n=1)"] and fig.layout.shapes[0].x0 == 2.5


def test_model_rates_flags_at_the_detectors_own_threshold(digits, workbench):
    explorer = workbench.explorer("resnet18", "badnets")
    detector = explorer.detector
    assert isinstance(detector, LayerwiseDetector)
    rates = explore.model_rates(detector, explorer.target, explorer.benign_labels, explorer.benign_predicted,
                                explorer.benign_scores, explorer.poisoned_predicted, explorer.poisoned_scores)
    flagged = detector.flag_scores(explorer.poisoned_scores, explorer.poisoned_predicted)
    assert rates["TPR"] == pytest.approx(100 * flagged.mean()) and rates["LOI"] == detector.loi_[explorer.target]
