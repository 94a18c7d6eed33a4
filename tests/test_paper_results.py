"""The paper's tables are stored as data; their "Avg" columns check the transcription."""
import numpy as np
import pytest

from analysis.paper_results import (TABLE1_CIFAR10, TABLE2_GTSRB, TABLE7_ADAPTIVE, TABLE7_BETAS, adaptive_row,
                                    paper_value)

# The Avg column of Tables 1 and 2 (TPR, FPR), not stored in the package: recomputing it from the cells
# catches a mistyped cell.
AVERAGES = {
    "table1": {"rs": (24.50, 7.73), "shrinkpad": (64.68, 11.69), "fp": (96.53, 18.55), "ac": (96.94, 31.83),
               "strip": (44.35, 12.32), "scan": (79.88, 1.60), "layerwise": (98.09, 1.34)},
    "table2": {"rs": (11.49, 18.91), "shrinkpad": (65.97, 12.10), "fp": (78.34, 14.76), "ac": (24.74, 12.34),
               "strip": (28.93, 11.07), "scan": (45.59, 6.58), "layerwise": (100.00, 5.92)},
}


@pytest.mark.parametrize("name, table", [("table1", TABLE1_CIFAR10), ("table2", TABLE2_GTSRB)])
def test_cells_reproduce_the_average_column(name, table):
    for defense, expected in AVERAGES[name].items():
        cells = np.array(list(table[defense].values()))
        assert cells.shape == (6, 2)
        np.testing.assert_allclose(cells.mean(0), expected, atol=0.011, err_msg=f"{name} {defense}")


def test_adaptive_table_columns():
    assert all(len(values) == len(TABLE7_BETAS) for values in TABLE7_ADAPTIVE.values())
    assert adaptive_row(0.9)["layerwise_tpr"] == 94.20
    assert adaptive_row(0.33) is None


def test_table6_single_layer_cells_stand_beside_resnet18_layers_only():
    """The paper's Table 6 scores ResNet-18's layers 1..10 (CIFAR-10): MobileNetV2's layer 8 is another layer."""
    assert paper_value("table6", "resnet18", "iad", at=8) == (99.65, 1.13)
    assert np.isnan(paper_value("table6", "mobilenetv2", "iad", at=8)).all()
    # the LOI rule's result is one number per attack, given beside each architecture as Tables 4, 5, 7, 8
    assert paper_value("table6", "mobilenetv2", "iad", at="ours") == (99.12, 1.26)
