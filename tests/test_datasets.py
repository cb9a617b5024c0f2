"""Every dataset reader on files the tests write in each torchvision class's on-disk format (no downloads)."""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.data import sets as datasets
from cnnlab.core.config import DataConfig
from cnnlab.data.registry import list_datasets, load_dataset, prepare_data
from cnnlab.core.errors import ConfigError, DataError
from conftest import write_idx_images, write_idx_labels


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def rng_images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


# --- MNIST-format sets ----------------------------------------------------------------------


@pytest.mark.parametrize("name, folder, n_classes", [("fashion-mnist", "FashionMNIST", 10), ("kmnist", "KMNIST", 10)])
def test_idx_datasets(tmp_path, name, folder, n_classes):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    x_train, x_test = rng_images(30, (28, 28), 0), rng_images(12, (28, 28), 1)
    y_train, y_test = np.arange(30) % n_classes, np.arange(12) % n_classes
    write_idx_images(raw / "train-images-idx3-ubyte", x_train)
    write_idx_labels(raw / "train-labels-idx1-ubyte", y_train)
    write_idx_images(raw / "t10k-images-idx3-ubyte", x_test)
    write_idx_labels(raw / "t10k-labels-idx1-ubyte", y_test)
    pool, test, info = load_dataset(name, tmp_path, download=False)
    assert pool.images.dtype == torch.uint8 and pool.images.shape == (30, 1, 28, 28)
    assert torch.equal(pool.images[:, 0], torch.from_numpy(x_train))
    assert torch.equal(test.labels, torch.from_numpy(y_test).long())
    assert len(info.classes) == n_classes and info.channels == 1 and info.image_size == 28
    assert info.preprocess["style"] == "resize" and info.preprocess["size"] == 28
    if name == "fashion-mnist":
        assert info.classes[0] == "T-shirt/top"


def test_emnist_balanced_is_read_upright(tmp_path):
    raw = tmp_path / "EMNIST" / "raw"
    raw.mkdir(parents=True)
    upright = rng_images(20, (28, 28), 2)
    # EMNIST's files hold every image transposed.
    for split, n in (("train", 20), ("test", 8)):
        write_idx_images(raw / f"emnist-balanced-{split}-images-idx3-ubyte", upright[:n].transpose(0, 2, 1))
        write_idx_labels(raw / f"emnist-balanced-{split}-labels-idx1-ubyte", np.arange(n) % 47)
    pool, test, info = load_dataset("emnist", tmp_path, download=False)
    assert torch.equal(pool.images[:, 0], torch.from_numpy(upright))
    assert len(info.classes) == 47 and info.classes[10] == "A"
    assert len(test) == 8


def test_missing_files_are_a_clear_error_without_download(tmp_path):
    with pytest.raises(DataError, match=r"kmnist is not in .*KMNIST/raw"):
        load_dataset("kmnist", tmp_path, download=False)


# --- CIFAR ----------------------------------------------------------------------------------


def _pickle(path: Path, obj: dict) -> None:
    path.write_bytes(pickle.dumps(obj))


def write_cifar10(root: Path, n_per_batch: int = 4) -> tuple[np.ndarray, list[int]]:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    all_x, all_y = [], []
    for i in range(1, 6):
        x = rng_images(n_per_batch, (3, 32, 32), i)
        y = [(i + j) % 10 for j in range(n_per_batch)]
        _pickle(base / f"data_batch_{i}", {"data": x.reshape(n_per_batch, -1), "labels": y})
        all_x.append(x)
        all_y += y
    _pickle(base / "test_batch", {"data": rng_images(5, (3, 32, 32), 9).reshape(5, -1), "labels": [0, 1, 2, 3, 4]})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _pickle(base / "batches.meta", {"label_names": names})
    return np.concatenate(all_x), all_y


