"""When the paper's rule cannot see (:mod:`analysis.diagnostics`): a near-tie LOI and an LOI at the output layer."""
from __future__ import annotations

import warnings

import pytest

from analysis.diagnostics import LoiWarning, loi_diagnosis, warn_fragile_loi


def test_a_clear_loi_is_neither_a_tie_nor_the_output():
    d = loi_diagnosis([0.1, 0.2, 0.3, 0.4, 0.8, 0.83, 0.84, 0.85])  # candidates 5..8: +0.4 into layer 5
    assert (d.loi, d.runner_up, d.near_tie, d.at_output) == (5, 6, False, False)
    assert d.rise == pytest.approx(0.4) and d.runner_up_rise == pytest.approx(0.03)


def test_the_held_out_models_case_is_a_near_tie_at_the_output():
    """+0.087 into the logits against +0.077 one layer before (issue 31): 0.077 >= 0.85 x 0.087."""
    d = loi_diagnosis([0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.577, 0.664])
    assert (d.loi, d.runner_up, d.near_tie, d.at_output) == (8, 7, True, True)


def test_one_warning_names_the_fragile_classes_and_a_clear_fit_is_silent():
    clear = [0.1, 0.2, 0.3, 0.4, 0.8, 0.82, 0.84, 0.85]
    tie = [0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.577, 0.664]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_fragile_loi({0: clear, 1: clear})
    with pytest.warns(LoiWarning, match=r"near-tie for classes \{2: \(8, 7, 0.087, 0.077\)\}.*output layer for classes \[2\]"):
        found = warn_fragile_loi({0: clear, 2: tie})
    assert found[2].near_tie and not found[0].near_tie


def test_the_narrow_check_warns_only_on_a_near_tie_at_the_output():
    """The narrow form: a tie below the output, or a clear LOI at the output, stays silent."""
    tie_below = [0.1, 0.2, 0.3, 0.4, 0.45, 0.53, 0.62, 0.63]  # +0.09 into 7, +0.08 into 6: a tie, not at the output
    clear_at_output = [0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.52, 0.66]  # +0.14 into the output, runner-up +0.05
    tie_at_output = [0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.577, 0.664]
    assert loi_diagnosis(tie_below).near_tie and not loi_diagnosis(tie_below).at_output
    assert loi_diagnosis(clear_at_output).at_output and not loi_diagnosis(clear_at_output).near_tie
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_fragile_loi({0: tie_below, 1: clear_at_output}, tie_at_output_only=True)
    with pytest.warns(LoiWarning, match=r"output layer on a near-tie for classes \{3: \(8, 7, 0.087, 0.077\)\}"):
        warn_fragile_loi({0: tie_below, 3: tie_at_output}, tie_at_output_only=True)

