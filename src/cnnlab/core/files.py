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
import re
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Collection, Iterator, Sequence

from cnnlab.core.errors import ConfigError, OutputExistsError, SaveError
from cnnlab.core.faults import kill_point
from cnnlab.core.i18n import _


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


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return _("the disk is full")
    if exc.errno == errno.ENOTDIR:
        return _("a part of the path is a file, not a folder")
    return exc.strerror or str(exc)


def check_output_free(path: str | os.PathLike | None, overwrite: bool, what: str | None = None) -> None:
    """Refuse to replace an existing file the user named unless ``overwrite``; checked before any work is done.

    ``None`` and ``-`` (standard output) are always free.
    """
    what = what or _("output file")
    if path is None or str(path) == STDOUT:
        return
    p = Path(path)
    if p.is_dir():
        raise SaveError(_("{what} {p} is a folder; give a file name").format(what=what, p=p))
    if p.exists() and not overwrite:
        raise OutputExistsError(p, what, message=_("{what} {path} already exists").format(what=what, path=p))


def check_folder_free(path: str | os.PathLike | None, overwrite: bool, what: str | None = None) -> None:
    """Refuse to write into a non-empty folder the user named unless ``overwrite`` (files there may be replaced)."""
    what = what or _("output folder")
    if path is None:
        return
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise SaveError(_("{what} {p} is a file; give a folder").format(what=what, p=p))
    if p.is_dir() and any(p.iterdir()) and not overwrite:
        raise OutputExistsError(p, what, folder=True,
                                message=_("{what} {path} is not empty").format(what=what, path=p))


#: In a folder that cnnlab fills with files of its choosing (``predict --save-preprocessed``): the names it
#: wrote there, one a line, so that an overwrite later removes those and nothing else.
WRITTEN_MANIFEST = ".cnnlab-written"


class FolderNotFree(SaveError):
    """A folder to write into that holds files cnnlab did not write there (``foreign``, sorted)."""

    exit_code = 2

    def __init__(self, message: str, *, folder: Path, foreign: list[str]) -> None:
        super().__init__(message)
        self.folder, self.foreign = folder, foreign


def written_here(folder: str | os.PathLike) -> set[str]:
    """The file names :func:`note_written` recorded in ``folder``."""
    try:
        text = (Path(folder) / WRITTEN_MANIFEST).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return set()
    return {line for line in text.splitlines() if line and "/" not in line and "\\" not in line}


def note_written(folder: str | os.PathLike, name: str) -> None:
    """Record, before writing it, that cnnlab writes ``name`` into ``folder`` (an appended line: a crash
    loses at most the line being written, and a listed file that was never written is harmless)."""
    try:
        with open(Path(folder) / WRITTEN_MANIFEST, "a", encoding="utf-8") as fh:
            fh.write(name + "\n")
    except OSError as exc:
        raise SaveError(_("could not write {path}: {reason}").format(path=Path(folder) / WRITTEN_MANIFEST,
                                                                     reason=_reason(exc))) from None


def claim_folder(folder: str | os.PathLike, overwrite: bool) -> None:
    """Make ``folder`` ready for cnnlab to fill: it must be new or empty; with ``overwrite`` it may also hold
    files cnnlab wrote there before (:func:`note_written`), which are then removed, and nothing else.

    Anything else (the user's files, folders, links) is a :class:`FolderNotFree` that lists it, and
    nothing is removed. Checked before any work is done.
    """
    path = Path(folder)
    if not path.exists():
        return
    if not path.is_dir():
        raise SaveError(_("{path} is a file; give a folder").format(path=path))
    entries = sorted(path.iterdir())
    if not entries:
        return
    mine = written_here(path)
    foreign = [e.name + ("/" if e.is_dir() and not e.is_symlink() else "") for e in entries
               if e.name != WRITTEN_MANIFEST and temp_target(e.name) is None
               and not (e.name in mine and e.is_file() and not e.is_symlink())]
    if not overwrite or foreign:
        shown = ", ".join(foreign[:10]) + (_(" and {n} more").format(n=len(foreign) - 10) if len(foreign) > 10 else "")
        message = (_("folder {path} holds files cnnlab did not write ({shown}); nothing was removed") if foreign
                   else _("folder {path} is not empty"))
        raise FolderNotFree(message.format(path=path, shown=shown), folder=path, foreign=foreign)
    for e in entries:
        if e.name in mine or e.name == WRITTEN_MANIFEST or temp_target(e.name) is not None:
            with contextlib.suppress(FileNotFoundError):
                e.unlink()


