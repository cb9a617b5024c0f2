"""Datasets as tensors: decoded once, split with a saved seed, batched on the device.

The lesson feeds LeNet-5 through ``DataLoader`` + ``ToTensor``, which builds a
PIL image and a float tensor for every sample of every epoch. Here a dataset is
read once by torchvision's own dataset class into a uint8 tensor (N, C, H, W);
batches are slices of that tensor on the training device, converted to float
(x / 255, exactly what ``ToTensor`` gives) one batch at a time.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch

from cnnlab.core.errors import ConfigError, DataError
from cnnlab.core.i18n import _


def default_data_dir() -> Path:
    """Where datasets live when neither ``--data-dir`` nor ``$CNNLAB_DATA_DIR`` is given."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "cnnlab" / "data"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """``--data-dir``, then ``$CNNLAB_DATA_DIR``, then :func:`default_data_dir`."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("CNNLAB_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return default_data_dir()


@dataclass
class ImageSet:
    """Images as uint8 (N, C, H, W) and labels as int64 (N,), plus the class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor | Sequence[int]) -> "ImageSet":
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.images.device)
        return ImageSet(self.images[idx], self.labels[idx], self.classes)

    def to(self, device: torch.device | str) -> "ImageSet":
        return ImageSet(self.images.to(device), self.labels.to(device), self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)


@dataclass
class DatasetInfo:
    """What a model needs to know about its data; saved with every checkpoint."""

    name: str
    classes: list[str]
    channels: int
    image_size: int
    # How raw images become network input, so prediction can repeat it exactly.
    preprocess: dict = field(default_factory=dict)
    # Folder datasets with a val/ folder: the pool's last val_count images are the validation set.
    val_count: int | None = None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "classes": list(self.classes),
            "channels": self.channels,
            "image_size": self.image_size,
            "preprocess": dict(self.preprocess),
        }


@dataclass
class DataBundle:
    """Train / validation / test sets and the split that made them."""

    train: ImageSet
    val: ImageSet
    test: ImageSet
    info: DatasetInfo
    train_indices: torch.Tensor
    val_indices: torch.Tensor


# --- reading -------------------------------------------------------------------------------


def label_problem(labels: torch.Tensor, num_classes: int) -> str | None:
    """What is wrong with ``labels`` for ``num_classes`` classes (one short clause), or None when each is in 0..K-1."""
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        return _("labels are {dtype}, not whole numbers").format(dtype=str(labels.dtype).removeprefix("torch."))
    if labels.numel() == 0:
        return None
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        return _("a label is {bad}, outside 0..{top} for {k} classes").format(
            bad=bad, top=num_classes - 1, k=num_classes)
    return None


def check_labels(data: ImageSet, where: str) -> None:
    """Every label of ``data`` names one of its classes; a :class:`DataError` naming ``where`` otherwise."""
    problem = label_problem(data.labels, len(data.classes))
    if problem:
        raise DataError(_("{where}: {problem}; the data is damaged or its class list is wrong").format(
            where=where, problem=problem))


# --- splitting -----------------------------------------------------------------------------


def split_indices(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The indices ``random_split(range(n), [n - val_size, val_size], generator=seed)`` gives.

    A dedicated generator is used so the split never depends on (or disturbs)
    the global RNG that initialises the model.
    """
    if not 0 < val_size < n:
        raise ConfigError(f"validation size must be between 1 and {n - 1} for {n} training images, got {val_size}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[: n - val_size].clone(), perm[n - val_size :].clone()


# --- batching ------------------------------------------------------------------------------


def to_float(images: torch.Tensor, scale: float = 255.0) -> torch.Tensor:
    """uint8 -> float32 in [0, 1], bit-identical to ``torchvision.transforms.ToTensor``."""
    return images.to(torch.float32).div_(scale)


class TensorBatches:
    """An iterable of ``(x, y)`` batches over an :class:`ImageSet` held on the device.

    With ``shuffle=True`` each epoch uses the permutation of a generator seeded
    from ``(seed, epoch)``: the order is reproducible, needs no state to resume,
    and every distributed rank can compute the same permutation. Call
    :meth:`set_epoch` before iterating (the trainer does it at EPOCH_STARTED);
    the permutation is drawn lazily, on the first batch.
    """

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
    ) -> None:
        self.data = data
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 1
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's permutation; ``start_batch`` skips batches already trained (resume)."""
        self.epoch = epoch
        self.start_batch = start_batch

    def _order(self) -> torch.Tensor | None:
        n = len(self.data)
        if not self.shuffle:
            order = None if self.world_size == 1 else torch.arange(n)
        else:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=g)
        if order is not None and self.world_size > 1:
            if self.shuffle:  # training: equal shards (see _num_items); the leftover images change every epoch
                order = order[: n - n % self.world_size]
            order = order[self.rank :: self.world_size]
        if order is not None:
            order = order.to(self.data.images.device)
        return order

    def _num_items(self) -> int:
        n = len(self.data)
        if self.world_size > 1 and self.shuffle:
            # Every rank must take the same number of training steps, or one would wait forever
            # for the others' gradients: drop the last n % world_size images of each permutation.
            n = n // self.world_size
        elif self.world_size > 1:  # evaluation: an exact partition, so the reduced metrics count every image once
            n = len(range(self.rank, n, self.world_size))
        return n

    def __len__(self) -> int:
        n = self._num_items()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        images, labels = self.data.images, self.data.labels
        n, bs = self._num_items(), self.batch_size
        stop = n - n % bs if self.drop_last else n
        for start in range(self.start_batch * bs, stop, bs):
            if order is None:
                xb, yb = images[start : start + bs], labels[start : start + bs]
            else:
                idx = order[start : start + bs]
                xb, yb = images.index_select(0, idx), labels.index_select(0, idx)
            yield to_float(xb).contiguous(memory_format=self.memory_format), yb
