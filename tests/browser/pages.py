"""Page helpers shared by the browser tests: find an app, read its figure and readout, move one control.

An app (``analysis.apps.base.App``) renders as a ``.widget-vbox`` whose children are the row of
controls (``.widget-hbox``), the readout (``.widget-html``) and the plotly figure
(``.js-plotly-plot``). The figure's state is read from the plotly element itself (``gd.data`` and
the layout's shapes, annotations and titles), which is what the user sees.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

#: The app: the widget box holding a plotly figure as a direct child.
APP = ".widget-vbox:has(> .js-plotly-plot)"

#: A JSON fingerprint of what the figure shows: every trace's type, name and coordinates (typed arrays
#: read as lists, numbers rounded to 6 significant digits), plus the layout's shapes, annotations and
#: title. Random trace uids and styling are left out.
FIGURE_STATE_JS = """
(app) => {
  const gd = app.querySelector(':scope > .js-plotly-plot');
  if (!gd || !gd.data) return null;
  const norm = (v) => {
    if (v === null || v === undefined) return null;
    if (ArrayBuffer.isView(v)) return Array.from(v, norm);
    if (Array.isArray(v)) return v.map(norm);
    if (typeof v === 'number') return Number.isFinite(v) ? Number(v.toPrecision(6)) : String(v);
    if (typeof v === 'object') {
      const out = {};
      for (const k of Object.keys(v).sort()) out[k] = norm(v[k]);
      return out;
    }
    return v;
  };
  const keys = ['type', 'name', 'x', 'y', 'z', 'text', 'values', 'labels', 'source'];
  const traces = gd.data.map((t) => Object.fromEntries(keys.filter((k) => k in t).map((k) => [k, norm(t[k])])));
  const layout = gd.layout || {};
  const shapes = (layout.shapes || []).map((s) => norm({x0: s.x0, x1: s.x1, y0: s.y0, y1: s.y1, type: s.type}));
  const annotations = (layout.annotations || []).map((a) => a.text);
  const title = layout.title && typeof layout.title === 'object' ? layout.title.text : layout.title;
  return JSON.stringify({traces, layout: {shapes, annotations, title: title ?? null}});
}
"""

#: The readout's text (``<br>`` read as a line break) from ``textContent``, not ``innerText``: JupyterLab does not render
#: cells scrolled out of view, and ``innerText`` of an element that is not rendered is empty. Null while the app is
#: busy (a model switch: its status line shows "loading …" and the figure is the previous one).
READOUT_JS = """(app) => {
  if (app.querySelector(':scope > .layerwise-status .layerwise-busy')) return null;
  const r = app.querySelector(':scope > .layerwise-readout');
  if (!r) return null;
  const copy = r.cloneNode(true);  // read a copy: the page itself is left as the user sees it
  for (const br of copy.querySelectorAll('br')) br.replaceWith('\\n');
  return copy.textContent.trim();
}"""


@dataclass(frozen=True)
class Figure:
    """What an app's figure and readout show at one moment."""

    state: str
    readout: str

    @property
    def traces(self) -> list[dict]:
        return json.loads(self.state)["traces"]

    def same_data(self, other: "Figure") -> bool:
        return self.traces == other.traces

    def summary(self) -> str:
        decoded = json.loads(self.state)
        traces = decoded["traces"]
        head = ", ".join(f"{t.get('type')}:{t.get('name')}" for t in traces[:4])
        first_y = next((t["y"] for t in traces if isinstance(t.get("y"), list) and t["y"]), None)
        return (f"{len(traces)} traces [{head}{', ...' if len(traces) > 4 else ''}], title {decoded['layout']['title']!r}, "
                f"first y {str(first_y)[:80]}; readout {self.readout[:120]!r}")


