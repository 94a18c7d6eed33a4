"""Files, devices and indices (issue 33, class 8): each bad one is refused with a message naming it, never read wrongly.

Checkpoints (``analysis.checkpoints.check_entry`` and ``load_checkpoint``), npz archives and dataset splits
(``analysis.data``), devices (``analysis.devices.pick_device``), ``zoo verify``'s verdicts and indices
(``analysis.validation.check_index``). The command line's side is in ``test_reliability_cli.py``.
"""
import json
import re
import time
import zipfile

import numpy as np
import pytest
import torch

from analysis import zoo
from analysis.checkpoints import ChecksumError, check_entry, has_checkpoint, load_checkpoint, read_manifest
from analysis.checkpoints import save_checkpoint, sha256_of
from analysis.data import DatasetSplits, LabeledImages, dense_class_count, load_npz
from analysis.devices import pick_device
from analysis.metrics import attack_metrics
from analysis.models import build_model
from analysis.validation import check_index, check_indices, preview

CONFIG = {"arch": "resnet18", "width": 4, "num_classes": 10, "dataset": "digits", "attack": None}


@pytest.fixture
def folder(tmp_path):
    """A checkpoint folder with one entry, ``m`` (a width-4 ResNet-18, no metrics)."""
    save_checkpoint(build_model("resnet18", 10, 4), "m", CONFIG, tmp_path)
    return tmp_path


