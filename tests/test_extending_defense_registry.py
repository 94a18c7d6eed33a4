"""docs/extending.md, "A defense": a class module and one line of the registry, and nothing else.

Every place that knows detector names (``analysis.defenses``, ``analysis.comparison``, ``analysis.protocol``,
``analysis.study``, the apps and Tables 1/2) reads :data:`analysis.defenses.registry.REGISTRY`. So a toy defense
(standing in for ``analysis/defenses/NAME.py``) registered by one ``entry(...)`` line shows up in all of them,
and runs through Tables 1/2 with NaN paper columns. The registry's own entries are checked for consistency with
the paper's tables and their classes' constructors.
"""
import ast
import inspect
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from analysis import comparison, defenses, paper_results, protocol
from analysis.apps.shared import LABELS
from analysis.defenses.base import Defense, as_images, check_int, check_labeled, check_number
from analysis.defenses.registry import GROUPS, REGISTRY, base_name, entry
from analysis.experiments import tables12_detection
from analysis.study import Study

ROOT = Path(__file__).resolve().parent.parent


class Brightness(Defense):
    """A toy defense: flags inputs brighter than the brightest ``quantile`` of the reference images."""

    _fitted_attribute = "threshold_"

    def __init__(self, quantile: float = 0.95, n_draws: int = 1, seed: int = 0) -> None:
        self.quantile = quantile
        self.n_draws = n_draws
        self.seed = seed

    def _check_settings(self) -> None:
        check_number(self.quantile, "quantile", 0.0, 1.0)
        check_int(self.n_draws, "n_draws", 1)

    def fit(self, model, reference, train=None):
        self._check_settings()
        reference = check_labeled(reference, "reference")
        self.threshold_ = float(np.quantile(reference.x.mean(dim=(1, 2, 3)).numpy(), self.quantile))
        return self

    def _detect(self, model, images):
        suspicion = as_images(images).mean(dim=(1, 2, 3)).double().numpy()
        return suspicion, self.threshold_ - suspicion


@pytest.fixture
def toy(monkeypatch):
    """The one registry line of the recipe (``analysis/defenses/registry.py``), for one test."""
    monkeypatch.setitem(REGISTRY, "toy", entry(Brightness, "Toy", "recent", "cheap", samples="n_draws"))
    return "toy"


def test_one_registry_line_makes_every_reader_know_a_new_defense(toy):
    assert defenses.DETECTORS[toy] is Brightness and toy in defenses.RECENT_DEFENSES and toy not in defenses.DEFENSES
    assert isinstance(defenses.build_defense(toy), Brightness)
    assert comparison.build_detector(toy, seed=4).seed == 4  # randomised: the run's seed
    assert toy in comparison.available_defenses(include_recent=True) and toy not in comparison.available_defenses()
    assert toy not in comparison.VARIANTS and toy not in comparison.LAYERWISE_OPTIONS
    assert LABELS[toy] == "Toy" and toy in protocol.CHEAP
    assert Study(None, defense_samples=7).detector_settings(toy) == {"n_draws": 7}  # --defense-samples reaches it
    assert comparison.paper_key(toy) is None
    assert all(math.isnan(v) for v in paper_results.paper_value("tables12", "resnet18", "badnets",
                                                                comparison.paper_key(toy)))


def test_a_new_defense_runs_through_tables12_with_empty_paper_columns(toy, digits, tmp_path):
    study = Study(digits, archs=("resnet18",), attacks=("badnets",), runs=1, max_eval=10, progress=False,
                  models_dir=tmp_path)
    table, _ = tables12_detection(study, defenses=("layerwise", toy))
    row = table.set_index("defense").loc[toy]
    assert row.n_benign == 10 and row.n_poisoned == 10 and 0 <= row.TPR <= 100
    assert math.isnan(row.paper_TPR) and math.isnan(row.paper_FPR)
    assert not math.isnan(table.set_index("defense").loc["layerwise", "paper_TPR"])


def test_the_old_registries_are_views_of_the_registry_not_copies():
    for name in ("DEFENSES", "RECENT_DEFENSES", "DETECTORS"):
        assert isinstance(getattr(defenses, name), Mapping) and not isinstance(getattr(defenses, name), dict)
    for mapping in (comparison.VARIANTS, comparison.LAYERWISE_OPTIONS, LABELS):
        assert not isinstance(mapping, dict)
    assert set(defenses.DETECTORS) | set(comparison.VARIANTS) | set(comparison.LAYERWISE_OPTIONS) == set(REGISTRY)
    # no reader spells out a detector's name as a key of a hand-written dict
    readers = ["analysis/comparison.py", "analysis/protocol.py", "analysis/study.py", "analysis/apps/shared.py",
               "analysis/apps/defenses.py", "analysis/defenses/__init__.py"]
    for path in readers:
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
        keys = {key.value for node in ast.walk(tree) if isinstance(node, ast.Dict) for key in node.keys
                if isinstance(key, ast.Constant) and key.value in REGISTRY}
        assert not keys, f"{path} holds its own entries for {sorted(keys)}: read analysis.defenses.REGISTRY"


def test_the_registry_agrees_with_the_paper_and_with_each_class():
    assert paper_results.DEFENSES == ("rs", "shrinkpad", "fp", "ac", "strip", "scan", "layerwise")
    assert comparison.available_defenses()[:7] == paper_results.DEFENSES  # the paper's rows first, in its order
    for key in paper_results.DEFENSES:  # each of the paper's rows is a registered detector of that name
        assert REGISTRY[key].paper == key and not REGISTRY[key].settings
    for name, spec in REGISTRY.items():
        assert issubclass(spec.cls, Defense) and spec.label and spec.group in GROUPS
        assert spec.paper is None or spec.paper in paper_results.DEFENSES
        assert (spec.paper is not None) == (spec.group in ("baseline", "paper")), name
        parameters = inspect.signature(spec.cls.__init__).parameters
        assert set(spec.settings) <= set(parameters), name
        assert spec.samples is None or spec.samples in parameters, name
        assert defenses.DETECTORS[base_name(name)] is spec.cls
    assert base_name("ac-ref") == "ac" and base_name("layerwise-trajectory-fpr5") == "layerwise"
    assert {n for n, s in REGISTRY.items() if s.samples} == {"rs", "strip"}


def test_entries_refuse_an_unknown_group_or_budget():
    with pytest.raises(ValueError, match="group"):
        entry(Brightness, "Toy", "later", "cheap")
    with pytest.raises(ValueError, match="budget"):
        entry(Brightness, "Toy", "recent", "free")
    with pytest.raises(TypeError):
        entry(Brightness, "Toy", "recent", "cheap").settings["quantile"] = 0.5  # read-only


def test_build_detector_names_every_registered_detector_when_it_refuses_one():
    with pytest.raises(ValueError, match="unknown detector 'nc'") as error:
        comparison.build_detector("nc")
    assert all(repr(name) in str(error.value) for name in REGISTRY)
