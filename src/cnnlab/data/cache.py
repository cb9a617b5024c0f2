"""Decoded datasets cached as tensors beside their raw files, so a second run maps them instead of decoding.

    MNIST/raw/train-images-idx3-ubyte ...  ->  MNIST/cnnlab-cache/mnist-train.pt

A cache file holds the decoded tensors and the identity of every raw file it was decoded from:
size, modification time, change time (ctime, which no user tool can set back) and inode, the
same fingerprint ``git`` trusts for its index. Any write to a raw file, or replacing it, changes
that fingerprint, and the cache is then decoded again and rewritten: a changed file is never
served stale. Files are written atomically (a temporary file, then a rename), so concurrent runs
never read half a cache. A cache that cannot be written (a read-only folder, a full disk) is
simply not written: loading works as without a cache. A folder marked read-only (no write
permission bit) is never written to, even by root, so a shared dataset folder stays untouched.
``CNNLAB_NO_DATA_CACHE=1`` turns the cache off.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Callable

import torch

from cnnlab.core.errors import SaveError
from cnnlab.core.files import atomic_write

CACHE_DIR = "cnnlab-cache"
FORMAT = 1  # bump when what a cache file holds changes


def fingerprint(paths: list[Path]) -> list[list]:
    """(name, size, mtime_ns, ctime_ns, inode) of each raw file: changes whenever a file's content can have."""
    out = []
    for p in paths:
        st = p.stat()
        out.append([p.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino])
    return out


def enabled() -> bool:
    return os.environ.get("CNNLAB_NO_DATA_CACHE", "") in ("", "0")


def _writable(folder: Path) -> bool:
    """Whether ``folder`` may get a cache: it is writable, and its owner has not marked it read-only."""
    try:
        st = folder.stat()
    except OSError:
        return False
    return bool(st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)) and os.access(folder, os.W_OK)


def cache_path(folder: Path, name: str) -> Path:
    return folder / CACHE_DIR / f"{name}.pt"


def load_cached(folder: Path, name: str, raw_files: list[Path]) -> dict[str, Any] | None:
    """The cached tensors for ``name`` if the cache exists and was decoded from exactly these raw files."""
    path = cache_path(folder, name)
    if not enabled() or not path.is_file():
        return None
    try:
        # mmap: the tensors are mapped, not read, so a hit costs page faults on use instead of a copy.
        payload = torch.load(path, mmap=True, weights_only=True)
        if payload.get("format") != FORMAT or payload.get("raw") != fingerprint(raw_files):
            return None
        return payload["tensors"]
    except Exception:  # a damaged or foreign cache file is ignored (and rewritten by save_cached)
        return None


def save_cached(folder: Path, name: str, raw_files: list[Path], tensors: dict[str, Any],
                raw: list[list] | None = None) -> bool:
    """Write the cache for ``name``; False (and nothing written) where the folder may not be written.

    ``raw``: the raw files' fingerprint taken *before* they were decoded (so a file changed while
    it was being decoded is decoded again next time); by default, taken now.
    """
    if not enabled() or not _writable(folder):
        return False
    target = cache_path(folder, name)
    try:
        with atomic_write(target, "wb") as fh:
            torch.save({"format": FORMAT, "raw": raw if raw is not None else fingerprint(raw_files),
                        "tensors": {k: v.contiguous() if isinstance(v, torch.Tensor) else v
                                    for k, v in tensors.items()}}, fh)
        os.chmod(target, 0o644)  # readable by whoever reads the dataset, whatever this user's umask
    except (SaveError, OSError):
        return False
    return True


def cached(folder: Path, name: str, raw_files: list[Path], decode: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``decode()``'s tensors (and plain values: class names), from the cache when it is fresh; a fresh decode is cached for next time."""
    hit = load_cached(folder, name, raw_files)
    if hit is not None:
        return hit
    before = fingerprint(raw_files)
    tensors = decode()
    save_cached(folder, name, raw_files, tensors, raw=before)
    return tensors
