"""Datasets beyond MNIST, each read once into the same uint8 tensors as MNIST.

* torchvision's sets: ``fashion-mnist``, ``kmnist``, ``emnist`` (the balanced
  split, 47 classes), ``cifar10``, ``cifar100``, ``svhn``, read (and, when
  allowed, downloaded) by torchvision's own dataset classes, checksums included;
* ``folder:PATH``: your own images, one folder per class under ``PATH/train/``
  (optional ``val/`` and ``test/``; without them a seeded split is made);
* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no
  download), scaled to 0..255 and resized to MNIST's 28x28 so every model and
  recipe made for MNIST applies unchanged.

Every loader returns ``(training pool, test set, DatasetInfo)``, exactly as
:func:`cnnlab.data.registry.load_dataset` does for MNIST; the class names travel in the
info (and so in every checkpoint), together with a ``preprocess`` spec that
says how a raw image becomes network input:
``{"style": "resize", "size": S, "channels": C, "scale": 255.0, "mean": [0..], "std": [1..], "ink": ...}``
(pixels resized to SxS, divided by ``scale``, then ``(x - mean) / std``; cnnlab
normalises inside the models, so mean/std are 0/1 here).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.data.images import IMAGE_SUFFIXES
from cnnlab.core.catalog import DATASETS
from cnnlab.core.errors import ConfigError, DataError, first_line
from cnnlab.core.i18n import _
from cnnlab.data import cache
from cnnlab.data.mnist import load_mnist
from cnnlab.data.tensors import DatasetInfo, ImageSet

TORCHVISION_SETS = ("fashion-mnist", "kmnist", "emnist", "cifar10", "cifar100", "svhn")
NAMES = ("mnist", *TORCHVISION_SETS, "digits")
# Held-out test share and seed where a dataset has no test set of its own (digits, folders without test/).
TEST_FRACTION = 0.2
TEST_SPLIT_SEED = 1234


def is_known(name: str) -> bool:
    return name in NAMES or name.startswith("folder:")


def describe() -> list[tuple[str, str]]:
    """(name, one-line description) of every dataset, for help texts (declared in core/catalog.py), the
    descriptions in the language in force."""
    return [(name, _(text)) for name, text in DATASETS]


def load(name: str, root: Path, *, download: bool = True, image_size: int | None = None) -> tuple[ImageSet, ImageSet, DatasetInfo]:
    """(pool, test, info) for any dataset name except plain MNIST at its own size."""
    if name.startswith("folder:"):
        return load_folder(name[len("folder:"):], image_size=image_size)
    if name == "digits":
        pool, test = load_digits()
        return _finish(name, pool, test, image_size or 28, ink="light-on-dark")
    if name == "mnist":
        pool, test = load_mnist(root, train=True, download=download), load_mnist(root, train=False, download=download)
        return _finish(name, pool, test, image_size, ink="light-on-dark")
    if name in TORCHVISION_SETS:
        pool, test = (load_torchvision(name, root, train=t, download=download) for t in (True, False))
        ink = "light-on-dark" if name in ("fashion-mnist", "kmnist", "emnist") else None
        return _finish(name, pool, test, image_size, ink=ink)
    raise ConfigError(_("unknown dataset {name!r}; available: {names}").format(
        name=name, names=", ".join(n for n, _text in describe())))


def _finish(name: str, pool: ImageSet, test: ImageSet, image_size: int | None, *, ink: str | None,
            val_count: int | None = None) -> tuple[ImageSet, ImageSet, DatasetInfo]:
    if image_size is not None:
        pool = ImageSet(resize_images(pool.images, image_size), pool.labels, pool.classes)
        test = ImageSet(resize_images(test.images, image_size), test.labels, test.classes)
    c, h, _w = pool.shape
    spec: dict[str, Any] = {"style": "resize", "size": h, "channels": c, "scale": 255.0,
                            "mean": [0.0] * c, "std": [1.0] * c}
    if ink:
        spec["ink"] = ink  # as in the training images; a user's dark-on-light image must be inverted
    return pool, test, DatasetInfo(name, list(pool.classes), c, h, spec, val_count=val_count)


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size), bilinear with antialiasing; chunked to bound memory."""
    if images.shape[-2:] == (size, size):
        return images
    out = [
        F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        .round_().clamp_(0, 255).to(torch.uint8)
        for chunk in images.split(4096)
    ]
    return torch.cat(out) if out else images.new_zeros((0, images.shape[1], size, size))


# --- torchvision sets --------------------------------------------------------------------------


def _tv_class(name: str) -> tuple[Callable[..., Any], dict[str, Any], str, str]:
    """torchvision class, its extra arguments, its root below DATA_DIR, and which files it needs."""
    from torchvision import datasets as tvd

    if name == "fashion-mnist":
        return tvd.FashionMNIST, {}, "", "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"
    if name == "kmnist":
        return tvd.KMNIST, {}, "", "KMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"
    if name == "emnist":
        return tvd.EMNIST, {"split": "balanced"}, "", "EMNIST/raw/emnist-balanced-{train,test}-{images-idx3,labels-idx1}-ubyte"
    if name == "cifar10":
        return tvd.CIFAR10, {}, "", "cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)"
    if name == "cifar100":
        return tvd.CIFAR100, {}, "", "cifar-100-python/ (train, test, meta)"
    if name == "svhn":
        return tvd.SVHN, {}, "svhn", "svhn/train_32x32.mat and svhn/test_32x32.mat"
    raise ConfigError(_("unknown dataset {name!r}").format(name=name))


