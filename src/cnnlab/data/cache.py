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

The cache cannot lie: each tensor's CRC-32 is stored beside it when it is written and checked on
every load (zlib's CRC-32 runs at several GB/s, so the check costs milliseconds: benchmarks/README.md,
"Cache check"). CRC-32 catches every change of up to 32 consecutive bits and all but one in 4 billion
of the others: it guards against a damaged disk, a bad copy or a hand edit, not against someone who
recomputes the digest (who could as well edit the raw files). A cache that fails its check is decoded
again from the raw files and rewritten, with one warning line; where the folder may not be written,
loading stops with one line saying what to do.
"""
from __future__ import annotations

import logging
import os
import stat
import zlib
from pathlib import Path
from typing import Any, Callable

import torch

from cnnlab.core.errors import DataError, SaveError
from cnnlab.core.files import atomic_write
from cnnlab.core.i18n import _

CACHE_DIR = "cnnlab-cache"
FORMAT = 2  # bump when what a cache file holds changes (2: a CRC-32 per tensor)

# Without a handler configured, Python prints a logger's warnings as one bare line on stderr.
LOG = logging.getLogger("cnnlab.data")


def digest(tensors: dict[str, Any]) -> dict[str, int]:
    """CRC-32 of every entry by name: a tensor's bytes (in memory order), any other value's ``repr``."""
    out = {}
    for key, value in sorted(tensors.items()):
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous().reshape(-1)
            out[key] = zlib.crc32(t.view(torch.uint8).numpy()) if t.numel() else 0
        else:
            out[key] = zlib.crc32(repr(value).encode("utf-8"))
    return out


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


class CacheMismatch(Exception):
    """A cache file whose tensors do not match the digest stored with them."""


def load_cached(folder: Path, name: str, raw_files: list[Path]) -> dict[str, Any] | None:
    """The cached tensors for ``name`` if the cache exists and was decoded from exactly these raw files.

    Raises :class:`CacheMismatch` when the file is a current cache of these raw files but its tensors
    fail their digest (a damaged or edited cache).
    """
    path = cache_path(folder, name)
    if not enabled() or not path.is_file():
        return None
    try:
        # mmap: the tensors are mapped, not read, so a hit costs page faults on use instead of a copy.
        payload = torch.load(path, mmap=True, weights_only=True)
        if payload.get("format") != FORMAT or payload.get("raw") != fingerprint(raw_files):
            return None
        tensors, stored = payload["tensors"], payload["digest"]
    except Exception:  # a damaged or foreign cache file is ignored (and rewritten by save_cached)
        return None
    if digest(tensors) != stored:
        raise CacheMismatch(str(path))
    return tensors


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
            stored = {k: v.contiguous() if isinstance(v, torch.Tensor) else v for k, v in tensors.items()}
            torch.save({"format": FORMAT, "raw": raw if raw is not None else fingerprint(raw_files),
                        "tensors": stored, "digest": digest(stored)}, fh)
        os.chmod(target, 0o644)  # readable by whoever reads the dataset, whatever this user's umask
    except (SaveError, OSError):
        return False
    return True


def cached(folder: Path, name: str, raw_files: list[Path], decode: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``decode()``'s tensors (and plain values: class names), from the cache when it is fresh; a fresh decode is cached for next time."""
    try:
        hit = load_cached(folder, name, raw_files)
    except CacheMismatch:
        path = cache_path(folder, name)
        if not _writable(path.parent) or not _writable(folder):
            raise DataError(_("the cached {name} data in {path} does not match its checksum (damaged or edited), "
                              "and its folder is read-only: ask its owner to delete the file, or set "
                              "CNNLAB_NO_DATA_CACHE=1 to read the raw files").format(name=name, path=path)) from None
        LOG.warning(_("warning: the cached {name} data in {path} does not match its checksum (damaged or "
                      "edited); decoding the raw files again").format(name=name, path=path))
        hit = None
    if hit is not None:
        return hit
    before = fingerprint(raw_files)
    tensors = decode()
    save_cached(folder, name, raw_files, tensors, raw=before)
    return tensors
