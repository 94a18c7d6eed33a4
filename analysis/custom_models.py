"""Bring your own model (paper, Sec. 4): a small CNN outside the zoo, attacked and analysed by module path.

The layer-wise detector needs nothing from a model but the outputs of its layers, named by
module path as ``model.named_modules()`` lists them. The zoo's ResNet-18 and MobileNetV2
carry a ``paper_layers`` list; :class:`SmallVGG` deliberately carries none, so the user picks
its layers by path, exactly as for any other network (a torchvision model, one's own):

>>> model = SmallVGG()
>>> detector = LayerwiseDetector(layers=SMALLVGG_LAYERS).fit(model, data.reference)   # doctest: +SKIP

:func:`train_badnets` trains such a model on a BadNets-poisoned training set, seeded and on the
CPU, in seconds for :class:`SmallVGG` on digits. :func:`describe_modules` lists a model's modules
with their output shapes, to choose layers from; :func:`save_npz` writes a dataset in the
``.npz`` format that :func:`analysis.data.load_npz` reads (bring your own data).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from .attacks import Attack, BadNets
from .data import DatasetSplits, LabeledImages
from .devices import evaluation_mode, seed_everything
from .pipeline import AttackedModel
from .training import TrainConfig, train

#: The layers of :class:`SmallVGG` the notebook analyses: each block's output, then the logits (L = 7).
SMALLVGG_LAYERS = ("block1", "block2", "block3", "block4", "block5", "block6", "fc")


def _block(in_channels: int, out_channels: int, pool: bool) -> nn.Sequential:
    """conv 3×3 (padding 1) - batch norm - ReLU, then a 2×2 max-pool when ``pool``."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
                               nn.BatchNorm2d(out_channels), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SmallVGG(nn.Module):
    """A six-block VGG-style CNN for ``[B, 3, 32, 32]`` images; neither a ResNet nor a MobileNet.

    Blocks ``block1``..``block6`` are conv-bn-relu with ``width``, ``width``, ``2 width``,
    ``2 width``, ``4 width``, ``4 width`` channels; blocks 1, 2 and 4 end with a 2×2 max-pool
    (spatial size 32 → 16 → 8 → 4), ``pool`` averages globally and ``fc`` gives the logits
    ``[B, num_classes]``. It has no ``paper_layers`` attribute: name its layers by module path
    (e.g. :data:`SMALLVGG_LAYERS`).

    Parameters
    ----------
    num_classes : number of classes (logits).
    width : channels of the first block (default 16: about 73 k parameters).
    """

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        w = width
        self.block1 = _block(3, w, pool=True)
        self.block2 = _block(w, w, pool=True)
        self.block3 = _block(w, 2 * w, pool=False)
        self.block4 = _block(2 * w, 2 * w, pool=True)
        self.block5 = _block(2 * w, 4 * w, pool=False)
        self.block6 = _block(4 * w, 4 * w, pool=False)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` of images ``x`` ``[B, 3, H, W]`` (H, W multiples of 8)."""
        for block in (self.block1, self.block2, self.block3, self.block4, self.block5, self.block6):
            x = block(x)
        return self.fc(self.pool(x))


def describe_modules(model: nn.Module, input_shape: Sequence[int] = (1, 3, 32, 32)) -> pd.DataFrame:
    """Every named module of ``model`` with its type, output shape (one forward pass) and own parameter count.

    Parameters
    ----------
    model : any ``nn.Module``; it is run once on zeros of ``input_shape`` in eval mode (mode restored).
    input_shape : the dummy batch's shape ``[B, C, H, W]``.

    Returns
    -------
    DataFrame indexed by module path (as ``model.named_modules()``, the root left out) with columns
    ``type``, ``output shape`` (without the batch dimension; empty for a module that did not run) and
    ``parameters`` (its own, not its children's).
    """
    shapes: dict[str, tuple] = {}

    def recorder(name: str):
        def hook(_module: nn.Module, _inputs: tuple, output) -> None:  # returns None: the output is kept
            if isinstance(output, torch.Tensor) and name not in shapes:
                shapes[name] = tuple(output.shape[1:])
        return hook

    handles = [module.register_forward_hook(recorder(name)) for name, module in model.named_modules() if name]
    try:
        with evaluation_mode(model), torch.no_grad():
            device = next(iter(model.parameters()), torch.empty(0)).device
            model(torch.zeros(*input_shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
    rows = {name: {"type": type(module).__name__,
                   "output shape": "×".join(str(s) for s in shapes[name]) if name in shapes else "",
                   "parameters": sum(p.numel() for p in module.parameters(recurse=False))}
            for name, module in model.named_modules() if name}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("module path")


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` intra-op CPU threads (None: unchanged), restored afterwards."""
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def quick_config(epochs: int = 5, seed: int = 0) -> TrainConfig:
    """The training settings of :func:`train_badnets`: one-cycle SGD to lr 0.05, batch 32, no augmentation.

    Batch 32 gives 34 SGD steps per epoch on digits' 1,078 training images, enough for the 2×2
    trigger to be learned in a few epochs.
    """
    return TrainConfig(epochs=epochs, lr=0.05, batch_size=32, schedule="onecycle", augment="none", seed=seed)


def train_badnets(model: nn.Module, data: DatasetSplits, attack: Attack | None = None,
                  config: TrainConfig | None = None, *, device: str | torch.device | None = "cpu",
                  threads: int | None = 1, progress: bool = False) -> AttackedModel:
    """Poison ``data.train`` with ``attack`` (default: the paper's BadNets) and train ``model`` on it, in place.

    Deterministic: the attack picks its images with its own seed, and every random number generator
    is seeded from ``config.seed`` before the weights are reset. Two calls with the same arguments in
    one process give the same weights (CPU; summation order fixed by ``threads``); another CPU or
    PyTorch build may round differently and train a slightly different model.

    Parameters
    ----------
    model : the classifier to train (any ``nn.Module`` mapping ``[B, 3, H, W]`` to ``[B, num_classes]``).
        Its weights are re-initialised from ``config.seed`` first (``reset_parameters`` of every module).
    data : the dataset's splits; ``train`` is poisoned, ``test`` gives the poisoned evaluation set.
    attack : an attack that does not control training (default ``BadNets()``: 2×2 white square,
        target 1, 5 % of the training images).
    config : training settings (default :func:`quick_config`: 5 epochs).
    device : where to train (default the CPU, which is bit-reproducible; None picks CUDA/MPS if present).
    threads : CPU threads while training (the float summation order, hence the weights, depend on it);
        None leaves torch's setting alone.
    progress : show a progress bar.

    Returns
    -------
    :class:`~analysis.pipeline.AttackedModel` with the trained model (eval mode), the attack, the data,
    the poisoned evaluation images (every non-target test image with the trigger) and the seconds taken.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(data, DatasetSplits):
        raise TypeError(f"data: expected DatasetSplits (e.g. analysis.data.load_dataset('digits')), got "
                        f"{type(data).__name__}")
    attack = BadNets() if attack is None else attack
    if not isinstance(attack, Attack) or attack.controls_training:
        raise ValueError(f"attack: expected an Attack that does not control training, got {attack!r}")
    config = quick_config() if config is None else config
    started = time.perf_counter()
    with _threads(threads):
        seed_everything(config.seed)
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        poisoned = attack.poison_training_set(data.train)
        train(model, poisoned.data, config, device=device, progress=progress)
    model.eval()
    seconds = time.perf_counter() - started
    return AttackedModel(model, attack, data, attack.poisoned_test_set(data.test), seconds, None)


def save_npz(data: DatasetSplits, path: str | Path) -> Path:
    """Write ``data`` as an archive :func:`analysis.data.load_npz` reads: uint8 NHWC ``x_train y_train x_test y_test``.

    ``x_train``/``y_train`` hold ``data.train``; ``x_test``/``y_test`` hold ``data.reference`` followed by
    ``data.test`` (``load_npz`` takes its own reference share out of the test images again). Pixels
    ``[0, 1]`` become ``round(255 x)``; labels are int64.

    Returns the path written (``.npz`` appended by NumPy when missing).
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")

    def as_uint8(images: LabeledImages) -> np.ndarray:
        x = images.x.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
        return x.permute(0, 2, 3, 1).contiguous().numpy()

    test = LabeledImages(torch.cat([data.reference.x, data.test.x]), torch.cat([data.reference.y, data.test.y]))
    np.savez_compressed(path, x_train=as_uint8(data.train), y_train=data.train.y.numpy().astype(np.int64),
                        x_test=as_uint8(test), y_test=test.y.numpy().astype(np.int64))
    return path


__all__ = ["SMALLVGG_LAYERS", "SmallVGG", "describe_modules", "quick_config", "save_npz", "train_badnets"]
