"""The end-to-end path used by the demo, the notebooks and the tests.

``attacked_model`` trains (or loads from ``checkpoints/``) a model attacked by one
attack on one dataset; ``clean_model`` does the same for a model without a backdoor.
"""
from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .attacks import Attack, AttackContext, build_attack, dataset_attack_settings
from .checkpoints import (DEFAULT_DIR, check_entry, checkpoint_name, load_checkpoint, read_manifest, round_to_half_,
                          save_checkpoint)
from .data import DatasetSplits, LabeledImages, load_dataset
from .devices import seed_everything
from .metrics import attack_metrics
from .models import build_model, cpu_width
from .training import TrainConfig, train

__all__ = ["AttackedModel", "attacked_model", "clean_model", "definition_and_checkpoint", "definition_differences",
           "model_definition", "reusable_checkpoint", "training_data_fingerprint"]


def training_data_fingerprint(train: LabeledImages) -> dict:
    """What identifies a training set in a checkpoint's manifest: size, image shape, labels (sha256), mean pixel.

    The labels' hash is exact (integers); the mean pixel value is compared within 1e-6, since the last
    bits of resized images may differ between CPUs. A different training subset, dataset or split changes
    the labels' sequence or the mean.
    """
    labels = np.ascontiguousarray(train.y.numpy().astype("<i8"))
    return {"images": len(train), "image_shape": list(train.x.shape[1:]),
            "labels_sha256": hashlib.sha256(labels.tobytes()).hexdigest(),
            "mean_pixel": round(float(train.x.mean(dtype=torch.float64)), 8)}  # no float64 copy of the images


def model_definition(
    dataset: str, arch: str, width: float, num_classes: int, attack: Attack | None, config: TrainConfig,
    train: LabeledImages,
) -> dict:
    """Everything that defines a trained model, as stored in its manifest entry's ``config``.

    Two models with the same definition are the same model (training is seeded); a checkpoint is reused
    only when its stored definition equals the one asked for (:func:`reusable_checkpoint`).
    """
    return {"dataset": dataset, "arch": arch, "width": width, "num_classes": num_classes,
            "attack": attack.name if attack is not None else None,
            "attack_settings": attack.settings() if attack is not None else None,
            "train": config.to_dict(), "training_data": training_data_fingerprint(train)}


def definition_differences(stored: dict, wanted: dict) -> list[str]:
    """``"key: checkpoint X, asked for Y"`` for every part of a model definition that differs (empty = same model)."""
    stored, wanted = json.loads(json.dumps(stored)), json.loads(json.dumps(wanted))  # tuples -> lists, as stored
    differences = []
    for key, value in wanted.items():
        if key not in stored:
            continue  # written before this part was recorded: see reusable_checkpoint
        old = stored[key]
        if key == "training_data" and isinstance(old, dict) and isinstance(value, dict):
            same_mean = abs(float(old.get("mean_pixel", np.nan)) - float(value["mean_pixel"])) <= 1e-6
            old_exact = {k: v for k, v in old.items() if k != "mean_pixel"}
            new_exact = {k: v for k, v in value.items() if k != "mean_pixel"}
            if old_exact != new_exact or not same_mean:
                differences.append(f"training_data: checkpoint trained on {old.get('images')} images "
                                   f"(labels {str(old.get('labels_sha256'))[:12]}, mean {old.get('mean_pixel')}), "
                                   f"asked for {value['images']} images (labels {value['labels_sha256'][:12]}, "
                                   f"mean {value['mean_pixel']})")
        elif isinstance(old, dict) and isinstance(value, dict):
            differences += [f"{key}.{sub}: checkpoint {old.get(sub)!r}, asked for {value.get(sub)!r}"
                            for sub in sorted(set(old) | set(value)) if old.get(sub) != value.get(sub)]
        elif old != value:
            differences.append(f"{key}: checkpoint {old!r}, asked for {value!r}")
    return differences


def reusable_checkpoint(name: str, folder: str | Path, definition: dict, device: str | None):
    """``(model, entry, extra)`` of checkpoint ``name`` in ``folder`` if it holds exactly the model ``definition``; None if absent.

    A checkpoint of another definition (other epochs, seed, batch size, training subset, attack
    settings ...) is refused with a ValueError listing every difference, and a manifest entry whose file
    is missing raises FileNotFoundError: neither silently trains a replacement nor reports an old
    model's numbers under new settings. Entries written before a part of the definition was recorded
    are compared on what they record, with a warning.
    """
    entries = read_manifest(folder)["entries"]
    if name not in entries:
        return None
    stored = check_entry(name, entries[name], folder)["config"]  # compared before the file is read and hashed
    differences = definition_differences(stored, definition)
    if differences:
        raise ValueError(
            f"checkpoint {name!r} in {folder} is another model than the one asked for: {'; '.join(differences)}. "
            f"Pass retrain=True (command line: --retrain) to train and replace it, or use another checkpoints "
            f"folder (reproduce: another --out)")
    try:
        found = load_checkpoint(name, folder, device or "cpu")
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{error}; pass retrain=True (command line: --retrain) to train it again, "
                                f"or remove its entry from {Path(folder) / 'manifest.json'}") from None
    unchecked = sorted(set(definition) - set(stored))
    if unchecked:
        warnings.warn(f"checkpoint {name!r} does not record {unchecked} (written by an older version): "
                      f"reused without checking them", stacklevel=3)
    return found


