"""The one registry of the paper's experiments: per experiment its function, its title and the models it loads.

:data:`EXPERIMENTS` maps an experiment's name (``reproduce --only NAME``, ``NAME.csv``) to an
:class:`Experiment`, in the order ``reproduce`` runs them and ``REPORT.md`` lists them. Everything that
needs to know the experiments reads this dict: :func:`analysis.reproduce.reproduce` (which to run, the
title of ``NAME.md``), the Ray backend (:func:`analysis.model_plan.plan_models`, the models to train first)
and ``python -m analysis reproduce --help`` (the names). Adding an experiment is its function (in
:mod:`analysis.experiments`, taking a :class:`analysis.study.Study` and returning ``(table, figures)``) and
one line here.

The function is named by its import path (``"analysis.experiments:table3_attacks"``) and imported only when
the experiment runs, so that reading the registry imports neither torch nor the experiment stack.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Callable

from . import model_plan as plan

__all__ = ["EXPERIMENTS", "Experiment"]


@dataclass(frozen=True)
class Experiment:
    """One experiment of ``reproduce``: what runs, what its table is called, which models it loads.

    Attributes
    ----------
    function : str or callable
        The experiment, ``study -> (table, figures)``: a callable, or its import path ``"module:name"``
        (imported when the experiment runs, see :meth:`resolve`).
    title : str
        The heading of its ``NAME.md`` and of its section of ``REPORT.md``.
    models : callable or str
        Its plan, ``(dataset, archs, attacks, betas) -> [ModelSpec]``: every model the function loads, in its
        order, most often built from :mod:`analysis.model_plan` (``plan.each_arch(plan.every_attack)``), or the
        import path of a plan written beside the function. The Ray backend trains them before the experiment
        starts, and an experiment task refuses to train one the plan misses.
    """

    function: str | Callable
    title: str
    models: str | plan.Plan

    def resolve(self) -> Callable:
        """The experiment's function (imported from its path on first use).

        Returns
        -------
        callable
            ``study -> (table, figures)``.
        """
        return _load(self.function)

    def plan(self) -> plan.Plan:
        """The experiment's plan, ``(dataset, archs, attacks, betas) -> [ModelSpec]`` (imported from its path)."""
        return _load(self.models)

    def run(self, study):
        """Run the experiment on ``study``; returns ``(table, figures)``."""
        return self.resolve()(study)

    def using(self, function: Callable) -> "Experiment":
        """This experiment with another function (same title and models), e.g. a ``functools.partial`` of it."""
        return dataclasses.replace(self, function=function)


def _load(reference: str | Callable) -> Callable:
    """``reference`` itself when callable, else the object at its import path ``"module:name"``."""
    if callable(reference):
        return reference
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


_E = "analysis.experiments:"

#: The experiments of ``reproduce``, name -> :class:`Experiment`, in the order they run and are reported.
EXPERIMENTS: dict[str, Experiment] = {
    "fig1": Experiment("analysis.projection:fig1_pca", "Fig. 1: PCA of latent vs LOI features of benign and "
                       "poisoned inputs (BadNets, Blended)", plan.each_arch(plan.fig1_attacks)),
    "table3": Experiment(_E + "table3_attacks", "Table 3: attack performance (MA, ASR) and training time",
                         plan.clean_and_every_attack),
    "tables12": Experiment(_E + "tables12_detection", "Tables 1/2 and Figs. 9/10: TPR and FPR of every detector, "
                           "mean ± std over runs", plan.each_arch(plan.every_attack)),
    "table4": Experiment(_E + "table4_rates", "Table 4: poisoning rates (BadNets)", plan.table4_models),
    "table5": Experiment(_E + "table5_features", "Table 5: latent vs critical features (BadNets)",
                         plan.each_arch(plan.badnets_only)),
    "table6": Experiment(_E + "table6_single_layers", "Table 6: single layers vs the LOI rule",
                         plan.first_arch(plan.wanet_and_iad)),
    "table7": Experiment(_E + "table7_adaptive", "Table 7: adaptive attack", plan.table7_models),
    "table8": Experiment(_E + "table8_metrics", "Table 8: cosine similarity vs Euclidean distance over tau",
                         plan.first_arch(plan.iad_else_badnets)),
    "fig5": Experiment(_E + "fig5_threshold", "Fig. 5: TPR and FPR over tau",
                       plan.each_arch(plan.badnets_and_wanet_else_first)),
    "curves": Experiment(_E + "figs_layerwise_curves", "Figs. 2/3/7/8: layer-wise cosine similarity (means per "
                         "layer)", plan.each_arch(plan.every_attack)),
    "fig6": Experiment(_E + "fig6_scores", "Fig. 6: summed-similarity distributions",
                       plan.each_arch(plan.lc_and_badnets_else_first)),
    "fig11": Experiment(_E + "fig11_runtime", "Fig. 11: CPU runtime of fit + predict", plan.each_arch(plan.badnets_only)),
}
