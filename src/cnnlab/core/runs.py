"""The run-directory contract.

A run directory holds everything a training run produced, under fixed names:

    config.json            the resolved config (every default filled in) and provenance
    split.json             the train/validation indices into the training pool
    metrics.csv            one row per epoch: train/val loss and accuracy, time
    last.pt                the full training state after the last epoch (or Ctrl-C): resume from it
    best.pt                best model by validation loss (weights_only-safe)
    report.txt             sklearn classification_report(digits=3) on the test set
    report.json            test accuracy, loss, per-class precision/recall/F1/support
    confusion_matrix.csv   test confusion matrix (rows: true class, columns: predicted)
    confusion_matrix.png   the same, as counts and row-normalised

Crash safety rests on the order of the writes (``engine/train.py``): ``config.json`` first
(atomically, so it is whole or absent), ``last.pt`` before the ``best.pt`` and ``metrics.csv``
of the same epoch, and both of those can be rebuilt from ``last.pt``. A folder that holds
nothing but ``atomic_write`` temporary files counts as empty.
"""
from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import json
import os
import re
import shutil
import stat
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

with warnings.catch_warnings():  # without fcntl (not Windows, not POSIX) filelock warns once on import
    warnings.simplefilter("ignore", UserWarning)
    from filelock import FileLock, Timeout

from cnnlab.core.config import CUSTOM_PREFIX, Config
from cnnlab.core.errors import RunDirError, SaveError
from cnnlab.core.faults import pause_point
from cnnlab.core.files import csv_text, make_dirs, remove_temp_files, temp_target, write_csv, write_json
from cnnlab.core.i18n import _, format_int


@dataclass(frozen=True)
class RunDir:
    path: Path

    BEST = "best.pt"  # the checkpoint every report and analysis is about; named in their files

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))  # RunDir("runs/x") works as RunDir(Path("runs/x"))

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def split(self) -> Path:
        return self.path / "split.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def best(self) -> Path:
        return self.path / self.BEST

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def report_txt(self) -> Path:
        return self.path / "report.txt"

    @property
    def report_json(self) -> Path:
        return self.path / "report.json"

    @property
    def confusion_csv(self) -> Path:
        return self.path / "confusion_matrix.csv"

    @property
    def confusion_png(self) -> Path:
        return self.path / "confusion_matrix.png"

    @property
    def analysis(self) -> Path:
        """Where `cnnlab analyze` writes (and compare, under analysis/compare-OTHER)."""
        return self.path / "analysis"

    @property
    def visualize(self) -> Path:
        return self.path / "visualize"

    def config_json(self) -> dict:
        """config.json as stored (config and provenance); {} when there is none (or it is unreadable)."""
        try:
            raw = json.loads(read_run_file(self.config))
        except (OSError, RunDirError, UnicodeDecodeError, json.JSONDecodeError):
            return {}
        return raw if isinstance(raw, dict) else {}


    def entries(self) -> list[Path]:
        """What the folder holds, leaving out ``atomic_write`` temporary files (a dead writer's leftovers)."""
        try:
            return sorted(p for p in self.path.iterdir() if temp_target(p.name) is None)
        except NotADirectoryError:
            raise RunDirError(_("run directory {path} is a file").format(path=self.path), option="run_dir") from None
        except OSError as exc:
            raise RunDirError(_("cannot read run directory {path}: {reason}").format(path=self.path, reason=exc.strerror or exc)) from None

    def remove_temp_files(self) -> list[Path]:
        """Delete temporary files a killed process left; only while holding :func:`locked`."""
        return remove_temp_files(self.path)


# --- one writer per run ---------------------------------------------------------------------
# The lock is a file BESIDE the run folder (``runs/.NAME.lock``), taken before the folder is
# created: whoever holds it alone may create, fill, clear or remove the folder, so the race
# between two processes creating the same new folder cannot give two writers (git's
# ``index.lock`` works the same way). It is an OS lock (filelock: flock on POSIX, msvcrt on
# Windows), released by the OS when its process dies, however it dies; the file itself stays,
# as removing a lock file others may be waiting on would let two processes hold "it". The
# holder writes ``ROLE PID`` into it, so a refusal can name the process.

TRAIN, READ = "train", "read"
#: How long a trainer or reader waits for *readers* (short commands: evaluate, analyze) to finish.
READER_WAIT_S = 600.0
_POLL_S = 0.1
_LOCK_SUFFIX = ".lock"
#: Longest file name most file systems take (ext4, APFS, NTFS: 255 bytes).
NAME_MAX = 255

