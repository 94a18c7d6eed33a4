"""Small convolutional networks that sample-specific attacks train on a CPU.

* :class:`SecretEncoder` / :class:`SecretDecoder`: a StegaStamp-style pair for ISSBA.
  The encoder maps ``(image [B, C, H, W] in [0, 1], secret [B, K] in {0, 1})`` to a
  residual ``[B, C, H, W]``; the decoder maps an (encoded) image to ``K`` bit logits.
* :class:`TriggerGenerator`: IAD's encoder-decoder generator; maps an image
  ``[B, C, H, W]`` to a map ``[B, out_channels, H, W]`` in (0, 1) (a pattern with
  ``out_channels = C``, a mask with ``out_channels = 1``).

None of them uses batch normalisation, so a trained network's output for an image
does not depend on the rest of its batch (triggers are reproducible image by image).
Heights and widths must be divisible by 4 (two stride-2 stages).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

DOWNSAMPLING = 4  # H and W must be multiples of this


def _conv(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride, 1), nn.LeakyReLU(0.2))


class _UNet(nn.Module):
    """Three resolutions (H, H/2, H/4) with skip connections; ``width`` = channels at full resolution."""

    def __init__(self, in_ch: int, out_ch: int, width: int) -> None:
        super().__init__()
        w = width
        self.down0 = nn.Sequential(_conv(in_ch, w), _conv(w, w))
        self.down1 = nn.Sequential(_conv(w, 2 * w, stride=2), _conv(2 * w, 2 * w))
        self.down2 = nn.Sequential(_conv(2 * w, 4 * w, stride=2), _conv(4 * w, 4 * w))
        self.up1 = nn.Sequential(_conv(4 * w + 2 * w, 2 * w), _conv(2 * w, 2 * w))
        self.up0 = nn.Sequential(_conv(2 * w + w, w), _conv(w, w))
        self.head = nn.Conv2d(w, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d0 = self.down0(x)
        d1 = self.down1(d0)
        d2 = self.down2(d1)
        u1 = self.up1(torch.cat([F.interpolate(d2, size=d1.shape[2:], mode="nearest"), d1], 1))
        u0 = self.up0(torch.cat([F.interpolate(u1, size=d0.shape[2:], mode="nearest"), d0], 1))
        return self.head(u0)


class SecretEncoder(nn.Module):
    """``(image, secret) -> residual``, StegaStamp-style.

    The secret ``[B, K]`` is projected by a linear layer to a ``channels × 8 × 8`` map,
    upsampled to the image size and concatenated with the image; a small U-Net turns the
    ``2·channels`` input planes into a residual with ``channels`` planes (unbounded; the
    caller clamps ``image + residual`` to [0, 1]).
    """

    def __init__(self, secret_bits: int, channels: int = 3, width: int = 16) -> None:
        super().__init__()
        self.secret_bits, self.channels = secret_bits, channels
        self.project = nn.Sequential(nn.Linear(secret_bits, channels * 8 * 8), nn.LeakyReLU(0.2))
        self.unet = _UNet(2 * channels, channels, width)

    def forward(self, image: torch.Tensor, secret: torch.Tensor) -> torch.Tensor:
        b, c, h, w = image.shape
        plane = self.project(secret.float() - 0.5).view(b, c, 8, 8)
        plane = F.interpolate(plane, size=(h, w), mode="nearest")
        return self.unet(torch.cat([image - 0.5, plane], 1))


class SecretDecoder(nn.Module):
    """``image [B, C, H, W] -> bit logits [B, K]``: strided convolutions, global pooling, a linear layer."""

    def __init__(self, secret_bits: int, channels: int = 3, width: int = 16) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv(channels, w), _conv(w, 2 * w, stride=2), _conv(2 * w, 2 * w),
            _conv(2 * w, 4 * w, stride=2), _conv(4 * w, 4 * w), _conv(4 * w, 8 * w, stride=2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        )
        self.bits = nn.Sequential(nn.Linear(8 * w * 16, 8 * w), nn.LeakyReLU(0.2), nn.Linear(8 * w, secret_bits))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.bits(self.features(image - 0.5))


class TriggerGenerator(nn.Module):
    """IAD's generator: a small U-Net whose output goes through a sigmoid, so values lie in (0, 1)."""

    def __init__(self, channels: int = 3, out_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        self.unet = _UNet(channels, out_channels, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.unet(x - 0.5))




# ---------------------------------------------------------------- weights as flat tensor dicts
def module_tensors(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    """``{prefix.param_name: tensor}`` (CPU, float32, detached) for ``state_tensors``."""
    return {f"{prefix}.{k}": v.detach().cpu().float().clone() for k, v in module.state_dict().items()}


def load_module_tensors(prefix: str, module: nn.Module, tensors: dict[str, torch.Tensor], owner: str) -> None:
    """Load the ``prefix.``-keys of ``tensors`` into ``module``; a clear error if keys or shapes differ."""
    own = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    expected = module.state_dict()
    if set(own) != set(expected):
        missing, unexpected = sorted(set(expected) - set(own)), sorted(set(own) - set(expected))
        raise ValueError(f"tensors: {owner} expects {prefix}.* weights; missing {missing[:3]}, unexpected {unexpected[:3]}")
    for key, value in own.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"tensors: {owner} {prefix}.{key} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)} "
                "(were the tensors saved with other settings?)"
            )
    module.load_state_dict({k: v.float() for k, v in own.items()})


def fingerprint(x: torch.Tensor, settings: dict) -> str:
    """A short sha256 of training images and settings, naming a cache file."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(str(tuple(x.shape)).encode())
    digest.update(x.detach().cpu().contiguous().float().numpy().tobytes())
    return digest.hexdigest()[:16]


def read_cache(path) -> dict[str, torch.Tensor] | None:
    """Tensors of a safetensors cache file, or None when there is none (never unpickles)."""
    from pathlib import Path

    from safetensors.torch import load_file

    return load_file(str(path)) if path is not None and Path(path).is_file() else None


def write_cache(path, tensors: dict[str, torch.Tensor]) -> None:
    from pathlib import Path

    from safetensors.torch import save_file

    if path is None:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


__all__ = ["DOWNSAMPLING", "SecretDecoder", "SecretEncoder", "TriggerGenerator", "fingerprint", "load_module_tensors",
           "module_tensors", "read_cache", "write_cache"]
