"""The notebooks' apps, driven without a browser: each control changes the figure's data and the readout.

Models come from the committed zoo (digits), through one :class:`Workbench` for the module, so every
explorer is built once. What a control must change is read from the figure's traces and shapes, and
from the readout, and compared with the explorer's own numbers.
"""
import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import pytest

from analysis.apps import (AdaptiveApp, App, ClassroomApp, ExplorerApp, RateApp, ScoreApp, SingleLayerApp,
                           ThresholdApp)
from analysis.apps.base import html_to_text
from analysis.apps.layerwise import FPR_FLOOR, log_fpr
from analysis.workbench import Workbench


@pytest.fixture(scope="module")
def workbench():
    return Workbench(progress=False)


def _dashed_lines(figure):
    return [shape for shape in figure.layout.shapes if shape.type == "line" and shape.line.dash == "dash"]


# ---------------------------------------------------------------------- the shared layer
class Counter(App):
    """A minimal app: one slider; the figure is one bar of the slider's height; counts its redraws."""

    def __init__(self):
        self.draws = 0
        super().__init__({"height": widgets.IntSlider(value=1, min=0, max=10)})

    def draw(self, height):
        self.draws += 1
        return go.Figure(go.Bar(y=[height])), f"height <b>{height}</b>"


def test_an_app_has_one_figure_redrawn_with_its_readout_on_every_change():
    app = Counter()
    figures = [child for child in app.children if isinstance(child, go.FigureWidget)]
    assert figures == [app.figure] and isinstance(app.readout, widgets.HTML) and app.readout in app.children
    assert app.draws == 1 and app.figure.data[0].y == (1,)
    app.controls["height"].value = 7  # as a user moving the slider
    assert app.draws == 2 and app.figure.data[0].y == (7,) and app.text() == "height 7"
    assert list(app.figure._widget_data[0]["y"]) == [7]  # the stored state a reload or Voila shows


def test_set_changes_several_controls_with_one_redraw_and_refuses_unknown_ones():
    app = Counter()
    app.set(height=3)
    assert app.draws == 2 and app.values() == {"height": 3}
    with pytest.raises(ValueError, match=r"unknown control\(s\) \['width'\]; this app has \['height'\]"):
        app.set(width=2)
    assert repr(app) == "Counter(height=3)"


def test_html_readouts_become_plain_text():
    assert html_to_text("<b>&tau; = 2.5</b>: a<br>b &lt; c") == "τ = 2.5: a\nb < c"


# ---------------------------------------------------------------------- Figs. 2/3/7/8
def test_explorer_app_starts_at_the_target_and_its_loi(workbench):
    app = ExplorerApp(workbench)
    explorer = workbench.explorer("resnet18", "badnets")
    assert app.values() == {"arch": "resnet18", "attack": "badnets", "class_": 1, "layer": explorer.detector.loi_[1],
                            "tau": 2.5}
    np.testing.assert_allclose(app.figure.data[0].y, explorer.curves(1)[0].mean(0))
    assert explorer.readout(2.5).replace("&tau;", "τ").replace("<b>", "").replace("</b>", "") in app.text()


def test_tau_moves_the_threshold_line_and_the_rates(workbench):
    app = ExplorerApp(workbench)
    explorer = workbench.explorer("resnet18", "badnets")
    app.set(tau=1.0)
    assert [line.x0 for line in _dashed_lines(app.figure)] == [pytest.approx(explorer.threshold(1, 1.0))]
    rates = explorer.rates(1.0)
    assert f"({rates['flagged_benign']}/{rates['n_benign']} benign inputs flagged)" in app.text()


def test_layer_and_class_move_the_histograms_and_the_curves(workbench):
    app = ExplorerApp(workbench)
    explorer = workbench.explorer("resnet18", "badnets")
    app.set(layer=3)
    on_layer = [t for t in app.figure.data if t.type == "histogram"][:2]
    np.testing.assert_array_equal(on_layer[0].x, explorer.histogram_data(3, 1)[0])
    app.set(class_=7)
    assert app.values()["layer"] == explorer.detector.loi_[7]  # a new class starts at its own LOI
    np.testing.assert_allclose(app.figure.data[0].y, explorer.curves(7)[0].mean(0))
    # the readout describes the class the figure shows, with counts recomputed here from its scores
    benign, poisoned = explorer.score_distribution(7)
    threshold = explorer.threshold(7, 2.5)
    line = app.text().splitlines()[-1]
    assert line.startswith(f"class 7: LOI {explorer.detector.loi_[7]} (") and "target" not in line
    assert line.endswith(f"flagged {(benign < threshold).sum()}/{len(benign)} benign and "
                         f"{(poisoned < threshold).sum()}/{len(poisoned)} poisoned inputs classified 7")


