"""The zoo: deterministic builds, hash and metric verification."""
import json

import numpy as np
import pytest

from analysis import zoo
from analysis.checkpoints import read_manifest
from analysis.data import DatasetSplits
from analysis.training import TrainConfig


@pytest.fixture(scope="module")
def tiny(digits):
    keep = np.arange(0, len(digits.train), 9)  # 120 training images
    return DatasetSplits("digits", digits.train.subset(keep), digits.reference, digits.test, 10)


ENTRY = zoo.ZooEntry("tiny-badnets", "resnet18", "badnets", config=TrainConfig(epochs=1, seed=0))


def test_entries_cover_every_attack_and_table7_betas():
    entries = {entry.name: entry for entry in zoo.zoo_entries(("resnet18", "mobilenetv2"))}
    for arch in ("resnet18", "mobilenetv2"):
        assert f"digits-{arch}-clean" in entries
        for attack in ("badnets", "blended", "lc", "wanet", "issba", "iad"):
            assert entries[f"digits-{arch}-{attack}"].attack == attack
        for beta in (0, 0.5, 0.9, 0.95):
            assert entries[f"digits-{arch}-adaptive-b{beta:g}"].settings == {"beta": beta}
    # Table 4's other poisoning rates, for the first architecture only
    assert [entries[f"digits-resnet18-badnets-r{r}"].settings["rate"] for r in ("0.01", "0.03", "0.1")] == [0.01, 0.03, 0.1]
    assert "digits-mobilenetv2-badnets-r0.01" not in entries
    # digits-specific settings come from one table (WaNet without noise mode, see DATASET_ATTACK_SETTINGS)
    assert entries["digits-resnet18-wanet"].settings == {"noise_rate": 0.0}
    assert entries["digits-mobilenetv2-wanet"].build_attack().noise_rate == 0.0
    assert entries["digits-mobilenetv2-issba"].build_attack().residual_weight == 1.0


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


def test_the_committed_zoo_is_complete_and_every_file_matches_its_manifest():
    """What ships in ``checkpoints/``: every zoo entry, each file with the sha256 its manifest records.

    Strict for every attack of ``zoo.ZOO_ATTACKS`` (the paper's six and the adaptive one); a newly registered
    attack stays out of the zoo, and out of this test, until it is added to ``ZOO_ATTACKS`` on purpose.
    """
    from analysis.checkpoints import DEFAULT_DIR, sha256_of

    entries = read_manifest(DEFAULT_DIR)["entries"]
    missing = [entry.name for entry in zoo.zoo_entries() if entry.name not in entries]
    assert not missing, (
        f"zoo entries without a checkpoint in {DEFAULT_DIR}: {missing}. Every entry of analysis.zoo.zoo_entries() "
        f"(the attacks of ZOO_ATTACKS on every architecture) must ship, so that reproduce and the notebooks train "
        f"nothing on digits. Build them (deterministic, CPU) and commit checkpoints/: "
        f"python -m analysis zoo build --only {' '.join(missing)} ; or, for a new attack not meant to ship yet, "
        f"take it out of analysis.zoo.ZOO_ATTACKS")
    for name, entry in entries.items():
        rebuild = f"python -m analysis zoo build --only {name}"
        assert sha256_of(DEFAULT_DIR / entry["file"]) == entry["sha256"], (
            f"{name}: {entry['file']} does not match the sha256 its manifest records; rebuild it ({rebuild})")
        correct = entry["metrics"]["ma"] * 539  # a fraction of digits' 539 evaluation images, not a percentage
        assert correct == pytest.approx(round(correct), abs=1e-6) and entry["train_seconds"] > 0, (
            f"{name}: manifest MA is not a share of the 539 test images, or train_seconds <= 0; rebuild it ({rebuild})")


def test_a_newly_registered_attack_joins_the_zoo_only_when_added_to_zoo_attacks(monkeypatch):
    """The zoo is ``ZOO_ATTACKS`` ∩ registered attacks: registering an attack does not make the committed zoo incomplete."""
    from analysis import attacks

    monkeypatch.setitem(attacks.ATTACKS, "toy", attacks.BadNets)
    assert not [entry for entry in zoo.zoo_entries() if entry.attack == "toy"]
    monkeypatch.setattr(zoo, "ZOO_ATTACKS", (*zoo.ZOO_ATTACKS, "toy"))
    assert [entry.name for entry in zoo.zoo_entries(("resnet18",)) if entry.attack == "toy"] == ["digits-resnet18-toy"]
