"""The input contract, checked in one place: what images the toolkit accepts, and the error when they are not.

Every image that enters the toolkit, as :class:`analysis.data.LabeledImages`, as a tensor given to
a detector, a defense or an attack, goes through :func:`check_images`:

* a 4-D batch ``[N, C, H, W]`` (channels first), N >= 1;
* a floating-point dtype (``uint8`` images, 0-255, are refused: divide by 255, or use
  :func:`analysis.data.images_from_uint8_nhwc`);
* values in ``[0, 1]`` (images normalised with a mean and std, or to [-1, 1], are refused: a model
  that expects normalised inputs normalises inside its ``forward``);
* no NaN or inf;
* (a warning, :class:`InputWarning`, not an error) not implausibly dark: a batch whose brightest value is
  above 0 and below :data:`DARK_MAX` was most likely divided by 255 twice;
* where a detector was fitted, the same ``C, H, W`` as its reference images.

Each failure names the argument, what was expected and what was given, because every one of them
would otherwise run through and return a wrong answer: 0-255 images are flagged as poisoned
wholesale, a channels-last batch gets a trigger stamped on the wrong axes.
"""
from __future__ import annotations

import warnings
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

__all__ = ["DARK_MAX", "InputWarning", "LabeledBatch", "NotFittedError", "RANGE_TOLERANCE", "check_choice",
           "check_finite_tensor", "check_images", "check_index", "check_indices", "check_int", "check_model_output",
           "check_number", "describe", "preview", "same_setting"]

class NotFittedError(_SklearnNotFittedError, RuntimeError):
    """An estimator (detector, defense) or an attack was used before ``fit`` (or ``prepare``).

    One error everywhere: scikit-learn's ``NotFittedError`` (so ``except NotFittedError`` written for
    scikit-learn catches it), and a ``RuntimeError`` as this toolkit raised before.
    """


class InputWarning(UserWarning):
    """Inputs that pass the contract but are implausible (e.g. an almost black batch: divided by 255 twice?).

    Turn it into an error to refuse them: ``warnings.simplefilter("error", InputWarning)``.
    """


#: A batch whose largest value is above 0 and below this is "implausibly dark" (:class:`InputWarning`): images
#: divided by 255 twice lie in [0, 1/255]; a natural image's brightest pixel is far above 5/255.
DARK_MAX = 0.02

#: Tolerance on the [0, 1] range: bilinear resizing and float arithmetic may leave values a hair outside.
RANGE_TOLERANCE = 1e-5


@runtime_checkable
class LabeledBatch(Protocol):
    """Anything with images ``x`` and labels ``y``, as :class:`analysis.data.LabeledImages`.

    :func:`check_images` reads such an object's ``x`` without importing :mod:`analysis.data` (which imports this
    module: the imports flow one way, from the data to its checks).
    """

    x: Any
    y: Any


