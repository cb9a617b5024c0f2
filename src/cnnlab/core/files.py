"""Atomic file writes.

Every file cnnlab writes goes through :func:`atomic_write`: the bytes land in a
temporary file in the same folder, are flushed and fsynced, and only then
replace the target with ``os.replace``. A crash or a full disk at any moment
leaves either the old file or the new one, never a torn file, and no temporary
file behind.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

from cnnlab.core.errors import SaveError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; cnnlab's outputs (reports, figures, checkpoints) should get the
# permissions any other new file gets, so a report can be shared or served.
_FILE_MODE = 0o666 & ~_umask()


def _fsync_dir(folder: Path) -> None:
    # The rename itself is only durable once the directory entry is flushed.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


#: The path that means standard output (`-o -`), as in most command-line tools.
STDOUT = "-"


def _stdout(mode: str) -> Iterator[IO[Any]]:
    stream = sys.stdout.buffer if mode == "wb" else sys.stdout
    yield stream
    stream.flush()


def _set_mode(fd: int, path: Path) -> None:
    # os.fchmod is POSIX-only (Windows has it from Python 3.13); chmod by name does the same there.
    if hasattr(os, "fchmod"):
        os.fchmod(fd, _FILE_MODE)
    else:
        os.chmod(path, _FILE_MODE)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success it replaces ``path``. ``"-"`` is standard output.

    On any exception the temporary file is removed and ``path`` is untouched.
    ``OSError`` (ENOSPC, EACCES, ...) is turned into a :class:`SaveError` that
    names the path.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write supports 'wb' and 'w', not {mode!r}")
    if os.fspath(path) == STDOUT:
        yield from _stdout(mode)
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        kwargs = {"encoding": "utf-8", "newline": ""} if mode == "w" else {}
        _set_mode(fd, tmp)
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            reason = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
            raise SaveError(
                f"could not write {target}: {reason}; the previous version of the file (if any) is intact"
            ) from exc
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as fh:
        fh.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def save_figure(fig: Any, path: str | os.PathLike, **kwargs: Any) -> None:
    """Save a matplotlib figure atomically (format from the suffix)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    kwargs.setdefault("dpi", 120)
    kwargs.setdefault("bbox_inches", "tight")
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format=fmt, **kwargs)
