"""A bad npz archive is refused with a ValueError that names the file, what was expected and what was found."""
import re

import numpy as np
import pytest

from analysis.data import load_npz


def _arrays(**changes):
    """A valid archive's arrays (4 train, 6 test images of 2 classes), with ``changes`` applied."""
    arrays = {"x_train": np.zeros((4, 32, 32, 3), np.uint8), "y_train": np.arange(4) % 2,
              "x_test": np.zeros((6, 32, 32, 3), np.uint8), "y_test": np.arange(6) % 2}
    arrays.update(changes)
    return arrays


def test_the_valid_archive_of_these_tests_loads(tmp_path):
    np.savez(tmp_path / "ok.npz", **_arrays())
    assert load_npz(tmp_path / "ok.npz").sizes() == {"train": 4, "reference": 2, "test": 4}


@pytest.mark.parametrize("content", [b"x_train,y_train\n1,2\n", b"", b"PK\x03\x04 truncated"],
                         ids=["text file", "empty file", "zip header only"])
def test_a_file_that_is_not_an_npz_archive(tmp_path, content):
    path = tmp_path / "data.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: expected an npz archive.*not a zip archive"):
        load_npz(path)


def test_a_truncated_archive(tmp_path):
    np.savez(tmp_path / "full.npz", **_arrays())
    path = tmp_path / "cut.npz"
    path.write_bytes((tmp_path / "full.npz").read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"cut\.npz: expected an npz archive.*not a zip archive"):
        load_npz(path)


def test_an_object_array_is_refused_without_unpickling(tmp_path):
    labels = np.array([0, 1, "two", 3], dtype=object)
    np.savez(tmp_path / "objects.npz", **_arrays(y_train=labels))
    with pytest.raises(ValueError, match=r"objects\.npz: y_train: expected a numeric array; got an object array"):
        load_npz(tmp_path / "objects.npz")


@pytest.mark.parametrize(("changes", "message"), [
    ({"x_train": np.zeros((4, 32, 32, 3), np.float32)},
     r"x_train: expected uint8 images of shape \[N, 32, 32, 3\], "
     r"got ndarray of shape \(4, 32, 32, 3\) and dtype float32"),
    ({"x_test": np.zeros((6, 3, 32, 32), np.uint8)},
     r"x_test: expected uint8 images of shape \[N, 32, 32, 3\], got ndarray of shape \(6, 3, 32, 32\)"),
    ({"x_train": np.zeros((4, 32, 32), np.uint8)}, r"x_train: expected uint8 images .* got .* shape \(4, 32, 32\)"),
    ({"x_train": np.zeros((4, 28, 28, 3), np.uint8)}, r"x_train: expected .*\[N, 32, 32, 3\], got .*\(4, 28, 28, 3\)"),
], ids=["float images", "NCHW images", "3-D images", "28x28 images"])
def test_images_of_the_wrong_dtype_or_shape(tmp_path, changes, message):
    np.savez(tmp_path / "images.npz", **_arrays(**changes))
    with pytest.raises(ValueError, match=r"images\.npz: " + message):
        load_npz(tmp_path / "images.npz")


@pytest.mark.parametrize("split", ["train", "test"])
def test_an_empty_split(tmp_path, split):
    empty = {f"x_{split}": np.zeros((0, 32, 32, 3), np.uint8), f"y_{split}": np.zeros(0, np.int64)}
    np.savez(tmp_path / "empty.npz", **_arrays(**empty))
    with pytest.raises(ValueError, match=rf"empty\.npz: x_{split}: expected at least one image, got an empty split"):
        load_npz(tmp_path / "empty.npz")


@pytest.mark.parametrize(("changes", "message"), [
    ({"y_train": np.zeros((4, 1), np.int64)},
     r"y_train: expected 1-D integer labels, one per image \(4\); got .*\(4, 1\)"),
    ({"y_test": np.zeros(5, np.int64)}, r"y_test: expected 1-D integer labels, one per image \(6\); got .*\(5,\)"),
    ({"y_train": np.zeros(4, np.float64)}, r"y_train: expected 1-D integer labels.*dtype float64"),
    ({"y_test": np.array([0, 1, -1, 0, 1, -3])}, r"y_test: expected labels >= 0, got -3 \(2 negative\)"),
], ids=["2-D labels", "one label short", "float labels", "negative labels"])
def test_labels_of_the_wrong_shape_type_or_sign(tmp_path, changes, message):
    np.savez(tmp_path / "labels.npz", **_arrays(**changes))
    with pytest.raises(ValueError, match=r"labels\.npz: " + message):
        load_npz(tmp_path / "labels.npz")
