"""Table 5 of the paper: AC, SCAn and the layer-wise detector on latent vs critical features.

:func:`table5_features` is the batch experiment (``reproduce --only table5``, registered in
:data:`analysis.experiment_registry.EXPERIMENTS`) and the computation behind the Fig. 1 app's Table 5
(:func:`analysis.apps.pca.table5`); it lives below :mod:`analysis.experiments` so that the apps need not import
the batch layer.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from . import paper_results as paper
from .comparison import build_detector, paper_key, run_detector, summarize_runs
from .detection import LayerwiseDetector
from .features import paper_layers
from .model_plan import badnets_only

if TYPE_CHECKING:
    from .study import Study

__all__ = ["table5_features"]


def table5_features(study: Study) -> tuple[pd.DataFrame, list]:
    """AC, SCAn and the layer-wise detector on latent vs critical features (BadNets, every architecture).

    Latent = the layer before the classifier (``model.latent_layer``); critical = the layers
    LOI-2..LOI of the target class that the layer-wise detector found on the run's reference set.
    """
    (attack,) = badnets_only(study.attacks)
    rows = []
    for arch in study.archs:
        run = study.model(arch, attack)
        target = run.attack.target
        layers = paper_layers(run.model)
        # the layer-wise detector reads paper layers; the one feeding the classifier is layer L-1
        latent_index = layers.index(run.model.latent_layer) + 1 if run.model.latent_layer in layers else len(layers) - 1
        draws = []  # per run: reference, benign, poisoned, and the critical layers found on that reference
        for r in range(study.runs):
            reference, benign = study.redraw(r)
            found = LayerwiseDetector().fit(run.model, reference)
            draws.append((reference, benign, run.attack.poisoned_test_set(benign),
                          [layers[layer - 1] for layer in found.score_layers_[target]]))
        for defense in ("ac", "ac-ref", "scan", "layerwise"):
            for kind in ("latent", "critical"):
                results = []
                for r, (reference, benign, poisoned, critical) in enumerate(draws):
                    if defense == "layerwise":
                        settings = {"score_layers": [latent_index]} if kind == "latent" else {}
                    else:
                        settings = {"layers": [run.model.latent_layer] if kind == "latent" else critical}
                    detector = build_detector(defense, seed=r, **settings)
                    results.append(run_detector(detector, run.model, reference, benign, poisoned,
                                                train=run.data.train))
                rows.append({"arch": arch, "defense": defense, "features": kind, **summarize_runs(results),
                             **paper.paper_columns("table5", arch, attack, paper_key(defense), at=kind)})
    return pd.DataFrame(rows), []
