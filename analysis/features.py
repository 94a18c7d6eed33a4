"""Hook-based feature extraction, layers named by module path.

Hooks are registered and removed in one place, :func:`capture`, a context manager
that removes them also when the forward pass raises. Features are each layer's
output flattened per sample (``[B, D_l]``); they are produced batch by batch by
:func:`iter_features`, so memory is bounded by batch size × chosen layers.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from .data import LabeledImages
from .devices import evaluation_mode, model_device, model_dtype
from .validation import check_images, check_model_output

__all__ = ["LayerNotRunError", "capture", "extract_features", "iter_features", "paper_layers",
           "predict_classes", "resolve_layers"]


def resolve_layers(model: nn.Module, names: Sequence[str]) -> list[nn.Module]:
    """Look up modules by path (as in ``model.named_modules()``); unknown names raise with the list of valid ones."""
    if isinstance(names, str):
        raise TypeError(f"names: expected a sequence of module paths, got the single string {names!r}")
    if not all(isinstance(name, str) for name in names):
        raise TypeError(f"names: expected module paths (strings), got {list(names)!r}")
    repeated = sorted({name for name in names if list(names).count(name) > 1})
    if repeated:
        raise ValueError(f"layers: {repeated} listed more than once; each layer is named once, in forward order")
    modules = dict(model.named_modules())
    unknown = [name for name in names if name not in modules or name == ""]
    if unknown:
        available = ", ".join(name for name in modules if name)
        raise ValueError(f"layers: unknown module path(s) {unknown}; available: {available}")
    return [modules[name] for name in names]


def paper_layers(model: nn.Module) -> list[str]:
    """The paper's ordered layer list of a model built by :mod:`analysis.models`."""
    layers = getattr(model, "paper_layers", None)
    if not layers:
        raise ValueError(
            f"model: {type(model).__name__} has no 'paper_layers'; pass layers=[...] as module paths, e.g. "
            f"{[name for name, _ in model.named_children()][:4]}"
        )
    return list(layers)


class LayerNotRunError(RuntimeError):
    """A named layer did not run, or ran more than once, in one forward pass of the model."""


