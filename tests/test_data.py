"""Datasets: the embedded digits split, and the real on-disk formats of CIFAR-10, GTSRB and npz."""
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from analysis.data import LabeledImages, digits_split_indices, load_cifar10, load_dataset, load_gtsrb, load_npz, read_cifar10_batch, stratified_fraction


def test_digits_splits(digits):
    assert digits.sizes() == {"train": 1078, "reference": 180, "test": 539}
    assert digits.num_classes == 10
    for split in (digits.train, digits.reference, digits.test):
        assert split.x.shape[1:] == (3, 32, 32) and split.x.dtype == torch.float32
        assert float(split.x.min()) >= 0.0 and float(split.x.max()) <= 1.0
        assert split.classes == list(range(10))
    assert min(np.bincount(digits.reference.y.numpy())) >= 15
    # the three splits partition the 1,797 images, and each split has every class in proportion
    from sklearn.datasets import load_digits as sklearn_digits

    labels = sklearn_digits().target
    train, ref, test = digits_split_indices(labels, seed=0)
    assert sorted(np.concatenate([train, ref, test]).tolist()) == list(range(1797))
    assert np.bincount(labels[ref]).min() >= 17 and np.bincount(labels[ref]).max() <= 19


def test_digits_split_is_seeded(digits):
    again = load_dataset("digits", seed=0)
    assert torch.equal(again.reference.x, digits.reference.x)
    other = load_dataset("digits", seed=1)
    assert not torch.equal(other.reference.y, digits.reference.y) or not torch.equal(other.reference.x, digits.reference.x)


def test_stratified_fraction_is_disjoint_and_per_class():
    labels = np.repeat([0, 1, 2], [10, 20, 30])
    chosen, rest = stratified_fraction(labels, 0.1, seed=0)
    assert np.bincount(labels[chosen]).tolist() == [1, 2, 3]
    assert len(np.intersect1d(chosen, rest)) == 0 and len(chosen) + len(rest) == 60
    with pytest.raises(ValueError, match="fraction"):
        stratified_fraction(labels, 1.5, seed=0)


@given(st.lists(st.integers(0, 5), min_size=2, max_size=80), st.floats(0.05, 0.95), st.integers(0, 1000))
def test_stratified_fraction_is_a_seeded_per_class_partition(labels, fraction, seed):
    """For any labels: the two parts are disjoint, sorted and cover every index; each class gives
    round(fraction * n) of its n members (at least 1, and at least 1 left when it has 2 or more) to the first part."""
    labels = np.asarray(labels)
    chosen, rest = stratified_fraction(labels, fraction, seed)
    assert np.array_equal(np.sort(np.concatenate([chosen, rest])), np.arange(len(labels)))
    assert np.array_equal(chosen, np.sort(chosen)) and np.array_equal(rest, np.sort(rest))
    for label in np.unique(labels):
        n = int((labels == label).sum())
        expected = min(max(1, round(fraction * n)), n - 1) if n > 1 else 1
        assert int((labels[chosen] == label).sum()) == expected
    again, _ = stratified_fraction(labels, fraction, seed)
    assert np.array_equal(again, chosen)


def _fake_npz(path, n_train=40, n_test=60, classes=3):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
             y_train=np.arange(n_train) % classes, x_test=rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
             y_test=np.arange(n_test) % classes)


def test_npz_archive(tmp_path):
    _fake_npz(tmp_path / "tiny.npz")
    data = load_npz(tmp_path / "tiny.npz", reference_fraction=0.1, seed=0)
    assert data.sizes() == {"train": 40, "reference": 6, "test": 54}  # 10% of each test class = 2 of 20
    assert data.num_classes == 3 and data.train.x.shape == (40, 3, 32, 32)
    assert float(data.train.x.max()) <= 1.0
    # reference and evaluation never share an image
    ref = {bytes(x.numpy().tobytes()) for x in data.reference.x}
    assert not ref & {bytes(x.numpy().tobytes()) for x in data.test.x}


