"""The zoo: deterministic builds, hash and metric verification."""
import json

import numpy as np
import pytest

from analysis import zoo
from analysis.data import DatasetSplits
from analysis.training import TrainConfig


@pytest.fixture(scope="module")
def tiny(digits):
    keep = np.arange(0, len(digits.train), 9)  # 120 training images
    return DatasetSplits("digits", digits.train.subset(keep), digits.reference, digits.test, 10)


ENTRY = zoo.ZooEntry("tiny-badnets", "resnet18", "badnets", config=TrainConfig(epochs=1, seed=0))


def test_entries_cover_every_attack_and_table7_betas():
    names = [entry.name for entry in zoo.zoo_entries(("resnet18",))]
    assert "digits-resnet18-badnets" in names
    assert len(names) == len(set(names))


def test_build_is_deterministic_and_verifies(tmp_path, tiny):
    zoo.build(folder=tmp_path / "a", entries=[ENTRY], data=tiny, progress=False)
    zoo.build(folder=tmp_path / "b", entries=[ENTRY], data=tiny, progress=False)
    first = json.loads((tmp_path / "a" / "manifest.json").read_text())["entries"]["tiny-badnets"]
    second = json.loads((tmp_path / "b" / "manifest.json").read_text())["entries"]["tiny-badnets"]
    assert first["sha256"] == second["sha256"]
    [result] = zoo.verify(tmp_path / "a", data=tiny)
    assert result.ok, result.message


def test_verify_reports_tampering_and_metric_drift(tmp_path, tiny):
    zoo.build(folder=tmp_path, entries=[ENTRY], data=tiny, progress=False)
    manifest_path = tmp_path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["entries"]["tiny-badnets"]["metrics"]["ma"] += 0.2
    manifest_path.write_text(json.dumps(manifest))
    [result] = zoo.verify(tmp_path, data=tiny)
    assert not result.ok and "ma" in result.message and "vs manifest" in result.message
    weights = tmp_path / "tiny-badnets.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    [result] = zoo.verify(tmp_path, data=tiny)
    assert not result.ok and "sha256" in result.message


def test_unknown_entries_are_named():
    with pytest.raises(ValueError, match=r"unknown zoo entries \['nope'\]"):
        zoo.select(zoo.zoo_entries(), ["nope"])