def _tv_raw_files(name: str, root: Path, train: bool) -> tuple[Path, list[Path]]:
    """The folder a torchvision set's files are in, and the files one split is decoded from."""
    split = "train" if train else "test"
    if name in ("fashion-mnist", "kmnist"):
        folder = root / ("FashionMNIST" if name == "fashion-mnist" else "KMNIST")
        p = "train" if train else "t10k"
        return folder, [folder / "raw" / f"{p}-images-idx3-ubyte", folder / "raw" / f"{p}-labels-idx1-ubyte"]
    if name == "emnist":
        folder = root / "EMNIST"
        return folder, [folder / "raw" / f"emnist-balanced-{split}-{k}-ubyte" for k in ("images-idx3", "labels-idx1")]
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        batches = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        return folder, [folder / b for b in (*batches, "batches.meta")]
    if name == "cifar100":
        folder = root / "cifar-100-python"
        return folder, [folder / split, folder / "meta"]
    if name == "svhn":
        folder = root / "svhn"
        return folder, [folder / f"{split}_32x32.mat"]
    raise ConfigError(_("unknown dataset {name!r}").format(name=name))


def load_torchvision(name: str, root: Path, *, train: bool, download: bool = True) -> ImageSet:
    """Read one split of a torchvision dataset into an :class:`ImageSet`.

    The decoded tensors are cached beside the dataset's files (:mod:`cnnlab.data.cache`), so a
    second run neither imports torchvision nor decodes (CIFAR's pickles, SVHN's .mat files) again.
    """
    folder, raw = _tv_raw_files(name, Path(root), train)
    key = f"{name}-{'train' if train else 'test'}"

    def decode() -> dict[str, Any]:
        s = _read_torchvision(name, root, train=train, download=download)
        return {"images": s.images, "labels": s.labels, "classes": s.classes}

    if all(f.is_file() for f in raw):
        t = cache.cached(folder, key, raw, decode)
    else:  # torchvision downloads the files (when allowed); cache them for next time
        t = decode()
        if all(f.is_file() for f in raw):
            cache.save_cached(folder, key, raw, t)
    return ImageSet(t["images"], t["labels"], list(t["classes"]))


def _read_torchvision(name: str, root: Path, *, train: bool, download: bool = True) -> ImageSet:
    cls, kwargs, sub, files = _tv_class(name)
    where = Path(root) / sub if sub else Path(root)
    if name == "svhn":
        kwargs = {"split": "train" if train else "test"}
    else:
        kwargs = {**kwargs, "train": train}
    try:
        ds = cls(root=str(where), download=download, **kwargs)
    except Exception as exc:  # RuntimeError (not found / corrupted), URLError, OSError, pickle/scipy errors
        reason = first_line(exc)
        how = (_("could not be read or downloaded ({reason})") if download
               else _("could not be read ({reason}; downloading is off)")).format(reason=reason)
        raise DataError(
            _("{name} is not in {root} and {how}. Put {files} under {root}/ (as torchvision downloads them), "
              "or point the data folder at the folder that holds them.").format(name=name, root=Path(root), how=how,
                                                                                files=files),
            option="data.data_dir",
        ) from None
    if name == "svhn":
        images = torch.from_numpy(np.ascontiguousarray(ds.data))  # torchvision gives (N, 3, 32, 32)
        labels = torch.from_numpy(np.asarray(ds.labels, dtype=np.int64))
        classes = [str(i) for i in range(10)]
    elif name in ("cifar10", "cifar100"):
        images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))  # HWC -> CHW
        labels = torch.as_tensor(ds.targets, dtype=torch.long)
        classes = list(ds.classes)
    else:
        data = ds.data
        if name == "emnist":
            # EMNIST's files store every image transposed; flip it back so letters stand upright.
            data = data.transpose(1, 2)
        images = data.unsqueeze(1).contiguous()
        labels = ds.targets.clone()
        classes = [str(c) for c in ds.classes]
    return ImageSet(images.to(torch.uint8), labels.long(), classes)


# --- scikit-learn digits -----------------------------------------------------------------------


def load_digits() -> tuple[ImageSet, ImageSet]:
    """scikit-learn's 1,797 8x8 digits (0..16 ink) as uint8 0..255; a seeded 80/20 pool/test split."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    images = torch.from_numpy(np.rint(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(d.target.astype(np.int64))
    full = ImageSet(images, labels, [str(i) for i in range(10)])
    pool_idx, test_idx = seeded_split(len(full), TEST_FRACTION, TEST_SPLIT_SEED)
    return full.subset(pool_idx), full.subset(test_idx)


def seeded_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held-out) indices: a random ``fraction`` of ``n`` held out, seeded."""
    held = max(1, int(round(n * fraction)))
    if held >= n:
        raise DataError(_("{n} images are too few to hold out a test set; add images or a test/ folder").format(n=n))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[: n - held].sort().values, perm[n - held :].sort().values


