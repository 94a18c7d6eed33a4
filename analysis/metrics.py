"""Attack and detection metrics, all as fractions in [0, 1] (reports print percentages).

* MA: accuracy on benign evaluation images.
* ASR: share of poisoned (non-target, triggered) images classified as the target.
* TPR: detected poisoned inputs / all poisoned inputs (captured by the backdoor or not).
* FPR: benign evaluation inputs flagged / all benign evaluation inputs.
* AUROC: of the detector's suspicion score, poisoned = positive.
* TPR at FPR <= x: the best TPR of a threshold on the suspicion score whose FPR on the benign
  evaluation inputs is at most x.
* F1: of the flags, poisoned = positive.
* Conformal threshold: the suspicion above which at most a target share of new benign inputs fall,
  set from benign calibration scores by the split-conformal order statistic.
* PSNR (dB): how visible a trigger is, per image, against the benign image (:func:`psnr`).

:func:`detection_metrics` computes all of a detection cell's numbers; everything reports through it.
"""
from __future__ import annotations

import numpy as np

from .validation import check_number

__all__ = ["DETECTION_METRICS", "attack_metrics", "attack_success_rate", "auroc", "conformal_threshold", "detection_metrics",
           "f1_score", "false_positive_rate", "main_accuracy", "psnr", "roc_points", "tpr_at_fpr",
           "trigger_psnr", "true_positive_rate"]