def _set_entry(folder, name="m", **changes):
    """Replace fields of manifest entry ``name`` (a value of None drops the field)."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    entry = dict(manifest["entries"].get(name) or manifest["entries"]["m"], **changes)
    manifest["entries"][name] = {key: value for key, value in entry.items() if value is not None}
    path.write_text(json.dumps(manifest))


# ----------------------------------------------------------------------------------------------- safetensors
def test_a_truncated_safetensors_file_whose_digest_was_recorded_is_named_as_corrupt(folder):
    path = folder / "m.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    _set_entry(folder, sha256=sha256_of(path))  # the digest matches: only the format can tell
    with pytest.raises(ValueError, match=r"checkpoint 'm': .*m\.safetensors is not a valid safetensors file "
                                         r"\(truncated or corrupt\?\)"):
        load_checkpoint("m", folder)


def test_a_truncated_safetensors_file_under_its_old_digest_is_a_checksum_error(folder):
    path = folder / "m.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ChecksumError, match="refusing to load a modified file"):
        load_checkpoint("m", folder)


def test_random_bytes_under_a_matching_digest_are_named_as_corrupt(folder):
    path = folder / "m.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    _set_entry(folder, sha256=sha256_of(path))
    with pytest.raises(ValueError, match="is not a valid safetensors file"):
        load_checkpoint("m", folder)


def test_an_upper_case_digest_is_the_same_digest(folder):
    _set_entry(folder, sha256=sha256_of(folder / "m.safetensors").upper())
    model, _, _ = load_checkpoint("m", folder)
    assert isinstance(model, torch.nn.Module)


def test_a_modified_file_under_an_upper_case_digest_is_still_refused(folder):
    _set_entry(folder, sha256=sha256_of(folder / "m.safetensors").upper())
    with open(folder / "m.safetensors", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ChecksumError):
        load_checkpoint("m", folder)


# ----------------------------------------------------------------------------------------------- the manifest
@pytest.mark.parametrize(("changes", "message"), [
    ({"sha256": "abc"}, r"field 'sha256': expected 64 hexadecimal digits, got 'abc'"),
    ({"sha256": "g" * 64}, r"field 'sha256': expected 64 hexadecimal digits, got 'ggg"),
    ({"sha256": 12}, r"field 'sha256': expected 64 hexadecimal digits, got 12"),
    ({"file": "../elsewhere.safetensors"}, r"field 'file': expected the name of a file in .*, got '\.\./elsewhere"),
    ({"file": ""}, r"field 'file': expected the name of a file"),
    ({"file": ["m.safetensors"]}, r"field 'file': expected the name of a file"),
    ({"config": ["resnet18"]}, r"field 'config': expected an object, got list"),
    ({"config": {"arch": "resnet18", "width": 4}}, r"field 'config' lacks \['num_classes'\]"),
    ({"config": {**CONFIG, "num_classes": 9.5}}, r"config.num_classes': expected an integer >= 1, got 9.5 "
                                                r"\(not a whole number"),
    ({"config": {**CONFIG, "num_classes": 0}}, r"config.num_classes': expected an integer >= 1, got 0"),
    ({"sha256": None}, r"manifest entry lacks \['sha256'\]"),
], ids=["short digest", "not hex", "a number", "a path out of the folder", "empty file", "file as a list",
        "config as a list", "config without num_classes", "fractional num_classes", "zero classes", "no digest"])
def test_a_malformed_manifest_entry_is_named_with_its_field(folder, changes, message):
    _set_entry(folder, **changes)
    with pytest.raises(ValueError) as info:
        load_checkpoint("m", folder)
    assert re.search(message, str(info.value)), str(info.value)
    assert str(info.value).startswith("checkpoint 'm': manifest")


@pytest.mark.parametrize("entry", [None, "m.safetensors", ["m.safetensors"], 3])
def test_an_entry_that_is_not_an_object(folder, entry):
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["entries"]["m"] = entry
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"checkpoint 'm': manifest entry: expected an object with "
                                         r"\['file', 'sha256', 'config'\], got"):
        load_checkpoint("m", folder)
    with pytest.raises(ValueError, match="manifest entry: expected an object"):
        has_checkpoint("m", folder)


def test_check_entry_returns_the_digest_in_lower_case(folder):
    entry = json.loads((folder / "manifest.json").read_text())["entries"]["m"]
    checked = check_entry("m", {**entry, "sha256": entry["sha256"].upper()}, folder)
    assert checked["sha256"] == entry["sha256"] and checked["file"] == "m.safetensors"


def test_a_manifest_that_is_not_json(folder):
    (folder / "manifest.json").write_text('{"format": 1, "entries": {')
    with pytest.raises(ValueError, match=r"manifest\.json: expected a JSON checkpoint manifest; it cannot be parsed"):
        read_manifest(folder)


def test_a_manifest_that_is_a_folder_is_not_read_as_no_checkpoints(tmp_path):
    (tmp_path / "manifest.json").mkdir()
    with pytest.raises(ValueError, match=r"manifest\.json: expected the checkpoint manifest \(a JSON file\), got a "
                                         r"folder"):
        read_manifest(tmp_path)


def test_a_checkpoint_folder_that_is_a_file_is_not_read_as_no_checkpoints(tmp_path):
    (tmp_path / "checkpoints").write_text("not a folder")
    with pytest.raises(ValueError, match=r"checkpoints: expected a folder holding manifest\.json, got the file"):
        read_manifest(tmp_path / "checkpoints")


def test_a_folder_where_the_weights_file_is_expected(folder):
    (folder / "m.safetensors").unlink()
    (folder / "m.safetensors").mkdir()
    with pytest.raises(ValueError, match=r"checkpoint 'm': expected a safetensors file at .*m\.safetensors, got a "
                                         r"folder"):
        load_checkpoint("m", folder)


def test_a_folder_that_does_not_exist_has_no_checkpoints(tmp_path):
    assert read_manifest(tmp_path / "new") == {"format": 1, "entries": {}}


def test_weights_of_another_architecture_are_a_value_error_naming_the_checkpoint(folder):
    _set_entry(folder, config={**CONFIG, "num_classes": 3})
    with pytest.raises(ValueError, match=r"checkpoint 'm': config cannot rebuild the model from m\.safetensors: "
                                         r"RuntimeError: .*size mismatch"):
        load_checkpoint("m", folder)


# ----------------------------------------------------------------------------------------------- zoo verify
@pytest.fixture(scope="module")
def small(digits):
    return DatasetSplits("digits", digits.train, digits.reference, digits.test.subset(np.arange(20)), 10)


def _measured_ma(folder, small):
    model, _, _ = load_checkpoint("m", folder)
    return attack_metrics(model, small.test)["ma"]


def test_verify_passes_only_what_it_compared(folder, small):
    _set_entry(folder, metrics={"ma": _measured_ma(folder, small)})
    [result] = zoo.verify(folder, data=small)
    assert (result.status, result.ok) == ("ok", True) and result.message.startswith("sha256 ok, MA ")


@pytest.mark.parametrize(("metrics", "config", "reason"), [
    ({}, CONFIG, "the manifest records no MA"),
    (None, CONFIG, "the manifest records no MA"),
    ({"ma": "0.9"}, CONFIG, "the manifest's MA is '0.9', not a number"),
    ({"ma": None}, CONFIG, "the manifest records no MA"),
    ("MEASURED", CONFIG, "the manifest records ASR 0.9000 but it cannot be re-measured (no attack in the config)"),
], ids=["no metrics", "metrics dropped", "MA as text", "MA null", "ASR of a model without an attack"])
def test_verify_says_unverified_for_an_entry_it_could_not_compare(folder, small, metrics, config, reason):
    if metrics == "MEASURED":
        metrics = {"ma": _measured_ma(folder, small), "asr": 0.9}
    _set_entry(folder, metrics=metrics, config=config)
    [result] = zoo.verify(folder, data=small)
    assert result.status == "unverified" and not result.ok
    assert result.message.startswith("sha256 ok, but ") and reason in result.message


def test_verify_reports_a_malformed_entry_without_the_checkpoint_prefix(folder, small):
    _set_entry(folder, "bad", sha256="ABC")
    results = {result.name: result for result in zoo.verify(folder, data=small)}
    assert results["bad"].status == "failed"
    assert results["bad"].message == "manifest field 'sha256': expected 64 hexadecimal digits, got 'ABC'"
    assert results["m"].status == "unverified"  # the other entry is still checked (it records no MA)


def test_a_verify_result_has_one_of_three_statuses():
    with pytest.raises(ValueError, match=r"status: expected one of \['ok', 'failed', 'unverified'\], got True"):
        zoo.VerifyResult("m", True, "")


def test_a_metric_drift_fails_even_when_another_metric_is_unverified(folder, small):
    _set_entry(folder, metrics={"ma": _measured_ma(folder, small) + 0.5, "asr": 0.9})  # the ASR cannot be compared
    [result] = zoo.verify(folder, data=small)
    assert result.status == "failed" and result.message.startswith("ma ")


# ----------------------------------------------------------------------------------------------- npz archives
def _arrays(**changes):
    arrays = {"x_train": np.zeros((4, 32, 32, 3), np.uint8), "y_train": np.arange(4) % 2,
              "x_test": np.zeros((6, 32, 32, 3), np.uint8), "y_test": np.arange(6) % 2}
    arrays.update(changes)
    return arrays


def _rewrite_member(source, target, member, data, rename=None):
    """Copy the zip ``source`` to ``target`` with ``member``'s bytes replaced by ``data`` (and its name by ``rename``)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            new.writestr(rename if name == member and rename else name, data if name == member else old.read(name))


