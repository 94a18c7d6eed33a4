"""The apps' live figure: plotly's ``FigureWidget``, made to survive a slow browser.

A ``FigureWidget`` (plotly 6-7) is an anywidget: its JavaScript is a 5 MB module sent with the model.
anywidget (0.11) gives a model's module 2 seconds to load and initialise; past that it logs
"[anywidget] Failed to initialize model." and **drops every later message to that model**. Two
things of plotly's then go wrong on a loaded machine (a busy classroom laptop, Binder, CI), both
seen in our browser tests:

* ``FigureWidget`` opens its comm before it has set its figure: the figure itself (``_widget_data``,
  ``_widget_layout``) follows as update messages, which are dropped, so the page shows an empty
  plot with no title, for good;
* every later change of the figure (a control moved) is dropped too: the readout follows the
  controls, the figure never does.

:class:`LiveFigure` fixes both without touching plotly's code. Its comm opens only once the whole
figure is in its state, and its module (:data:`LOADER`) is a few lines that initialise at once
(so anywidget keeps delivering messages) and load plotly's module, once per page, when the figure
is first drawn: in ``render``, which has no deadline. Plotly's module is sent beside it as the
trait ``_plotly_esm``, unchanged.
"""
from __future__ import annotations

import plotly
import plotly.graph_objects as go
import traitlets

#: The figure's JavaScript module. ``initialize`` returns at once (anywidget's 2 s deadline counts until
#: it returns); plotly's own module is imported from ``_plotly_esm`` once per page and version, and its
#: ``initialize``/``render`` run in ``render``, which anywidget awaits without a deadline.
LOADER = """
const loaded = (globalThis.__analysisPlotlyWidget ??= new Map());

function plotlyWidget(model) {
  const key = model.get("_plotly_version");
  if (!loaded.has(key)) {
    const url = URL.createObjectURL(new Blob([model.get("_plotly_esm")], { type: "text/javascript" }));
    loaded.set(key, import(url).finally(() => URL.revokeObjectURL(url)));
  }
  return loaded.get(key);
}

export default () => {
  let widget;
  return {
    initialize({ model }) {
      widget = plotlyWidget(model).then(async (module) => {
        const made = typeof module.default === "function" ? await module.default() : module.default;
        if (made.initialize) await made.initialize({ model });
        return made;
      });
      widget.catch((error) => console.error("[analysis] plotly's figure widget did not load:", error));
    },
    async render({ model, el }) {
      const made = await widget;
      return made.render({ model, el });
    },
  };
};
"""


class LiveFigure(go.FigureWidget):
    """A ``go.FigureWidget`` whose comm opens with the whole figure and whose module meets anywidget's deadline.

    Used exactly as a ``FigureWidget`` (it is one): ``LiveFigure(figure)``. See the module's docstring for why.
    """

    _esm = LOADER
    #: plotly's own widget module (the ``_esm`` of ``go.FigureWidget``), loaded by :data:`LOADER`.
    _plotly_esm = traitlets.Unicode(str(go.FigureWidget._esm)).tag(sync=True)
    #: The key under which a page keeps plotly's loaded module.
    _plotly_version = traitlets.Unicode(plotly.__version__).tag(sync=True)

    def __init__(self, *args, **kwargs) -> None:
        self._hold_comm = True  # ipywidgets opens the comm inside the constructor, before plotly sets the figure
        try:
            super().__init__(*args, **kwargs)
        finally:
            self._hold_comm = False
        self.open()

    def open(self) -> None:
        """Open the comm, with the full state, unless the constructor is still running."""
        if getattr(self, "_hold_comm", False):
            return
        super().open()


__all__ = ["LOADER", "LiveFigure"]
