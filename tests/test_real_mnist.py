"""Checks on the real MNIST files; skipped when they are not at hand."""
from __future__ import annotations

import torch
import torch.utils.data as tdata
from torchvision.datasets import MNIST

from conftest import real_mnist_dir, requires_real_mnist
from cnnlab.core.config import DataConfig
from cnnlab.data.registry import prepare_data


@requires_real_mnist
def test_real_split_matches_the_lessons_random_split():
    root = real_mnist_dir()
    bundle = prepare_data(DataConfig(data_dir=str(root), download=False))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (50_000, 10_000, 10_000)
    ds = MNIST(root=str(root), train=True, download=False)
    _, valid = tdata.random_split(ds, [50_000, 10_000], generator=torch.Generator().manual_seed(1234))
    assert bundle.val_indices.tolist() == list(valid.indices)
    assert torch.equal(bundle.val.labels, ds.targets[valid.indices])
