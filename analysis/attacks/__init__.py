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


# Settings that differ from the paper's on one dataset, with the measurement that forced them.
# digits, WaNet: with noise mode (noise_rate 0.2) the sub-pixel warp is not learned on the smooth,
# upsampled 8x8 digits (ResNet-18, 30 epochs: ASR 12%; strength 1.0: 25%); without
# it, 98% (``benchmarks/attack_variants.py``). Strength 1.0 does not rescue MobileNetV2 (ASR 47% vs
# 87% at 0.5, seed 0; ``--arch mobilenetv2``), so the paper's 0.5 stays.
# digits, ISSBA: our encoder's residual weight (not a paper setting) of 5 hides the secret at PSNR
# 40.6 dB, too faint for MobileNetV2 to learn in 30 epochs (ASR 3%: it memorises the poisoned images);
# weight 1 gives 31.9 dB and lets both architectures learn it (``benchmarks/attack_variants.py
# --arch mobilenetv2 --only issba``).
# digits, IAD: the mask generator's losses on its raw output (``mask_loss_on="raw"``), not on the
# thresholded masks as IAD's code computes them, at the pattern generator's lr 0.01 (``mask_lr``; the
# default 0.001 keeps our BN-free mask generator from collapsing on GTSRB): not forced by a measurement
# but kept because the zoo's digits models and the committed digits results were trained so (and
# implanted: ASR 86-96%, ResNet-18, seeds 0-2). On GTSRB the raw losses left every mask empty (ASR 4.7%); see ``IAD``.
DATASET_ATTACK_SETTINGS: dict[str, dict[str, dict]] = {
    "digits": {"wanet": {"noise_rate": 0.0}, "issba": {"residual_weight": 1.0},
               "iad": {"mask_loss_on": "raw", "mask_lr": 0.01}},
}


def dataset_attack_settings(dataset: str, attack: str) -> dict:
    """The settings ``attack`` uses on ``dataset`` where they differ from its paper defaults (usually ``{}``)."""
    return dict(DATASET_ATTACK_SETTINGS.get(dataset, {}).get(attack, {}))


def build_attack(name: str, **settings) -> Attack:
    """An attack by name with its paper defaults, overridden by ``settings``."""
    if name not in ATTACKS:
        raise ValueError(f"attack: expected one of {sorted(ATTACKS)}, got {name!r}")
    return ATTACKS[name](**settings)


__all__ = ["ATTACKS", "AdaptiveBadNets", "Attack", "AttackContext", "BadNets", "Blended", "LabelConsistent", "WaNet", "IAD", "ISSBA", "PoisonedTrainingSet", "build_attack", "DATASET_ATTACK_SETTINGS", "dataset_attack_settings"]
