"""``zoo verify`` reports each bad entry with its reason and still checks every other entry."""
import json

import numpy as np
import pytest

from analysis import zoo
from analysis.checkpoints import round_to_half_, save_checkpoint, sha256_of
from analysis.data import DatasetSplits
from analysis.metrics import attack_metrics
from analysis.models import build_model

CONFIG = {"arch": "resnet18", "width": 4, "num_classes": 10, "dataset": "digits", "attack": None}


@pytest.fixture(scope="module")
def small(digits):
    """Twenty evaluation images: verify only needs something to re-measure MA on."""
    return DatasetSplits("digits", digits.train, digits.reference, digits.test.subset(np.arange(20)), 10)


@pytest.fixture
def folder(tmp_path, small):
    """A zoo folder with one good entry, ``good``, whose manifest records the MA that verify re-measures."""
    model = round_to_half_(build_model("resnet18", 10, 4).eval())
    save_checkpoint(model, "good", CONFIG, tmp_path, metrics={"ma": attack_metrics(model, small.test)["ma"]})
    return tmp_path


def _edit_manifest(folder, name, **changes):
    """Add entry ``name`` to the manifest: a copy of ``good``'s with ``changes`` (a value of None drops the key)."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    entry = dict(manifest["entries"]["good"], **changes)
    manifest["entries"][name] = {key: value for key, value in entry.items() if value is not None}
    path.write_text(json.dumps(manifest))


def _results(folder, data):
    return {result.name: result for result in zoo.verify(folder, data=data)}


def test_the_good_entry_verifies(folder, small):
    assert _results(folder, small)["good"].ok


def test_a_file_that_is_not_safetensors(folder, small):
    garbage = folder / "garbage.safetensors"
    garbage.write_bytes(b"these bytes are not a safetensors file")
    _edit_manifest(folder, "garbage", file=garbage.name, sha256=sha256_of(garbage))  # the hash check passes
    results = _results(folder, small)
    assert not results["garbage"].ok
    assert "garbage.safetensors is not a valid safetensors file" in results["garbage"].message
    assert results["good"].ok


@pytest.mark.parametrize("field", ["sha256", "file", "config"])
def test_a_manifest_entry_without_a_required_field(folder, small, field):
    _edit_manifest(folder, "partial", **{field: None})
    results = _results(folder, small)
    assert not results["partial"].ok
    assert f"manifest entry lacks ['{field}']" in results["partial"].message
    assert results["good"].ok


def test_a_missing_file(folder, small):
    _edit_manifest(folder, "absent", file="absent.safetensors")
    results = _results(folder, small)
    assert not results["absent"].ok
    assert "absent.safetensors listed in the manifest is missing" in results["absent"].message
    assert results["good"].ok


@pytest.mark.parametrize(("config", "reason"), [
    ({**CONFIG, "num_classes": 3}, "config cannot rebuild the model from good.safetensors: RuntimeError"),
    ({key: value for key, value in CONFIG.items() if key != "arch"},
     "manifest field 'config' lacks ['arch']: it cannot rebuild the model"),
], ids=["weights of another shape", "no arch"])
def test_a_config_that_cannot_rebuild_the_model(folder, small, config, reason):
    _edit_manifest(folder, "rebuilt", config=config)
    results = _results(folder, small)
    assert not results["rebuilt"].ok and results["rebuilt"].message.startswith(reason)
    assert results["good"].ok


def test_metrics_that_cannot_be_re_measured(folder, small):
    _edit_manifest(folder, "unknown-attack", config={**CONFIG, "attack": "no-such-attack"})
    results = _results(folder, small)
    assert not results["unknown-attack"].ok
    assert results["unknown-attack"].message.startswith(
        "metrics cannot be re-measured: ValueError: attack: expected one of")
    assert results["good"].ok


@pytest.mark.parametrize("tolerance", [float("nan"), float("inf"), -0.01, "0.01", True, None])
def test_tolerance_must_be_a_finite_number_at_least_zero(folder, tolerance):
    with pytest.raises(ValueError, match=r"tolerance: expected a finite number >= 0 .*, got"):
        zoo.verify(folder, tolerance=tolerance)