def test_a_member_stored_without_npy_is_not_read_as_an_array(tmp_path):
    np.savez(tmp_path / "ok.npz", **_arrays())
    _rewrite_member(tmp_path / "ok.npz", tmp_path / "raw.npz", "y_train.npy", b"0 1 0 1", rename="y_train")
    with pytest.raises(ValueError, match=r"raw\.npz: y_train: expected a numeric array \(a \.npy member\), got bytes"):
        load_npz(tmp_path / "raw.npz")


def test_a_member_whose_bytes_are_not_an_array(tmp_path):
    np.savez(tmp_path / "ok.npz", **_arrays())
    _rewrite_member(tmp_path / "ok.npz", tmp_path / "bad.npz", "x_test.npy", b"\x93NUMPY this is not a header")
    with pytest.raises(ValueError, match=r"bad\.npz: x_test: expected a numeric array; numpy cannot read it"):
        load_npz(tmp_path / "bad.npz")


def test_a_member_with_a_damaged_compressed_stream(tmp_path):
    np.savez_compressed(tmp_path / "ok.npz", **_arrays())
    raw = bytearray((tmp_path / "ok.npz").read_bytes())
    start = raw.index(b"x_train.npy") + len("x_train.npy") + 20  # inside x_train's deflated data
    raw[start:start + 40] = bytes(40)
    (tmp_path / "damaged.npz").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"damaged\.npz: (x_train: expected a numeric array|expected an npz archive)"):
        load_npz(tmp_path / "damaged.npz")