@contextmanager
def capture(
    model: nn.Module, names: Sequence[str], detach: bool = True, in_forward_order: bool = False,
    pool: bool = False,
) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the named modules during forward passes of ``model`` inside the ``with`` block.

    Yields a dict ``{name: output flattened to [B, D]}``. It is emptied when each forward pass of
    ``model`` starts, so it never holds a previous batch's output, and checked when the pass ends:
    a named module that did not run raises :class:`LayerNotRunError` (as Captum does), and so does
    one that ran twice in one pass (e.g. torchvision ResNet's ``layer1.0.relu``, applied twice in a
    block): its output would be ambiguous. ``detach=False`` keeps the outputs in the autograd graph
    (for losses on features). ``in_forward_order=True`` also raises when ``names`` are not listed in the
    order the modules finish in the forward pass (a layer-wise rule read over a reversed or shuffled list
    would move the LOI without a word). Each output is copied when the hook runs, so what is recorded is the
    module's own output even when a later module rewrites it in place (``ReLU(inplace=True)``, ``out += identity``).
    ``pool=True`` averages each output over its spatial positions
    first (a ``[B, C, H, W]`` map becomes ``[B, C]``; 2-D outputs are unchanged), as
    :class:`analysis.robust.LayerwiseGaussianDetector` reads features. All hooks are removed on exit,
    whether or not the block raised.

    Examples
    --------
    Layers are named by module path, as in ``model.named_modules()``:

    >>> import torch, torch.nn as nn
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 30 * 30, 2))
    >>> with capture(model, ["0", "1"]) as outputs:
    ...     logits = model(torch.rand(5, 3, 32, 32))
    >>> {name: tuple(out.shape) for name, out in outputs.items()}
    {'0': (5, 3600), '1': (5, 3600)}
    >>> len(model[0]._forward_hooks)  # nothing left behind
    0
    """
    modules = resolve_layers(model, names)
    outputs: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"layer {name!r} returned {type(output).__name__}, not a tensor; pick another module")
            if name in outputs:
                raise LayerNotRunError(
                    f"layer {name!r} ran more than once in one forward pass, so its output is ambiguous; name a "
                    f"module that runs once (module paths, not torch.fx node names such as 'layer1.0.add')")
            kept = output.detach() if detach else output
            if pool and kept.dim() > 2:
                kept = kept.mean(dim=tuple(range(2, kept.dim())))  # a new tensor: later in-place ops cannot reach it
            else:
                # a copy, not a view: the output's storage is often rewritten in place after this hook (torchvision's
                # ReLU(inplace=True) after a BatchNorm, a residual block's `out += identity`), which would silently
                # turn the captured features into another layer's; clone() keeps the autograd graph (detach=False)
                kept = kept.clone()
            outputs[name] = kept.flatten(1)

        return hook

    def start_pass(_model: nn.Module, _inputs: tuple) -> None:
        outputs.clear()

    def end_pass(_model: nn.Module, _inputs: tuple, _output) -> None:
        missing = [name for name in names if name not in outputs]
        if missing:
            raise LayerNotRunError(f"layer(s) {missing} did not run in the forward pass of {type(model).__name__}; "
                                   f"name modules that its forward() calls")
        if in_forward_order and list(outputs) != list(names):
            raise LayerNotRunError(f"layers: listed as {list(names)}, but the forward pass of {type(model).__name__} "
                                   f"runs them in the order {list(outputs)}; list them in that order")

    try:
        handles.append(model.register_forward_pre_hook(start_pass))
        for name, module in zip(names, modules):
            handles.append(module.register_forward_hook(make_hook(name)))
        handles.append(model.register_forward_hook(end_pass))
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def iter_features(
    model: nn.Module,
    data: LabeledImages | torch.Tensor | np.ndarray,
    layers: Sequence[str],
    batch_size: int = 256,
    in_forward_order: bool = False,
    pool: bool = False,
) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
    """Yield ``(features, logits)`` per batch: ``features[i]`` is ``[B, D_i]`` for ``layers[i]``.

    The model is put in eval mode (every submodule's mode restored afterwards) and run on its own device,
    in its own floating dtype (a float64 or float16 model gets float64 or float16 inputs); outputs stay on
    that device. Images are checked first (:func:`analysis.validation.check_images`), and the model's output
    (:func:`analysis.validation.check_model_output`: a logits tensor ``[N, classes]``, finite). ``in_forward_order``
    and ``pool``: see :func:`capture`.
    """
    images = check_images(data, "x")
    device, dtype = model_device(model), model_dtype(model)
    with evaluation_mode(model), capture(model, layers, in_forward_order=in_forward_order, pool=pool) as outputs:
        for start in range(0, len(images), batch_size):
            logits = check_model_output(model(images[start : start + batch_size].to(device, dtype)))
            yield [outputs[name] for name in layers], logits


def extract_features(
    model: nn.Module,
    data: LabeledImages | torch.Tensor | np.ndarray,
    layers: Sequence[str],
    batch_size: int = 256,
) -> tuple[list[np.ndarray], np.ndarray]:
    """All features of ``layers`` for ``data`` as float32 arrays ``[N, D_l]``, plus predicted classes ``[N]``.

    This holds ``N × sum(D_l)`` floats: use it for small sets (reference samples, a
    figure's worth of inputs); stream with :func:`iter_features` otherwise.
    """
    per_layer: list[list[np.ndarray]] = [[] for _ in layers]
    predicted = []
    for features, logits in iter_features(model, data, layers, batch_size):
        for store, feature in zip(per_layer, features):
            store.append(feature.float().cpu().numpy())
        predicted.append(logits.argmax(1).cpu().numpy())
    return [np.concatenate(chunks) for chunks in per_layer], np.concatenate(predicted)


@torch.no_grad()
def predict_classes(model: nn.Module, data: LabeledImages | torch.Tensor | np.ndarray, batch_size: int = 512) -> np.ndarray:
    """The model's predicted class for every image, ``[N]`` int64."""
    images = check_images(data, "x")
    device, dtype = model_device(model), model_dtype(model)
    with evaluation_mode(model):
        return np.concatenate(
            [check_model_output(model(images[s : s + batch_size].to(device, dtype))).argmax(1).cpu().numpy()
             for s in range(0, len(images), batch_size)]
        )
