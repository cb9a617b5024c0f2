"""The dataset registry: a name (mnist, fashion-mnist, ..., folder:PATH, digits) -> tensors."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from cnnlab.core.config import DataConfig
from cnnlab.core.errors import ConfigError
from cnnlab.core.i18n import _
from cnnlab.data import sets
from cnnlab.data.mnist import load_mnist
from cnnlab.data.tensors import (
    DataBundle,
    DatasetInfo,
    ImageSet,
    check_labels,
    resolve_data_dir,
    split_indices,
)


def load_dataset(
    name: str, data_dir: str | os.PathLike | None, *, download: bool = True, image_size: int | None = None
) -> tuple[ImageSet, ImageSet, DatasetInfo]:
    """Return (training pool, test set, info) for a dataset name."""

    pool, test, info = _load_dataset(name, data_dir, download=download, image_size=image_size)
    for part, data in ((_("training set"), pool), (_("test set"), test)):
        check_labels(data, _("{dataset} {part}").format(dataset=name, part=part))
    return pool, test, info


def _load_dataset(
    name: str, data_dir: str | os.PathLike | None, *, download: bool, image_size: int | None
) -> tuple[ImageSet, ImageSet, DatasetInfo]:
    root = resolve_data_dir(data_dir)
    if name != "mnist" or image_size not in (None, 28):
        if sets.is_known(name):
            return sets.load(name, root, download=download, image_size=image_size)
    if name == "mnist":
        train = load_mnist(root, train=True, download=download)
        test = load_mnist(root, train=False, download=download)
        c, h, _w = train.shape
        # Digits are white ink on black, centred by centre of mass in a 20x20 box: prediction
        # on a user's own image must rebuild exactly that.
        info = DatasetInfo("mnist", train.classes, c, h, {"style": "mnist", "scale": 255.0})
        return train, test, info
    raise ConfigError(f"unknown dataset {name!r}; available: {', '.join(list_datasets())}")


def absolute_paths(cfg: DataConfig) -> DataConfig:
    """``cfg`` with its data folder (and a ``folder:PATH`` dataset) made absolute, as a run stores them.

    A run then evaluates from any working directory: ``--data-dir ../data`` typed in one
    folder means the same files when ``cnnlab evaluate RUN`` runs from another.
    """
    dataset = cfg.dataset
    if dataset.startswith("folder:"):
        dataset = "folder:" + str(_absolute(dataset[len("folder:"):]))
    return dataclasses.replace(cfg, dataset=dataset, data_dir=str(_absolute(resolve_data_dir(cfg.data_dir))))


def _absolute(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(Path(path).expanduser()))


def list_datasets() -> list[str]:

    return [name for name, _text in sets.describe()]


def prepare_data(cfg: DataConfig, device: torch.device | str = "cpu") -> DataBundle:
    """Load a dataset, split it as configured, and move it to ``device``."""
    pool, test, info = load_dataset(cfg.dataset, cfg.data_dir, download=cfg.download, image_size=cfg.image_size)
    return split_pool(pool, test, info, cfg, device)


def split_pool(pool: ImageSet, test: ImageSet | None, info: DatasetInfo, cfg: DataConfig,
               device: torch.device | str = "cpu") -> DataBundle:
    """A training pool split into train/validation as ``cfg`` says, on ``device``; no ``test``: the validation set."""
    if info.val_count:  # a dataset with its own validation images (folder:PATH with val/)
        n = len(pool)
        train_idx, val_idx = torch.arange(n - info.val_count), torch.arange(n - info.val_count, n)
    else:
        val_size = cfg.val_size
        if val_size == DataConfig.val_size and len(pool) <= val_size:
            val_size = max(1, len(pool) // 5)  # the MNIST-sized default on a small dataset: hold out 20%
        train_idx, val_idx = split_indices(len(pool), val_size, cfg.split_seed)
    if cfg.subset is not None:
        train_idx = train_idx[: cfg.subset]
    val = pool.subset(val_idx)
    return DataBundle(
        train=pool.subset(train_idx).to(device),
        val=val.to(device),
        test=(test if test is not None else val).to(device),
        info=info,
        train_indices=train_idx,
        val_indices=val_idx,
    )
