from __future__ import annotations

import pytest
import torch
import torch.utils.data as tdata
import torchvision.transforms as transforms
from torchvision.datasets import MNIST

from cnnlab.core.config import DataConfig
from cnnlab.data.mnist import MNIST_FILES, load_mnist
from cnnlab.data.tensors import TensorBatches, default_data_dir, resolve_data_dir, split_indices, to_float
from cnnlab.data.registry import prepare_data
from cnnlab.core.errors import ConfigError, DataError


def test_reads_idx_files_through_torchvision(tiny_mnist):
    train = load_mnist(tiny_mnist, train=True, download=False)
    test = load_mnist(tiny_mnist, train=False, download=False)
    assert train.images.shape == (600, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (200, 1, 28, 28)
    assert train.labels.dtype == torch.int64 and set(train.labels.tolist()) <= set(range(10))
    assert train.classes == [str(i) for i in range(10)]


def test_pixels_equal_to_tensor(tiny_mnist):
    ours = load_mnist(tiny_mnist, train=True, download=False)
    ref = MNIST(root=str(tiny_mnist), train=True, download=False, transform=transforms.ToTensor())
    batch = to_float(ours.images[:50])
    expected = torch.stack([ref[i][0] for i in range(50)])
    assert torch.equal(batch, expected)
    assert [ref[i][1] for i in range(50)] == ours.labels[:50].tolist()


def test_split_equals_random_split():
    for n, val, seed in [(60_000, 10_000, 1234), (600, 100, 7)]:
        train_idx, val_idx = split_indices(n, val, seed)
        a, b = tdata.random_split(range(n), [n - val, val], generator=torch.Generator().manual_seed(seed))
        assert train_idx.tolist() == list(a.indices)
        assert val_idx.tolist() == list(b.indices)


def test_split_does_not_touch_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    split_indices(1000, 100, 1234)
    assert torch.equal(torch.rand(3), expected)


def test_bad_val_size_is_a_clear_error():
    with pytest.raises(ConfigError, match="validation size"):
        split_indices(100, 100, 0)


def test_prepare_data_uses_split_and_keeps_test_apart(tiny_mnist):
    bundle = prepare_data(DataConfig(data_dir=str(tiny_mnist), val_size=100, download=False))
    assert len(bundle.train) == 500 and len(bundle.val) == 100 and len(bundle.test) == 200
    pool = load_mnist(tiny_mnist, train=True, download=False)
    assert torch.equal(bundle.val.images, pool.images[bundle.val_indices])
    assert set(bundle.train_indices.tolist()).isdisjoint(bundle.val_indices.tolist())


def test_batches_cover_every_image_once_and_shuffle_reproducibly(tiny_mnist):
    data = load_mnist(tiny_mnist, train=True, download=False)
    batches = TensorBatches(data, 32, shuffle=True, seed=3)
    assert len(batches) == 19  # 600 / 32, last batch partial (as DataLoader's drop_last=False)
    labels = torch.cat([y for _, y in batches])
    assert sorted(labels.tolist()) == sorted(data.labels.tolist())
    first = [y.tolist() for _, y in batches]
    assert first == [y.tolist() for _, y in batches]  # same epoch, same order
    batches.set_epoch(2)
    assert first != [y.tolist() for _, y in batches]  # a new epoch reshuffles


def test_eval_batches_are_in_order(tiny_mnist):
    data = load_mnist(tiny_mnist, train=False, download=False)
    labels = torch.cat([y for _, y in TensorBatches(data, 64)])
    assert torch.equal(labels, data.labels)


def test_data_dir_resolution_order(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir("flag") == resolve_data_dir("flag").__class__("flag")
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("CNNLAB_DATA_DIR")
    assert resolve_data_dir(None) == default_data_dir()


def test_missing_files_error_names_files_and_folder(tmp_path):
    with pytest.raises(DataError) as err:
        load_mnist(tmp_path, train=True, download=False)
    msg = str(err.value)
    assert all(name in msg for name in MNIST_FILES)
    assert str(tmp_path / "MNIST" / "raw") in msg
    assert err.value.option == "data.data_dir" and "--data-dir" not in msg  # the CLI's hint names the flag


def test_failed_download_error_is_clear(tmp_path, monkeypatch):
    # Simulate having no internet: torchvision's downloader raises as it does offline.
    import torchvision.datasets.mnist as tv_mnist
    from urllib.error import URLError

    def offline(*args, **kwargs):
        raise URLError("network is unreachable")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    with pytest.raises(DataError) as err:
        load_mnist(tmp_path, train=True, download=True)
    assert "could not be downloaded" in str(err.value) and err.value.option == "data.data_dir"
