"""A checkpoint is reused only when it holds the very model asked for; otherwise the user is told why.

Before, only the attack settings were compared: a folder with a 1-epoch model answered a 2-epoch request
with the 1-epoch model, and a manifest entry without its file made a new model train silently.
"""
import json

import pytest

from analysis.attacks import BadNets
from analysis.checkpoints import save_checkpoint
from analysis.data import DatasetSplits
from analysis.models import build_model
from analysis.pipeline import attacked_model, clean_model, definition_differences, model_definition
from analysis.training import TrainConfig

NAME = "digits-resnet18-badnets"


def _definition(data, config=None, attack=None):
    return model_definition("digits", "resnet18", 4, 10, attack or BadNets(), config or TrainConfig.cpu("resnet18"),
                            data.train)


@pytest.fixture
def folder(tmp_path, digits):
    save_checkpoint(build_model("resnet18", 10, 4), NAME, _definition(digits), tmp_path, train_seconds=1.0)
    return tmp_path


def test_the_same_definition_is_reused(folder, digits):
    run = attacked_model(data=digits, checkpoints=folder, width=4)
    assert run.loaded_from == folder / NAME


@pytest.mark.parametrize("change, expected", [
    ({"epochs": 2}, "train.epochs: checkpoint 30, asked for 2"),
    ({"seed": 1}, "train.seed: checkpoint 0, asked for 1"),
    ({"batch_size": 64}, "train.batch_size: checkpoint 128, asked for 64"),
    ({"lr": 0.01}, "train.lr: checkpoint 0.05, asked for 0.01"),
])
def test_other_training_settings_are_refused_with_every_difference(folder, digits, change, expected):
    config = TrainConfig(**{**TrainConfig.cpu("resnet18").to_dict(), **change})
    with pytest.raises(ValueError, match=f"another model than the one asked for: {expected}.*retrain=True"):
        attacked_model(data=digits, config=config, checkpoints=folder, width=4)


def test_another_training_subset_is_refused(folder, digits):
    subset = DatasetSplits("digits", digits.train.subset(range(0, len(digits.train), 2)), digits.reference,
                           digits.test, 10)
    with pytest.raises(ValueError, match=r"training_data: checkpoint trained on 1078 images .* asked for 539 images"):
        attacked_model(data=subset, checkpoints=folder, width=4)


def test_a_manifest_entry_without_its_file_is_not_silently_retrained(folder, digits):
    (folder / f"{NAME}.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="listed in the manifest is missing; pass retrain=True"):
        attacked_model(data=digits, checkpoints=folder, width=4)


def test_clean_models_are_checked_the_same_way(tmp_path, digits):
    definition = model_definition("digits", "resnet18", 4, 10, None, TrainConfig.cpu("resnet18"), digits.train)
    save_checkpoint(build_model("resnet18", 10, 4), "digits-resnet18-clean", definition, tmp_path)
    assert clean_model(data=digits, checkpoints=tmp_path, width=4)[0] is not None
    with pytest.raises(ValueError, match="train.epochs: checkpoint 30, asked for 3"):
        clean_model(data=digits, checkpoints=tmp_path, width=4, config=TrainConfig(epochs=3))


def test_an_entry_from_an_older_version_is_compared_on_what_it_records(tmp_path, digits):
    old = {key: value for key, value in _definition(digits).items() if key != "training_data"}
    save_checkpoint(build_model("resnet18", 10, 4), NAME, old, tmp_path)
    with pytest.warns(UserWarning, match=r"does not record \['training_data'\]"):
        attacked_model(data=digits, checkpoints=tmp_path, width=4)


def test_differences_compare_as_stored_in_json(digits):
    """Tuples are stored as lists; the mean pixel is compared within 1e-6 (last bits may differ between CPUs)."""
    definition = _definition(digits, TrainConfig(schedule="multistep", milestones=(10, 20)))
    stored = json.loads(json.dumps(definition))
    stored["training_data"]["mean_pixel"] += 1e-9
    assert definition_differences(stored, definition) == []
    stored["training_data"]["mean_pixel"] += 1e-3
    assert [d.split(":")[0] for d in definition_differences(stored, definition)] == ["training_data"]


def test_the_committed_zoo_records_what_it_was_trained_on(digits):
    """Every zoo entry's manifest holds the full definition, so a changed split or setting is caught."""
    from analysis.checkpoints import DEFAULT_DIR, read_manifest

    for name, entry in read_manifest(DEFAULT_DIR)["entries"].items():
        assert set(entry["config"]) >= {"train", "training_data", "attack_settings", "width"}, name
    run = attacked_model("digits", "resnet18", "badnets", data=digits, progress=False)
    assert run.loaded_from is not None


def test_the_demo_says_in_one_line_when_its_checkpoint_was_trained_otherwise(tmp_path, capsys):
    from analysis.cli import main

    assert main(["demo", "--epochs", "5", "--out", str(tmp_path / "report.html"), "--no-progress"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "train.epochs: checkpoint 30, asked for 5" in error and "--retrain" in error
