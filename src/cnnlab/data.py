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

from cnnlab.config import DataConfig
from cnnlab.errors import ConfigError, DataError

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


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


def _missing_mnist_message(root: Path, reason: str, download: bool) -> str:
    raw = root / "MNIST" / "raw"
    how = f"could not be downloaded ({reason})" if download else "downloading is off (--no-download)"
    return (
        f"MNIST is not in {root} and {how}. "
        f"Put the four files {', '.join(MNIST_FILES)} (uncompressed, or as .gz) in {raw}/, "
        "or point --data-dir (or $CNNLAB_DATA_DIR) at a folder that holds MNIST/raw/."
    )


# MD5 of the four original files, uncompressed (torchvision publishes those of the .gz files,
# and checks them when it downloads). Checked whenever a file has the original's size.
MNIST_RAW_MD5 = {
    "train-images-idx3-ubyte": ("6bbc9ace898e44ae57da46a324031adb", 47_040_016),
    "train-labels-idx1-ubyte": ("a25bea736e30d166cdddb491f175f624", 60_008),
    "t10k-images-idx3-ubyte": ("2646ac647ad5339dbf082846283269ea", 7_840_016),
    "t10k-labels-idx1-ubyte": ("27ae3e4e09519cfbb04c329615203637", 10_008),
}


def verify_idx_file(path: Path) -> None:
    """Check an IDX file's header against its size, and its checksum where MNIST publishes one.

    torchvision reads a damaged file with a cryptic error or, worse, silently;
    this names the file and says what to do.
    """
    import hashlib

    fix = "delete it and let cnnlab download it again (or copy the original file back)"
    data_size = path.stat().st_size
    with path.open("rb") as fh:
        header = fh.read(4)
        if len(header) < 4 or header[0] != 0 or header[1] != 0 or header[2] != 0x08 or not 1 <= header[3] <= 4:
            raise DataError(f"{path} is not an IDX file (bad magic number {header.hex() or 'empty'}); {fix}")
        ndim = header[3]
        dims_raw = fh.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise DataError(f"{path} is truncated (its header is incomplete); {fix}")
    dims = [int.from_bytes(dims_raw[i : i + 4], "big") for i in range(0, 4 * ndim, 4)]
    expected = 4 + 4 * ndim
    count = 1
    for d in dims:
        count *= d
    expected += count
    if data_size != expected:
        state = "truncated" if data_size < expected else "longer than its header says"
        raise DataError(f"{path} is {state} (expected {expected:,} bytes, found {data_size:,}); {fix}")
    known = MNIST_RAW_MD5.get(path.name)
    if known and data_size == known[1]:
        md5 = hashlib.md5(path.read_bytes()).hexdigest()
        if md5 != known[0]:
            raise DataError(f"{path} is corrupted (MD5 {md5}, expected {known[0]}); {fix}")


def load_mnist(root: str | os.PathLike, *, train: bool, download: bool = True) -> ImageSet:
    """Read MNIST through torchvision's ``MNIST`` class (which downloads it when allowed)."""
    from torchvision.datasets import MNIST

    root = Path(root)
    raw = root / "MNIST" / "raw"
    prefix = "train" if train else "t10k"
    for name in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
        if (raw / name).is_file():
            verify_idx_file(raw / name)
    try:
        ds = MNIST(root=str(root), train=train, download=download)
    except (RuntimeError, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "not found" in first_line.lower() or "download" in first_line.lower() or isinstance(exc, OSError):
            raise DataError(_missing_mnist_message(root, first_line, download)) from exc
        raise DataError(f"could not read MNIST from {root / 'MNIST' / 'raw'}: {first_line}") from exc
    images = ds.data.unsqueeze(1).contiguous()  # (N, 1, 28, 28) uint8
    return ImageSet(images, ds.targets.clone(), [str(i) for i in range(10)])


def load_dataset(
    name: str, data_dir: str | os.PathLike | None, *, download: bool = True, image_size: int | None = None
) -> tuple[ImageSet, ImageSet, DatasetInfo]:
    """Return (training pool, test set, info) for a dataset name."""
    from cnnlab import datasets  # the other datasets (fashion-mnist, cifar10, folder:PATH, ...)

    root = resolve_data_dir(data_dir)
    if name != "mnist" or image_size not in (None, 28):
        if datasets.is_known(name):
            return datasets.load(name, root, download=download, image_size=image_size)
    if name == "mnist":
        train = load_mnist(root, train=True, download=download)
        test = load_mnist(root, train=False, download=download)
        c, h, _ = train.shape
        # Digits are white ink on black, centred by centre of mass in a 20x20 box: prediction
        # on a user's own image must rebuild exactly that.
        info = DatasetInfo("mnist", train.classes, c, h, {"style": "mnist", "scale": 255.0})
        return train, test, info
    raise ConfigError(f"unknown dataset {name!r}; available: {', '.join(list_datasets())}")


def list_datasets() -> list[str]:
    from cnnlab import datasets

    return [name for name, _ in datasets.describe()]


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


def prepare_data(cfg: DataConfig, device: torch.device | str = "cpu") -> DataBundle:
    """Load a dataset, split it as configured, and move it to ``device``."""
    pool, test, info = load_dataset(cfg.dataset, cfg.data_dir, download=cfg.download, image_size=cfg.image_size)
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
    return DataBundle(
        train=pool.subset(train_idx).to(device),
        val=pool.subset(val_idx).to(device),
        test=test.to(device),
        info=info,
        train_indices=train_idx,
        val_indices=val_idx,
    )


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
