"""Which models each experiment of :mod:`analysis.experiments` loads, known before anything runs.

The Ray backend (:mod:`analysis.backends`) trains the missing models first and starts each experiment once its
models are there, so it must know them in advance: :data:`MODEL_PLANS` holds, per experiment, the models its
function loads (read off the function), :func:`experiment_models` asks one experiment and :func:`plan_models`
several, each model once. Needs neither Ray nor any training.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Sequence

from . import experiments
from .checkpoints import checkpoint_name
from .paper_results import ADAPTIVE_BETAS
from .projection import FIG1_ATTACKS
from .zoo import adaptive_name, badnets_rate_name

__all__ = ["MODEL_PLANS", "ModelSpec", "experiment_models", "plan_models"]


@dataclass(frozen=True)
class ModelSpec:
    """One model an experiment loads: what :meth:`analysis.study.Study.model` (or ``Study.clean``) is asked for.

    Attributes
    ----------
    arch : str
        Architecture name (``"resnet18"``, ``"mobilenetv2"``).
    attack : str
        Registered attack name, or ``"clean"`` for the model trained without poisoning.
    name : str
        Checkpoint name (``digits-resnet18-badnets-r0.01``), the key in ``manifest.json``.
    settings : dict
        Attack settings the experiment passes on top of the dataset's own (e.g. ``{"rate": 0.01}``).
    """

    arch: str
    attack: str
    name: str
    settings: dict = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        """Whether this is a clean model (``Study.clean``) rather than an attacked one."""
        return self.attack == "clean"


def _attacked(dataset: str, archs: Sequence[str], attacks: Sequence[str]) -> list[ModelSpec]:
    return [ModelSpec(arch, attack, checkpoint_name(dataset, arch, attack)) for arch in archs for attack in attacks]


def _default(function: Callable, parameter: str):
    """The default value of ``function``'s ``parameter`` (Table 4's rates)."""
    return inspect.signature(function).parameters[parameter].default


def _table3(dataset, archs, attacks):
    return [spec for arch in archs
            for spec in [ModelSpec(arch, "clean", checkpoint_name(dataset, arch, "clean"))]
            + _attacked(dataset, [arch], attacks)]


def _table4(dataset, archs, attacks):
    return [ModelSpec(archs[0], "badnets", badnets_rate_name(dataset, archs[0], rate), {"rate": rate})
            for rate in _default(experiments.table4_rates, "rates")]


def _table7(dataset, archs, attacks, betas=ADAPTIVE_BETAS):
    return [ModelSpec(arch, "adaptive", adaptive_name(dataset, arch, beta), {"beta": beta})
            for arch in archs for beta in betas]


#: Per experiment of :data:`analysis.experiments.EXPERIMENTS`: ``(dataset, archs, attacks) -> [ModelSpec]``,
#: the models it loads, in the order it loads them. Read off each experiment function; an experiment
#: without an entry cannot run on Ray (:func:`experiment_models` says so).
MODEL_PLANS: dict[str, Callable[[str, Sequence[str], Sequence[str]], list[ModelSpec]]] = {
    # Fig. 1: BadNets and Blended where the study has them, every architecture
    "fig1": lambda d, archs, attacks: _attacked(d, archs, [a for a in FIG1_ATTACKS if a in attacks]),
    # Table 3: per architecture the clean model (MA reference), then every attack
    "table3": _table3,
    "tables12": lambda d, archs, attacks: _attacked(d, archs, attacks),
    # Table 4: BadNets at each rate on the first architecture (5 %: the plain BadNets checkpoint)
    "table4": _table4,
    "table5": lambda d, archs, attacks: _attacked(d, archs, ["badnets"]),
    # Table 6: WaNet and IAD (those the study has) on the first architecture
    "table6": lambda d, archs, attacks: _attacked(d, archs[:1], [a for a in ("wanet", "iad") if a in attacks]),
    # Table 7: the adaptive attack at each beta, every architecture
    "table7": _table7,
    # Table 8: IAD, else BadNets (even when the study does not list it), first architecture
    "table8": lambda d, archs, attacks: _attacked(d, archs[:1], ["iad" if "iad" in attacks else "badnets"]),
    # Fig. 5: BadNets and WaNet, else the study's first attack
    "fig5": lambda d, archs, attacks: _attacked(
        d, archs, [a for a in ("badnets", "wanet") if a in attacks] or list(attacks[:1])),
    "curves": lambda d, archs, attacks: _attacked(d, archs, attacks),
    # Fig. 6 tries LC, then BadNets when LC left no working backdoor: both are planned (a superset)
    "fig6": lambda d, archs, attacks: _attacked(
        d, archs, [a for a in ("lc", "badnets") if a in attacks] or list(attacks[:1])),
    "fig11": lambda d, archs, attacks: _attacked(d, archs, ["badnets"]),
}


def experiment_models(name: str, dataset: str, archs: Sequence[str], attacks: Sequence[str],
                      betas: Sequence[float] = ADAPTIVE_BETAS) -> list[ModelSpec]:
    """The models experiment ``name`` loads on ``dataset`` for these architectures and attacks.

    Parameters
    ----------
    name : str
        An experiment of :data:`analysis.experiments.EXPERIMENTS` (``"table3"``, ...).
    dataset : str
        The dataset's name (``DatasetSplits.name``), part of every checkpoint name.
    archs, attacks : sequence of str
        The study's architectures and attacks (``Study.archs``, ``Study.attacks``).
    betas : sequence of float
        Table 7's betas (``Study.adaptive_betas``); only plans with a ``betas`` parameter read them.

    Returns
    -------
    list of ModelSpec
        In the order the experiment loads them.

    Raises
    ------
    ValueError
        ``name`` has no entry in :data:`MODEL_PLANS`.
    """
    if name not in MODEL_PLANS:
        raise ValueError(f"experiment: no model plan for {name!r} (analysis.model_plan.MODEL_PLANS has "
                         f"{sorted(MODEL_PLANS)}); add one to run it with backend='ray', or use backend='local'")
    plan = MODEL_PLANS[name]
    options = {"betas": tuple(betas)} if "betas" in inspect.signature(plan).parameters else {}
    return plan(dataset, tuple(archs), tuple(attacks), **options)


def plan_models(names: Sequence[str], dataset: str, archs: Sequence[str], attacks: Sequence[str],
                betas: Sequence[float] = ADAPTIVE_BETAS) -> list[ModelSpec]:
    """Every model the experiments ``names`` load, each once (by checkpoint name), in first-use order.

    Needs neither Ray nor any training: see :func:`experiment_models` for the parameters.

    Examples
    --------
    >>> [m.name for m in plan_models(["table3"], "digits", ["resnet18"], ["badnets", "blended"])]
    ['digits-resnet18-clean', 'digits-resnet18-badnets', 'digits-resnet18-blended']
    """
    plan: dict[str, ModelSpec] = {}
    for name in names:
        for spec in experiment_models(name, dataset, archs, attacks, betas):
            plan.setdefault(spec.name, spec)
    return list(plan.values())
