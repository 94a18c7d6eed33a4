"""Backdoor attacks sharing one interface (:class:`Attack`)."""
from .adaptive import AdaptiveBadNets
from .badnets import BadNets
from .base import Attack, AttackContext, PoisonedTrainingSet
from .blended import Blended
from .iad import IAD
from .issba import ISSBA
from .label_consistent import LabelConsistent
from .wanet import WaNet

ATTACKS = {
    "badnets": BadNets, "blended": Blended, "lc": LabelConsistent, "wanet": WaNet, "issba": ISSBA, "iad": IAD,
    "adaptive": AdaptiveBadNets,
}


def build_attack(name: str, **settings) -> Attack:
    """An attack by name with its paper defaults, overridden by ``settings``."""
    if name not in ATTACKS:
        raise ValueError(f"attack: expected one of {sorted(ATTACKS)}, got {name!r}")
    return ATTACKS[name](**settings)


__all__ = ["ATTACKS", "AdaptiveBadNets", "Attack", "AttackContext", "BadNets", "Blended", "LabelConsistent", "WaNet", "IAD", "ISSBA", "PoisonedTrainingSet", "build_attack"]
