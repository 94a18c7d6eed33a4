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
