"""What the detector apps (:mod:`.defenses`, :mod:`.stability`, :mod:`.runtime`) share: names, live draw, layout."""
from __future__ import annotations

import plotly.graph_objects as go

from ..comparison import cap
from ..data import LabeledImages
from ..defenses.registry import view
from ..workbench import Workbench
from .base import FIGURE_WIDTH

#: Display names of the detectors (the paper's abbreviations; ``ac-ref`` is AC with the reference criterion):
#: a live view of the registry's labels.
LABELS = view(lambda name, spec: spec.label)


def page_layout(fig: go.Figure, height: int, title: str, legend_y: float = -0.2) -> go.Figure:
    """``fig`` at the apps' width and ``height``, titled ``title``, with a horizontal legend at ``legend_y``."""
    fig.update_layout(title=title, template="plotly_white", width=FIGURE_WIDTH, height=height,
                      margin=dict(t=100, b=60, l=60, r=20), legend=dict(orientation="h", y=legend_y))
    return fig


def evaluation_inputs(workbench: Workbench, arch: str, attack: str, run: int, max_eval: int | None):
    """The inputs of run ``run`` as :func:`analysis.experiments.tables12_detection` draws them.

    Parameters
    ----------
    workbench : where the model and the dataset come from.
    arch, attack : the attacked model.
    run : the reference redraw (:meth:`Study.redraw`; 0 = the dataset's own split).
    max_eval : cap on benign and on poisoned inputs (seeded subsamples, seeds ``1000 + run`` and
        ``2000 + run`` as in Tables 1/2); None = all.

    Returns
    -------
    ``(model, reference, benign, poisoned)``: the ``AttackedModel`` and three ``LabeledImages``
    (poisoned = the benign evaluation images of non-target classes with the trigger, true labels kept).
    """
    model = workbench.model(arch, attack)
    reference, benign = workbench.study.redraw(run)
    # the same draw as cap(poisoned_test_set(benign), ...), triggering only the images drawn (triggers act per image)
    drawn = cap(benign.of_class_not(model.attack.target), max_eval, 2000 + run)
    poisoned = LabeledImages(model.attack.apply_trigger(drawn.x), drawn.y.clone())
    return model, reference, cap(benign, max_eval, 1000 + run), poisoned



__all__ = ["LABELS", "evaluation_inputs", "page_layout"]
