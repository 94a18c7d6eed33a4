"""One call from (model, detector, benign and poisoned evaluation sets) to MA, ASR and the detection protocol."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch.nn as nn

from .data import LabeledImages
from .detection import Detection, LayerwiseDetector
from .metrics import attack_success_rate, detection_metrics, main_accuracy

__all__ = ["Evaluation", "evaluate_detection"]


@dataclass(frozen=True)
class Evaluation:
    """Fractions in [0, 1]; ``loi`` = the detector's LOI for the target class."""

    ma: float
    asr: float
    tpr: float
    fpr: float
    auroc: float
    loi: int
    f1: float = float("nan")
    tpr_at_fpr_1: float = float("nan")  # TPR at FPR <= 1 %, threshold set on the benign evaluation scores
    tpr_at_fpr_5: float = float("nan")

    def as_percentages(self) -> dict[str, float]:
        return {k: (v * 100 if k != "loi" else v) for k, v in asdict(self).items()}


def evaluate_detection(
    model: nn.Module,
    detector: LayerwiseDetector,
    benign: LabeledImages,
    poisoned: LabeledImages,
    target: int,
) -> tuple[Evaluation, Detection, Detection]:
    """Run the fitted ``detector`` on both evaluation sets; returns the metrics and both raw detections."""
    on_benign = detector.detect(model, benign)
    on_poisoned = detector.detect(model, poisoned)
    found = detection_metrics(on_benign.flagged, on_poisoned.flagged,
                              detector.suspicion(on_benign.scores, on_benign.predicted),
                              detector.suspicion(on_poisoned.scores, on_poisoned.predicted))
    result = Evaluation(
        ma=main_accuracy(on_benign.predicted, benign.y.numpy()),
        asr=attack_success_rate(on_poisoned.predicted, target),
        loi=int(detector.loi_[target]),
        **found,
    )
    return result, on_benign, on_poisoned

