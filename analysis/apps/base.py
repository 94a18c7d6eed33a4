"""The widget layer every notebook shares: controls, one live figure, a readout.

An :class:`App` is an ipywidgets ``VBox`` with a row of controls, an HTML readout and exactly one
plotly ``FigureWidget`` (a :class:`~.live_figure.LiveFigure`, which survives a slow browser; several
panels are subplots of it). Measured in a real browser, two
``FigureWidget``s in one app do not both follow the controls after a page reload or under Voila,
so an app never has more than one. Every change of a control redraws the whole figure and the
readout from the app's :meth:`App.draw`, which reads precomputed arrays (it never runs a model
that has already run), and :func:`show_figure` rewrites the widget's stored state so that a
reload or a Voila render shows the current figure.

A change of a control in :attr:`App.slow_controls` (a model switch: seconds to minutes) runs inside
:meth:`App.busy`: controls disabled, a "loading …" line, the old readout and title marked as
stale, until the new figure is drawn.

Tests and notebooks drive an app without a browser with :meth:`App.set` and read
``app.figure`` (its traces) and ``app.readout.value``. :meth:`App.snapshot` gives the current
figure as a static PNG, kept in a saved notebook's outputs so that the notebook shows a picture
where no kernel runs (GitHub, nbviewer, a reopened file).
"""
from __future__ import annotations

import base64
import html
import os
import re
from contextlib import contextmanager, nullcontext
from copy import deepcopy
from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go

from .live_figure import LiveFigure

#: Width in pixels that the apps lay their figures out for, and of the static snapshots. Live, a figure takes
#: the width of its notebook cell instead (:func:`fit_to_page`), so it is not cut off beside JupyterLab's sidebar.
FIGURE_WIDTH = 900


#: The controls that pick a model (architecture, attack): changing one loads, or first trains, a model.
MODEL = ("arch", "attack")


def fit_to_page(figure: go.Figure) -> go.Figure:
    """``figure`` without a fixed width: plotly sizes it to its container (the notebook cell, the Voila page)."""
    figure.layout.width = None
    figure.layout.autosize = True
    return figure


def show_figure(widget: go.FigureWidget, figure: go.Figure) -> None:
    """Make ``widget`` show ``figure``: traces and layout replaced, then its stored state resynced.

    A ``FigureWidget``'s edits reach the live view as messages, but the widget's stored state
    (``_widget_data``/``_widget_layout``, what a page reload or Voila renders) is only written at
    construction and display; inside a ``VBox`` it would stay at the constructor's figure, so it is
    copied again here. Writing it does not redraw the view.
    """
    same_traces = [t.type for t in widget.data] == [t.type for t in figure.data]
    if same_traces:
        with widget.batch_update():
            widget.update(data=[t.to_plotly_json() for t in figure.data], layout=figure.layout.to_plotly_json(),
                          overwrite=True)
    else:
        with widget.batch_update():
            widget.data = []
            widget.add_traces(list(figure.data))
            widget.layout = figure.layout
    widget._widget_data = deepcopy(widget._data)
    widget._widget_layout = deepcopy(widget._layout_obj._props)