def test_a_folder_where_the_npz_file_is_expected(tmp_path):
    with pytest.raises(ValueError, match=rf"path: expected an npz file, got the folder {re.escape(str(tmp_path))}"):
        load_npz(tmp_path)


def test_sparse_class_ids_are_refused_with_a_short_message(tmp_path):
    np.savez(tmp_path / "sparse.npz", **_arrays(y_train=np.array([0, 5, 100000, 0])))
    with pytest.raises(ValueError) as info:
        load_npz(tmp_path / "sparse.npz")
    message = str(info.value)
    assert "expected class ids 0..K-1 without gaps; got 4 distinct ids from 0 to 100000, so 99997 ids are missing: " \
           "[2, 3, 4, 6, 7, 8, 9, 10, 11, 12, ... (99997 in all)]" in message
    assert len(message) < 400


def test_a_label_far_above_the_class_count_is_refused_at_once(tmp_path):
    np.savez(tmp_path / "huge.npz", **_arrays(y_test=np.array([0, 1, 0, 1, 0, 10**12])))
    started = time.perf_counter()
    with pytest.raises(ValueError, match=r"3 distinct ids from 0 to 1000000000000, so 999999999998 ids are missing"):
        load_npz(tmp_path / "huge.npz")
    assert time.perf_counter() - started < 5  # no loop or array over 10**12 classes


@pytest.mark.parametrize(("ids", "count"), [([0], 1), ([0, 1, 2], 3)])
def test_dense_class_ids_give_their_count(ids, count):
    assert dense_class_count(np.array(ids), "y") == count


@pytest.mark.parametrize(("ids", "missing"), [([1, 2], "1 ids are missing: [0]"), ([0, 3], "2 ids are missing: [1, 2]")])
def test_the_missing_ids_are_listed(ids, missing):
    with pytest.raises(ValueError, match=re.escape(missing)):
        dense_class_count(np.array(ids), "y")


# ----------------------------------------------------------------------------------------------- splits and labels
def _images(labels):
    return LabeledImages(torch.zeros(len(labels), 3, 4, 4), torch.tensor(labels))


def test_a_split_with_labels_at_or_above_num_classes_is_refused():
    ok = _images([0, 1])
    with pytest.raises(ValueError, match=r"test: expected labels in 0\.\.9 \(num_classes = 10\), got 2 labels "
                                         r"outside, up to 1000000000"):
        DatasetSplits("d", ok, ok, _images([0, 10, 10**9]), 10)


@pytest.mark.parametrize("num_classes", [2.5, 0, True, "10"])
def test_num_classes_must_be_a_positive_integer(num_classes):
    with pytest.raises((ValueError, TypeError), match="num_classes: expected an integer"):
        DatasetSplits("d", _images([0]), _images([0]), _images([0]), num_classes)


def test_of_class_refuses_a_fractional_class():
    data = _images([0, 1, 1, 2])
    assert len(data.of_class(1)) == 2 and len(data.of_class(1.0)) == 2 and len(data.of_class_not(np.int64(1))) == 2
    with pytest.raises(ValueError, match=r"label: expected an integer >= 0, got 1\.7 \(not a whole number: it would "
                                         r"be truncated to 1\)"):
        data.of_class(1.7)


