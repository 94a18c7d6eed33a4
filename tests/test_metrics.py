import pytest

from analysis.metrics import attack_success_rate, auroc, false_positive_rate, main_accuracy, true_positive_rate


def test_metrics_by_hand():
    assert main_accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    assert attack_success_rate([1, 1, 0, 1], target=1) == 0.75
    assert true_positive_rate([True, True, False, True]) == 0.75
    assert false_positive_rate([False, False, False, True]) == 0.25
    assert auroc([0.1, 0.2], [0.3, 0.4]) == 1.0
    assert auroc([0.1, 0.4], [0.3, 0.2]) == 0.5  # 2 of 4 (benign, poisoned) pairs ordered correctly


def test_metric_input_errors():
    with pytest.raises(ValueError, match="differ in shape"):
        main_accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="non-empty"):
        true_positive_rate([])


def test_f1_by_hand():
    from analysis.metrics import f1_score

    # 3 of 4 poisoned flagged (TP 3, FN 1), 1 of 4 benign flagged (FP 1): 2*3 / (2*3 + 1 + 1) = 0.75
    assert f1_score([True, False, False, False], [True, True, True, False]) == 0.75
    assert f1_score([False, False], [False, False]) == 0.0  # nothing found


def test_one_protocol_for_every_detection_cell():
    """Flags give TPR, FPR and F1; suspicion scores give AUROC and TPR at FPR <= 1 % / 5 % (benign-set threshold)."""
    import math

    from analysis.metrics import DETECTION_METRICS, detection_metrics

    benign_scores = [float(v) for v in range(100)]  # 0..99
    poisoned_scores = [98.5, 97.5, 50.0, 200.0]
    found = detection_metrics([False] * 95 + [True] * 5, [True, True, False, True], benign_scores, poisoned_scores)
    assert tuple(found) == DETECTION_METRICS
    assert (found["tpr"], found["fpr"]) == (0.75, 0.05)
    assert found["f1"] == pytest.approx(2 * 3 / (2 * 3 + 5 + 1))
    # FPR <= 1 %: one benign input (99) may lie above the threshold 98 -> 98.5 and 200 are caught
    assert found["tpr_at_fpr_1"] == 0.5
    # FPR <= 5 %: five benign inputs (95..99) above 94 -> 98.5, 97.5, 200
    assert found["tpr_at_fpr_5"] == 0.75
    no_scores = detection_metrics([False], [True])
    assert no_scores["tpr"] == 1.0 and math.isnan(no_scores["auroc"])
    assert math.isnan(detection_metrics([False], [True], [float("nan")], [1.0])["tpr_at_fpr_5"])
