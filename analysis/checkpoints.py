"""Model checkpoints: safetensors weights plus one ``manifest.json`` with config and sha256.

Nothing is ever unpickled. Loading verifies the file's sha256 against the manifest
and refuses a mismatch. Weights may be stored in float16 to keep the folder small;
they are loaded back as float32.

Manifest layout::

    {"format": 1, "entries": {NAME: {"file": "NAME.safetensors", "sha256": "...",
        "config": {"dataset", "arch", "width", "num_classes", "attack", "attack_settings",
                   "train": {...}}, "metrics": {"ma", "asr"}, "train_seconds",
        "dtype", "versions": {...}}}}
"""
from __future__ import annotations

import hashlib
import json
import platform
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .devices import pick_device
from .models import build_model
from .paths import DEFAULT_CHECKPOINTS
from .validation import check_index

__all__ = ["ChecksumError", "DEFAULT_DIR", "ENTRY_FIELDS", "MANIFEST", "check_entry", "checkpoint_name", "has_checkpoint",
           "library_versions", "load_checkpoint", "read_manifest", "round_to_half_", "save_checkpoint", "sha256_of"]

MANIFEST = "manifest.json"


def checkpoint_name(dataset: str, arch: str, attack: str, suffix: str = "") -> str:
    """The one rule for a checkpoint's name: ``{dataset}-{arch}-{attack}``, then ``-{suffix}`` when given.

    ``attack`` is ``"clean"`` for a model trained without poisoning; ``suffix`` tells apart the same attack
    at other settings (``r0.01``: BadNets at 1 % poisoning; ``b0.5``: the adaptive attack at beta 0.5).

    Examples
    --------
    >>> checkpoint_name("digits", "resnet18", "adaptive", "b0.5")
    'digits-resnet18-adaptive-b0.5'
    """
    return f"{dataset}-{arch}-{attack}" + (f"-{suffix}" if suffix else "")
DEFAULT_DIR = DEFAULT_CHECKPOINTS  # the zoo folder (analysis.paths, which --help reads without importing torch)


