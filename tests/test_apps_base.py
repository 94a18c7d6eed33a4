"""The shared app layer without models: the busy state of a slow change, and the snapshot a saved notebook keeps."""
import base64
import threading
import time

import ipywidgets as widgets
import plotly.graph_objects as go
import pytest

from analysis.apps.base import NO_PICTURE, PNG_ENV, App, Snapshot, in_voila

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class SlowModels(App):
    """An app whose model switch takes ``delay`` seconds: a fake loader that records what the screen showed meanwhile."""

    def __init__(self, delay=0.0, fail_on=None):
        self.delay, self.fail_on, self.seen = delay, fail_on, []
        super().__init__({"arch": widgets.Dropdown(options=["a", "b"], value="a"),
                          "attack": widgets.Dropdown(options=["x", "y"], value="x"),
                          "tau": widgets.FloatSlider(value=1.0, min=0, max=4)})

    def draw(self, arch, attack, tau):
        if hasattr(self, "status"):  # not at construction: the screen while the "model" loads
            self.seen.append({"status": self.status.value, "readout": self.readout.value,
                              "title": self.figure.layout.title.text,
                              "disabled": [c.disabled for c in self.controls.values()]})
        time.sleep(self.delay)
        if (arch, attack) == self.fail_on:
            raise RuntimeError("no such model")
        return go.Figure(go.Bar(y=[tau]), layout=dict(title=f"{arch} + {attack}")), f"model {arch} + {attack}, τ {tau}"


def test_a_model_switch_shows_a_busy_state_and_ends_on_the_chosen_model():
    app = SlowModels()
    app.controls["attack"].value = "y"  # as a user picking from the dropdown
    (during,) = app.seen
    assert during["status"].endswith("loading a + y…</b>")
    assert during["disabled"] == [True, True, True]
    assert "previous settings" in during["readout"] and "model a + x" in during["readout"]
    assert during["title"] == "loading a + y… (still showing: a + x)"
    assert app.children[1:3] == (app.status, app.readout)  # under the controls, told apart by their CSS classes
    assert "layerwise-status" in app.status._dom_classes and "layerwise-readout" in app.readout._dom_classes
    # afterwards: controls back, status cleared, title and readout of the dropdowns' model
    assert [c.disabled for c in app.controls.values()] == [False, False, False]
    assert app.status.value == "" and app.figure.layout.title.text == "a + y" and app.text() == "model a + y, τ 1.0"


def test_set_announces_the_new_values_not_the_old_ones():
    app = SlowModels()
    app.set(arch="b", attack="y")
    assert [seen["status"].endswith("loading b + y…</b>") for seen in app.seen] == [True]
    assert app.figure.layout.title.text == "b + y"


def test_a_state_set_by_code_says_so_until_a_user_moves_a_control():
    app = SlowModels()
    app.set(tau=2.5, attack="y")  # as a later notebook cell does
    assert "set by code (a cell below), not with the controls: tau = 2.5, attack = &#x27;y&#x27;" in app.status.value
    app.controls["tau"].value = 3.0  # the user takes over
    assert app.status.value == ""


def test_a_fast_control_shows_no_busy_state_and_a_disabled_control_stays_disabled():
    app = SlowModels()
    app.controls["tau"].value = 2.0
    assert app.seen[0]["status"] == "" and app.seen[0]["disabled"] == [False, False, False]
    app.controls["tau"].disabled = True  # disabled by the notebook: the busy state must not enable it
    app.set(arch="b")
    assert app.seen[1]["disabled"] == [True, True, True] and app.controls["tau"].disabled
    assert not app.controls["arch"].disabled


def test_the_busy_state_is_on_screen_within_half_a_second_of_a_slow_switch():
    app = SlowModels(delay=1.5)
    shown = []
    app.status.observe(lambda change: shown.append((time.perf_counter(), change["new"])), names="value")
    started = time.perf_counter()
    app.controls["arch"].value = "b"
    took = time.perf_counter() - started
    assert took >= 1.5  # the fake loader's time
    first, last = shown[0], shown[-1]
    assert "loading b + x…" in first[1] and first[0] - started < 0.5
    assert last[1] == "" and app.figure.layout.title.text == "b + x"


def test_a_failed_switch_says_so_and_leaves_the_old_figure_marked_stale():
    app = SlowModels(fail_on=("b", "x"))
    with pytest.raises(RuntimeError, match="no such model"):
        app.set(arch="b")
    assert "failed: loading b + x… RuntimeError: no such model" in app.status.value
    assert "previous settings" in app.readout.value
    assert app.figure.layout.title.text == "loading b + x… (still showing: a + x)"
    assert [c.disabled for c in app.controls.values()] == [False, False, False]


def test_busy_messages_name_the_model_or_the_slow_settings():
    class Runs(SlowModels):
        slow_controls = ("arch", "tau")

    app = Runs()
    assert app.busy_message({"arch": "b", "attack": "y", "tau": 3}) == "loading b + y; tau = 3…"
    assert App.busy_message(app, {"tau": 3}) == "computing tau = 3…"


# ---------------------------------------------------------------------- snapshots
def _figure():
    return go.Figure(go.Bar(y=[1, 2]), layout=dict(title="<b>two</b> bars"))


def test_a_snapshot_without_a_renderer_says_why_in_one_line(monkeypatch):
    monkeypatch.setenv(PNG_ENV, "0")
    snapshot = Snapshot(_figure())
    assert snapshot._repr_mimebundle_() == {"text/plain": NO_PICTURE}
    assert repr(snapshot) == "Snapshot([figure: two bars])" and "0x" not in repr(snapshot)


def test_a_snapshot_is_a_png_with_a_caption(monkeypatch):
    monkeypatch.delenv(PNG_ENV, raising=False)
    snapshot = SlowModels().snapshot()
    assert not isinstance(snapshot.figure, go.FigureWidget) and snapshot.figure.data[0].y == (1.0,)
    bundle = snapshot._repr_mimebundle_()
    if "image/png" not in bundle:
        pytest.skip("plotly cannot render a PNG here (kaleido or Chromium missing)")
    assert set(bundle) == {"image/png", "text/plain"} and bundle["text/plain"] == "[figure: a + x]"
    assert base64.b64decode(bundle["image/png"]).startswith(PNG_SIGNATURE)


def test_under_voila_a_snapshot_displays_nothing(monkeypatch, capsys):
    monkeypatch.setenv(PNG_ENV, "0")
    for name in ("VOILA_BASE_URL", "VOILA_SERVER_URL", "VOILA_APP_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert not in_voila()
    monkeypatch.setenv("VOILA_APP_PORT", "8866")
    assert in_voila()
    Snapshot(_figure())._ipython_display_()
    assert capsys.readouterr().out == ""
