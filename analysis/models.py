"""CIFAR-style classifiers with the paper's ordered layer lists (Appendix D.1).

Each model carries ``paper_layers``: the module paths whose outputs are the paper's
layers 1..L, in order. "For ease of computation, we consider as a layer each
convolutional block other than the first convolutional layer and the last fully
connected layer" (D.1), which the paper's code realises as:

* ResNet-18, L = 10: the stem (conv-bn-relu), the 8 residual blocks, the logits.
* MobileNetV2, L = 19: the 17 inverted-residual blocks, the final 1×1 conv
  (after global average pooling), the logits.

Both use a 3×3 stride-1 stem (no max-pool) for 32×32 inputs, and take a width
setting so they train on a CPU (ResNet-18 ``width=16``; MobileNetV2
``width_mult=0.5``).
"""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["ARCHITECTURES", "BasicBlock", "InvertedResidual", "MobileNetV2", "ResNet18", "build_model",
           "cpu_width"]

ARCHITECTURES = ("resnet18", "mobilenetv2")


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32×32 inputs; ``width`` = channels of the first stage (64 in the paper)."""

    def __init__(self, num_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width: expected a positive integer, got {width}")
        self.num_classes, self.width = num_classes, width
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        in_planes = width
        stages = []
        for multiplier, stride in ((1, 1), (2, 2), (4, 2), (8, 2)):
            planes = width * multiplier
            stages.append(nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(in_planes, num_classes)
        self.paper_layers = ["stem"] + [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)] + ["fc"]
        self.latent_layer = "pool"
        self.last_conv_layer = "layer4.1.conv2"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(self.pool(out))


class InvertedResidual(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = in_planes * expansion
        self.use_residual = stride == 1 and in_planes == out_planes
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [nn.Conv2d(in_planes, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, out_planes, 1, bias=False),
            nn.BatchNorm2d(out_planes),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


def _round_channels(channels: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


class MobileNetV2(nn.Module):
    """MobileNetV2 for 32×32 inputs (stride-1 stem and first stride-2 stage at stride 1)."""

    # (expansion, output channels, repeats, stride of the first repeat)
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes: int = 10, width_mult: float = 1.0) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult: expected a positive number, got {width_mult}")
        self.num_classes, self.width_mult = num_classes, width_mult
        in_planes = _round_channels(32 * width_mult)
        self.stem = nn.Sequential(nn.Conv2d(3, in_planes, 3, 1, 1, bias=False), nn.BatchNorm2d(in_planes), nn.ReLU6())
        blocks = []
        for expansion, channels, repeats, stride in self.SETTINGS:
            out_planes = _round_channels(channels * width_mult)
            for i in range(repeats):
                blocks.append(InvertedResidual(in_planes, out_planes, expansion, stride if i == 0 else 1))
                in_planes = out_planes
        self.blocks = nn.Sequential(*blocks)
        last = _round_channels(1280 * max(1.0, width_mult))
        self.conv_last = nn.Sequential(nn.Conv2d(in_planes, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(last, num_classes)
        self.paper_layers = [f"blocks.{i}" for i in range(len(blocks))] + ["pool", "classifier"]
        self.latent_layer = "pool"
        self.last_conv_layer = "conv_last.0"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_last(self.blocks(self.stem(x)))
        return self.classifier(self.pool(out))


def build_model(arch: str, num_classes: int, width: float | None = None) -> nn.Module:
    """``resnet18`` (``width`` = first-stage channels, default 64) or ``mobilenetv2`` (``width`` = multiplier, default 1)."""
    if arch == "resnet18":
        return ResNet18(num_classes, int(width) if width is not None else 64)
    if arch == "mobilenetv2":
        return MobileNetV2(num_classes, float(width) if width is not None else 1.0)
    raise ValueError(f"arch: expected one of {ARCHITECTURES}, got {arch!r}")


def cpu_width(arch: str) -> float:
    """The width this toolkit trains on a CPU: ResNet-18 16 channels, MobileNetV2 ×0.5."""
    return {"resnet18": 16, "mobilenetv2": 0.5}[arch]
