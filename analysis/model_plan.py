"""Which models an experiment loads, known before anything runs: the ``models`` of each registry entry.

The Ray backend (:mod:`analysis.backends`) trains the missing models first and starts each experiment once its
models are there, so it must know them in advance. Each entry of the one experiment registry
(:data:`analysis.experiment_registry.EXPERIMENTS`) names its models with the building blocks of this module:
a *plan* is a function ``(dataset, archs, attacks, betas) -> [ModelSpec]``, most often :func:`each_arch` or
:func:`first_arch` of an *attack rule* (``attacks -> [attack]``: which of the study's attacks the experiment
uses). The experiment functions call the same rules, so the choice ("IAD, else BadNets") is written once.
:func:`experiment_models` asks one experiment and :func:`plan_models` several, each model once.

Importing this module imports neither torch nor the experiments (``python -m analysis --help`` reads the
registry); the checkpoint-name helpers are imported when a plan is evaluated.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Sequence

from .paper_results import ADAPTIVE_BETAS

__all__ = ["ModelSpec", "Plan", "badnets_and_wanet_else_first", "badnets_only", "clean_and_every_attack",
           "each_arch", "every_attack", "experiment_models", "fig1_attacks", "first_arch", "iad_else_badnets",
           "lc_and_badnets_else_first", "plan_models", "table4_models", "table7_models", "wanet_and_iad"]


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


#: A plan: ``(dataset, archs, attacks, betas) -> [ModelSpec]``, the models an experiment loads, in its order.
Plan = Callable[[str, Sequence[str], Sequence[str], Sequence[float]], list]


# ---------------------------------------------------------------------- attack rules (experiments call them too)
def every_attack(attacks: Sequence[str]) -> list[str]:
    """Every attack of the study (Tables 1/2, the layer-wise curves)."""
    return list(attacks)


def badnets_only(attacks: Sequence[str]) -> list[str]:
    """BadNets, whether or not the study lists it (Table 5, Fig. 11)."""
    return ["badnets"]


def fig1_attacks(attacks: Sequence[str]) -> list[str]:
    """Fig. 1: those of :data:`analysis.projection.FIG1_ATTACKS` (BadNets, Blended) that the study has."""
    from .projection import FIG1_ATTACKS

    return [a for a in FIG1_ATTACKS if a in attacks]


def wanet_and_iad(attacks: Sequence[str]) -> list[str]:
    """Table 6: WaNet and IAD, those the study has (none: an empty table)."""
    return [a for a in ("wanet", "iad") if a in attacks]


def iad_else_badnets(attacks: Sequence[str]) -> list[str]:
    """Table 8: IAD, else BadNets (even when the study does not list it)."""
    return ["iad" if "iad" in attacks else "badnets"]


def badnets_and_wanet_else_first(attacks: Sequence[str]) -> list[str]:
    """Fig. 5: BadNets and WaNet, those the study has; else the study's first attack."""
    return [a for a in ("badnets", "wanet") if a in attacks] or list(attacks[:1])


def lc_and_badnets_else_first(attacks: Sequence[str]) -> list[str]:
    """Fig. 6: LC, then BadNets (tried when LC left no working backdoor); else the study's first attack.

    The plan lists both (a superset of what one run loads).
    """
    return [a for a in ("lc", "badnets") if a in attacks] or list(attacks[:1])


# ---------------------------------------------------------------------- plans
def _attacked(dataset: str, archs: Sequence[str], attacks: Sequence[str]) -> list[ModelSpec]:
    from .checkpoints import checkpoint_name

    return [ModelSpec(arch, attack, checkpoint_name(dataset, arch, attack)) for arch in archs for attack in attacks]


def each_arch(rule: Callable[[Sequence[str]], list[str]]) -> Plan:
    """The plan of an experiment that loads, for every architecture, the attacks ``rule`` picks.

    Parameters
    ----------
    rule : callable
        ``attacks -> [attack]``, e.g. :func:`every_attack` or :func:`iad_else_badnets`.

    Returns
    -------
    callable
        A plan ``(dataset, archs, attacks, betas) -> [ModelSpec]``.
    """
    def plan(dataset, archs, attacks, betas=ADAPTIVE_BETAS):
        return _attacked(dataset, archs, rule(attacks))

    plan.__doc__ = f"Every architecture, attacks: {rule.__name__}."
    return plan


def first_arch(rule: Callable[[Sequence[str]], list[str]]) -> Plan:
    """As :func:`each_arch`, on the study's first architecture only."""
    def plan(dataset, archs, attacks, betas=ADAPTIVE_BETAS):
        return _attacked(dataset, archs[:1], rule(attacks))

    plan.__doc__ = f"The first architecture, attacks: {rule.__name__}."
    return plan


def clean_and_every_attack(dataset, archs, attacks, betas=ADAPTIVE_BETAS) -> list[ModelSpec]:
    """Table 3: per architecture the clean model (the MA reference), then every attack."""
    from .checkpoints import checkpoint_name

    return [spec for arch in archs
            for spec in [ModelSpec(arch, "clean", checkpoint_name(dataset, arch, "clean"))]
            + _attacked(dataset, [arch], every_attack(attacks))]


def table4_models(dataset, archs, attacks, betas=ADAPTIVE_BETAS) -> list[ModelSpec]:
    """Table 4: BadNets at each rate of ``table4_rates``'s default on the first architecture (5 %: the plain checkpoint)."""
    from .experiments import table4_rates as table4
    from .zoo import badnets_rate_name

    rates = inspect.signature(table4).parameters["rates"].default
    return [ModelSpec(archs[0], "badnets", badnets_rate_name(dataset, archs[0], rate), {"rate": rate})
            for rate in rates]


def table7_models(dataset, archs, attacks, betas=ADAPTIVE_BETAS) -> list[ModelSpec]:
    """Table 7: the adaptive attack at each of the study's betas, every architecture."""
    from .zoo import adaptive_name

    return [ModelSpec(arch, "adaptive", adaptive_name(dataset, arch, beta), {"beta": beta})
            for arch in archs for beta in betas]


# ---------------------------------------------------------------------- reading the registry
def experiment_models(name: str, dataset: str, archs: Sequence[str], attacks: Sequence[str],
                      betas: Sequence[float] = ADAPTIVE_BETAS) -> list[ModelSpec]:
    """The models experiment ``name`` loads on ``dataset`` for these architectures and attacks.

    Parameters
    ----------
    name : str
        An experiment of :data:`analysis.experiment_registry.EXPERIMENTS` (``"table3"``, ...).
    dataset : str
        The dataset's name (``DatasetSplits.name``), part of every checkpoint name.
    archs, attacks : sequence of str
        The study's architectures and attacks (``Study.archs``, ``Study.attacks``).
    betas : sequence of float
        Table 7's betas (``Study.adaptive_betas``).

    Returns
    -------
    list of ModelSpec
        In the order the experiment loads them (the entry's ``models``).

    Raises
    ------
    ValueError
        ``name`` is not in the registry.
    """
    from .experiment_registry import EXPERIMENTS

    if name not in EXPERIMENTS:
        raise ValueError(f"experiment: no experiment {name!r} in analysis.experiment_registry.EXPERIMENTS "
                         f"(it has {list(EXPERIMENTS)})")
    return EXPERIMENTS[name].plan()(dataset, tuple(archs), tuple(attacks), tuple(betas))


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
