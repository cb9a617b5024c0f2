"""MNIST from its four IDX files: verified, decoded once into uint8 tensors, cached beside them.

When the uncompressed files are in ``MNIST/raw/`` they are read here directly (an IDX file is a
small header and raw bytes), so training on MNIST never imports torchvision (slow to import);
torchvision's ``MNIST`` class is used only to download (and unpack) missing files. The decoded
tensors are cached in ``MNIST/cnnlab-cache/`` (:mod:`cnnlab.data.cache`).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from cnnlab.core.errors import DataError, first_line
from cnnlab.data import cache
from cnnlab.data.tensors import ImageSet, label_problem

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _missing_mnist_message(root: Path, reason: str, download: bool) -> str:
    raw = root / "MNIST" / "raw"
    how = f"could not be downloaded ({reason})" if download else "downloading is off"
    return (
        f"MNIST is not in {root} and {how}. "
        f"Put the four files {', '.join(MNIST_FILES)} (uncompressed, or as .gz) in {raw}/, "
        "or point the data folder (or $CNNLAB_DATA_DIR) at a folder that holds MNIST/raw/."
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


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file of unsigned bytes as a uint8 tensor of its declared shape (header already verified)."""
    data = path.read_bytes()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return torch.frombuffer(bytearray(data[4 + 4 * ndim :]), dtype=torch.uint8).view(*dims)


def load_mnist(root: str | os.PathLike, *, train: bool, download: bool = True) -> ImageSet:
    """Read one MNIST split: from the cache, else from the raw IDX files, else through torchvision's download."""
    root = Path(root)
    raw = root / "MNIST" / "raw"
    prefix = "train" if train else "t10k"
    files = [raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"]
    if not all(f.is_file() for f in files):
        _download(root, train, download)
    if not all(f.is_file() for f in files):
        raise DataError(_missing_mnist_message(root, "the raw files are missing", download))

    def decode() -> dict[str, torch.Tensor]:
        for f in files:
            verify_idx_file(f)
        images, labels = read_idx(files[0]), read_idx(files[1])
        if images.dim() != 3 or labels.dim() != 1 or len(images) != len(labels):
            raise DataError(f"{files[0]} and {files[1]} do not hold images and their labels; "
                            "delete them and let cnnlab download them again")
        problem = label_problem(labels, 10)
        if problem:
            raise DataError(f"{files[1]}: {problem}; delete it and let cnnlab download it again")
        return {"images": images.unsqueeze(1).contiguous(), "labels": labels.long()}  # (N, 1, 28, 28) uint8

    name = f"mnist-{prefix}"
    t = cache.cached(root / "MNIST", name, files, decode)
    problem = label_problem(t["labels"], 10)  # decode() checked the raw file: this is about the cache
    if problem:
        raise DataError(f"{cache.cache_path(root / 'MNIST', name)}: {problem}; delete this cache file")
    return ImageSet(t["images"], t["labels"], [str(i) for i in range(10)])


def _download(root: Path, train: bool, download: bool) -> None:
    """Let torchvision's ``MNIST`` class download (and unpack) the raw files when allowed."""
    raw = root / "MNIST" / "raw"
    prefix = "train" if train else "t10k"
    for name in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
        if (raw / name).is_file():
            verify_idx_file(raw / name)
    from torchvision.datasets import MNIST

    try:
        ds = MNIST(root=str(root), train=train, download=download)
    except (RuntimeError, OSError) as exc:
        reason = first_line(exc)
        if "not found" in reason.lower() or "download" in reason.lower() or isinstance(exc, OSError):
            raise DataError(_missing_mnist_message(root, reason, download), option="data.data_dir") from exc
        raise DataError(f"could not read MNIST from {root / 'MNIST' / 'raw'}: {reason}") from exc
    del ds
