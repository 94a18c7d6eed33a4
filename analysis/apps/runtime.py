"""Fig. 11 live: seconds to fit and run detectors, and their ratio to the layer-wise detector (:class:`RuntimeApp`)."""
from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..comparison import available_defenses, detector_runtime
from ..models import ARCHITECTURES
from ..plotting import LOI_COLOR
from ..validation import check_choice, check_index
from ..workbench import Workbench
from .base import App, check_model_choice, dropdown, slider
from .committed import committed_table
from .shared import LABELS, page_layout


class RuntimeApp(App):
    """Fig. 11: seconds to fit and run the layer-wise detector, AC and SCAn on the same inputs, and their ratios.

    Timed live with :func:`analysis.comparison.detector_runtime` (median of ``repeats`` runs with
    rotating order) on the BadNets model: fit on the reference split, detection on all benign and
    poisoned evaluation inputs in one call, as the paper's Fig. 11. Timings depend on the machine and
    its load: the ratio to the layer-wise detector, from the same repeats, is what compares across
    machines. The "time again" button reruns the timing of the current setting.

    Parameters
    ----------
    workbench : the dataset's models.
    arch : the architecture timed first.
    repeats : repeats per detector (median), 1..5.
    detectors : the detectors timed; must include ``"layerwise"``.
    max_inputs : cap on the detection inputs (None = all, as the paper).
    """

    slow_controls = ("arch", "repeats")  # each new setting times every detector

    def __init__(self, workbench: Workbench, arch: str = "resnet18", repeats: int = 1,
                 detectors: tuple[str, ...] = ("layerwise", "ac", "scan"), max_inputs: int | None = None) -> None:
        self.workbench = check_model_choice(workbench, arch)
        check_index(repeats, "repeats", 1, 5)
        if "layerwise" not in detectors:
            raise ValueError(f"detectors: expected a tuple including 'layerwise', got {detectors!r}")
        for name in detectors:
            check_choice(name, "detectors", available_defenses(include_recent=True))
        self.detectors = tuple(detectors)
        self.max_inputs = None if max_inputs is None else check_index(max_inputs, "max_inputs", 1)
        self._timings: dict[tuple[str, int], pd.DataFrame] = {}
        self.committed = committed_table(workbench.data.name, "fig11.csv")
        super().__init__({"arch": dropdown(list(ARCHITECTURES), arch, "architecture", "200px"),
                          "repeats": slider(repeats, 1, 5, 1, "repeats (median)", integer=True)})
        self.button = widgets.Button(description="time again", icon="refresh")
        self.button.on_click(lambda _: self.time_again())
        self.children[0].children = tuple(self.children[0].children) + (self.button,)

    def inputs(self, arch: str):
        """``(model, reference, inputs)``: the BadNets model, its reference split and ``[N, C, H, W]`` detection inputs."""
        run = self.workbench.model(arch, "badnets")
        inputs = torch.cat([run.data.test.x, run.poisoned_test.x])
        if self.max_inputs is not None and len(inputs) > self.max_inputs:
            keep = np.sort(np.random.default_rng(0).choice(len(inputs), size=self.max_inputs, replace=False))
            inputs = inputs[torch.as_tensor(keep)]
        return run.model, run.data.reference, inputs

    def timings(self, arch: str, repeats: int) -> pd.DataFrame:
        """:func:`detector_runtime`'s table for ``(arch, repeats)`` (cached until :meth:`time_again`)."""
        key = (arch, repeats)
        if key not in self._timings:
            model, reference, inputs = self.inputs(arch)
            self._timings[key] = detector_runtime(model, reference, inputs, self.detectors, repeats).set_index("detector")
        return self._timings[key]

    def time_again(self) -> None:
        """Forget the current setting's timings and time it again."""
        self._timings.pop((self.controls["arch"].value, self.controls["repeats"].value), None)
        with self.busy(f"timing {', '.join(self.detectors)} again…"):
            self.refresh()

    def committed_source(self, arch: str) -> str:
        """Where the committed ratios come from: the file and its torch threads."""
        part = self.committed[self.committed.arch == arch]
        threads = f", {int(part.threads.iloc[0])} threads" if len(part) and "threads" in part else ""
        return f"docs/results/{self.workbench.data.name}/fig11.csv{threads}"

    def setup_text(self) -> str:
        """What is timed (plain text, no timings): detectors, reference and input counts, repeats."""
        arch, repeats = self.controls["arch"].value, self.controls["repeats"].value
        _, reference, inputs = self.inputs(arch)
        return (f"{self.workbench.data.name} {arch} + BadNets: detectors {', '.join(self.detectors)}; fit on "
                f"{len(reference)} reference images, detection on {len(inputs)} inputs in one call; median of "
                f"{repeats} repeat{'s' if repeats > 1 else ''}")

    def draw(self, arch: str, repeats: int) -> tuple[go.Figure, str]:
        table = self.timings(arch, repeats)
        labels = [LABELS.get(n, n) for n in table.index]
        fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12, subplot_titles=(
            "live: seconds (fit + detection)", "live: total time ÷ the layer-wise detector's"))
        fig.add_trace(go.Bar(x=labels, y=table.fit_s, name="fit", marker_color="#aec7e8"), 1, 1)
        fig.add_trace(go.Bar(x=labels, y=table.detect_s, name="detection", marker_color=LOI_COLOR), 1, 1)
        fig.add_trace(go.Bar(x=labels, y=table.total_vs_layerwise, name="ratio (live)", marker_color="#ff7f0e",
                             text=[f"{v:.2f}" for v in table.total_vs_layerwise], textposition="inside", insidetextanchor="middle"), 1, 2)
        if self.committed is not None:
            part = self.committed[self.committed.arch == arch].set_index("detector").reindex(table.index).dropna(
                subset=["total_vs_layerwise"])
            if len(part):
                fig.add_trace(go.Scatter(x=[LABELS.get(n, n) for n in part.index], y=part.total_vs_layerwise,
                                         mode="markers", name=f"ratio, committed ({self.committed_source(arch)})",
                                         marker=dict(symbol="diamond", size=12, color="black")), 1, 2)
        fig.add_hline(y=1.0, line_dash="dash", line_color="gray", row=1, col=2)
        fig.update_xaxes(title_text="detector", row=1, col=1)
        fig.update_xaxes(title_text="detector", row=1, col=2)
        fig.update_yaxes(title_text="seconds", row=1, col=1)
        top = max(1.5, float(table.total_vs_layerwise.max()) * 1.2)
        fig.update_yaxes(title_text="ratio (1 = as fast as layer-wise)", range=[0, top], row=1, col=2)
        page_layout(fig, 440, f"Fig. 11 on {self.workbench.data.name}: CPU time of the detectors ({arch} + BadNets)")
        fig.update_layout(barmode="stack")
        threads = torch.get_num_threads()
        lines = [self.setup_text() + f"; {threads} torch thread{'s' if threads > 1 else ''}"]
        for name, row in table.iterrows():
            lines.append(f"{LABELS.get(name, name)}: fit {row.fit_s:.2f} s + detection {row.detect_s:.2f} s = "
                         f"{row.total_s:.2f} s, {row.total_vs_layerwise:.2f} × the layer-wise detector")
        return fig, "<br>".join(lines)


__all__ = ["RuntimeApp"]