def _trust_written_files(monkeypatch, cls, base: Path, train: list[str], test: list[str], meta: str, key: str) -> None:
    # torchvision verifies the published MD5 of every file; point it at the files this test wrote.
    monkeypatch.setattr(cls, "train_list", [[f, md5(base / f)] for f in train])
    monkeypatch.setattr(cls, "test_list", [[f, md5(base / f)] for f in test])
    monkeypatch.setattr(cls, "meta", {"filename": meta, "key": key, "md5": md5(base / meta)})


def test_cifar10(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    x, y = write_cifar10(tmp_path)
    base = tmp_path / "cifar-10-batches-py"
    # Written by the test, so torchvision's checksum check must refuse them at first: that check is kept.
    with pytest.raises(DataError, match="cifar10 is not in"):
        load_dataset("cifar10", tmp_path, download=False)
    _trust_written_files(monkeypatch, CIFAR10, base, [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                         "batches.meta", "label_names")
    pool, test, info = load_dataset("cifar10", tmp_path, download=False)
    assert pool.images.shape == (20, 3, 32, 32) and pool.images.dtype == torch.uint8
    assert torch.equal(pool.images, torch.from_numpy(x))  # CHW, exactly the pickled bytes
    assert pool.labels.tolist() == y and len(test) == 5
    assert info.classes[0] == "airplane" and info.channels == 3 and info.image_size == 32
    assert info.preprocess == {"style": "resize", "size": 32, "channels": 3, "scale": 255.0,
                               "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}


def test_cifar100(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR100

    base = tmp_path / "cifar-100-python"
    base.mkdir()
    _pickle(base / "train", {"data": rng_images(6, (3, 32, 32), 0).reshape(6, -1), "fine_labels": [0, 5, 99, 3, 2, 1]})
    _pickle(base / "test", {"data": rng_images(2, (3, 32, 32), 1).reshape(2, -1), "fine_labels": [7, 8]})
    _pickle(base / "meta", {"fine_label_names": [f"class{i}" for i in range(100)]})
    _trust_written_files(monkeypatch, CIFAR100, base, ["train"], ["test"], "meta", "fine_label_names")
    pool, test, info = load_dataset("cifar100", tmp_path, download=False)
    assert pool.labels.tolist() == [0, 5, 99, 3, 2, 1] and test.labels.tolist() == [7, 8]
    assert len(info.classes) == 100


# --- SVHN -----------------------------------------------------------------------------------


def test_svhn(tmp_path, monkeypatch):
    import scipy.io
    from torchvision.datasets import SVHN

    folder = tmp_path / "svhn"
    folder.mkdir()
    chw = {s: rng_images(n, (3, 32, 32), k) for k, (s, n) in enumerate((("train", 7), ("test", 3)))}
    labels = {"train": np.array([[10], [1], [2], [3], [10], [5], [9]]), "test": np.array([[10], [4], [6]])}
    for split in ("train", "test"):
        # The .mat layout: X is (32, 32, 3, N), y is (N, 1) with 10 for the digit 0.
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": chw[split].transpose(2, 3, 1, 0), "y": labels[split]})
    monkeypatch.setattr(SVHN, "split_list", {
        s: ["http://example.invalid", f"{s}_32x32.mat", md5(folder / f"{s}_32x32.mat")] for s in ("train", "test")
    })
    pool, test, info = load_dataset("svhn", tmp_path, download=False)
    assert torch.equal(pool.images, torch.from_numpy(chw["train"]))
    assert pool.labels.tolist() == [0, 1, 2, 3, 0, 5, 9]  # 10 -> 0, as torchvision maps it
    assert test.labels.tolist() == [0, 4, 6]
    assert info.classes == [str(i) for i in range(10)] and info.channels == 3


# --- digits ---------------------------------------------------------------------------------


def test_digits_offline_and_mnist_sized(tmp_path):
    pool, test, info = load_dataset("digits", tmp_path / "nothing-here", download=False)
    assert len(pool) + len(test) == 1797 and len(test) == 359
    assert pool.images.shape[1:] == (1, 28, 28) and pool.images.dtype == torch.uint8
    assert int(pool.images.max()) == 255  # 0..16 ink scaled to 0..255
    again, _, _ = load_dataset("digits", tmp_path, download=False)
    assert torch.equal(again.labels, pool.labels)  # the pool/test split is seeded
    native, _, info8 = load_dataset("digits", tmp_path, image_size=8)
    assert native.images.shape[-1] == 8 and info8.preprocess["size"] == 8


def test_small_dataset_gets_a_proportional_validation_split(tmp_path):
    bundle = prepare_data(DataConfig(dataset="digits", data_dir=str(tmp_path)))
    assert len(bundle.val) == len(bundle.train) // 4 or len(bundle.val) == 1438 // 5
    with pytest.raises(ConfigError, match="validation size"):
        prepare_data(DataConfig(dataset="digits", val_size=5000))


# --- folder:PATH ----------------------------------------------------------------------------


def write_folder(root: Path, splits=("train",), classes=("cat", "dog"), n=6, size=(20, 20), mode="RGB") -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in splits:
        for k, c in enumerate(classes):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
                arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
                Image.fromarray(arr, mode).save(root / split / c / f"{i}.png")
    return root


def test_folder_with_train_only_makes_a_seeded_test_split(tmp_path):
    root = write_folder(tmp_path / "pets")
    pool, test, info = load_dataset(f"folder:{root}", None)
    assert info.classes == ["cat", "dog"] and info.channels == 3 and info.image_size == 20
    assert len(pool) + len(test) == 12 and len(test) == round(12 * 0.2)
    assert pool.images.dtype == torch.uint8 and pool.images.shape[1:] == (3, 20, 20)
    pool2, test2, _ = load_dataset(f"folder:{root}", None)
    assert torch.equal(test.images, test2.images)


def test_folder_with_val_and_test_uses_them(tmp_path):
    root = write_folder(tmp_path / "g", splits=("train", "val", "test"), n=4, size=(16, 24), mode="L")
    bundle = prepare_data(DataConfig(dataset=f"folder:{root}", image_size=12))
    assert bundle.info.channels == 1 and bundle.info.image_size == 12  # grey stays 1 channel, resized
    assert len(bundle.train) == 8 and len(bundle.val) == 8 and len(bundle.test) == 8
    assert bundle.val_indices.tolist() == list(range(8, 16))


def test_folder_mixed_sizes_default_to_32(tmp_path):
    root = write_folder(tmp_path / "a", n=3, size=(20, 20))
    write_folder(tmp_path / "a", classes=("dog",), n=2, size=(40, 30))
    _, _, info = load_dataset(f"folder:{root}", None)
    assert info.image_size == 32


@pytest.mark.parametrize("setup, message", [
    (lambda r: None, "does not exist"),
    (lambda r: (r / "train" / "cat").mkdir(parents=True), "hold no images"),
    (lambda r: write_folder(r, classes=("cat",)), "only one class"),
    (lambda r: (write_folder(r), write_folder(r, splits=("test",), classes=("cow",))), "that .* lacks"),
    (lambda r: (write_folder(r), (r / "train" / "cat" / "bad.png").write_bytes(b"not a png")), "cannot read image"),
])
def test_folder_mistakes_are_clear(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DataError, match=message):
        load_dataset(f"folder:{root}", None)


def test_names_are_listed_and_unknown_rejected():
    names = list_datasets()
    for n in ("mnist", "fashion-mnist", "kmnist", "emnist", "cifar10", "cifar100", "svhn", "digits", "folder:PATH"):
        assert n in names
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        load_dataset("nope", None)


def test_resize_images_keeps_dtype_and_constant_images():
    x = torch.full((3, 1, 8, 8), 200, dtype=torch.uint8)
    y = datasets.resize_images(x, 28)
    assert y.dtype == torch.uint8 and y.shape == (3, 1, 28, 28) and bool((y == 200).all())