def _flat(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or len(array) == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D array, got shape {array.shape}")
    return array


def main_accuracy(predicted, labels) -> float:
    predicted, labels = _flat(predicted, "predicted"), _flat(labels, "labels")
    if predicted.shape != labels.shape:
        raise ValueError(f"predicted and labels differ in shape: {predicted.shape} vs {labels.shape}")
    return float(np.mean(predicted == labels))


def attack_success_rate(predicted_on_poisoned, target: int) -> float:
    return float(np.mean(_flat(predicted_on_poisoned, "predicted_on_poisoned") == target))


def true_positive_rate(flagged_poisoned) -> float:
    return float(np.mean(_flat(flagged_poisoned, "flagged_poisoned").astype(bool)))


def false_positive_rate(flagged_benign) -> float:
    return float(np.mean(_flat(flagged_benign, "flagged_benign").astype(bool)))


def auroc(suspicion_benign, suspicion_poisoned) -> float:
    """Area under the ROC curve of a suspicion score (higher = more suspicious), poisoned = positive."""
    from sklearn.metrics import roc_auc_score

    benign, poisoned = _flat(suspicion_benign, "suspicion_benign"), _flat(suspicion_poisoned, "suspicion_poisoned")
    scores = np.concatenate([benign, poisoned]).astype(np.float64)
    if not np.all(np.isfinite(scores)):
        raise ValueError("suspicion scores: contain NaN or inf")
    truth = np.concatenate([np.zeros(len(benign)), np.ones(len(poisoned))])
    return float(roc_auc_score(truth, scores))


def roc_points(suspicion_benign, suspicion_poisoned) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve of a suspicion score (higher = more suspicious): ``(FPR [K], TPR [K])`` as fractions."""
    from sklearn.metrics import roc_curve

    benign, poisoned = _flat(suspicion_benign, "suspicion_benign"), _flat(suspicion_poisoned, "suspicion_poisoned")
    scores = np.concatenate([benign, poisoned]).astype(np.float64)
    if not np.all(np.isfinite(scores)):
        raise ValueError("suspicion scores: contain NaN or inf")
    truth = np.concatenate([np.zeros(len(benign)), np.ones(len(poisoned))])
    fpr, tpr, _ = roc_curve(truth, scores, drop_intermediate=False)  # every threshold's point, none dropped
    return fpr, tpr


def tpr_at_fpr(suspicion_benign, suspicion_poisoned, max_fpr: float) -> float:
    """The largest TPR of a threshold on the suspicion score whose FPR on these benign inputs is at most ``max_fpr``.

    Flagged means score > t. With ``k = floor(max_fpr * n_benign)`` benign inputs allowed above it, t is the
    (k+1)-th largest benign score (ties at t stay unflagged, so the FPR never exceeds ``max_fpr``); t = -inf
    when k covers every benign input. The threshold is set on the evaluation scores themselves (an oracle
    operating point, for comparing detectors, not a deployable threshold).

    Examples
    --------
    With 10 benign inputs, FPR <= 10 % allows one above the threshold: t = 0.9, the second largest benign
    score, and two of the four poisoned inputs score above it.

    >>> tpr_at_fpr([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95], [0.92, 0.99, 0.5, 0.85], 0.10)
    0.5
    """
    benign, poisoned = _flat(suspicion_benign, "suspicion_benign"), _flat(suspicion_poisoned, "suspicion_poisoned")
    if not 0.0 <= max_fpr <= 1.0:
        raise ValueError(f"max_fpr: expected a fraction in [0, 1], got {max_fpr!r}")
    scores = np.concatenate([benign, poisoned]).astype(np.float64)
    if not np.all(np.isfinite(scores)):
        raise ValueError("suspicion scores: contain NaN or inf")
    allowed = int(np.floor(max_fpr * len(benign) + 1e-9))
    threshold = -np.inf if allowed >= len(benign) else np.sort(benign.astype(np.float64))[::-1][allowed]
    return float(np.mean(poisoned.astype(np.float64) > threshold))


def conformal_threshold(calibration_suspicion, target_fpr: float) -> float:
    """The split-conformal threshold on a suspicion score (higher = more suspicious) for a target FPR.

    With the ``n`` benign calibration scores sorted ascending, ``s_(1) <= ... <= s_(n)``, returns ``s_(k)`` with
    ``k = ceil((n + 1) * (1 - target_fpr))``; an input is flagged when its suspicion is *strictly above* it.
    If a new benign input's score and the calibration scores are exchangeable (drawn alike, the calibration
    scores not used to fit the detector), then P(new benign input flagged) <= ``(n + 1 - k) / (n + 1)``
    <= ``target_fpr``, for any n and any score distribution (ties only lower it). When ``k > n``
    (``n < 1 / target_fpr - 1``) no calibration score is high enough: returns ``inf`` (nothing is flagged).

    Examples
    --------
    Nineteen calibration scores 1..19 and a 10 % target: k = ceil(20 × 0.9) = 18, so inputs above 18 are flagged.

    >>> conformal_threshold(list(range(1, 20)), 0.10)
    18.0
    >>> conformal_threshold(list(range(1, 19)), 0.05)  # k = ceil(19 × 0.95) = 19 > 18 scores
    inf
    """
    scores = _flat(calibration_suspicion, "calibration_suspicion").astype(np.float64)
    check_number(target_fpr, "target_fpr", 0.0, 1.0, low_open=True, high_open=True)
    if not np.all(np.isfinite(scores)):
        raise ValueError("calibration_suspicion: contains NaN or inf")
    n = len(scores)
    k = int(np.ceil((n + 1) * (1.0 - target_fpr) - 1e-9))
    return float(np.inf) if k > n else float(np.sort(scores)[k - 1])


def f1_score(flagged_benign, flagged_poisoned) -> float:
    """F1 of the flags, poisoned = positive: ``2 TP / (2 TP + FP + FN)``; 0 when nothing is flagged and nothing poisoned is found."""
    benign = _flat(flagged_benign, "flagged_benign").astype(bool)
    poisoned = _flat(flagged_poisoned, "flagged_poisoned").astype(bool)
    tp, fp, fn = int(poisoned.sum()), int(benign.sum()), int((~poisoned).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


#: The columns every detection cell reports (:func:`detection_metrics`), as fractions.
DETECTION_METRICS = ("tpr", "fpr", "f1", "auroc", "tpr_at_fpr_1", "tpr_at_fpr_5")


def detection_metrics(flagged_benign, flagged_poisoned, suspicion_benign=None, suspicion_poisoned=None) -> dict[str, float]:
    """The evaluation protocol of every detection cell, as fractions (:data:`DETECTION_METRICS`).

    ``tpr``, ``fpr`` and ``f1`` at the detector's own threshold (its flags); from the suspicion scores
    (higher = more suspicious): ``auroc``, and ``tpr_at_fpr_1`` / ``tpr_at_fpr_5``, the TPR at FPR <= 1 %
    and <= 5 % with the threshold set on these benign *evaluation* scores (:func:`tpr_at_fpr`). The
    benign inputs must be disjoint from the detector's reference set. Score-based entries are NaN
    without scores or where a score is NaN or inf (e.g. an input of a class without reference samples).
    """
    out = {"tpr": true_positive_rate(flagged_poisoned), "fpr": false_positive_rate(flagged_benign),
           "f1": f1_score(flagged_benign, flagged_poisoned),
           "auroc": np.nan, "tpr_at_fpr_1": np.nan, "tpr_at_fpr_5": np.nan}
    if suspicion_benign is None or suspicion_poisoned is None:
        return out
    benign = np.asarray(suspicion_benign, dtype=np.float64)
    poisoned = np.asarray(suspicion_poisoned, dtype=np.float64)
    if np.all(np.isfinite(benign)) and np.all(np.isfinite(poisoned)):
        out.update(auroc=auroc(benign, poisoned), tpr_at_fpr_1=tpr_at_fpr(benign, poisoned, 0.01),
                   tpr_at_fpr_5=tpr_at_fpr(benign, poisoned, 0.05))
    return out

def psnr(benign, poisoned) -> np.ndarray:
    """Per-image PSNR in dB of ``poisoned`` against ``benign``, pixels in [0, 1] (peak 1).

    ``PSNR = 10 log10(1 / MSE)``, MSE the mean squared difference over an image's ``C × H × W`` values,
    computed in float64. Identical images give ``inf`` (the definition's limit, as in scikit-image's
    ``peak_signal_noise_ratio``): no floor, so a mean over images that include an unchanged one is ``inf``,
    not a large finite number that looks like a faint trigger.

    Parameters
    ----------
    benign, poisoned : tensors or arrays ``[N, C, H, W]`` (or one image ``[C, H, W]``), same shape, in [0, 1].

    Returns
    -------
    ``[N]`` float64 array (``[1]`` for one image).

    Examples
    --------
    One channel of 2 × 2 pixels, one pixel off by 0.2: MSE = 0.04 / 4 = 0.01, PSNR = 10 log10(100) = 20 dB.

    >>> import numpy as np
    >>> psnr(np.zeros((1, 1, 2, 2)), np.array([[[[0.2, 0.0], [0.0, 0.0]]]]))
    array([20.])
    >>> psnr(np.ones((1, 2, 2)), np.ones((1, 2, 2)))
    array([inf])
    """
    a, b = (np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64) for x in (benign, poisoned))
    if a.shape != b.shape or a.ndim not in (3, 4):
        raise ValueError(f"benign, poisoned: expected two arrays of the same shape [N, C, H, W] or [C, H, W], "
                         f"got {a.shape} and {b.shape}")
    if a.ndim == 3:
        a, b = a[None], b[None]
    mse = ((b - a) ** 2).reshape(len(a), -1).mean(1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(1.0 / mse)


def trigger_psnr(attack, test, poisoned_test) -> float:
    """Mean :func:`psnr` (dB) of an attack's triggered images against their benign versions.

    Parameters
    ----------
    attack : Attack
        The attack that made ``poisoned_test``; its ``target`` class is left out of ``test``.
    test : LabeledImages
        The benign evaluation images.
    poisoned_test : LabeledImages
        ``attack.poisoned_test_set(test)``: the triggered versions of ``test``'s images not of the target class.

    Returns
    -------
    float
        ``inf`` if a triggered image equals its benign one.
    """
    return float(np.mean(psnr(test.of_class_not(attack.target).x, poisoned_test.x)))


def attack_metrics(model, test, poisoned_test=None, target: int | None = None) -> dict[str, float]:
    """``{"ma": ..., "asr": ...}`` of ``model``: :func:`main_accuracy` on ``test`` (LabeledImages) and
    :func:`attack_success_rate` on ``poisoned_test`` for ``target``, one ``predict_classes`` pass per set.

    Without ``poisoned_test`` (a clean model) only ``"ma"``.
    """
    from .features import predict_classes

    out = {"ma": main_accuracy(predict_classes(model, test), test.y.numpy())}
    if poisoned_test is not None:
        if target is None:
            raise ValueError("target: needed to measure the ASR on poisoned_test, got None")
        out["asr"] = attack_success_rate(predict_classes(model, poisoned_test), target)
    return out