class ChecksumError(ValueError):
    """A checkpoint file does not match the sha256 recorded in its manifest."""


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(folder: str | Path = DEFAULT_DIR) -> dict[str, Any]:
    """The manifest of checkpoint folder ``folder`` (an empty one when the folder or its manifest does not exist).

    A ``folder`` that is a file, a ``manifest.json`` that is a folder, a manifest that is not JSON or not an
    object with ``entries`` raise a ValueError naming the path; they are never read as "no checkpoints".
    Single entries are checked where they are used (:func:`check_entry`), so one bad entry spoils only itself.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"checkpoints: expected a folder holding {MANIFEST}, got the file {folder}")
    path = folder / MANIFEST
    if path.is_dir():
        raise ValueError(f"{path}: expected the checkpoint manifest (a JSON file), got a folder")
    if not path.is_file():
        return {"format": 1, "entries": {}}
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: expected a JSON checkpoint manifest; it cannot be parsed ({error})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("entries"), dict):
        raise ValueError(f"{path}: not a checkpoint manifest (expected an object with 'entries')")
    return manifest


#: The fields every manifest entry needs to be loaded: the weights' file name, its sha256 and the config.
ENTRY_FIELDS = ("file", "sha256", "config")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def check_entry(name: str, entry: Any, folder: str | Path = DEFAULT_DIR) -> dict[str, Any]:
    """Manifest entry ``name`` checked to be loadable; returns it with its sha256 in lower case.

    The one check of an entry's form, used by :func:`load_checkpoint` and ``zoo verify``: an object with
    :data:`ENTRY_FIELDS`; ``file`` a plain file name inside ``folder``; ``sha256`` 64 hexadecimal digits
    (upper case accepted: a digest's case carries no meaning); ``config`` an object with ``arch``,
    ``num_classes`` (an integer >= 1) and ``width``. Each failure is a ValueError naming the entry, the
    field, what was expected and what was found.

    Examples
    --------
    >>> entry = {"file": "m.safetensors", "sha256": "AB" * 32, "config": {"arch": "resnet18", "width": 4, "num_classes": 10}}
    >>> check_entry("m", entry)["sha256"] == "ab" * 32
    True
    >>> check_entry("m", {**entry, "sha256": "abc"})
    Traceback (most recent call last):
    ...
    ValueError: checkpoint 'm': manifest field 'sha256': expected 64 hexadecimal digits, got 'abc'
    """
    where = f"checkpoint {name!r}: manifest"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} entry: expected an object with {list(ENTRY_FIELDS)}, got {type(entry).__name__}")
    missing = [key for key in ENTRY_FIELDS if key not in entry]
    if missing:
        raise ValueError(f"{where} entry lacks {missing} (expected {list(ENTRY_FIELDS)}; it has {sorted(entry)})")
    file, digest, config = entry["file"], entry["sha256"], entry["config"]
    if not isinstance(file, str) or not file or Path(file).name != file:
        raise ValueError(f"{where} field 'file': expected the name of a file in {folder}, got {file!r}")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        shown = repr(digest) if len(repr(digest)) <= 80 else repr(digest)[:77] + "..."
        raise ValueError(f"{where} field 'sha256': expected 64 hexadecimal digits, got {shown}")
    if not isinstance(config, dict):
        raise ValueError(f"{where} field 'config': expected an object, got {type(config).__name__}")
    lacking = [key for key in ("arch", "width", "num_classes") if key not in config]
    if lacking:
        raise ValueError(f"{where} field 'config' lacks {lacking}: it cannot rebuild the model (needs 'arch', "
                         f"'num_classes' and 'width')")
    check_index(config["num_classes"], f"{where} field 'config.num_classes'", 1)
    return {**entry, "sha256": digest.lower()}


def library_versions() -> dict[str, str]:
    import numpy
    import safetensors

    # torch_threads: CPU training is bit-reproducible only with the same thread count (summation order)
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "safetensors": safetensors.__version__, "torch_threads": str(torch.get_num_threads())}


@torch.no_grad()
def round_to_half_(model: nn.Module) -> nn.Module:
    """Round ``model``'s floating-point parameters and buffers to float16 precision, in place (dtype kept).

    Applied before a checkpoint's MA/ASR are measured, so the manifest records the metrics of the
    weights as stored (float16) and ``zoo verify`` re-measures exactly the same model.
    """
    for value in model.state_dict().values():
        if value.is_floating_point():
            value.copy_(value.half().to(value.dtype))
    return model


def save_checkpoint(
    model: nn.Module,
    name: str,
    config: dict[str, Any],
    folder: str | Path = DEFAULT_DIR,
    metrics: dict[str, float] | None = None,
    train_seconds: float | None = None,
    half: bool = True,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``NAME.safetensors`` and its manifest entry; returns the weights' path.

    ``config`` must let :func:`load_checkpoint` rebuild the model (``arch``, ``width``,
    ``num_classes``). ``extra_tensors`` (e.g. a trigger pattern) are stored beside the
    weights under ``extra.``-prefixed keys.
    """
    from safetensors.torch import save_file

    for key in ("arch", "width", "num_classes"):
        if key not in config:
            raise ValueError(f"config: missing {key!r} (needed to rebuild the model)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu()
        tensors[key] = value.half() if half and value.is_floating_point() else value
    for key, value in (extra_tensors or {}).items():
        tensors[f"extra.{key}"] = value.detach().cpu().contiguous()
    path = folder / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    manifest = read_manifest(folder)
    manifest["entries"][name] = {
        "file": path.name,
        "sha256": sha256_of(path),
        "config": config,
        "metrics": metrics or {},
        "train_seconds": train_seconds,
        "dtype": "float16" if half else "float32",
        "versions": library_versions(),
    }
    with open(folder / MANIFEST, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return path


def load_checkpoint(
    name: str, folder: str | Path = DEFAULT_DIR, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any], dict[str, torch.Tensor]]:
    """Verify and load entry ``name``: returns ``(model in eval mode, manifest entry, extra tensors)``."""
    from safetensors.torch import load_file

    from safetensors import SafetensorError

    folder = Path(folder)
    entries = read_manifest(folder)["entries"]
    if name not in entries:
        raise KeyError(f"name: no checkpoint {name!r} in {folder / MANIFEST}; available: {sorted(entries)}")
    entry = entries[name]
    checked = check_entry(name, entry, folder)
    path = folder / checked["file"]
    if path.is_dir():
        raise ValueError(f"checkpoint {name!r}: expected a safetensors file at {path}, got a folder")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {name!r}: file {path} listed in the manifest is missing")
    actual = sha256_of(path)
    if actual != checked["sha256"]:
        raise ChecksumError(
            f"checkpoint {name!r}: {path} has sha256 {actual}, the manifest says {entry['sha256']}; "
            "refusing to load a modified file (rebuild it or restore the original)"
        )
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:  # the manifest's digest was written for a truncated or corrupt file
        raise ValueError(f"checkpoint {name!r}: {path} is not a valid safetensors file (truncated or corrupt?): "
                         f"{' '.join(str(error).split())[:200]}") from None
    extra = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
    weights = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items() if not k.startswith("extra.")}
    config = checked["config"]
    try:
        model = build_model(config["arch"], int(config["num_classes"]), config["width"])
        model.load_state_dict(weights)
    except (ValueError, TypeError, RuntimeError) as error:  # another arch, class count or width than the weights'
        raise ValueError(f"checkpoint {name!r}: config cannot rebuild the model from {path.name}: "
                         f"{type(error).__name__}: {' '.join(str(error).split())[:300]}") from None
    return model.to(pick_device(device)).eval(), entry, extra


def has_checkpoint(name: str, folder: str | Path = DEFAULT_DIR) -> bool:
    """Whether ``folder``'s manifest lists ``name`` and its file exists (a malformed entry: see :func:`check_entry`)."""
    entries = read_manifest(folder)["entries"]
    if name not in entries:
        return False
    return (Path(folder) / check_entry(name, entries[name], folder)["file"]).is_file()
