"""Whether a benign reference set can give trustworthy thresholds: too few, or too alike, samples per class.

A class's threshold ``mu - tau * sigma`` is estimated from its reference samples: with one sample sigma is 0,
with a handful it is noise, and with duplicated images it is (almost) 0, so that every input of the class that
scores a little below mu is flagged. These are refused (fewer than 2) or warned about (:class:`ReferenceWarning`).
"""
from __future__ import annotations

import warnings

import numpy as np

from .detector_inputs import ArrayLike, as_labels
from .validation import preview

__all__ = ["MIN_CLASS_SAMPLES", "ReferenceWarning", "check_reference_classes", "check_reference_counts",
           "warn_degenerate_spread"]


class ReferenceWarning(UserWarning):
    """The reference samples of a class are too few, or too alike, for a trustworthy threshold.

    Turn it into an error to refuse such a reference set: ``warnings.simplefilter("error", ReferenceWarning)``.
    """


#: Below this many reference samples, a class's mean and standard deviation are too noisy to trust.
MIN_CLASS_SAMPLES = 10


def check_reference_counts(
    labels: ArrayLike, name: str = "reference", num_classes: int | None = None, stacklevel: int = 2
) -> dict[int, int]:
    """Reference samples per class ``{class: count}``; raises below 2 in a class, warns below :data:`MIN_CLASS_SAMPLES`.

    With ``num_classes``, a class in ``0..num_classes-1`` without any reference sample raises too: inputs
    predicted as it could not be scored. Called by :meth:`analysis.detection.LayerwiseDetector.fit` and, before
    any model is trained, by :func:`analysis.reproduce.reproduce`.
    """
    labels_np = as_labels(labels, name)
    classes, counts = np.unique(labels_np, return_counts=True)
    found = {int(c): int(k) for c, k in zip(classes, counts)}
    if num_classes is not None:
        missing = np.setdiff1d(np.arange(num_classes), classes)  # vectorised: a huge num_classes stays fast
        if len(missing):
            raise ValueError(f"{name}: classes {preview(missing.tolist())} have no reference samples (of {num_classes} classes); "
                             f"inputs predicted as them could not be scored")
    few = {c: k for c, k in found.items() if k < 2}
    if few:
        raise ValueError(f"{name}: each class needs at least 2 reference samples; too few for {few} (class: count)")
    small = {c: k for c, k in found.items() if k < MIN_CLASS_SAMPLES}
    if small:
        warnings.warn(f"{name}: fewer than {MIN_CLASS_SAMPLES} reference samples in classes {small} (class: count); "
                      f"their mean and standard deviation, hence their thresholds, are unreliable",
                      ReferenceWarning, stacklevel=stacklevel)
    return found


def check_reference_classes(labels: np.ndarray, stacklevel: int = 5) -> np.ndarray:
    """The classes of the reference labels, after :func:`check_reference_counts` (given ``stacklevel``).

    The default 5 makes the warning point at the caller of :meth:`analysis.detection.LayerwiseDetector.fit`.
    """
    if len(labels) == 0:
        raise ValueError("labels: got no reference samples")
    check_reference_counts(labels, "labels", stacklevel=stacklevel)
    return np.unique(labels)


def warn_degenerate_spread(mu: dict[int, float], sigma: dict[int, float], stacklevel: int = 4) -> None:
    """Warn about classes whose reference scores (nearly) all coincide, e.g. duplicated reference images.

    The default ``stacklevel`` makes the warning point at the caller of :meth:`analysis.detection.LayerwiseDetector.fit`.
    """
    flat = [t for t in mu if sigma[t] <= 1e-9 * max(1.0, abs(mu[t]))]
    if flat:
        warnings.warn(f"reference: the scores of classes {flat} have (almost) no spread (sigma ~ 0), e.g. duplicated "
                      f"reference images; every input of such a class that scores a little below mu is flagged",
                      ReferenceWarning, stacklevel=stacklevel)

