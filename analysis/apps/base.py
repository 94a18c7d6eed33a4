"""The widget layer every notebook shares: controls, one live figure, a readout.

An :class:`App` is an ipywidgets ``VBox`` with a row of controls, an HTML readout and exactly one
plotly ``FigureWidget`` (several panels are subplots of it). Measured in a real browser, two
``FigureWidget``s in one app do not both follow the controls after a page reload or under Voila,
so an app never has more than one. Every change of a control redraws the whole figure and the
readout from the app's :meth:`App.draw`, which reads precomputed arrays (it never runs a model
that has already run), and :func:`show_figure` rewrites the widget's stored state so that a
reload or a Voila render shows the current figure.

Tests and notebooks drive an app without a browser with :meth:`App.set` and read
``app.figure`` (its traces) and ``app.readout.value``. :meth:`App.snapshot` gives the current
figure as a static PNG (when asked for), kept in a notebook's committed outputs so that the
notebook shows a picture where no kernel runs (GitHub, nbviewer).
"""
from __future__ import annotations

import base64
import html
import os
import re
from copy import deepcopy
from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go

#: Width in pixels that the apps lay their figures out for, and of the static snapshots. Live, a figure takes
#: the width of its notebook cell instead (:func:`fit_to_page`), so it is not cut off beside JupyterLab's sidebar.
FIGURE_WIDTH = 900


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
    figure : ``go.FigureWidget``, the one live figure.
    """

    def __init__(self, controls: dict[str, widgets.ValueWidget]) -> None:
        self.controls = dict(controls)
        self._quiet = False
        figure, text = self.draw(**self.values())
        self.figure = go.FigureWidget(fit_to_page(figure))
        self.readout = widgets.HTML(text)
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        row = widgets.HBox(list(self.controls.values()), layout=widgets.Layout(flex_flow="row wrap"))
        super().__init__(children=[row, self.readout, self.figure])

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
        """Set several controls at once (as a user would, one redraw at the end); returns the app."""
        unknown = sorted(set(values) - set(self.controls))
        if unknown:
            raise ValueError(f"set: unknown control(s) {unknown}; this app has {list(self.controls)}")
        self._quiet = True
        try:
            for name, value in values.items():
                self.controls[name].value = value
                self.sync_controls(name)
        finally:
            self._quiet = False
        self.refresh()
        return self

    def _on_change(self, change: dict) -> None:
        if self._quiet:
            return
        name = next(n for n, control in self.controls.items() if control is change["owner"])
        self._quiet = True
        try:
            self.sync_controls(name)
        finally:
            self._quiet = False
        self.refresh()

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


#: Set to ``1`` to render snapshots as PNG (``tools/execute_notebooks.py`` does, for committed outputs).
PNG_ENV = "LAYERWISE_SNAPSHOT_PNG"


class Snapshot:
    """A static PNG picture of a figure for a notebook's committed outputs.

    Rendered when the environment variable :data:`PNG_ENV` is ``1`` and plotly can render a PNG:
    that needs the optional ``kaleido`` package and a Chromium/Chrome on the machine
    (``pip install -e ".[static]"``). ``tools/execute_notebooks.py`` sets it, so committed notebooks
    carry PNGs that GitHub and nbviewer show without a kernel. Otherwise (a live session in
    JupyterLab or Voila, a test run) it displays nothing: the live figure is right above it. (A
    static plotly figure as fallback raised a JavaScript error under Voila: "r.setData is not a
    function".)
    """

    def __init__(self, figure: go.Figure) -> None:
        self.figure = figure

    def png(self) -> bytes | None:
        """The figure as PNG bytes, or None when PNGs are not asked for or no renderer is available."""
        if os.environ.get(PNG_ENV) != "1":
            return None
        try:
            return self.figure.to_image(format="png", width=FIGURE_WIDTH, scale=1)
        except Exception:  # kaleido or its browser missing: no picture
            return None

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        png = self.png()
        if png is not None:
            return {"image/png": base64.b64encode(png).decode("ascii"), "text/plain": "<figure snapshot>"}
        return {}


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