class App(widgets.VBox):
    """Controls, an HTML readout and one ``FigureWidget``, redrawn together on every change.

    Subclasses build their controls, pass them to ``super().__init__`` as a dict (name -> widget,
    in display order) and implement :meth:`draw`; :meth:`sync_controls` may adapt other controls
    (options, ranges) when one changes, before the redraw.

    Attributes
    ----------
    controls : dict of the control widgets by name.
    readout : ``widgets.HTML``, the numbers behind the figure.
    figure : :class:`~.live_figure.LiveFigure` (a ``go.FigureWidget``), the one live figure.
    """

    #: Controls whose change may take seconds or minutes (it loads or trains a model): shown with :meth:`busy`.
    #: Names that the app has no control of are ignored.
    slow_controls: tuple[str, ...] = MODEL

    def __init__(self, controls: dict[str, widgets.ValueWidget]) -> None:
        self.controls = dict(controls)
        self._quiet = False
        figure, text = self.draw(**self.values())
        self.figure = LiveFigure(fit_to_page(figure))
        self.readout = widgets.HTML(text)
        #: One line under the controls: empty, what the app is busy with (:meth:`busy`), or which controls code set.
        self.status = widgets.HTML("")
        self.readout.add_class("layerwise-readout")  # CSS classes that tell the two apart in a page
        self.status.add_class("layerwise-status")
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        row = widgets.HBox(list(self.controls.values()), layout=widgets.Layout(flex_flow="row wrap"))
        super().__init__(children=[row, self.status, self.readout, self.figure])

    # ------------------------------------------------------------------ to implement
    def draw(self, **values: Any) -> tuple[go.Figure, str]:
        """The figure and the readout (HTML) for the controls' ``values``."""
        raise NotImplementedError

    def sync_controls(self, changed: str) -> None:
        """Adapt other controls after control ``changed`` moved (default: nothing)."""

    # ------------------------------------------------------------------ driving
    def values(self) -> dict[str, Any]:
        """The current value of every control, by name."""
        return {name: control.value for name, control in self.controls.items()}

    def set(self, **values: Any) -> "App":
        """Set several controls at once (as a user would, one redraw at the end); returns the app.

        The status line then says which controls code set (a later notebook cell changes the app shown
        above it), until a user moves a control.
        """
        unknown = sorted(set(values) - set(self.controls))
        if unknown:
            raise ValueError(f"set: unknown control(s) {unknown}; this app has {list(self.controls)}")
        with self._busy_if(values, {**self.values(), **values}):
            self._quiet = True
            try:
                for name, value in values.items():
                    self.controls[name].value = value
                    self.sync_controls(name)
            finally:
                self._quiet = False
            self.refresh()
        settings = ", ".join(f"{name} = {value!r}" for name, value in values.items())
        self.status.value = f'<i class="layerwise-set">set by code (a cell below), not with the controls: {html.escape(settings)}</i>'
        return self

    def _on_change(self, change: dict) -> None:
        if self._quiet:
            return
        name = next(n for n, control in self.controls.items() if control is change["owner"])
        self.status.value = ""  # a user's change: the app no longer shows a state that code set
        with self._busy_if([name], self.values()):
            self._quiet = True
            try:
                self.sync_controls(name)
            finally:
                self._quiet = False
            self.refresh()

    def _busy_if(self, changed, values: dict[str, Any]):
        """:meth:`busy` when one of the ``changed`` control names is slow, else a context that does nothing."""
        if any(name in self.slow_controls for name in changed):
            return self.busy(self.busy_message(values))
        return nullcontext()

    def busy_message(self, values: dict[str, Any]) -> str:
        """What a slow change to the controls' new ``values`` is doing: ``"loading mobilenetv2 + issba…"``."""
        models = [str(values[name]) for name in ("arch", "attack") if name in values]
        others = [f"{name} = {values[name]}" for name in self.slow_controls if name in values and name not in MODEL]
        text = f"loading {' + '.join(models)}" if models else "computing"
        if others:
            text += ("; " if models else " ") + ", ".join(others)
        return text + "…"

    @contextmanager
    def busy(self, message: str):
        """Show that the app is working while the body runs (a model switch, a retraining, a timing).

        On entry: every control disabled, :attr:`status` shows ``message``, the readout is greyed out
        under "previous settings", and the figure's title says it is the previous figure. These
        messages reach the browser at once, before the slow work starts. On exit the controls are
        enabled again (those that were) and the status line cleared; the body's redraw replaces
        readout and title. If the body raises, the status line keeps the error, and readout and title
        stay marked as stale: they no longer match the controls.
        """
        enabled = [control for control in self.controls.values() if not getattr(control, "disabled", False)]
        for control in enabled:
            control.disabled = True
        self.status.value = f'<b class="layerwise-busy">⏳ {html.escape(message)}</b>'
        self.readout.value = (f'<div class="layerwise-stale" style="opacity:0.45"><i>previous settings:</i><br>'
                              f"{self.readout.value}</div>")
        title = self.figure.layout.title.text or ""
        self.figure.layout.title.text = f"{html.escape(message)} (still showing: {title})"
        try:
            yield
        except BaseException as error:
            self.status.value = (f'<b class="layerwise-failed">failed: {html.escape(message)} '
                                 f"{html.escape(type(error).__name__)}: {html.escape(str(error))}</b>")
            raise
        else:
            self.status.value = ""
        finally:
            for control in enabled:
                control.disabled = False

    def refresh(self) -> None:
        """Redraw the figure and the readout from the controls' current values."""
        figure, text = self.draw(**self.values())
        show_figure(self.figure, fit_to_page(figure))
        self.readout.value = text

    def text(self) -> str:
        """The readout as plain text (HTML line breaks as newlines, tags and entities removed)."""
        return html_to_text(self.readout.value)

    def snapshot(self) -> "Snapshot":
        """The figure as it is now, as a static picture for a notebook's committed outputs (:class:`Snapshot`)."""
        return Snapshot(go.Figure(self.figure.to_dict()))

    def __repr__(self) -> str:
        settings = ", ".join(f"{name}={value!r}" for name, value in self.values().items())
        return f"{type(self).__name__}({settings})"