def test_subset_refuses_fractional_positions_and_boolean_masks():
    data = _images([0, 1, 2])
    assert data.subset(np.array([2.0, 0.0])).y.tolist() == [2, 0]
    with pytest.raises(ValueError, match=r"indices: expected integer positions, got non-integral values \[0\.5\]"):
        data.subset([0.5, 1])
    with pytest.raises(ValueError, match=r"indices: expected integer positions, got a boolean mask of 3 values; pass "
                                         r"np\.flatnonzero\(mask\)"):
        data.subset(np.array([True, False, True]))
    assert len(data.subset([])) == 0


# ----------------------------------------------------------------------------------------------- indices
@pytest.mark.parametrize(("value", "expected"), [(3, 3), (3.0, 3), (np.int64(3), 3), (np.float32(3.0), 3),
                                                 (torch.tensor(3), 3)])
def test_an_index_is_an_integer_or_a_whole_float(value, expected):
    assert check_index(value, "target", 0, 9) == expected and type(check_index(value, "target", 0, 9)) is int


@pytest.mark.parametrize(("value", "error", "message"), [
    (8.7, ValueError, r"layer: expected an integer from 1 to 10, got 8\.7 \(not a whole number: it would be "
                      r"truncated to 8\)"),
    (float("nan"), ValueError, r"layer: expected an integer from 1 to 10, got nan"),
    (11, ValueError, r"layer: expected an integer from 1 to 10, got 11"),
    (0, ValueError, r"layer: expected an integer from 1 to 10, got 0"),
    (True, TypeError, r"layer: expected an integer from 1 to 10, got True"),
    ("3", TypeError, r"layer: expected an integer from 1 to 10, got '3'"),
    (None, TypeError, r"layer: expected an integer from 1 to 10, got None"),
])
def test_an_index_that_is_not_a_whole_number_in_range(value, error, message):
    with pytest.raises(error, match=message):
        check_index(value, "layer", 1, 10)


def test_indices_name_the_position_of_the_bad_one():
    assert check_indices(np.array([8, 9]), "score_layers", 1, 10) == (8, 9)
    with pytest.raises(ValueError, match=r"score_layers\[1\]: expected an integer from 1 to 10, got 8\.7"):
        check_indices([8, 8.7], "score_layers", 1, 10)
    with pytest.raises(ValueError, match=r"score_layers: expected at least one integer, got an empty sequence"):
        check_indices([], "score_layers", 1, 10)
    with pytest.raises(TypeError, match=r"score_layers: expected a sequence of integers, got str"):
        check_indices("89", "score_layers", 1, 10)


def test_preview_caps_what_a_message_prints():
    assert preview([3, 1]) == "[3, 1]"
    assert preview(range(10**9), limit=2) == "[0, 1, ... (1000000000 in all)]"


# ----------------------------------------------------------------------------------------------- devices
def test_cuda_without_a_gpu_is_refused_in_one_sentence(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^--device: 'cuda' asked for a CUDA GPU, but none is available here "
                                         r"\(torch .*\); use cpu, or leave the device out"):
        pick_device("cuda", "--device")


def test_a_gpu_index_beyond_the_machine_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"device: 'cuda:2' asked for GPU 2, but this machine has 2 \(cuda:0 to "
                                         r"cuda:1\)"):
        pick_device("cuda:2")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "", "meta"])
def test_a_misspelt_device(name):
    with pytest.raises(ValueError, match=rf"device: expected cpu, cuda, cuda:N or mps, got {re.escape(repr(name))}"):
        pick_device(name)


def test_load_checkpoint_refuses_a_device_this_machine_lacks(folder, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="'cuda' asked for a CUDA GPU"):
        load_checkpoint("m", folder, device="cuda")


def test_the_gallery_zoo_table_names_a_malformed_manifest_entry(tmp_path):
    import json
    import shutil

    from analysis.apps.gallery import zoo_table
    from analysis.paths import DEFAULT_CHECKPOINTS

    shutil.copy(DEFAULT_CHECKPOINTS / "manifest.json", tmp_path / "manifest.json")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    name = sorted(manifest["entries"])[0]
    manifest["entries"][name]["config"] = "oops"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=rf"checkpoint '{name}': manifest field 'config': expected an object, got str"):
        zoo_table(tmp_path)