def test_npz_bad_archives(tmp_path):
    np.savez(tmp_path / "missing.npz", x_train=np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"missing arrays \['x_test', 'y_test', 'y_train'\]"):
        load_npz(tmp_path / "missing.npz")
    np.savez(tmp_path / "float.npz", x_train=np.zeros((2, 32, 32, 3)), y_train=np.zeros(2, int),
             x_test=np.zeros((2, 32, 32, 3)), y_test=np.zeros(2, int))
    with pytest.raises(ValueError, match="x_train: expected uint8 images"):
        load_npz(tmp_path / "float.npz")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_npz(tmp_path / "absent.npz")
    with pytest.raises(ValueError, match="name: expected one of"):
        load_dataset("imagenet")


def _write_cifar_batch(path, n, offset):
    rng = np.random.default_rng(offset)
    batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": [(i + offset) % 10 for i in range(n)],
             "batch_label": "fake"}
    with open(path, "wb") as handle:
        pickle.dump(batch, handle)  # the real python version of CIFAR-10 is pickled dicts like this one


def test_cifar10_real_format(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        _write_cifar_batch(folder / f"data_batch_{i}", 10, i)
    _write_cifar_batch(folder / "test_batch", 50, 0)
    data = load_cifar10(tmp_path, download=False, verify=False)
    assert data.sizes() == {"train": 50, "reference": 10, "test": 40}
    x, y = read_cifar10_batch(folder / "test_batch")
    # CIFAR stores each image as 1024 red, 1024 green, 1024 blue values, row-major
    assert x.shape == (50, 32, 32, 3)
    with open(folder / "test_batch", "rb") as handle:
        raw = pickle.load(handle)["data"][0]
    assert x[0, 0, 1, 2] == raw[2 * 1024 + 1] and x[0, 3, 4, 0] == raw[3 * 32 + 4]
    with pytest.raises(ValueError, match="does not match its published MD5"):
        load_cifar10(tmp_path, download=False, verify=True)


def test_cifar10_reader_refuses_code_in_pickles(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (eval, ("1 + 1",))  # not print: in a process where Ray ran, builtins.print is Ray's

    with open(tmp_path / "evil", "wb") as handle:
        pickle.dump({"data": Exploit(), "labels": []}, handle)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.eval"):
        read_cifar10_batch(tmp_path / "evil")


def test_gtsrb_real_format(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    base = tmp_path / "gtsrb" / "GTSRB"
    for cls in range(3):
        folder = base / "Training" / f"{cls:05d}"
        folder.mkdir(parents=True)
        for i in range(4):  # GTSRB images come in many sizes; ours are resized to 32x32
            Image.fromarray(rng.integers(0, 256, (40 + i, 37, 3), dtype=np.uint8)).save(folder / f"00000_{i:05d}.ppm")
    test_folder = base / "Final_Test" / "Images"
    test_folder.mkdir(parents=True)
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i in range(30):
        Image.fromarray(rng.integers(0, 256, (29, 31, 3), dtype=np.uint8)).save(test_folder / f"{i:05d}.ppm")
        rows.append(f"{i:05d}.ppm;31;29;5;5;25;24;{i % 3}")
    (tmp_path / "gtsrb" / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    data = load_gtsrb(tmp_path, download=False)
    assert data.sizes() == {"train": 12, "reference": 3, "test": 27}
    assert data.train.x.shape == (12, 3, 32, 32) and data.num_classes == 3
    assert (tmp_path / "gtsrb_32x32.npz").is_file()  # cached for the next load
    again = load_gtsrb(tmp_path, download=False)
    assert torch.equal(again.test.x, data.test.x)


def test_labeled_images_validation():
    with pytest.raises(ValueError, match="differ in length"):
        LabeledImages(torch.zeros(2, 3, 4, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="4-D"):
        LabeledImages(torch.zeros(2, 4, 4), torch.zeros(2, dtype=torch.long))