def read_figure(page) -> Figure | None:
    """The first app's figure and readout, or None while it is not rendered or busy."""
    app = page.locator(APP).first
    if app.count() == 0:
        return None
    state = app.evaluate(FIGURE_STATE_JS)
    readout = app.evaluate(READOUT_JS)
    if state is None or readout is None:
        return None
    return Figure(state, readout)


def wait_for_figure(page, *, until=lambda figure: True, timeout: float = 60.0, settle: float = 1.0,
                    what: str = "the app's figure") -> Figure:
    """Poll the app until ``until(figure)`` holds and the figure has not changed for ``settle`` seconds.

    Widgets update at slightly different moments (figure and readout are separate messages), so a
    state is accepted only once it is stable.
    """
    deadline = time.monotonic() + timeout
    last, since, seen = None, time.monotonic(), None
    while True:
        figure = read_figure(page)
        if figure is not None:
            seen = figure
        if figure != last:
            last, since = figure, time.monotonic()
        elif figure is not None and until(figure) and time.monotonic() - since >= settle:
            return figure
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last seen: "
                                 f"{seen.summary() if seen else 'no rendered app'}")
        page.wait_for_timeout(250)


@dataclass
class Move:
    """One control moved by :func:`move_control`, and how to move it back."""

    kind: str
    label: str
    before: str
    after: str

    def __str__(self) -> str:
        return f"{self.kind} {self.label!r}: {self.before!r} -> {self.after!r}"


def _label(control) -> str:
    """A control's description: the ``.widget-label`` text, or the ToggleButtons' own description."""
    label = control.locator(".widget-label").first
    return label.text_content().strip() if label.count() else "?"


def find_control(page, label: str):
    """The app's control whose description is ``label`` (dropdown, toggle buttons or slider)."""
    app = page.locator(APP).first
    controls = app.locator(":scope > .widget-hbox").first.locator(
        ".widget-dropdown, .widget-toggle-buttons, .widget-slider")
    labels = [_label(controls.nth(i)) for i in range(controls.count())]
    if label not in labels:
        raise AssertionError(f"the app has no control {label!r}; its controls: {labels}")
    return controls.nth(labels.index(label))


def move_control(page, label: str, back: Move | None = None) -> Move:
    """Move the control ``label`` as a user would; with ``back``, undo that move instead.

    A dropdown goes to its next option, toggle buttons to the next button (both wrap around), a
    slider one keyboard step to the right (back: one step to the left).
    """
    page.locator(APP).first.scroll_into_view_if_needed()
    control = find_control(page, label)
    classes = control.get_attribute("class") or ""
    if "widget-dropdown" in classes:
        select = control.locator("select")
        options = select.evaluate("(s) => Array.from(s.options, (o) => o.text)")
        current = select.evaluate("(s) => s.options[s.selectedIndex].text")
        target = back.before if back else options[(options.index(current) + 1) % len(options)]
        select.select_option(label=target)
        return Move("dropdown", label, current, target)
    if "widget-toggle-buttons" in classes:
        buttons = control.locator("button")
        names = [buttons.nth(i).text_content().strip() for i in range(buttons.count())]
        current = control.locator("button.mod-active").first.text_content().strip()
        target = back.before if back else names[(names.index(current) + 1) % len(names)]
        buttons.nth(names.index(target)).click()
        return Move("toggle buttons", label, current, target)
    readout = control.locator(".widget-readout").first
    current = readout.text_content().strip()
    handle = control.locator(".noUi-handle").first
    if back:  # undo: the opposite key of the move
        key = "ArrowLeft" if back.after == "(one step right)" else "ArrowRight"
        after = back.before
    else:  # one step right, or left when the slider sits at its maximum
        at_max = float(handle.get_attribute("aria-valuenow")) >= float(handle.get_attribute("aria-valuemax"))
        key, after = ("ArrowLeft", "(one step left)") if at_max else ("ArrowRight", "(one step right)")
    handle.focus()
    page.keyboard.press(key)
    return Move("slider", label, current, after)