def definition_and_checkpoint(dataset, arch, width, config, data, attack, name, checkpoints, retrain, device):
    """The model's definition and the checkpoint holding exactly that model, as :func:`attacked_model` checks them.

    :func:`attacked_model`, :func:`clean_model` and the Ray backend (:func:`analysis.backends.models_to_train`)
    decide with it whether a model must be trained.

    Parameters
    ----------
    dataset, arch : str
        Dataset and architecture names.
    width : int or None
        The model's width (None: :func:`analysis.models.cpu_width`).
    config : TrainConfig or None
        Training settings (None: ``TrainConfig.cpu(arch)``).
    data : DatasetSplits
        The training data (its fingerprint is part of the definition).
    attack : Attack or None
        The attack (None: a clean model).
    name : str
        The checkpoint's name.
    checkpoints : str, Path or None
        The folder with ``manifest.json`` (None: never load).
    retrain : bool
        Ignore any checkpoint.
    device : str
        Where a found checkpoint is loaded.

    Returns
    -------
    tuple
        ``(width, config, definition, found)``: the defaults filled in, the definition
        (:func:`model_definition`) and the reusable checkpoint (:func:`reusable_checkpoint`; None when the model
        must be trained).

    Raises
    ------
    ValueError, FileNotFoundError
        As :func:`reusable_checkpoint`: a checkpoint of another definition, or a manifest entry without its file.
    """
    width = cpu_width(arch) if width is None else width
    config = config or TrainConfig.cpu(arch)
    definition = model_definition(dataset, arch, width, data.num_classes, attack, config, data.train)
    found = None if checkpoints is None or retrain else reusable_checkpoint(name, checkpoints, definition, device)
    return width, config, definition, found


def _save_trained(model, name, definition, checkpoints, seconds, test, poisoned_test=None, attack=None) -> None:
    """Save a freshly trained model with the MA (and ASR) measured on its weights as stored (float16)."""
    if checkpoints is None:
        raise ValueError("checkpoints: save=True needs a folder")
    round_to_half_(model)  # measure the weights as stored
    metrics = attack_metrics(model, test, poisoned_test, attack.target if attack is not None else None)
    save_checkpoint(model, name, definition, checkpoints, metrics=metrics, train_seconds=seconds,
                    extra_tensors=attack.state_tensors() if attack is not None else None)


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
    zoo was built. A checkpoint is used only if it holds the very model asked for: same dataset, architecture,
    width, attack settings, training settings (epochs, batch size, lr, seed, ...) and training images
    (:func:`model_definition`); otherwise a ``ValueError`` lists the differences (pass ``retrain=True`` or
    another ``checkpoints`` folder), and a manifest entry without its file raises ``FileNotFoundError``.

    ``save=True`` writes the trained model (float16), the attack's state tensors and its manifest
    entry to ``checkpoints``. Attacks with ``controls_training`` train the model themselves;
    ``attack.prepare`` runs first (and may cache costly steps in ``cache_dir``). The reported
    training time covers preparation and training.
    """
    data = data or load_dataset(dataset)
    atk = build_attack(attack, **dataset_attack_settings(dataset, attack)) if isinstance(attack, str) else attack
    name = name or checkpoint_name(dataset, arch, atk.name)
    width, config, definition, found = definition_and_checkpoint(dataset, arch, width, config, data, atk, name,
                                                                 checkpoints, retrain, device)
    if found is not None:
        model, entry, extra = found
        atk.load_state_tensors(extra)
        return AttackedModel(model, atk, data, atk.poisoned_test_set(data.test), entry.get("train_seconds"),
                             Path(checkpoints) / name)
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
        _save_trained(model, name, definition, checkpoints, seconds, data.test, poisoned_test, atk)
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

    Loaded from ``{dataset}-{arch}-clean`` in ``checkpoints`` when present and of the same definition, as in
    :func:`attacked_model` (seconds = those its manifest records).
    """
    data = data or load_dataset(dataset)
    name = checkpoint_name(dataset, arch, "clean")
    width, config, definition, found = definition_and_checkpoint(dataset, arch, width, config, data, None, name,
                                                                 checkpoints, retrain, device)
    if found is not None:
        model, entry, _ = found
        return model, entry.get("train_seconds")
    seed_everything(config.seed)
    model = build_model(arch, data.num_classes, width)
    started = time.perf_counter()
    train(model, data.train, config, device=device, progress=progress)
    seconds = time.perf_counter() - started
    model.eval()
    if save:
        _save_trained(model, name, definition, checkpoints, seconds, data.test)
    return model, seconds