# --- folder:PATH -------------------------------------------------------------------------------


def _class_folders(split_dir: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for d in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in d.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        out[d.name] = files
    return out


def load_folder(path: str, *, image_size: int | None = None) -> tuple[ImageSet, ImageSet, DatasetInfo]:
    """Images in ``PATH/train/CLASS/`` (optional ``val/`` and ``test/``), decoded once at one size.

    * classes are the sorted folder names of ``train/``;
    * images with any colour become 3-channel RGB sets, all-grey sets stay 1-channel;
    * every image is resized to ``image_size`` (default: the images' own size when they
      all share one square size, else 32) by bilinear squashing, as prediction does;
    * without ``test/``, a seeded 20% of ``train/`` is the test set; without ``val/``,
      the validation set is split off the pool as for every dataset (``--val-size``).
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(_("folder dataset {root} does not exist (expected {root}/train/CLASS/image.png ...)").format(
            root=root))
    train_dir = root / "train" if (root / "train").is_dir() else root
    splits = {"train": _class_folders(train_dir)}
    classes = list(splits["train"])
    if not classes:
        raise DataError(_("{folder} has no class folders; put each class's images in {folder}/CLASS_NAME/").format(
            folder=train_dir))
    empty = [c for c, files in splits["train"].items() if not files]
    if empty:
        raise DataError(_("class folder(s) {classes} in {folder} hold no images ({suffixes})").format(
            classes=", ".join(empty), folder=train_dir, suffixes=", ".join(sorted(IMAGE_SUFFIXES))))
    if len(classes) < 2:
        raise DataError(_("{folder} has only one class folder ({name}); a classifier needs at least two").format(
            folder=train_dir, name=classes[0]))
    for split in ("val", "test"):
        if train_dir != root and (root / split).is_dir():
            found = _class_folders(root / split)
            unknown = sorted(set(found) - set(classes))
            if unknown:
                raise DataError(_("{folder} has class folder(s) {classes} that {train} lacks").format(
                    folder=root / split, classes=", ".join(unknown), train=train_dir))
            splits[split] = found

    # Pass 1: headers only (mode and size), to choose the channel count and the common size.
    modes, sizes = set(), Counter()
    for files in (f for split in splits.values() for f in split.values()):
        for f in files:
            try:
                with Image.open(f) as im:
                    modes.add(im.mode)
                    sizes[im.size] += 1
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(_("cannot read image {path}: {reason}").format(path=f, reason=exc)) from None
    grey = modes <= {"1", "L", "LA", "I", "I;16", "F"}
    channels = 1 if grey else 3
    if image_size is None:
        (w, h), = sizes.most_common(1)[0][:1]
        image_size = w if len(sizes) == 1 and w == h else 32

    def read(split: dict[str, list[Path]]) -> ImageSet:
        arrays, labels = [], []
        for k, c in enumerate(classes):
            for f in split.get(c, []):
                with Image.open(f) as im:
                    im = im.convert("L" if grey else "RGB")
                    if im.size != (image_size, image_size):
                        im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
                    a = np.asarray(im, dtype=np.uint8)
                arrays.append(a[None] if grey else a.transpose(2, 0, 1))
                labels.append(k)
        if not arrays:
            return ImageSet(torch.zeros((0, channels, image_size, image_size), dtype=torch.uint8),
                            torch.zeros(0, dtype=torch.long), classes)
        return ImageSet(torch.from_numpy(np.stack(arrays)), torch.tensor(labels), classes)

    pool = read(splits["train"])
    if "test" in splits:
        test = read(splits["test"])
    else:
        keep, held = seeded_split(len(pool), TEST_FRACTION, TEST_SPLIT_SEED)
        pool, test = pool.subset(keep), pool.subset(held)
    val_count = None
    if "val" in splits:
        val = read(splits["val"])
        if len(val):
            pool = ImageSet(torch.cat([pool.images, val.images]), torch.cat([pool.labels, val.labels]), classes)
            val_count = len(val)
    return _finish(f"folder:{root}", pool, test, None, ink=None, val_count=val_count)


# (channels, side, classes) of the named datasets, known without reading them.
SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist": (1, 28, 10),
    "fashion-mnist": (1, 28, 10),
    "kmnist": (1, 28, 10),
    "emnist": (1, 28, 47),
    "digits": (1, 28, 10),
    "cifar10": (3, 32, 10),
    "cifar100": (3, 32, 100),
    "svhn": (3, 32, 10),
}


def input_shape(name: str) -> tuple[tuple[int, int, int], int]:
    """((C, H, W), classes) of a named dataset, without reading it."""
    if name not in SHAPES:
        raise ConfigError(_("no known input shape for dataset {name!r}; give the input shape (known: {known})").format(
            name=name, known=", ".join(SHAPES)), option="input")
    c, s, k = SHAPES[name]
    return (c, s, s), k
