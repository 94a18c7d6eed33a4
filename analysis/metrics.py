"""Attack and detection metrics, all as fractions in [0, 1] (reports print percentages).

* MA: accuracy on benign evaluation images.
* ASR: share of poisoned (non-target, triggered) images classified as the target.
* TPR: detected poisoned inputs / all poisoned inputs (captured by the backdoor or not).
* FPR: benign evaluation inputs flagged / all benign evaluation inputs.
* AUROC: of the detector's suspicion score, poisoned = positive.
"""
from __future__ import annotations

import numpy as np


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
