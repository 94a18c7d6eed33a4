"""One call from (model, detector, benign and poisoned evaluation sets) to MA, ASR, TPR, FPR, AUROC."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch.nn as nn

from .data import LabeledImages
from .detection import Detection, LayerwiseDetector
from .metrics import attack_success_rate, auroc, false_positive_rate, main_accuracy, true_positive_rate


@dataclass(frozen=True)
class Evaluation:
    """Fractions in [0, 1]; ``loi`` = the detector's LOI for the target class."""

    ma: float
    asr: float
    tpr: float
    fpr: float
    auroc: float
    loi: int

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
    result = Evaluation(
        ma=main_accuracy(on_benign.predicted, benign.y.numpy()),
        asr=attack_success_rate(on_poisoned.predicted, target),
        tpr=true_positive_rate(on_poisoned.flagged),
        fpr=false_positive_rate(on_benign.flagged),
        auroc=auroc(detector.suspicion(on_benign.scores, on_benign.predicted),
                    detector.suspicion(on_poisoned.scores, on_poisoned.predicted)),
        loi=int(detector.loi_[target]),
    )
    return result, on_benign, on_poisoned

