"""The classroom app: the whole story on one screen (notebook ``00_tour``, also served by Voila).

One figure: a benign evaluation image and its triggered version, the detector's score
histogram of the inputs classified as the target with the threshold mu - tau sigma, and the
layer-wise curves with LOI-2..LOI shaded. Controls: architecture, attack, image, tau.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..explore import TAU_MAX, TAU_MIN, TAU_STEP
from ..plotting import histogram_figure, layerwise_curve_figure
from ..workbench import Workbench
from .base import slider
from .layerwise import ModelApp, model_layout, model_text


def image_rgb(image) -> np.ndarray:
    """A ``[3, H, W]`` image in [0, 1] as ``[H, W, 3]`` uint8 for ``go.Image``."""
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 3 or array.shape[0] != 3:
        raise ValueError(f"image: expected shape [3, H, W], got {array.shape}")
    return (np.clip(np.transpose(array, (1, 2, 0)), 0, 1) * 255).round().astype(np.uint8)


class ClassroomApp(ModelApp):
    """Trigger, curves, threshold and TPR/FPR of one attacked model, for a class or a Voila page.

    Controls: architecture, attack, image (index among the non-target evaluation images), tau.
    """

    def __init__(self, workbench: Workbench, arch: str = "resnet18", attack: str = "badnets", tau: float = 2.5,
                 image: int = 0) -> None:
        extra = {"image": slider(image, 0, 49, 1, "image", integer=True),
                 "tau": slider(tau, TAU_MIN, TAU_MAX, TAU_STEP, "τ")}
        super().__init__(workbench, arch, attack, extra)

    def images(self, arch: str, attack: str, index: int) -> tuple[np.ndarray, np.ndarray, int, int]:
        """``(benign, poisoned, predicted benign, predicted poisoned)`` for non-target evaluation image ``index``."""
        explorer = self.workbench.explorer(arch, attack)
        run = self.workbench.model(arch, attack)
        keep = np.flatnonzero(run.data.test.y.numpy() != run.attack.target)
        benign_index = int(keep[index])  # poisoned_test holds the non-target test images in order
        return (run.data.test.x[benign_index].numpy(), run.poisoned_test.x[index].numpy(),
                int(explorer.benign_predicted[benign_index]), int(explorer.poisoned_predicted[index]))

    def draw(self, arch: str, attack: str, image: int, tau: float) -> tuple[go.Figure, str]:
        explorer = self.workbench.explorer(arch, attack)
        target = explorer.target
        benign_image, poisoned_image, said_benign, said_poisoned = self.images(arch, attack, image)
        fig = make_subplots(rows=2, cols=3, specs=[[{}, {}, {}], [{"colspan": 3}, None, None]],
                            row_heights=[0.45, 0.55], vertical_spacing=0.14, horizontal_spacing=0.08,
                            subplot_titles=(f"benign: classified {said_benign}", f"with trigger: classified {said_poisoned}",
                                            "scores (inputs classified as target)",
                                            f"cosine similarity to class {target}'s benign centroids, layer by layer"))
        fig.add_trace(go.Image(z=image_rgb(benign_image), name="benign"), 1, 1)
        fig.add_trace(go.Image(z=image_rgb(poisoned_image), name="with trigger"), 1, 2)
        scores_benign, scores_poisoned = explorer.score_distribution(target)
        histogram_figure(scores_benign, scores_poisoned, "", "summed similarity", threshold=explorer.threshold(target, tau),
                         threshold_label=f"μ − {tau:.1f}σ", fig=fig, row=1, col=3)
        benign, poisoned = explorer.curves(target)
        layerwise_curve_figure(benign, poisoned, explorer.detector.loi_[target], explorer.detector.score_layers_[target],
                               fig=fig, row=2, col=1, benign_name=f"benign, classified {target}")
        for col in (1, 2):
            fig.update_xaxes(visible=False, row=1, col=col)
            fig.update_yaxes(visible=False, row=1, col=col)
        model_layout(fig, 820, f"{arch} + {attack}: the backdoor and the layer-wise detector")
        return fig, f"{model_text(explorer)}<br>{explorer.readout(tau)}"


__all__ = ["ClassroomApp", "image_rgb"]
