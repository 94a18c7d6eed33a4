"""Datasets as in-memory image tensors, with the paper's train / reference / test splits.

Every dataset comes back as a :class:`DatasetSplits` of three disjoint
:class:`LabeledImages`:

* ``train``: what the (possibly malicious) trainer uses;
* ``reference``: the defender's "available benign samples" (paper, Sec. 4);
* ``test``: the evaluation images. It never overlaps ``reference`` (the paper's
  public code lets them overlap, which flatters the FPR).

Images are float32 tensors of shape ``[N, 3, 32, 32]`` with values in ``[0, 1]``;
labels are int64 tensors of shape ``[N]``.

Sources
-------
``digits``
    scikit-learn's bundled handwritten digits (1,797 real 8×8 images, 10 classes),
    scaled to [0, 1], resized bilinearly to 32×32 and replicated to 3 channels.
    Stratified, seeded split: 60% train (1,078), 10% of the whole set as reference
    (180, 18 per class), the remaining 539 for evaluation.
``cifar10`` / ``gtsrb``
    torchvision's downloaders (first use downloads into ``root``); GTSRB images are
    resized to 32×32. ``reference`` is a seeded 10% of the test set, per class;
    ``test`` is the other 90%.
``npz``
    any archive with uint8 ``x_train, y_train, x_test, y_test`` in NHWC layout
    (e.g. the real GTSRB at ``../shared/data/gtsrb_32x32.npz``); split like cifar10.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .validation import check_images, check_index, describe, preview

__all__ = ["DATASETS", "DatasetSplits", "IMAGE_SIZE", "LabeledImages", "dense_class_count", "digits_split_indices",
           "images_from_uint8_nhwc", "load_cifar10", "load_dataset", "load_digits", "load_gtsrb", "load_npz",
           "read_cifar10_batch", "split_reference_from_test", "stratified_fraction"]

IMAGE_SIZE = 32
DATASETS = ("digits", "cifar10", "gtsrb", "npz")


@dataclass(frozen=True)
class LabeledImages:
    """Images ``x`` [N, 3, H, W] float32 in [0, 1] with integer labels ``y`` [N].

    The images are checked on construction (:func:`analysis.validation.check_images`): a floating
    dtype, channels first, values in [0, 1], no NaN or inf; anything else raises a ValueError.
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor) or self.x.ndim != 4:
            raise ValueError(f"x: expected a 4-D tensor [N, C, H, W], got {describe(self.x)}")
        check_images(self.x, "x", allow_empty=True)  # the input contract: float, channels first, [0, 1], finite
        if not isinstance(self.y, torch.Tensor) or self.y.ndim != 1:
            raise ValueError(f"y: expected a 1-D tensor [N], got {describe(self.y)}")
        if self.y.is_floating_point() or self.y.is_complex() or self.y.dtype == torch.bool:
            raise ValueError(f"y: expected integer class labels, got dtype {self.y.dtype}")
        if len(self.y) and int(self.y.min()) < 0:
            raise ValueError(f"y: expected class labels >= 0, got {int(self.y.min())}")
        if len(self.x) != len(self.y):
            raise ValueError(f"x and y differ in length: {len(self.x)} images, {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, indices: np.ndarray | torch.Tensor | list[int]) -> "LabeledImages":
        """The images at ``indices`` (integers; integral floats accepted, a fraction or a boolean mask refused)."""
        array = indices.cpu().numpy() if isinstance(indices, torch.Tensor) else np.asarray(indices)
        if array.dtype == bool:
            raise ValueError(f"indices: expected integer positions, got a boolean mask of {array.size} values; pass "
                             f"np.flatnonzero(mask)")
        if array.size and np.issubdtype(array.dtype, np.floating):
            fractional = array[~np.isfinite(array) | (array != np.round(array))]
            if fractional.size:
                raise ValueError(f"indices: expected integer positions, got non-integral values "
                                 f"{preview(fractional.tolist(), 5)} (they would be truncated)")
        elif array.size and not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"indices: expected integer positions, got {describe(array)}")
        idx = torch.as_tensor(array.astype(np.int64, copy=False) if array.size else np.zeros(0, np.int64))
        return LabeledImages(self.x[idx], self.y[idx])

    def of_class(self, label: int) -> "LabeledImages":
        """The images labelled ``label`` (an integer class; ``1.7`` is refused, not truncated)."""
        return self.subset(torch.nonzero(self.y == check_index(label, "label")).flatten())

    def of_class_not(self, label: int) -> "LabeledImages":
        """The images not labelled ``label`` (an integer class)."""
        return self.subset(torch.nonzero(self.y != check_index(label, "label")).flatten())

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` batches in order."""
        for start in range(0, len(self), batch_size):
            yield self.x[start : start + batch_size], self.y[start : start + batch_size]

    @property
    def classes(self) -> list[int]:
        return sorted(int(c) for c in torch.unique(self.y))


@dataclass(frozen=True)
class DatasetSplits:
    """The three disjoint splits of one dataset."""

    name: str
    train: LabeledImages
    reference: LabeledImages
    test: LabeledImages
    num_classes: int

    def __post_init__(self) -> None:
        check_index(self.num_classes, "num_classes", 1)
        for split in ("train", "reference", "test"):
            labels = getattr(self, split).y
            if len(labels) and int(labels.max()) >= self.num_classes:
                outside = labels[labels >= self.num_classes]
                raise ValueError(f"{split}: expected labels in 0..{self.num_classes - 1} (num_classes = "
                                 f"{self.num_classes}), got {len(outside)} labels outside, up to {int(labels.max())}")

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "reference": len(self.reference), "test": len(self.test)}


def images_from_uint8_nhwc(array: np.ndarray, name: str = "x") -> torch.Tensor:
    """Convert uint8 ``[N, H, W, C]`` images to float32 ``[N, C, H, W]`` in [0, 1]."""
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim != 4 or array.shape[3] != 3:
        raise ValueError(f"{name}: expected uint8 images of shape [N, H, W, 3], got {describe(array)}")
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float().div_(255.0)


def stratified_fraction(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices so that each class gives ``round(fraction * n_class)`` (at least 1) to the first part.

    Returns ``(chosen, rest)``, both sorted, disjoint and covering ``range(len(labels))``.

    Examples
    --------
    >>> import numpy as np
    >>> chosen, rest = stratified_fraction(np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1]), 0.5, seed=0)
    >>> len(chosen), len(rest)  # 2 of class 0's four, 3 of class 1's six
    (5, 5)
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction: expected a value in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        k = max(1, int(round(fraction * len(members))))
        k = min(k, len(members) - 1) if len(members) > 1 else k
        chosen.append(rng.choice(members, size=k, replace=False))
    chosen_idx = np.sort(np.concatenate(chosen))
    rest = np.setdiff1d(np.arange(len(labels)), chosen_idx)
    return chosen_idx, rest


def split_reference_from_test(
    name: str, train: LabeledImages, test: LabeledImages, num_classes: int, reference_fraction: float, seed: int
) -> DatasetSplits:
    """The paper's protocol: a seeded ``reference_fraction`` of each test class goes to the defender."""
    ref_idx, eval_idx = stratified_fraction(test.y.numpy(), reference_fraction, seed)
    return DatasetSplits(name, train, test.subset(ref_idx), test.subset(eval_idx), num_classes)


def digits_split_indices(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified, seeded, disjoint ``(train, reference, test)`` indices: 60% / 10% / the rest."""
    from sklearn.model_selection import train_test_split

    everything = np.arange(len(labels))
    train_idx, held_idx = train_test_split(everything, train_size=0.6, stratify=labels, random_state=seed)
    ref_idx, test_idx = train_test_split(
        held_idx, train_size=round(0.1 * len(labels)), stratify=labels[held_idx], random_state=seed
    )
    return np.sort(train_idx), np.sort(ref_idx), np.sort(test_idx)


def load_digits(seed: int = 0) -> DatasetSplits:
    """scikit-learn's digits as 3×32×32 images; see the module docstring for the split sizes."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # [N, 1, 8, 8]
    images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    images = images.clamp_(0.0, 1.0).repeat(1, 3, 1, 1).contiguous()
    labels = bunch.target.astype(np.int64)
    train_idx, ref_idx, test_idx = digits_split_indices(labels, seed)
    data = LabeledImages(images, torch.from_numpy(labels))
    return DatasetSplits("digits", data.subset(train_idx), data.subset(ref_idx), data.subset(test_idx), 10)


def load_npz(path: str | Path, reference_fraction: float = 0.1, seed: int = 0, name: str | None = None) -> DatasetSplits:
    """An archive with uint8 NHWC ``x_train, y_train, x_test, y_test`` (never unpickled).

    Images must be uint8 ``[N, 32, 32, 3]`` with ``N >= 1``; labels one non-negative integer per image.
    Anything else (a file that is not an npz archive, an object array, a wrong dtype or shape, an empty
    split, a negative label) raises ValueError naming the file, what was expected and what was found.
    """
    import zipfile
    import zlib

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"path: expected an npz file, got the folder {path}")
    if not path.is_file():
        raise FileNotFoundError(f"path: no such file: {path}")
    keys = ("x_train", "y_train", "x_test", "y_test")
    if not zipfile.is_zipfile(path):  # np.load would try to unpickle it and word the refusal as a pickle problem
        raise ValueError(f"{path}: expected an npz archive (numpy.savez) holding {', '.join(keys)}; got a file of "
                         f"{path.stat().st_size} bytes that is not a zip archive (a text file? truncated?)")
    arrays = {}
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        raise ValueError(f"{path}: expected an npz archive (numpy.savez); the zip archive is corrupt or truncated "
                         f"({error})") from None
    with archive:
        missing = set(keys) - set(archive.files)
        if missing:
            raise ValueError(f"{path}: missing arrays {sorted(missing)}; it holds {sorted(archive.files)}")
        for key in keys:
            try:
                arrays[key] = archive[key]
            except ValueError as error:
                if "allow_pickle" not in str(error):
                    raise ValueError(f"{path}: {key}: expected a numeric array; numpy cannot read it "
                                     f"({error})") from None
                raise ValueError(f"{path}: {key}: expected a numeric array; got an object array, which only pickle "
                                 "can load (never done here): save plain uint8 images and integer labels") from None
            except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as error:
                raise ValueError(f"{path}: {key}: expected a numeric array; the archive's entry is corrupt or "
                                 f"truncated ({error})") from None
            if not isinstance(arrays[key], np.ndarray):  # a member stored without .npy: numpy hands back its bytes
                raise ValueError(f"{path}: {key}: expected a numeric array (a .npy member), got "
                                 f"{type(arrays[key]).__name__}")
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise ValueError(f"{path}: x_{split}: expected uint8 images of shape [N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3], "
                             f"got {describe(images)}")
        if len(images) == 0:
            raise ValueError(f"{path}: x_{split}: expected at least one image, got an empty split (shape "
                             f"{images.shape})")
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or len(labels) != len(images):
            raise ValueError(f"{path}: y_{split}: expected 1-D integer labels, one per image ({len(images)}); "
                             f"got {describe(labels)}")
        if labels.min() < 0:
            raise ValueError(f"{path}: y_{split}: expected labels >= 0, got {int(labels.min())} "
                             f"({int(np.sum(labels < 0))} negative)")
    x_train, y_train, x_test, y_test = (arrays[key] for key in keys)
    num_classes = dense_class_count(np.union1d(y_train, y_test), f"{path}: y_train and y_test")
    train = LabeledImages(images_from_uint8_nhwc(x_train, "x_train"), torch.from_numpy(y_train.astype(np.int64)))
    test = LabeledImages(images_from_uint8_nhwc(x_test, "x_test"), torch.from_numpy(y_test.astype(np.int64)))
    return split_reference_from_test(name or path.stem, train, test, num_classes, reference_fraction, seed)


def dense_class_count(ids: np.ndarray, name: str) -> int:
    """The number of classes of the sorted, distinct class ``ids``, which must be ``0..K-1`` without gaps.

    Sparse ids (``{0, 5, 100000}``) would make a model of 100,001 classes, most of them never seen, and a
    check of "every class has reference samples" list 99,998 classes; the error instead says how many ids are
    missing and shows the first few, in time and space independent of the largest id.

    Examples
    --------
    >>> import numpy as np
    >>> dense_class_count(np.array([0, 1, 2]), "y")
    3
    >>> dense_class_count(np.array([0, 2, 10**12]), "y")
    Traceback (most recent call last):
    ...
    ValueError: y: expected class ids 0..K-1 without gaps; got 3 distinct ids from 0 to 1000000000000, so 999999999998 ids are missing: [1, 3, 4, 5, 6, 7, 8, 9, 10, 11, ... (999999999998 in all)]; ...
    """
    ids = np.asarray(ids)
    if len(ids) == 0:
        raise ValueError(f"{name}: expected at least one class id, got none")
    largest = int(ids[-1])
    if largest + 1 == len(ids):
        return len(ids)
    limit, first = 10, []
    previous = -1
    for value in ids.tolist():  # walk the gaps between consecutive ids, stopping after ``limit`` missing ones
        first.extend(range(previous + 1, min(value, previous + 1 + limit - len(first))))
        previous = value
        if len(first) >= limit:
            break
    n_missing = largest + 1 - len(ids)
    shown = "[" + ", ".join(map(str, first)) + (f", ... ({n_missing} in all)]" if n_missing > len(first) else "]")
    raise ValueError(f"{name}: expected class ids 0..K-1 without gaps; got {len(ids)} distinct ids from "
                     f"{int(ids[0])} to {largest}, so {n_missing} ids are missing: {shown}; renumber the labels, "
                     f"e.g. np.unique(labels, return_inverse=True)[1]")


# --- CIFAR-10 ---------------------------------------------------------------------------------
class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10's batch files, whose only objects are dicts, lists, bytes and numpy arrays.

    Any other global (the vehicle of pickle exploits) is refused, so a tampered file cannot
    run code.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch file")


def read_cifar10_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file of CIFAR-10's python version: uint8 NHWC images and int64 labels."""
    with open(path, "rb") as handle:
        batch = _ArrayOnlyUnpickler(handle, encoding="latin1").load()
    if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
        raise ValueError(f"{path}: not a CIFAR-10 batch (expected a dict with 'data' and 'labels')")
    data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(data), np.asarray(batch["labels"], dtype=np.int64)


def load_cifar10(
    root: str | Path, download: bool = True, reference_fraction: float = 0.1, seed: int = 0, verify: bool = True
) -> DatasetSplits:
    """CIFAR-10 via torchvision's download (MD5-checked archive), read with an array-only unpickler.

    ``verify=False`` skips the per-file MD5 check (only for hand-made test files).
    """
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity, download_and_extract_archive

    root = Path(root)
    folder = root / CIFAR10.base_folder
    files = CIFAR10.train_list + CIFAR10.test_list
    if download and not all(check_integrity(str(folder / f), md5) for f, md5 in files):
        download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
    parts = {}
    for split, listing in (("train", CIFAR10.train_list), ("test", CIFAR10.test_list)):
        xs, ys = [], []
        for filename, md5 in listing:
            path = folder / filename
            if not path.is_file():
                raise FileNotFoundError(f"CIFAR-10 file missing: {path} (pass download=True to fetch it)")
            if verify and not check_integrity(str(path), md5):
                raise ValueError(f"CIFAR-10 file {path} does not match its published MD5; delete it and download again")
            x, y = read_cifar10_batch(path)
            xs.append(x)
            ys.append(y)
        parts[split] = LabeledImages(images_from_uint8_nhwc(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)))
    return split_reference_from_test("cifar10", parts["train"], parts["test"], 10, reference_fraction, seed)


# --- GTSRB ------------------------------------------------------------------------------------
def _gtsrb_split_as_uint8(root: Path, split: str, download: bool) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image
    from torchvision.datasets import GTSRB
    from tqdm.auto import tqdm

    dataset = GTSRB(str(root), split=split, download=download)
    images = np.empty((len(dataset._samples), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    labels = np.empty(len(dataset._samples), dtype=np.int64)
    for i, (path, label) in enumerate(tqdm(dataset._samples, desc=f"GTSRB {split}: resizing to 32x32", leave=False)):
        with Image.open(path) as image:
            images[i] = np.asarray(image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR))
        labels[i] = label
    return images, labels


def load_gtsrb(root: str | Path, download: bool = True, reference_fraction: float = 0.1, seed: int = 0) -> DatasetSplits:
    """GTSRB via torchvision (whole images resized bilinearly to 32×32), cached as ``gtsrb_32x32.npz`` in ``root``."""
    root = Path(root)
    cache = root / "gtsrb_32x32.npz"
    if not cache.is_file():
        x_train, y_train = _gtsrb_split_as_uint8(root, "train", download)
        x_test, y_test = _gtsrb_split_as_uint8(root, "test", download)
        root.mkdir(parents=True, exist_ok=True)
        np.savez(cache, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return load_npz(cache, reference_fraction, seed, name="gtsrb")


def load_dataset(
    name: str, root: str | Path | None = None, seed: int = 0, reference_fraction: float = 0.1, download: bool = True
) -> DatasetSplits:
    """Load ``digits`` (default, embedded), ``cifar10``, ``gtsrb`` (``root`` = download folder) or ``npz`` (``root`` = file)."""
    if name == "digits":
        return load_digits(seed)
    if name not in DATASETS:
        raise ValueError(f"name: expected one of {DATASETS}, got {name!r}")
    if root is None:
        raise ValueError(f"root: dataset {name!r} needs a folder (or, for npz, a file path)")
    if name == "npz":
        return load_npz(root, reference_fraction, seed)
    if name == "cifar10":
        return load_cifar10(root, download, reference_fraction, seed)
    return load_gtsrb(root, download, reference_fraction, seed)