def describe(value: object) -> str:
    """A short description of an argument for error messages: type, shape and dtype of arrays."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    return type(value).__name__


def check_images(
    x: Any,
    name: str = "x",
    *,
    image_shape: Sequence[int] | None = None,
    allow_empty: bool = False,
) -> torch.Tensor:
    """``x`` (LabeledImages, tensor or array) as a floating tensor ``[N, C, H, W]`` in [0, 1], or a ValueError.

    ``image_shape`` ``(C, H, W)``: the shape the images must have (e.g. what a detector was fitted on).
    The tensor is returned as given (no copy) when it is already a floating tensor; arrays are converted.

    Examples
    --------
    >>> import numpy as np
    >>> check_images(np.zeros((2, 3, 32, 32))).shape
    torch.Size([2, 3, 32, 32])
    >>> check_images(np.zeros((2, 32, 32, 3), dtype=np.uint8), "images")
    Traceback (most recent call last):
    ...
    ValueError: images: expected channels first [N, C, H, W], got shape (2, 32, 32, 3), which looks like channels last...
    """
    if isinstance(x, LabeledBatch) and not isinstance(x, (torch.Tensor, np.ndarray)):
        images = x.x
    elif isinstance(x, torch.Tensor):
        images = x
    elif isinstance(x, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(x)) if x.dtype != object else None
        if images is None:
            raise TypeError(f"{name}: expected numeric images, got an object array")
    else:
        raise TypeError(f"{name}: expected LabeledImages, a tensor or an array of images, got {type(x).__name__}")
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name}: expected images as a tensor, got {describe(images)}")
    if images.ndim != 4:
        raise ValueError(f"{name}: expected images of shape [N, C, H, W], got shape {tuple(images.shape)}")
    if len(images) == 0 and not allow_empty:
        raise ValueError(f"{name}: got no images (N = 0)")
    if images.shape[1] not in (1, 3) and images.shape[3] in (1, 3):
        raise ValueError(
            f"{name}: expected channels first [N, C, H, W], got shape {tuple(images.shape)}, which looks like "
            f"channels last [N, H, W, C]; pass x.permute(0, 3, 1, 2) (uint8 arrays: "
            f"analysis.data.images_from_uint8_nhwc)")
    if not images.is_floating_point():
        low, high = _extremes(images)
        raise ValueError(
            f"{name}: expected floating-point images with values in [0, 1], got dtype {images.dtype} (values "
            f"{low:g} to {high:g}); divide 8-bit images by 255 (uint8 [N, H, W, C] arrays: "
            f"analysis.data.images_from_uint8_nhwc)")
    if len(images) == 0:
        return images
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name}: contains NaN or inf")
    low, high = _extremes(images)
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        hint = ("they look like 0-255 pixel values: divide by 255" if low >= 0 and high > 1.5 else
                "they look normalised (mean/std or [-1, 1]): pass the [0, 1] images; a model that expects "
                "normalised inputs should normalise inside its forward()" if low < 0 else
                "pixel values must lie in [0, 1]")
        raise ValueError(f"{name}: expected values in [0, 1], got values from {low:.4g} to {high:.4g}; {hint}")
    if 0 < high < DARK_MAX:
        warnings.warn(f"{name}: implausibly dark batch: every value is at most {high:.3g} (below {DARK_MAX}); were the "
                      f"images divided by 255 twice? Pass pixel values in [0, 1] (8-bit images divided by 255 once)",
                      InputWarning, stacklevel=2)
    if image_shape is not None and tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(f"{name}: expected images of shape [N, {', '.join(map(str, image_shape))}] (the shape the "
                         f"detector was fitted on), got [N, {', '.join(map(str, images.shape[1:]))}]")
    return images


def _extremes(images: torch.Tensor) -> tuple[float, float]:
    if images.dtype == torch.bool:
        images = images.to(torch.uint8)
    low, high = torch.aminmax(images)
    return float(low), float(high)


# ---------------------------------------------------------------------- model outputs
def check_model_output(output: Any, name: str = "model") -> torch.Tensor:
    """``output`` of a model's forward pass, checked to be a finite logits tensor ``[N, classes]``; returns it.

    One check for every place the toolkit reads a model's prediction (the defenses, through
    :func:`analysis.defenses.base.evaluating`; :func:`analysis.features.iter_features` and
    :func:`analysis.features.predict_classes`). A tuple or dict (e.g. ``(logits, features)``, a Hugging Face
    output) raises a TypeError; a tensor that is not 2-D, a ValueError; NaN or inf logits, a ValueError that
    says which and how many, because each would otherwise pass through a defense as a wrong answer (NaN
    scores are never above a threshold, so nothing is flagged; argmax of NaN logits is class 0).

    Examples
    --------
    >>> import torch
    >>> check_model_output((torch.zeros(2, 3), torch.zeros(2, 8)))
    Traceback (most recent call last):
    ...
    TypeError: model: a model must return a logits tensor [N, classes], got a tuple; ...
    >>> check_model_output(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]))
    Traceback (most recent call last):
    ...
    ValueError: model: returned NaN logits for 1 of 2 inputs...
    """
    if not isinstance(output, torch.Tensor):
        kind = {tuple: "a tuple", list: "a list", dict: "a dict"}.get(type(output), type(output).__name__)
        if isinstance(output, dict):
            kind = f"a {type(output).__name__} with keys {list(output)[:5]}"
        raise TypeError(f"{name}: a model must return a logits tensor [N, classes], got {kind}; wrap it so that its "
                        f"forward() returns the logits only (e.g. forward(x) = inner(x)[0] or inner(x)['logits'])")
    if output.ndim != 2:
        raise ValueError(f"{name}: a model must return a logits tensor [N, classes], got a tensor of shape "
                         f"{tuple(output.shape)}")
    return check_finite_tensor(output, name, what="logits")


def check_finite_tensor(values: torch.Tensor, name: str, what: str = "values") -> torch.Tensor:
    """``values`` if every entry is finite; otherwise a ValueError naming NaN and/or inf and how many rows have them."""
    if values.is_floating_point() or values.is_complex():
        finite = torch.isfinite(values)
        if not bool(finite.all()):
            flat = values.detach().reshape(len(values), -1) if values.ndim else values.detach().reshape(1, -1)
            nan_rows = int(torch.isnan(flat).any(1).sum())
            inf_rows = int(torch.isinf(flat).any(1).sum())
            kinds = " and ".join(k for k, n in (("NaN", nan_rows), ("inf", inf_rows)) if n)
            counts = ", ".join(f"{k}: {n}" for k, n in (("NaN", nan_rows), ("inf", inf_rows)) if n)
            raise ValueError(f"{name}: returned {kinds} {what} for {max(nan_rows, inf_rows)} of {len(flat)} inputs "
                             f"(rows with {counts}); a model with NaN or inf outputs (diverged training, float16 "
                             f"overflow, a broken checkpoint) cannot be analysed")
    return values


# ---------------------------------------------------------------------- settings
def check_int(value: Any, name: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")


def check_index(value: Any, name: str, low: int | None = 0, high: int | None = None) -> int:
    """``value`` as an ``int`` index (a layer, a class) in ``[low, high]``; a ValueError or TypeError otherwise.

    An index is an integer: Python or NumPy integers, 0-d integer tensors and integral floats (``3.0``) are
    accepted; a non-integral float (``8.7``, a class of ``1.7``) is refused instead of being truncated to
    another index, and so are booleans, strings, NaN and inf. ``low``/``high`` (inclusive) may be None.

    Examples
    --------
    >>> check_index(3.0, "target", 0, 9)
    3
    >>> check_index(1.7, "target", 0, 9)
    Traceback (most recent call last):
    ...
    ValueError: target: expected an integer from 0 to 9, got 1.7 (not a whole number: it would be truncated to 1)
    """
    if low is not None and high is not None:
        expected = f"an integer from {low} to {high}"
    else:
        expected = "an integer" + (f" >= {low}" if low is not None else "") + (f" <= {high}" if high is not None else "")
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        shown = describe(value) if isinstance(value, (torch.Tensor, np.ndarray)) else repr(value)[:80]
        raise TypeError(f"{name}: expected {expected}, got {shown}")
    if isinstance(value, float):
        if not np.isfinite(value):
            raise ValueError(f"{name}: expected {expected}, got {value!r}")
        if value != int(value):
            raise ValueError(f"{name}: expected {expected}, got {value!r} (not a whole number: it would be truncated "
                             f"to {int(value)})")
        value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name}: expected {expected}, got {value}")
    return value


def check_indices(values: Any, name: str, low: int | None = 0, high: int | None = None) -> tuple[int, ...]:
    """Each of ``values`` (a sequence, array or 1-d tensor) checked by :func:`check_index`; an empty sequence is refused.

    The error names the position: ``score_layers[1]: expected an integer from 1 to 10, got 8.7 ...``.

    Examples
    --------
    >>> check_indices([8, 9.0], "score_layers", 1, 10)
    (8, 9)
    """
    if isinstance(values, (torch.Tensor, np.ndarray)):
        if values.ndim != 1:
            raise ValueError(f"{name}: expected a 1-d sequence of integers, got {describe(values)}")
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name}: expected a sequence of integers, got {type(values).__name__}")
    if len(values) == 0:
        raise ValueError(f"{name}: expected at least one integer, got an empty sequence")
    return tuple(check_index(value, f"{name}[{i}]", low, high) for i, value in enumerate(values))


def preview(values: Sequence[Any], limit: int = 10) -> str:
    """At most ``limit`` items of ``values`` for an error message, then how many there are in all.

    A message must stay one readable line however many values are wrong (100,000 missing class ids).

    Examples
    --------
    >>> preview(range(3))
    '[0, 1, 2]'
    >>> preview(range(100000), limit=3)
    '[0, 1, 2, ... (100000 in all)]'
    """
    total = len(values)
    head = [values[i] for i in range(min(limit, total))]
    text = ", ".join(str(int(v)) if isinstance(v, (int, np.integer)) else repr(v) for v in head)
    return f"[{text}]" if total <= limit else f"[{text}, ... ({total} in all)]"


def check_number(value: Any, name: str, low: float, high: float, low_open: bool = False, high_open: bool = False) -> None:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and not np.isnan(value)
    if ok:
        ok = (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name}: expected a number in {interval}, got {value!r}")


def same_setting(a: Any, b: Any) -> bool:
    """Whether two values of one setting are the same: lists and tuples compare by their items, arrays by value.

    Used to tell a setting changed after ``fit`` (``[3, 5]`` and ``(3, 5)`` are the same setting).
    """
    def normal(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return tuple(normal(v) for v in value)
        if isinstance(value, np.ndarray):
            return tuple(normal(v) for v in value.tolist())
        if isinstance(value, np.generic):
            return value.item()
        return value

    a, b = normal(a), normal(b)
    try:
        equal = a == b
        return bool(equal) or (isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b))
    except Exception:  # objects without a usable ==: compare their repr
        return repr(a) == repr(b)


def check_choice(value: Any, name: str, options: Sequence[Any]) -> None:
    if value not in options:
        raise ValueError(f"{name}: expected one of {list(options)}, got {value!r}")