def html_to_text(value: str) -> str:
    """Plain text of a readout: ``<br>`` becomes a newline, other tags are dropped, entities unescaped."""
    return html.unescape(re.sub(r"<[^>]+>", "", re.sub(r"<br\s*/?>", "\n", value)))


#: Set to ``0`` to render no snapshot PNG (each costs about 0.2-4 s); any other value or unset: render.
PNG_ENV = "LAYERWISE_SNAPSHOT_PNG"
#: What a snapshot says when it has no picture (``text/plain``).
NO_PICTURE = ("(no static picture of the figure: plotly needs the kaleido package and Chromium to render one; "
              'pip install -e ".[static]")')


def in_voila() -> bool:
    """Whether this kernel runs under Voila (Voila sets ``VOILA_*`` variables in its kernels' environment)."""
    return any(name in os.environ for name in ("VOILA_BASE_URL", "VOILA_SERVER_URL", "VOILA_APP_PORT"))


class Snapshot:
    """A static PNG picture of a figure, kept in a saved notebook (GitHub, nbviewer, a reopened file).

    A live widget is saved without a picture (JupyterLab stores no widget state by default, and a
    stored state needs a kernel-less widget renderer): this output keeps one. Its mime bundle holds
    ``image/png`` (plotly renders it with the ``kaleido`` package and Chromium: ``pip install -e
    ".[static]"``) and a one-line ``text/plain``; without a renderer, only that line, saying why
    (:data:`NO_PICTURE`). Under Voila it displays nothing: nobody saves a Voila page, and the live
    figure is right above. The environment variable :data:`PNG_ENV` = ``0`` turns rendering off.
    (A static plotly figure as fallback raised a JavaScript error under Voila: "r.setData is not a
    function".)
    """

    def __init__(self, figure: go.Figure) -> None:
        self.figure = figure

    def png(self) -> bytes | None:
        """The figure as PNG bytes, or None when PNGs are turned off or no renderer is available."""
        if os.environ.get(PNG_ENV) == "0":
            return None
        try:
            return self.figure.to_image(format="png", width=FIGURE_WIDTH, scale=1)
        except Exception:  # kaleido or its browser missing: no picture
            return None

    def caption(self) -> str:
        """The one-line ``text/plain`` of the picture: the figure's title."""
        title = html_to_text(self.figure.layout.title.text or "").strip()
        return f"[figure: {title}]" if title else "[figure]"

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        png = self.png()
        if png is None:
            return {"text/plain": NO_PICTURE}
        return {"image/png": base64.b64encode(png).decode("ascii"), "text/plain": self.caption()}

    def _ipython_display_(self) -> None:
        if in_voila():
            return
        from IPython.display import display

        display(self._repr_mimebundle_(), raw=True)

    def __repr__(self) -> str:
        return f"Snapshot({self.caption()})"


def check_model_choice(workbench, arch: str, attack: str | None = None):
    """``workbench`` if it is a :class:`~analysis.workbench.Workbench`, ``arch`` one of the zoo's architectures and
    ``attack`` (unless None) one of the workbench's attacks; else a ``TypeError``/``ValueError`` naming the argument."""
    from ..models import ARCHITECTURES
    from ..workbench import Workbench

    if not isinstance(workbench, Workbench):
        raise TypeError(f"workbench: expected a Workbench, got {type(workbench).__name__}")
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch: expected one of {list(ARCHITECTURES)}, got {arch!r}")
    if attack is not None and attack not in workbench.attacks:
        raise ValueError(f"attack: expected one of {list(workbench.attacks)}, got {attack!r}")
    return workbench


def dropdown(options, value, description: str, width: str = "220px") -> widgets.Dropdown:
    """A labelled dropdown of the apps' common size."""
    return widgets.Dropdown(options=options, value=value, description=description,
                            layout=widgets.Layout(width=width), style={"description_width": "initial"})


def slider(value: float, low: float, high: float, step: float, description: str, *, integer: bool = False,
           fmt: str = ".1f") -> widgets.ValueWidget:
    """A labelled slider (IntSlider when ``integer``) that updates on release."""
    common = dict(value=value, min=low, max=high, step=step, description=description, continuous_update=False,
                  style={"description_width": "initial"}, layout=widgets.Layout(width="300px"))
    if integer:
        return widgets.IntSlider(**common)
    return widgets.FloatSlider(readout_format=fmt, **common)


def percent(fraction: float) -> str:
    """A fraction as a percentage with one decimal (``0.9917`` -> ``"99.2 %"``)."""
    return f"{100 * fraction:.1f} %"


__all__ = ["App", "FIGURE_WIDTH", "Snapshot", "dropdown", "fit_to_page", "html_to_text", "percent", "show_figure", "slider"]