def make_dirs(folder: str | os.PathLike) -> Path:
    """``mkdir -p folder``; a read-only disk, a missing permission or a file in the way is a :class:`SaveError`."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise SaveError(_("cannot create folder {path}: a file of that name is in the way").format(path=path)) from None
    except OSError as exc:
        raise SaveError(_("cannot create folder {path}: {reason}").format(path=path, reason=_reason(exc))) from None
    return path


# atomic_write's temporary files are ".NAME.XXXXXXXX.tmp" (mkstemp's 8 random characters).
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]{8}\.tmp$")


def temp_target(name: str) -> str | None:
    """The file an ``atomic_write`` temporary file of this name was for, or None if it is not one."""
    m = _TEMP_NAME.match(name)
    return m.group("target") if m else None


def remove_temp_files(folder: str | os.PathLike, targets: Collection[str] | None = None) -> list[Path]:
    """Delete ``atomic_write`` temporary files left in ``folder`` by a process that died (kill -9, power cut).

    Only call this while no other process may be writing into ``folder``: a live writer's
    temporary file looks the same. ``targets`` limits it to temp files of those file names.
    Returns the removed paths.
    """
    removed = []
    with contextlib.suppress(OSError):
        for entry in Path(folder).iterdir():
            target = temp_target(entry.name)
            if target is None or (targets is not None and target not in targets) or not entry.is_file():
                continue
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success it replaces ``path``. ``"-"`` is standard output.

    On any exception the temporary file is removed and ``path`` is untouched.
    ``OSError`` (ENOSPC, EACCES, EROFS, ENOTDIR, ...) anywhere -- creating the folder, the
    temporary file, writing, syncing, renaming -- is turned into a :class:`SaveError` that
    names the path.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write supports 'wb' and 'w', not {mode!r}")
    if os.fspath(path) == STDOUT:
        yield from _stdout(mode)
        return
    target = Path(path)
    tmp: Path | None = None
    try:
        make_dirs(target.parent)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        tmp = Path(tmp_name)
        kwargs = {"encoding": "utf-8", "newline": ""} if mode == "w" else {}
        try:
            _set_mode(fd, tmp)
        except BaseException:
            os.close(fd)
            raise
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        kill_point(target, "tmp")  # test-only (core/faults.py)
        os.replace(tmp, target)
        tmp = None
        _fsync_dir(target.parent)
        kill_point(target, "done")
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        if isinstance(exc, OSError):
            raise SaveError(
                _("could not write {target}: {reason}; the previous version of the file (if any) is intact").format(target=target, reason=_reason(exc))
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


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    write_text(path, csv_text(header, rows))


def figure_bytes(fig: Any, fmt: str = "png", **kwargs: Any) -> bytes:
    """A matplotlib figure rendered to bytes, as :func:`save_figure` writes it."""
    kwargs.setdefault("dpi", 120)
    kwargs.setdefault("bbox_inches", "tight")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, **kwargs)
    return buf.getvalue()


def figure_format(path: str | os.PathLike) -> str:
    """The image format a figure saved to ``path`` gets, from its suffix (none: PNG); a suffix matplotlib
    cannot write is a :class:`ConfigError` naming the file, checked before any work is done."""
    from matplotlib.backend_bases import FigureCanvasBase

    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    known = FigureCanvasBase.get_supported_filetypes()
    if fmt not in known:
        raise ConfigError(_("cannot write a figure to {path}: .{fmt} is not an image format matplotlib writes; "
                            "use one of {known}").format(path=path, fmt=fmt,
                                                         known=", ".join("." + k for k in sorted(known))))
    return fmt


def save_figure(fig: Any, path: str | os.PathLike, **kwargs: Any) -> bytes:
    """Save a matplotlib figure atomically (format from the suffix); returns the bytes written."""
    data = figure_bytes(fig, figure_format(path), **kwargs)
    write_bytes(path, data)
    return data
