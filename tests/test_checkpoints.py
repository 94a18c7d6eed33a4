"""Checkpoints are safetensors plus a manifest with sha256; a modified file is refused."""
import json

import pytest
import torch

from analysis.checkpoints import (ChecksumError, has_checkpoint, load_checkpoint, read_manifest, round_to_half_,
                                  save_checkpoint)
from analysis.models import build_model

CONFIG = {"arch": "resnet18", "width": 4, "num_classes": 3, "dataset": "digits", "attack": "badnets"}


def test_round_trip_in_half_precision(tmp_path):
    model = build_model("resnet18", 3, 4)
    save_checkpoint(model, "m", CONFIG, tmp_path, metrics={"ma": 0.5}, extra_tensors={"pattern": torch.ones(2, 2)})
    loaded, entry, extra = load_checkpoint("m", tmp_path)
    assert entry["metrics"] == {"ma": 0.5} and entry["dtype"] == "float16" and "torch" in entry["versions"]
    assert entry["versions"]["torch_threads"] == str(torch.get_num_threads())  # CPU results depend on it
    assert torch.equal(extra["pattern"], torch.ones(2, 2))
    original = model.fc.weight.detach()
    assert torch.allclose(loaded.fc.weight, original.half().float())
    assert has_checkpoint("m", tmp_path) and not has_checkpoint("other", tmp_path)


def test_metrics_are_measured_on_the_weights_as_stored(tmp_path):
    # 1 + 2**-12 is not a float16 number: it rounds to 1.0, so a model measured before rounding could
    # disagree with the one zoo verify loads. round_to_half_ makes the in-memory model the stored one.
    model = build_model("resnet18", 3, 4).eval()
    with torch.no_grad():
        model.fc.bias.fill_(1 + 2**-12)
    assert round_to_half_(model) is model
    assert torch.equal(model.fc.bias, torch.ones(3)) and model.fc.bias.dtype == torch.float32
    save_checkpoint(model, "m", CONFIG, tmp_path)
    loaded, _, _ = load_checkpoint("m", tmp_path)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded.eval()(x), model(x))


def test_tampered_file_is_refused(tmp_path):
    path = save_checkpoint(build_model("resnet18", 3, 4), "m", CONFIG, tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="refusing to load a modified file"):
        load_checkpoint("m", tmp_path)


def test_missing_entries_and_files_are_reported(tmp_path):
    path = save_checkpoint(build_model("resnet18", 3, 4), "m", CONFIG, tmp_path)
    with pytest.raises(KeyError, match=r"no checkpoint 'x'.*available: \['m'\]"):
        load_checkpoint("x", tmp_path)
    path.unlink()
    with pytest.raises(FileNotFoundError, match="listed in the manifest is missing"):
        load_checkpoint("m", tmp_path)
    with pytest.raises(ValueError, match="missing 'width'"):
        save_checkpoint(build_model("resnet18", 3, 4), "n", {"arch": "resnet18", "num_classes": 3}, tmp_path)


def test_manifest_is_plain_json(tmp_path):
    save_checkpoint(build_model("resnet18", 3, 4), "m", CONFIG, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest == read_manifest(tmp_path)
    assert len(manifest["entries"]["m"]["sha256"]) == 64


def test_every_checkpoint_name_comes_from_one_rule():
    from analysis.checkpoints import checkpoint_name
    from analysis.zoo import adaptive_name, badnets_rate_name

    assert checkpoint_name("digits", "resnet18", "clean") == "digits-resnet18-clean"
    assert badnets_rate_name("npz", "mobilenetv2", 0.05) == checkpoint_name("npz", "mobilenetv2", "badnets")
    assert badnets_rate_name("digits", "resnet18", 0.01) == "digits-resnet18-badnets-r0.01"
    assert adaptive_name("digits", "resnet18", 0.5) == checkpoint_name("digits", "resnet18", "adaptive", "b0.5")
