"""The recipes of docs/extending.md, end to end.

An attack: a 7th attack, registered like the others, runs through `reproduce`. The paper has no numbers for
it, so its paper columns are NaN (never a KeyError), and the committed zoo stays complete: a new attack joins
the zoo only when added to ``analysis.zoo.ZOO_ATTACKS`` on purpose.

An experiment: a function and one line in ``analysis.experiment_registry.EXPERIMENTS``; ``reproduce``, the
Ray backend's plan and ``reproduce --help`` then know it.
"""
import functools
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from analysis import attacks, experiments, paper_results, zoo
from analysis import reproduce as rep
from analysis.attacks.base import Attack
from analysis.backends import models_to_train
from analysis.cli import main
from analysis.data import DatasetSplits
from analysis.experiment_registry import EXPERIMENTS, Experiment
from analysis.metrics import attack_metrics
from analysis.model_plan import badnets_only, each_arch, plan_models


class CornerPatch(Attack):
    """A toy attack: a 2x2 patch of value 0.5 in the top-left corner, poisoned labels."""

    name = "toy"  # the registry key: checkpoints record it and rebuild the attack by it

    def __init__(self, target: int = 1, rate: float = 0.05, value: float = 0.5, seed: int = 0) -> None:
        super().__init__(target, rate, seed)
        self.value = float(value)

    def settings(self) -> dict:
        return {**super().settings(), "value": self.value}

    def _stamp(self, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        out[:, :, :2, :2] = self.value
        return out


@pytest.fixture
def toy(monkeypatch):
    """``CornerPatch`` registered as ``"toy"`` for one test, as analysis/attacks/__init__.py registers attacks."""
    monkeypatch.setitem(attacks.ATTACKS, "toy", CornerPatch)
    return "toy"


@pytest.fixture(scope="module")
def tiny(digits):
    train, test = np.arange(0, len(digits.train), 9), np.arange(0, len(digits.test), 3)  # 120 and 180 images
    return DatasetSplits("digits", digits.train.subset(train), digits.reference, digits.test.subset(test), 10)


def test_a_registered_attack_is_available_everywhere_but_the_zoo(toy):
    assert isinstance(attacks.build_attack(toy), CornerPatch)
    assert experiments.default_attacks()[-1] == toy and experiments.Study(None).attacks[-1] == toy
    assert "adaptive" not in experiments.default_attacks()  # it has its own table (Table 7)
    assert not [entry for entry in zoo.zoo_entries() if entry.attack == toy]  # the committed zoo stays complete
    for table, detector in (("table3", None), ("tables12", "layerwise")):
        values = paper_results.paper_value(table, "resnet18", toy, detector)
        assert len(values) == 2 and all(math.isnan(v) for v in values)


def test_reproduce_runs_a_new_attack_with_empty_paper_columns(tmp_path, tiny, toy, monkeypatch):
    # the paper's rows only, to keep the test short: the new attack is what is tested, not the detectors
    few = functools.partial(experiments.tables12_detection, defenses=experiments.available_defenses())
    monkeypatch.setitem(rep.EXPERIMENTS, "tables12", rep.EXPERIMENTS["tables12"].using(few))
    report = rep.reproduce(tiny, tmp_path, only=["table3", "tables12", "fig5"], archs=["resnet18"],
                           runs=1, progress=False, epochs=1, attacks=[toy], max_eval=10, defense_samples=2)
    table3 = pd.read_csv(tmp_path / "table3.csv").set_index("attack")
    assert table3.index.tolist() == ["clean", toy]
    # measured, in percent, on the 180 benign test images and their 161 triggered non-target versions
    n_benign, n_triggered = len(tiny.test), len(tiny.test.of_class_not(1))
    assert (n_benign, n_triggered) == (180, 161)
    for column, n in (("MA", n_benign), ("ASR", n_triggered)):
        assert table3.loc[toy, column] * n / 100 == pytest.approx(round(table3.loc[toy, column] * n / 100), abs=1e-6)
    assert table3.loc[toy, ["paper_MA", "paper_ASR", "paper_TPR", "paper_FPR"]].isna().all()
    tables12 = pd.read_csv(tmp_path / "tables12.csv")
    assert set(tables12.attack) == {toy} and set(tables12.defense) == set(experiments.available_defenses())
    assert tables12[["paper_TPR", "paper_FPR"]].isna().all().all()
    assert set(pd.read_csv(tmp_path / "fig5.csv").attack) == {toy}  # Fig. 5 falls back to the study's attack
    assert f"| resnet18 | {toy} |" in report.read_text()


def test_attack_metrics_is_the_inline_ma_and_asr_it_replaced(tiny):
    """MA and ASR have one home (analysis.metrics): the same predictions and fractions as the formulas it replaced."""
    from analysis.features import predict_classes
    from analysis.metrics import attack_metrics
    from analysis.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet18", 10, 4).eval()
    attack = CornerPatch()
    poisoned = attack.poisoned_test_set(tiny.test)
    measured = attack_metrics(model, tiny.test, poisoned, attack.target)
    assert measured["ma"] == float(np.mean(predict_classes(model, tiny.test) == tiny.test.y.numpy()))
    assert measured["asr"] == float(np.mean(predict_classes(model, poisoned) == attack.target))
    assert attack_metrics(model, tiny.test) == {"ma": measured["ma"]}  # a clean model: MA only
    with pytest.raises(ValueError, match="target"):
        attack_metrics(model, tiny.test, poisoned)


# ---------------------------------------------------------------------- the recipe "An experiment"
def reference_accuracy(study):
    """A toy experiment: per architecture, the BadNets model's accuracy (%) on the defender's reference split."""
    rows = []
    for arch in study.archs:
        for attack in badnets_only(study.attacks):  # the rule its registry line names too
            run = study.model(arch, attack)
            rows.append({"arch": arch, "attack": attack,
                         "reference_MA": attack_metrics(run.model, run.data.reference)["ma"] * 100})
    return pd.DataFrame(rows), []


@pytest.fixture
def toy_experiment(monkeypatch):
    """``reference_accuracy`` registered as ``"toy_ma"`` for one test: the one line of the recipe."""
    monkeypatch.setitem(EXPERIMENTS, "toy_ma", Experiment(reference_accuracy, "Toy: accuracy on the reference split",
                                                          each_arch(badnets_only)))
    return "toy_ma"


def test_a_registered_experiment_is_known_to_reproduce_the_ray_plan_and_help(tmp_path, digits, toy_experiment,
                                                                              capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    assert re.search(rf"fig11\s+{toy_experiment}\)", capsys.readouterr().out)  # listed last, after Fig. 11
    planned = plan_models([toy_experiment], "digits", ["resnet18"], ["badnets"])
    assert [spec.name for spec in planned] == ["digits-resnet18-badnets"]
    # the digits zoo has that model, so the Ray backend would train nothing before starting the experiment
    study = experiments.Study(digits, archs=("resnet18",), models_dir=tmp_path / "models", progress=False)
    assert models_to_train(study, planned) == []
    report = rep.reproduce(digits, tmp_path, only=[toy_experiment], archs=["resnet18"], runs=1, progress=False,
                           attacks=["badnets"])
    table = pd.read_csv(tmp_path / f"{toy_experiment}.csv")
    assert table[["arch", "attack"]].values.tolist() == [["resnet18", "badnets"]]
    assert 80 < table.reference_MA[0] <= 100
    assert (tmp_path / f"{toy_experiment}.md").read_text().startswith("## Toy: accuracy on the reference split\n")
    assert "## Toy: accuracy on the reference split" in report.read_text()
    assert not (tmp_path / "models" / "manifest.json").exists()  # loaded from the zoo, nothing trained


def test_an_unregistered_experiment_is_refused_with_the_list(tmp_path, digits):
    with pytest.raises(ValueError, match=r"only: unknown experiments \['toy_ma'\]; available: \['fig1'"):
        rep.reproduce(digits, tmp_path, only=["toy_ma"], archs=["resnet18"], runs=1, progress=False)
