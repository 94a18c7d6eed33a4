"""The 1 % FPR protocol (:mod:`analysis.protocol`): redraws, two populations, the interval, NaN never benign."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.attacks import build_attack
from analysis.data import DatasetSplits, LabeledImages
from analysis.detection import Detection
from analysis.protocol import (Inputs, clopper_pearson, evaluation_inputs, population_metrics, redraw, run_protocol,
                               summarize)


def test_clopper_pearson_matches_the_beta_quantiles():
    low, high = clopper_pearson(95, 100)
    assert (round(low, 4), round(high, 4)) == (0.8872, 0.9836)
    assert clopper_pearson(0, 20) == (0.0, pytest.approx(0.1684, abs=1e-4))
    assert np.isnan(clopper_pearson(0, 0)[0])


def test_population_metrics_by_hand():
    benign = np.arange(100, dtype=float)  # FPR <= 1 %: one benign input may lie above the threshold (t = 98)
    triggered = np.array([99.5, 120.0, 50.0, 98.0])  # 99.5 and 120 lie above 98; 98 ties and stays unflagged
    m = population_metrics(benign, benign > 97, triggered, np.array([True, True, False, False]))
    assert m["TPR@1%"] == 50.0 and m["n_triggered"] == 4
    assert m["TPR"] == 50.0 and m["FPR"] == 2.0
    assert m["TPR@1%_low"] < 50.0 < m["TPR@1%_high"]
    # a NaN suspicion is never "benign": it counts as the most suspicious score
    nan = population_metrics(benign, benign > 97, np.array([np.nan]), np.array([True]))
    assert nan["AUROC"] == 100.0 and nan["TPR@1%"] == 100.0


def test_run_zero_is_the_dataset_split_and_redraws_are_stratified_disjoint_and_seeded():
    x, y = torch.rand(60, 3, 4, 4), torch.arange(60) % 3
    data = DatasetSplits("toy", LabeledImages(x, y), LabeledImages(x[:12], y[:12]), LabeledImages(x[12:], y[12:]), 3)
    assert redraw(data, 0) == (data.reference, data.test)
    ref, ev = redraw(data, 1)
    assert len(ref) == 12 and len(ev) == 48 and np.bincount(ref.y.numpy()).tolist() == [4, 4, 4]
    pooled = torch.cat([ref.x, ev.x]).flatten(1)
    assert len(torch.unique(pooled, dim=0)) == 60  # disjoint and complete
    assert torch.equal(redraw(data, 1)[0].x, ref.x) and not torch.equal(redraw(data, 2)[0].x, ref.x)


def test_capped_inputs_keep_the_reached_mask_aligned():
    benign = LabeledImages(torch.rand(10, 3, 4, 4), torch.zeros(10, dtype=torch.long))
    triggered = LabeledImages(torch.arange(8.0).view(8, 1, 1, 1).expand(8, 3, 4, 4) / 8, torch.zeros(8, dtype=torch.long))
    reached = np.arange(8) % 2 == 0
    small = Inputs(benign, triggered, reached).capped(3, seed=0)
    assert len(small.benign) == 3 and len(small.triggered) == 3
    rows = (small.triggered.x[:, 0, 0, 0] * 8).round().long().numpy()
    np.testing.assert_array_equal(small.reached, rows % 2 == 0)


class Oracle:
    """A detector that knows the trigger (BadNets' white 2×2 patch at rows/columns 29-30): suspicion = its brightness."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, model, reference, train=None):
        self.fitted_ = True
        return self

    def detect(self, model, x):
        corner = x[:, :, 29:31, 29:31].mean((1, 2, 3)).numpy().astype(np.float64)
        return Detection(np.zeros(len(x), dtype=np.int64), corner, corner > 0.99)


class ToTarget(torch.nn.Module):
    """Predicts class 1 for images with BadNets' white patch, else class 0 (a perfectly backdoored model)."""

    def forward(self, x):
        corner = x[:, :, 29:31, 29:31].mean((1, 2, 3))
        return torch.stack([1 - corner, corner], 1) * 10


def test_run_protocol_reports_both_populations_per_run_and_caps_only_expensive_detectors():
    torch.manual_seed(0)
    x, y = torch.rand(80, 3, 32, 32) * 0.5, torch.arange(80) % 2
    data = DatasetSplits("toy", LabeledImages(x, y), LabeledImages(x[:20], y[:20]), LabeledImages(x[20:], y[20:]), 2)
    attack = build_attack("badnets", target=1)
    model = ToTarget()
    inputs = evaluation_inputs(model, attack, data.test)
    assert len(inputs.triggered) == int((data.test.y != 1).sum()) and inputs.reached.all()
    table = run_protocol(model, attack, data, {"oracle": Oracle, "costly": Oracle}, runs=2, max_expensive=10,
                         cheap={"oracle"}, progress=False)
    assert len(table) == 2 * 2 * 2  # detectors x runs x populations
    assert set(table.population) == {"all", "reached"}
    assert (table[table.detector == "oracle"].n_benign == 60).all() and (table[table.detector == "costly"].n_benign == 10).all()
    assert (table.AUROC == 100.0).all() and (table["TPR@1%"] == 100.0).all() and (table.FPR == 0.0).all()
    summary = summarize(table)
    assert set(summary.columns) >= {"AUROC", "AUROC_std", "TPR@1%_low", "FPR_std"} and len(summary) == 4
