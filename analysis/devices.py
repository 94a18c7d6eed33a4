"""Device choice and seeding: nothing in the toolkit hard-codes a device."""
from __future__ import annotations

import os
import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn

__all__ = ["evaluation_mode", "model_device", "model_dtype", "pick_device", "seed_everything"]


def pick_device(preferred: str | torch.device | None = None, name: str = "device") -> torch.device:
    """``preferred`` if given and usable here, else CUDA, then Apple MPS, then CPU.

    A device this machine cannot use (``"cuda"`` without a GPU or a CUDA build of torch, ``"cuda:3"`` on a
    machine with two GPUs, ``"mps"`` off Apple silicon, a misspelt name) raises a ValueError naming ``name``
    (the argument, e.g. ``--device``), rather than failing deep inside the first ``.to(device)``.

    Examples
    --------
    >>> pick_device("cpu")
    device(type='cpu')
    >>> pick_device("gpu")
    Traceback (most recent call last):
    ...
    ValueError: device: expected cpu, cuda, cuda:N or mps, got 'gpu'
    """
    if preferred is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        device = torch.device(preferred)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{name}: expected cpu, cuda, cuda:N or mps, got {preferred!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA support"
            raise ValueError(f"{name}: {str(preferred)!r} asked for a CUDA GPU, but none is available here (torch "
                             f"{torch.__version__}, built with {build}); use cpu, or leave the device out to pick "
                             f"the best available")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"{name}: {str(preferred)!r} asked for GPU {device.index}, but this machine has {count} "
                             f"(cuda:0 to cuda:{count - 1})")
    elif device.type == "mps" and not _mps_available():
        raise ValueError(f"{name}: 'mps' asked for Apple's Metal GPU, which is not available here; use cpu, or "
                         f"leave the device out to pick the best available")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{name}: expected cpu, cuda, cuda:N or mps, got {preferred!r}")
    return device


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameterless model)."""
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's first floating-point parameter (float32 for a model without one)."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices)."""
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block; on exit every submodule gets back its own mode.

    Restoring only ``model.training`` would be wrong for a model in training mode whose BatchNorm
    layers the user froze (``bn.eval()``): ``model.train()`` would switch them back to training.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
