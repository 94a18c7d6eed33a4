"""The end-to-end path used by the demo, the notebooks and the tests.

``attacked_model`` trains (or loads from ``checkpoints/``) a model attacked by one
attack on one dataset; ``analyse`` fits the layer-wise detector on the reference split
and evaluates it on benign and poisoned evaluation images.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch.nn as nn

from .attacks import Attack, AttackContext, build_attack, dataset_attack_settings
from .checkpoints import DEFAULT_DIR, has_checkpoint, load_checkpoint, round_to_half_, save_checkpoint
from .data import DatasetSplits, LabeledImages, load_dataset
from .detection import Detection, LayerwiseDetector
from .devices import seed_everything
from .evaluation import Evaluation, evaluate_detection
from .features import predict_classes
from .models import build_model, cpu_width
from .training import TrainConfig, accuracy, train


def checkpoint_name(dataset: str, arch: str, attack: str) -> str:
    return f"{dataset}-{arch}-{attack}"


@dataclass
class AttackedModel:
    """A trained model with the attack and data it came from."""

    model: nn.Module
    attack: Attack
    data: DatasetSplits
    poisoned_test: LabeledImages
    train_seconds: float | None  # training time; for a loaded checkpoint, the one its manifest records
    loaded_from: Path | None


def attacked_model(
    dataset: str = "digits",
    arch: str = "resnet18",
    attack: str | Attack = "badnets",
    width: float | None = None,
    config: TrainConfig | None = None,
    checkpoints: str | Path | None = DEFAULT_DIR,
    retrain: bool = False,
    save: bool = False,
    device: str | None = None,
    progress: bool = True,
    data: DatasetSplits | None = None,
    cache_dir: str | Path | None = None,
    name: str | None = None,
) -> AttackedModel:
    """Load ``{dataset}-{arch}-{attack}`` (or ``name``) from ``checkpoints`` if present (and not ``retrain``), else train it.

    An attack given by name gets its paper settings with the dataset's exceptions
    (:func:`analysis.attacks.dataset_attack_settings`, e.g. WaNet without noise mode on digits), as the
    zoo was built. A checkpoint is used only if it was trained with the same attack settings; otherwise a
    ``ValueError`` says so (pass ``retrain=True`` or another ``checkpoints`` folder).

    ``save=True`` writes the trained model (float16), the attack's state tensors and its manifest
    entry to ``checkpoints``. Attacks with ``controls_training`` train the model themselves;
    ``attack.prepare`` runs first (and may cache costly steps in ``cache_dir``). The reported
    training time covers preparation and training.
    """
    data = data or load_dataset(dataset)
    atk = build_attack(attack, **dataset_attack_settings(dataset, attack)) if isinstance(attack, str) else attack
    name = name or checkpoint_name(dataset, arch, atk.name)
    if checkpoints is not None and not retrain and has_checkpoint(name, checkpoints):
        model, entry, extra = load_checkpoint(name, checkpoints, device or "cpu")
        stored = entry["config"].get("attack_settings")
        if stored is not None and json.dumps(stored, sort_keys=True) != json.dumps(atk.settings(), sort_keys=True):
            raise ValueError(
                f"attack: checkpoint {name!r} was trained with {entry['config'].get('attack')} {stored}, not "
                f"{atk.name} {atk.settings()}; pass retrain=True or another checkpoints folder"
            )
        atk.load_state_tensors(extra)
        return AttackedModel(model, atk, data, atk.poisoned_test_set(data.test), entry.get("train_seconds"),
                             Path(checkpoints) / name)
    width = cpu_width(arch) if width is None else width
    config = config or TrainConfig.cpu(arch)
    context = AttackContext(config=config, arch=arch, width=width, device=device, progress=progress,
                            cache_dir=cache_dir)
    started = time.perf_counter()
    atk.prepare(data.train, data.num_classes, context)
    seed_everything(config.seed)
    model = build_model(arch, data.num_classes, width)
    if atk.controls_training:
        atk.train_model(model, data.train, context)
    else:
        poisoned = atk.poison_training_set(data.train)
        train(model, poisoned.data, config, device=device, progress=progress)
    seconds = time.perf_counter() - started
    model.eval()
    poisoned_test = atk.poisoned_test_set(data.test)
    if save:
        if checkpoints is None:
            raise ValueError("checkpoints: save=True needs a folder")
        round_to_half_(model)  # measure the weights as stored
        metrics = {"ma": accuracy(model, data.test),
                   "asr": float(np.mean(predict_classes(model, poisoned_test) == atk.target))}
        save_checkpoint(
            model, name,
            {"dataset": dataset, "arch": arch, "width": width, "num_classes": data.num_classes, "attack": atk.name,
             "attack_settings": atk.settings(), "train": config.to_dict()},
            checkpoints, metrics=metrics, train_seconds=seconds, extra_tensors=atk.state_tensors(),
        )
    return AttackedModel(model, atk, data, poisoned_test, seconds, None)


def clean_model(
    dataset: str = "digits",
    arch: str = "resnet18",
    width: float | None = None,
    config: TrainConfig | None = None,
    checkpoints: str | Path | None = DEFAULT_DIR,
    retrain: bool = False,
    save: bool = False,
    device: str | None = None,
    progress: bool = True,
    data: DatasetSplits | None = None,
) -> tuple[nn.Module, float | None]:
    """A model trained on the clean training set (the MA reference for attacks): ``(model, train seconds)``.

    Loaded from ``{dataset}-{arch}-clean`` in ``checkpoints`` when present (seconds = those its manifest records).
    """
    data = data or load_dataset(dataset)
    name = checkpoint_name(dataset, arch, "clean")
    if checkpoints is not None and not retrain and has_checkpoint(name, checkpoints):
        model, entry, _ = load_checkpoint(name, checkpoints, device or "cpu")
        return model, entry.get("train_seconds")
    width = cpu_width(arch) if width is None else width
    config = config or TrainConfig.cpu(arch)
    seed_everything(config.seed)
    model = build_model(arch, data.num_classes, width)
    started = time.perf_counter()
    train(model, data.train, config, device=device, progress=progress)
    seconds = time.perf_counter() - started
    model.eval()
    if save:
        if checkpoints is None:
            raise ValueError("checkpoints: save=True needs a folder")
        round_to_half_(model)  # measure the weights as stored
        save_checkpoint(model, name, {"dataset": dataset, "arch": arch, "width": width, "num_classes": data.num_classes,
                                      "attack": None, "attack_settings": None, "train": config.to_dict()},
                        checkpoints, metrics={"ma": accuracy(model, data.test)}, train_seconds=seconds)
    return model, seconds


@dataclass
class Analysis:
    detector: LayerwiseDetector
    evaluation: Evaluation
    on_benign: Detection
    on_poisoned: Detection


def analyse(run: AttackedModel, tau: float = 2.5) -> Analysis:
    """Fit the layer-wise detector on the reference split and evaluate it."""
    detector = LayerwiseDetector(tau=tau).fit(run.model, run.data.reference)
    evaluation, on_benign, on_poisoned = evaluate_detection(
        run.model, detector, run.data.test, run.poisoned_test, run.attack.target
    )
    return Analysis(detector, evaluation, on_benign, on_poisoned)
