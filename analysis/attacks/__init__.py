"""Backdoor attacks sharing one interface (:class:`Attack`)."""
from .badnets import BadNets
from .base import Attack, AttackContext, PoisonedTrainingSet

ATTACKS = {"badnets": BadNets}


def build_attack(name: str, **settings) -> Attack:
    """An attack by name with its paper defaults, overridden by ``settings``."""
    if name not in ATTACKS:
        raise ValueError(f"attack: expected one of {sorted(ATTACKS)}, got {name!r}")
    return ATTACKS[name](**settings)


__all__ = ["ATTACKS", "Attack", "AttackContext", "BadNets", "PoisonedTrainingSet", "build_attack"]
