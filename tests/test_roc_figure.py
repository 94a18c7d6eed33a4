"""plotting.roc_figure: identical curves visible and named, the legend below a standalone figure."""
import numpy as np

from analysis.plotting import roc_figure


def test_an_identical_curve_is_drawn_dashed_and_named_not_hidden():
    benign, poisoned = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.35, 0.5, 0.6])
    fig = roc_figure({"a": (benign, poisoned), "b": (benign * 2, poisoned * 2), "c": (benign, -poisoned)}, "t")
    a, b, c = fig.data[:3]
    # 11 of the 12 (benign, poisoned) pairs are ranked right: AUROC 91.7 %; b's scores are a's times 2: the same ranking, the same ROC points
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.line.dash is None and b.line.dash == "dash"
    assert b.name == "b (AUROC 91.7; same curve as a)" and a.name == "a (AUROC 91.7)"
    assert c.line.dash is None and "same curve" not in c.name  # another ranking: drawn as usual


def test_a_standalone_figure_puts_its_legend_below_the_axes():
    fig = roc_figure({"a": (np.array([0.0, 1.0]), np.array([2.0]))}, "t", mark_fpr=0.01)
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.y < 0
    assert fig.data[0].name == "a (AUROC 100.0, TPR 100.0 at FPR ≤ 1 %)"
