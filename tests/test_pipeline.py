"""Train-or-load: a checkpoint is reused only for the model it holds (attack, training settings, training images)."""
import pytest

from analysis.attacks import BadNets
from analysis.checkpoints import save_checkpoint
from analysis.models import build_model
from analysis.pipeline import attacked_model, model_definition
from analysis.training import TrainConfig


def _save(folder, attack, data):
    """A width-4 ResNet-18 saved as the model that BadNets + the cpu profile on ``data`` would train."""
    definition = model_definition("digits", "resnet18", 4, 10, attack, TrainConfig.cpu("resnet18"), data.train)
    save_checkpoint(build_model("resnet18", 10, 4), "digits-resnet18-badnets", definition, folder, train_seconds=12.5)


def test_checkpoint_is_loaded_for_the_same_settings(tmp_path, digits):
    _save(tmp_path, BadNets(), digits)
    run = attacked_model(data=digits, checkpoints=tmp_path, width=4)
    assert run.loaded_from == tmp_path / "digits-resnet18-badnets" and run.train_seconds == 12.5  # from the manifest
    assert len(run.poisoned_test) == int((digits.test.y != 1).sum())


def test_checkpoint_with_other_settings_is_refused(tmp_path, digits):
    _save(tmp_path, BadNets(), digits)
    with pytest.raises(ValueError, match=r"attack_settings.rate: checkpoint 0.05, asked for 0.1.*retrain=True"):
        attacked_model(data=digits, attack=BadNets(rate=0.1), checkpoints=tmp_path, width=4)


def test_attack_by_name_gets_the_datasets_settings_and_loads_the_zoo_model(digits):
    # on digits WaNet runs without noise mode (DATASET_ATTACK_SETTINGS); the zoo was built that way,
    # so asking for "wanet" by name loads the shipped model instead of refusing it
    run = attacked_model("digits", "resnet18", "wanet", data=digits, progress=False)
    assert run.loaded_from is not None and run.loaded_from.name == "digits-resnet18-wanet"
    assert (run.attack.noise_rate, run.attack.strength) == (0.0, 0.5)