# lock file -> (role, FileLock, thread id) held by this process. Reentrant for the thread that holds it
# (the training front door scores under fit's lock); another thread of this process is refused like
# another process, as two notebook threads training one run would be two writers.
_held: dict[Path, tuple[str, Any, int]] = {}


class RunBusyError(RunDirError):
    """Another process trains into this run (``pid``), so it may not be trained or read now."""

    def __init__(self, message: str, *, path: Path, pid: int | None) -> None:
        super().__init__(message)
        self.path = path
        self.pid = pid


def lock_path(path: str | os.PathLike) -> Path:
    """``runs/.NAME.lock`` for ``runs/NAME``: beside the real folder (symlinks resolved), so every
    spelling of the same folder (``runs/x``, ``./runs/x/``, a link to it) names the same lock."""
    real = Path(os.path.abspath(path))
    with contextlib.suppress(OSError, RuntimeError):
        real = real.resolve()
    return real.parent / f".{real.name}{_LOCK_SUFFIX}"


def check_name(path: Path) -> None:
    """A run folder name the file system can store, lock file included; one line otherwise."""
    limit = NAME_MAX - len(f".{_LOCK_SUFFIX}")
    size = len(os.fsencode(path.name))
    if size > limit:
        raise RunDirError(_("run directory name {name}... is {size} bytes long; at most {limit} fit "
                            "(with its lock file) on this file system: choose a shorter name").format(
            name=path.name[:40], size=format_int(size), limit=format_int(limit)))


def lock_holder(path: Path) -> tuple[str | None, int | None]:
    """(role, pid) the holder of lock file ``path`` wrote, or (None, None) when unknown (being written,
    or unreadable while locked, as on Windows)."""
    try:
        role, _sep, pid = path.read_text(encoding="ascii", errors="replace").strip().partition(" ")
        return role, int(pid)
    except (OSError, ValueError):
        return None, None


def _write_holder(role: str) -> Callable[[int], None]:
    def write(fd: int) -> None:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{role} {os.getpid()}\n".encode("ascii"))

    return write


def _alive(pid: int | None) -> bool:
    if not pid or os.name == "nt":  # Windows: no signal 0; trust the note
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # alive, but another user's
    return True


def busy_error(run_path: Path, pid: int | None) -> RunBusyError:
    who = _("process {pid}").format(pid=pid) if pid else _("another process")
    return RunBusyError(_("{path} is being trained by {who}; wait for it to finish (or stop it), "
                          "or choose another run directory").format(path=run_path, who=who),
                        path=run_path, pid=pid)


def _acquire(run_path: Path, role: str, *, create_lock: bool = True) -> Any | None:
    """Hold the run's lock as ``role``; None where it cannot exist (a read-only parent, for a reader).

    A trainer holding it refuses everyone at once (:class:`RunBusyError` naming its PID); a reader
    holding it is waited for, up to :data:`READER_WAIT_S`.
    """
    run_path = Path(run_path)
    path = lock_path(run_path)
    if path in _held and _held[path][2] == threading.get_ident():
        held_role = _held[path][0]
        if held_role == TRAIN or held_role == role:
            return None
    check_name(run_path)
    if not create_lock and not path.exists():
        try:
            path.touch()
        except OSError:
            return None  # a folder nobody may write into: nobody can be training there either
    # Native locks write the holder's note through the locked descriptor (filelock >= 4); older filelock
    # and its soft fallback (no fcntl) cannot, and get it written by name once held.
    try:
        lock, noted = FileLock(path, thread_local=False, on_acquired=_write_holder(role)), True
    except (TypeError, ValueError):
        lock, noted = FileLock(path, thread_local=False), False
    if role == TRAIN:
        make_dirs(path.parent)
    deadline = time.monotonic() + READER_WAIT_S
    while True:
        try:
            lock.acquire(timeout=_POLL_S)
            break
        except Timeout:
            holder, pid = lock_holder(path)
            if holder == TRAIN and _alive(pid):  # a dead PID: a finished trainer's note, the new holder is writing its own
                raise busy_error(run_path, pid) from None
            if time.monotonic() > deadline:
                raise RunBusyError(_("{path} is in use by {who} for longer than {seconds} s; try again later").format(
                    path=run_path, who=_("process {pid}").format(pid=pid) if pid else _("another process"),
                    seconds=format_int(int(READER_WAIT_S))), path=run_path, pid=pid) from None
        except OSError as exc:
            if role == READ:
                return None  # cannot lock a read-only place: nobody can train there
            raise SaveError(_("cannot create the lock file {path}: {reason}").format(
                path=path, reason=exc.strerror or exc)) from None
    if not noted:
        with contextlib.suppress(OSError), open(path, "w", encoding="ascii") as fh:
            fh.write(f"{role} {os.getpid()}\n")
    _held[path] = (role, lock, threading.get_ident())
    return lock


