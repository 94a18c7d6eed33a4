"""The command line as users meet it (``python -m analysis ...`` in a subprocess): a bad file or device is one
line on stderr and exit status 2; ``zoo verify`` never says "ok" for an entry it could not compare (issue 33,
class 8)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.checkpoints import save_checkpoint
from analysis.models import build_model

ROOT = Path(__file__).resolve().parent.parent


def _run(*argv, timeout=300):
    """``python -m analysis ARGV`` with no GPU visible; returns (exit status, stdout, stderr)."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    env.pop("LAYERWISE_DEBUG", None)
    done = subprocess.run([sys.executable, "-m", "analysis", *map(str, argv)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def _one_line_error(status, stderr, command):
    assert status == 2, stderr
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith(f"python -m analysis {command}: error: "), stderr
    return stderr.strip()


def test_demo_with_cuda_on_a_machine_without_a_gpu(tmp_path):
    status, _, stderr = _run("demo", "--device", "cuda", "--out", tmp_path / "r.html", "--no-progress")
    line = _one_line_error(status, stderr, "demo")
    assert "--device: 'cuda' asked for a CUDA GPU, but none is available here" in line
    assert not (tmp_path / "r.html").exists()


def test_demo_with_a_misspelt_device(tmp_path):
    status, _, stderr = _run("demo", "--device", "gpu", "--out", tmp_path / "r.html", "--no-progress")
    assert _one_line_error(status, stderr, "demo").endswith("--device: expected cpu, cuda, cuda:N or mps, got 'gpu'")


def test_zoo_list_with_a_checkpoints_path_that_is_a_file(tmp_path):
    (tmp_path / "zoo").write_text("not a folder")
    status, stdout, stderr = _run("zoo", "list", "--checkpoints", tmp_path / "zoo")
    assert "checkpoints: expected a folder holding manifest.json, got the file" in _one_line_error(status, stderr, "zoo")
    assert stdout == ""  # not a list of 25 "missing" entries


def test_zoo_verify_with_a_manifest_that_is_not_json(tmp_path):
    (tmp_path / "manifest.json").write_text("{ not json")
    status, _, stderr = _run("zoo", "verify", "--checkpoints", tmp_path)
    assert "manifest.json: expected a JSON checkpoint manifest; it cannot be parsed" in _one_line_error(
        status, stderr, "zoo")


def test_zoo_verify_says_unverified_and_fails_for_an_entry_without_metrics(tmp_path):
    config = {"arch": "resnet18", "width": 4, "num_classes": 10, "dataset": "digits", "attack": None}
    save_checkpoint(build_model("resnet18", 10, 4), "no-metrics", config, tmp_path)  # records no MA
    status, stdout, stderr = _run("zoo", "verify", "--checkpoints", tmp_path, "--threads", "1")
    assert status == 1, stderr
    assert stdout.startswith("UNVERIFIED no-metrics: sha256 ok, but the manifest records no MA")
    assert "1 entry could not be compared with the manifest (UNVERIFIED: not a pass)" in stdout
    assert "ok " not in stdout


def test_zoo_verify_names_a_malformed_entry(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 1, "entries": {"x": {"file": "x.safetensors"}}}))
    status, stdout, _ = _run("zoo", "verify", "--checkpoints", tmp_path)
    assert status == 1
    assert stdout.startswith("FAIL       x: manifest entry lacks ['sha256', 'config']")


def _npz(path, **changes):
    arrays = {"x_train": np.zeros((4, 32, 32, 3), np.uint8), "y_train": np.arange(4) % 2,
              "x_test": np.zeros((6, 32, 32, 3), np.uint8), "y_test": np.arange(6) % 2}
    np.savez(path, **{**arrays, **changes})
    return path


@pytest.mark.parametrize("labels", [np.array([0, 5, 100000, 0]), np.array([0, 1, 10**12, 1])],
                         ids=["sparse class ids", "a label far above the class count"])
def test_reproduce_npz_with_labels_that_are_not_0_to_k_minus_1(tmp_path, labels):
    path = _npz(tmp_path / "labels.npz", y_train=labels)
    status, _, stderr = _run("reproduce", "npz", path, "--out", tmp_path / "out", timeout=120)
    line = _one_line_error(status, stderr, "reproduce")
    assert "expected class ids 0..K-1 without gaps" in line and len(line) < 500


def test_reproduce_npz_with_a_folder_for_the_archive(tmp_path):
    status, _, stderr = _run("reproduce", "npz", tmp_path, "--out", tmp_path / "out")
    assert _one_line_error(status, stderr, "reproduce").endswith(f"path: expected an npz file, got the folder {tmp_path}")


def test_offline_html_with_a_file_for_the_folder(tmp_path):
    (tmp_path / "page.html").write_text("<html></html>")
    status, _, stderr = _run("offline-html", tmp_path / "page.html")
    assert _one_line_error(status, stderr, "offline-html").endswith("folder: expected a directory, got "
                                                                   f"{str(tmp_path / 'page.html')!r}")


def test_offline_html_skips_a_folder_named_like_a_page(tmp_path):
    (tmp_path / "figure.html").mkdir()
    status, stdout, stderr = _run("offline-html", tmp_path)
    assert (status, stderr) == (0, "") and stdout.startswith("0 page(s)")


def test_demo_with_a_malformed_manifest_entry_for_its_checkpoint(tmp_path):
    entries = {"digits-resnet18-badnets": "digits-resnet18-badnets.safetensors"}  # a file name, not an object
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 1, "entries": entries}))
    status, _, stderr = _run("demo", "--checkpoints", tmp_path, "--out", tmp_path / "r.html", "--no-progress")
    assert _one_line_error(status, stderr, "demo").endswith(
        "checkpoint 'digits-resnet18-badnets': manifest entry: expected an object with ['file', 'sha256', 'config'], "
        "got str")
