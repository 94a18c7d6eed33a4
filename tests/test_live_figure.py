"""The apps' live figure (:class:`analysis.apps.live_figure.LiveFigure`): what reaches the browser, message by message.

anywidget drops messages to a model whose JavaScript has not initialised within 2 s, so the figure must be in the
comm's opening state (plotly's own ``FigureWidget`` sends it in later messages) and the module that must initialise
in time must be small. Recorded here with a fake comm in place of the kernel's.
"""
import ipywidgets.widgets.widget as widget_module
import plotly.graph_objects as go
import pytest

from analysis.apps.live_figure import LOADER, LiveFigure


class RecordingComm:
    """Records the opening state and every later message of one widget."""

    def __init__(self, log, **kwargs):
        self.log, self.comm_id, self.kernel = log, f"comm-{len(log)}", object()
        log.append(("open", kwargs["data"]["state"]))

    def send(self, data=None, buffers=None, **_):
        self.log.append((data.get("method"), data.get("state", {})))

    def on_msg(self, *_):
        pass

    def on_close(self, *_):
        pass

    def close(self, *_, **__):
        pass


@pytest.fixture
def sent(monkeypatch):
    log = []
    monkeypatch.setattr(widget_module.comm, "create_comm", lambda **kwargs: RecordingComm(log, **kwargs))
    return log


def figure():
    return go.Figure(go.Scatter(x=[1, 2], y=[3, 4], name="curve"), layout=dict(title="the title"))


def test_plotlys_own_widget_opens_empty_and_sends_the_figure_later(sent):
    """Why LiveFigure exists: a plain FigureWidget's comm opens without its figure."""
    go.FigureWidget(figure())
    (kind, state), *later = sent
    assert kind == "open" and state["_widget_data"] == [] and state["_widget_layout"] == {}
    assert any("_widget_data" in state for _, state in later)


def test_live_figure_opens_with_the_whole_figure_and_nothing_after(sent):
    LiveFigure(figure())
    assert len(sent) == 1, f"messages after the comm opened: {[kind for kind, _ in sent[1:]]}"
    kind, state = sent[0]
    assert kind == "open"
    (trace,) = state["_widget_data"]
    assert trace["name"] == "curve" and list(trace["y"]) == [3, 4]
    assert state["_widget_layout"]["title"]["text"] == "the title"


def test_the_module_that_must_initialise_in_time_is_small_and_carries_plotlys(sent):
    LiveFigure(figure())
    state = sent[0][1]
    assert state["_esm"] == LOADER and len(LOADER) < 3_000
    assert state["_plotly_esm"] == str(go.FigureWidget._esm) and len(state["_plotly_esm"]) > 1_000_000


def test_a_change_after_opening_reaches_the_page_as_plotlys_edit(sent):
    live = LiveFigure(figure())
    live.layout.title.text = "new"
    edits = [state["_py2js_relayout"] for _, state in sent[1:] if state.get("_py2js_relayout")]
    assert [edit["relayout_data"] for edit in edits] == [{"title.text": "new"}]