def test_switching_the_model_resets_class_and_layer_range(workbench):
    app = ExplorerApp(workbench)
    app.set(arch="mobilenetv2")
    explorer = workbench.explorer("mobilenetv2", "badnets")
    assert app.controls["layer"].max == 19 == explorer.n_layers
    assert app.values()["layer"] == explorer.detector.loi_[explorer.target]
    assert "mobilenetv2 + badnets" in app.figure.layout.title.text
    assert explorer.readout(2.5).split("</b>")[1] in app.readout.value


def test_a_tau_outside_the_slider_is_refused(workbench):
    with pytest.raises(ValueError, match=r"tau: expected a value in 0\.5\.\.4\.0, got 5\.0"):
        ExplorerApp(workbench, tau=5.0)


# ---------------------------------------------------------------------- Fig. 5, Table 8, Fig. 6
def test_threshold_app_marks_tau_on_both_panels_and_switches_metric(workbench):
    app = ThresholdApp(workbench)
    explorer = workbench.explorer("resnet18", "badnets")
    point = [t for t in app.figure.data if t.mode == "markers"][0]
    rates = explorer.rates(2.5)
    # the ROC's FPR axis is logarithmic: an FPR under 0.1 % (0 included) is drawn at 0.1 %
    assert app.figure.layout.xaxis2.type == "log" and FPR_FLOOR == 0.1
    assert (point.x[0], point.y[0]) == (pytest.approx(max(100 * rates["fpr"], 0.1)), pytest.approx(100 * rates["tpr"]))
    assert list(log_fpr([0.0, 0.05, 0.5, 20.0])) == [0.1, 0.1, 0.5, 20.0]
    app.set(tau=3.0)
    assert _dashed_lines(app.figure)[0].x0 == 3.0
    # τ is named in the panel's title, not by a label on the dashed line (it sat on the TPR curve)
    assert app.figure.layout.annotations[0].text == "TPR and FPR over the threshold τ (dashed: τ = 3.0)"
    assert not any(a.text == "τ = 3.0" for a in app.figure.layout.annotations)
    app.set(metric="euclidean")
    euclidean = workbench.explorer("resnet18", "badnets", metric="euclidean")
    assert euclidean.detector.metric == "euclidean"
    assert f"AUROC {100 * euclidean.roc()['auroc']:.1f} %" in app.text()


def test_score_app_counts_the_inputs_below_the_threshold(workbench):
    app = ScoreApp(workbench).set(tau=1.5)
    explorer = workbench.explorer("resnet18", "badnets")
    benign, poisoned = explorer.score_distribution(1)
    threshold = explorer.threshold(1, 1.5)
    assert f"{np.sum(poisoned < threshold)}/{len(poisoned)} poisoned" in app.text()
    assert _dashed_lines(app.figure)[0].x0 == pytest.approx(threshold)


# ---------------------------------------------------------------------- Tables 4, 6, 7 and the tour
def test_rate_app_shows_every_rate_and_curves_of_the_selected_one(workbench):
    app = RateApp(workbench)
    table = app.table()
    assert list(table.index) == [1.0, 3.0, 5.0, 10.0]
    asr = [t for t in app.figure.data if t.name == "ASR"][0]
    np.testing.assert_allclose(asr.y, table["ASR %"])
    app.set(rate=0.01)
    np.testing.assert_allclose(app.figure.data[0].y,
                               workbench.explorer("resnet18", "badnets", rate=0.01).curves(1)[0].mean(0))
    assert app.text().startswith("rate 1 %")


def test_adaptive_app_table_follows_the_architecture(workbench):
    app = AdaptiveApp(workbench).set(beta=0.5)
    assert list(app.table().index) == [0.0, 0.5, 0.9, 0.95]
    summary = workbench.explorer("resnet18", "adaptive", beta=0.5).summary()
    assert app.text().startswith("β = 0.5") and f"ASR {100 * summary['asr']:.1f} %" in app.text()


def test_single_layer_app_has_one_bar_per_layer_and_the_loi_rule(workbench):
    app = SingleLayerApp(workbench)
    assert list(app.figure.data[0].x) == [str(layer) for layer in range(1, 11)] + ["LOI rule"]
    table = workbench.explorer("resnet18", "wanet").single_layer_table(2.5)
    np.testing.assert_allclose(app.figure.data[0].y, table["TPR %"])


def test_classroom_app_shows_the_image_and_its_triggered_version(workbench):
    app = ClassroomApp(workbench).set(image=5)
    run = workbench.model("resnet18", "badnets")
    images = [t for t in app.figure.data if t.type == "image"]
    assert len(images) == 2
    triggered = np.asarray(images[1].z, dtype=float) / 255
    np.testing.assert_allclose(triggered, run.poisoned_test.x[5].permute(1, 2, 0).numpy(), atol=1 / 255)
    assert not np.array_equal(images[0].z, images[1].z)