def _release(lock: Any | None) -> None:
    if lock is None:
        return
    for path, (_role, held, _thread) in list(_held.items()):
        if held is lock:
            del _held[path]
    lock.release()


@contextlib.contextmanager
def locked(run: RunDir) -> Iterator[RunDir]:
    """Hold the run's writer lock, then create its folder; one process trains into a run at a time.

    The lock (:func:`lock_path`, beside the folder) is taken before the folder exists, and the
    folder is removed on the way out only if this process created it and it is still empty (a
    run that failed before writing anything, on bad data or a typo, leaves nothing behind).
    Holding it is what makes it safe to delete temporary files found in the folder and to clear
    it for ``overwrite``: no live process can be writing them. Reentrant within a process.
    """
    lock = _acquire(run.path, TRAIN)
    created = False
    try:
        pause_point("run-locked")
        if run.path.is_symlink() and not run.path.is_dir():
            raise RunDirError(_("run directory {path} is a broken symbolic link; choose another run directory").format(
                path=run.path))
        created = not run.path.exists()
        make_dirs(run.path)
        pause_point("run-created")
        yield run
    finally:
        if created:
            with contextlib.suppress(OSError):
                run.path.rmdir()  # only succeeds when empty
        _release(lock)


@contextlib.contextmanager
def reading(*paths: str | os.PathLike) -> Iterator[None]:
    """Hold the locks of runs being read and reported on (evaluate, analyze, visualize, compare, export).

    A run that a live process is training is refused at once (:class:`RunBusyError`: "being trained
    by process N"), so a report is never written beside a ``best.pt`` it does not describe; another
    reader is waited for. Locks are taken in path order (no two readers of the same pair deadlock).
    Creates nothing where the lock file cannot be made (a read-only folder).
    """
    taken: list[Any] = []
    # A path that is not there has nothing to protect (the reader fails on it in one line): no lock file for a typo.
    unique = sorted({lock_path(p): Path(p) for p in paths if Path(p).exists()}.items())
    try:
        for _lock, path in unique:
            taken.append(_acquire(path, READ, create_lock=False))
        yield
    finally:
        for lock in reversed(taken):
            _release(lock)


