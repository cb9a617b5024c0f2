"""The decoded-dataset cache: a hit equals a fresh decode, a changed raw file is never served stale,
and a folder that may not be written works without a cache."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import torch

from cnnlab.data import cache
from cnnlab.data.mnist import load_mnist
from conftest import make_mnist_folder, synthetic_digits, write_idx_images


def cache_file(root: Path, split: str = "train") -> Path:
    return root / "MNIST" / cache.CACHE_DIR / f"mnist-{split}.pt"


def test_a_cache_hit_equals_a_fresh_decode(tmp_path: Path, monkeypatch) -> None:
    root = make_mnist_folder(tmp_path)
    first = load_mnist(root, train=True, download=False)  # decodes and writes the cache
    assert cache_file(root).is_file()
    calls = []
    monkeypatch.setattr("cnnlab.data.mnist.read_idx", lambda p: calls.append(p))  # a decode would now fail
    hit = load_mnist(root, train=True, download=False)
    assert calls == []
    monkeypatch.undo()
    monkeypatch.setenv("CNNLAB_NO_DATA_CACHE", "1")
    fresh = load_mnist(root, train=True, download=False)
    for got in (first, hit):
        assert got.images.dtype == torch.uint8 and got.images.shape == (600, 1, 28, 28)
        assert torch.equal(got.images, fresh.images) and torch.equal(got.labels, fresh.labels)
        assert got.classes == fresh.classes


def test_a_modified_raw_file_invalidates_the_cache(tmp_path: Path) -> None:
    root = make_mnist_folder(tmp_path)
    before = load_mnist(root, train=True, download=False)
    raw = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    st = raw.stat()
    x, _ = synthetic_digits(600, seed=7)  # same size, different pixels
    write_idx_images(raw, x)
    os.utime(raw, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with the old modification time put back
    after = load_mnist(root, train=True, download=False)
    assert not torch.equal(after.images, before.images)
    assert torch.equal(after.images[:, 0], torch.from_numpy(x))
    # ...and the rewritten cache now serves the new pixels.
    assert torch.equal(load_mnist(root, train=True, download=False).images, after.images)


def test_a_read_only_folder_gets_no_cache_and_no_error(tmp_path: Path) -> None:
    root = make_mnist_folder(tmp_path)
    folder = root / "MNIST"
    mode = folder.stat().st_mode
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)  # r-x: read-only, even for root
    try:
        data = load_mnist(root, train=False, download=False)
    finally:
        folder.chmod(mode)
    assert len(data) == 200
    assert not (folder / cache.CACHE_DIR).exists()


def test_a_damaged_cache_file_is_decoded_again(tmp_path: Path) -> None:
    root = make_mnist_folder(tmp_path)
    good = load_mnist(root, train=False, download=False)
    cache_file(root, "t10k").write_bytes(b"not a cache")
    again = load_mnist(root, train=False, download=False)
    assert torch.equal(again.images, good.images)
    assert cache.load_cached(root / "MNIST", "mnist-t10k", [root / "MNIST" / "raw" / "t10k-images-idx3-ubyte",
                                                           root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"]) is not None


def test_a_torchvision_set_is_cached_too(tmp_path: Path, monkeypatch) -> None:
    from cnnlab.data import sets
    from conftest import write_idx_labels

    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for split, n, seed in (("train", 60, 0), ("t10k", 20, 1)):
        x, y = synthetic_digits(n, seed=seed)
        write_idx_images(raw / f"{split}-images-idx3-ubyte", x)
        write_idx_labels(raw / f"{split}-labels-idx1-ubyte", y)
    fresh = sets.load_torchvision("fashion-mnist", tmp_path, train=True, download=False)
    assert (tmp_path / "FashionMNIST" / cache.CACHE_DIR / "fashion-mnist-train.pt").is_file()

    def no_decode(*a, **k):
        raise AssertionError("decoded again although the cache is fresh")

    monkeypatch.setattr(sets, "_read_torchvision", no_decode)
    hit = sets.load_torchvision("fashion-mnist", tmp_path, train=True, download=False)
    assert torch.equal(hit.images, fresh.images) and torch.equal(hit.labels, fresh.labels)
    assert hit.classes == fresh.classes and hit.classes[0] == "T-shirt/top"