def being_trained(path: str | os.PathLike) -> int | None:
    """The PID of the process training into ``path`` now, or None; never blocks, never creates a file."""
    lp = lock_path(path)
    if not lp.exists():
        return None
    if lp in _held:
        return os.getpid() if _held[lp][0] == TRAIN else None
    lock = FileLock(lp, thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        role, pid = lock_holder(lp)
        return pid if role == TRAIN and _alive(pid) else None
    except OSError:
        return None
    lock.release()
    return None


def checkpoint_id(path: str | os.PathLike) -> tuple[int, int, int] | None:
    """(inode, size, mtime_ns) of a file, None if absent: cnnlab replaces a checkpoint by renaming a new
    file over it, so any new ``best.pt`` has a new identity."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


# --- overwrite: remove only what cnnlab wrote ------------------------------------------------

#: Files cnnlab writes into a run folder (training, evaluate, export's default outputs).
RUN_FILES = (
    "config.json", "split.json", "metrics.csv", "last.pt", "best.pt", "report.txt", "report.json",
    "confusion_matrix.csv", "confusion_matrix.png", "model.onnx", "model.pt2", "model.torchscript.pt",
)
#: Folders cnnlab makes in a run folder (analyze and compare, visualize, train --tensorboard).
RUN_FOLDERS = ("analysis", "visualize", "tensorboard")


def foreign_entries(run: RunDir) -> list[str]:
    """Names in the run folder that cnnlab did not write (sorted): what ``overwrite`` must not delete.

    A known name that is a symbolic link, or a file where cnnlab makes a folder (and the other way
    round), counts as the user's.
    """
    out = []
    for entry in sorted(run.path.iterdir()):
        name = entry.name
        if temp_target(name) is not None and entry.is_file() and not entry.is_symlink():
            continue
        if entry.is_symlink():
            out.append(name)
        elif name in RUN_FILES and entry.is_file():
            continue
        elif name in RUN_FOLDERS and entry.is_dir():
            continue
        else:
            out.append(name + ("/" if entry.is_dir() else ""))
    return out


def clear_run_dir(run: RunDir) -> list[Path]:
    """Delete what cnnlab wrote in a run folder, for a fresh run; returns what was removed.

    Only :data:`RUN_FILES`, :data:`RUN_FOLDERS` and ``atomic_write`` temporary files are ever
    removed, and only when the folder holds nothing else: otherwise :class:`RunDirError` lists
    what is there and nothing is removed. A symbolic link as the run folder is refused (clearing
    would reach into wherever it points). The caller holds :func:`locked`. The folder itself stays.
    """
    if run.path.is_symlink():
        raise RunDirError(_("run directory {path} is a symbolic link (to {target}); give the real folder, "
                            "or another run directory").format(path=run.path, target=os.readlink(run.path)))
    if not run.path.exists():
        return []
    if not run.path.is_dir():
        raise RunDirError(_("run directory {path} is a file; choose another run directory").format(path=run.path))
    try:
        foreign = foreign_entries(run)
    except OSError as exc:
        raise RunDirError(_("cannot read run directory {path}: {reason}").format(
            path=run.path, reason=exc.strerror or exc)) from None
    if foreign:
        shown = ", ".join(foreign[:10]) + (_(" and {n} more").format(n=format_int(len(foreign) - 10))
                                           if len(foreign) > 10 else "")
        raise RunDirError(_("{path} holds files cnnlab did not write ({shown}); nothing was removed: move them "
                            "away or choose another run directory").format(path=run.path, shown=shown))
    removed = []
    try:
        for entry in sorted(run.path.iterdir()):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    except OSError as exc:
        raise SaveError(_("could not clear {path}: {reason}").format(path=run.path, reason=exc.strerror or exc)) from None
    return removed


def run_files(run: RunDir) -> list[Path]:
    """The run files (config, metrics, checkpoints, report) that exist in the folder."""
    return [p for p in (run.config, run.metrics, run.last, run.best, run.report_json) if p.is_file()]


def default_run_dir(cfg: Config, root: str | os.PathLike = "runs") -> Path:
    """``runs/MODEL-DATASET-TIME``, a safe folder name whatever the dataset spec (``folder:~/photos``)
    or model (``custom:Lenet5``, the user's own class, is named ``Lenet5``)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    model = safe_name(cfg.model.name.removeprefix(CUSTOM_PREFIX))
    return Path(root) / f"{model}-{dataset_slug(cfg.data.dataset)}-{stamp}"


def safe_name(text: str) -> str:
    """Letters, digits, ``.``, ``_`` and ``-`` only: a name every file system and shell takes as is."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "data"


def dataset_slug(spec: str) -> str:
    """A dataset spec as a short name: ``mnist`` -> ``mnist``, ``folder:~/photos/`` -> ``folder-photos``."""
    if spec.startswith("folder:"):
        return "folder-" + safe_name(Path(spec[len("folder:"):].rstrip("/\\") or "root").name)
    return safe_name(spec.removeprefix(CUSTOM_PREFIX))


def open_run(path: str | os.PathLike) -> RunDir:
    """An existing run directory; a clear error when it is not one."""
    run = RunDir(Path(path))
    if not run.path.is_dir():
        raise RunDirError(_("run directory {path} does not exist").format(path=run.path))
    if not run.config.is_file():
        raise RunDirError(_("{path} is not a cnnlab run directory (no config.json)").format(path=run.path))
    return run


def write_config(run: RunDir, cfg: Config, extra: dict | None = None) -> None:
    payload = {"config": cfg.to_dict(), **(extra or {})}
    write_json(run.config, payload)


# The small files of a run, and the most cnnlab reads of each: a run folder comes from anywhere (a
# download, a colleague), and one of these replaced by a link to a 50 GB file must be one line, not
# minutes of reading and a MemoryError. Each cap is hundreds of times what cnnlab writes.
SIZE_CAPS = {
    "config.json": 1 << 20,     # ~3 KB written
    "metrics.csv": 16 << 20,    # ~100 bytes per epoch
    "split.json": 256 << 20,    # ~8 bytes per training image: 30 million images
    "report.json": 16 << 20,    # ~200 bytes per class
}


def read_run_file(path: str | os.PathLike, limit: int | None = None) -> str:
    """A small run file's text (UTF-8), refused in one line when it is not a regular file or is over its
    cap (:data:`SIZE_CAPS`, by file name); the size is checked before reading, and at most the cap is read."""
    path = Path(path)
    cap = limit if limit is not None else SIZE_CAPS.get(path.name, 16 << 20)
    st = os.stat(path)  # follows a symbolic link: the cap is on what would be read
    if not stat.S_ISREG(st.st_mode):
        raise RunDirError(_("{path} is not a regular file; a run's {name} is a small text file").format(
            path=path, name=path.name))
    if st.st_size > cap:
        raise RunDirError(_("{path} is {size} bytes, more than the {cap} bytes a run's {name} can be; it is not "
                            "a file cnnlab wrote: restore it or retrain").format(
            path=path, size=format_int(st.st_size), cap=format_int(cap), name=path.name))
    with open(path, "rb") as fh:
        data = fh.read(cap + 1)
    if len(data) > cap:  # grew while being read
        raise RunDirError(_("{path} grew past {cap} bytes while being read").format(path=path, cap=format_int(cap)))
    return data.decode("utf-8")


def read_config(run: RunDir) -> Config:
    try:
        raw = json.loads(read_run_file(run.config))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(_("cannot read {config}: {exc}").format(config=run.config, exc=exc)) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("config"), dict):
        raise RunDirError(_('{config} is not a cnnlab run config (no "config" table)').format(config=run.config))
    return Config.from_dict(raw["config"])


def write_split(run: RunDir, train_idx: torch.Tensor, val_idx: torch.Tensor, seed: int) -> None:
    write_json(run.split, {"seed": seed, "train": train_idx.tolist(), "val": val_idx.tolist()})


def read_split(run: RunDir) -> dict[str, Any]:
    """``split.json``: the seed and the train/validation indices (capped like every small run file)."""
    try:
        raw = json.loads(read_run_file(run.split))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(_("cannot read {path}: {reason}").format(path=run.split, reason=exc)) from None
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), list) for k in ("train", "val")):
        raise RunDirError(_("{path} is not a cnnlab split (no train/val index lists)").format(path=run.split))
    return raw


# epoch_time_s is the whole epoch; eval_time_s the part of it spent in the train/val evaluation passes.
METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s", "eval_time_s", "best"]


def write_metrics(run: RunDir, history: list[dict], *, only_if_changed: bool = False) -> bool:
    """Write ``metrics.csv``, one row per epoch of ``history``; returns whether it wrote.

    ``only_if_changed`` leaves a file that already says the same alone (a resume of a finished
    run then writes nothing it does not have to).
    """
    def cell(v: object) -> object:
        return "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)

    rows = [[cell(row.get(c)) for c in METRIC_COLUMNS] for row in history]
    if only_if_changed:
        try:
            if read_run_file(run.metrics) == csv_text(METRIC_COLUMNS, rows):
                return False
        except (OSError, RunDirError, UnicodeDecodeError):  # unreadable or huge: replaced below
            pass
    write_csv(run.metrics, METRIC_COLUMNS, rows)
    return True


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """``metrics.csv`` as a list of rows: numbers as float (``None`` when blank), ``best`` as bool."""
    try:
        text = read_run_file(path, SIZE_CAPS["metrics.csv"])
    except (OSError, UnicodeDecodeError) as exc:
        raise RunDirError(_("cannot read {path}: {reason}").format(path=path, reason=exc)) from None
    return parse_metrics(text)


def parse_metrics(text: str) -> list[dict[str, Any]]:
    """The rows of a ``metrics.csv`` text, as :func:`read_metrics` returns them."""
    rows = []
    for raw in csv.DictReader(io.StringIO(text, newline="")):
        row: dict[str, Any] = {}
        for key, value in raw.items():
            if key is None:
                continue
            if key == "best":
                row[key] = str(value).strip().lower() in ("true", "1", "yes")
            elif value is None or value == "":
                row[key] = None
            else:
                try:
                    row[key] = float(value)
                except ValueError:
                    row[key] = value
        rows.append(row)
    return rows
