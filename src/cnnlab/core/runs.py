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
import errno
import fcntl
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from cnnlab.core.config import CUSTOM_PREFIX, Config
from cnnlab.core.errors import RunDirError, SaveError
from cnnlab.core.files import csv_text, make_dirs, remove_temp_files, temp_target, write_csv, write_json
from cnnlab.core.i18n import _


@dataclass(frozen=True)
class RunDir:
    path: Path

    BEST = "best.pt"  # the checkpoint every report and analysis is about; named in their files

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
        """config.json as stored (config and provenance); {} when there is none."""
        try:
            return json.loads(self.config.read_text())
        except (OSError, json.JSONDecodeError):
            return {}


    def entries(self) -> list[Path]:
        """What the folder holds, leaving out ``atomic_write`` temporary files (a dead writer's leftovers)."""
        try:
            return sorted(p for p in self.path.iterdir() if temp_target(p.name) is None)
        except NotADirectoryError:
            raise RunDirError(f"run directory {self.path} is a file", option="run_dir") from None
        except OSError as exc:
            raise RunDirError(f"cannot read run directory {self.path}: {exc.strerror or exc}") from None

    def remove_temp_files(self) -> list[Path]:
        """Delete temporary files a killed process left; only while holding :func:`locked`."""
        return remove_temp_files(self.path)


@contextlib.contextmanager
def locked(run: RunDir) -> Iterator[RunDir]:
    """Create the run folder and hold an exclusive lock on it while one process trains into it.

    The lock (``flock`` on the folder itself, so no extra file) is what makes it safe to delete
    temporary files found there: no live process can be writing them. It is released when the
    process dies, however it dies. File systems without ``flock`` run unlocked.
    """
    created = not run.path.exists()
    make_dirs(run.path)
    try:
        fd = os.open(run.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        raise SaveError(f"cannot open run directory {run.path}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirError(
                f"another cnnlab process is training into {run.path}; wait for it to finish", option="run_dir"
            ) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
        yield run
    finally:
        os.close(fd)  # closing the descriptor releases the lock
        if created:  # a run that failed before writing anything (bad data, a typo) leaves no empty folder
            with contextlib.suppress(OSError):
                run.path.rmdir()  # only succeeds when empty


def is_being_trained(run: RunDir) -> bool:
    """Whether a live process holds the run's lock (:func:`locked`): it is training into the folder now.

    Probed with a shared, non-blocking ``flock`` released at once. A trainer that takes the lock in
    that same instant is told the folder is busy; it is a window of microseconds, for a command a
    person runs by hand. File systems without ``flock`` say False.
    """
    try:
        fd = os.open(run.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing the descriptor releases the probe's lock
    return False


def run_files(run: RunDir) -> list[Path]:
    """The run files (config, metrics, checkpoints, report) that exist in the folder."""
    return [p for p in (run.config, run.metrics, run.last, run.best, run.report_json) if p.is_file()]


def read_small(path: Path, limit: int) -> str:
    """A run's text file, refusing one over ``limit`` bytes: a listing never reads a huge file by mistake."""
    size = path.stat().st_size
    if size > limit:
        raise RunDirError(_("{path} is {size} bytes, more than a cnnlab run writes there ({limit})").format(
            path=path, size=size, limit=limit))
    return path.read_text(encoding="utf-8")


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
        raise RunDirError(f"run directory {run.path} does not exist")
    if not run.config.is_file():
        raise RunDirError(f"{run.path} is not a cnnlab run directory (no config.json)")
    return run


def write_config(run: RunDir, cfg: Config, extra: dict | None = None) -> None:
    payload = {"config": cfg.to_dict(), **(extra or {})}
    write_json(run.config, payload)


def read_config(run: RunDir) -> Config:
    try:
        raw = json.loads(run.config.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"cannot read {run.config}: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("config"), dict):
        raise RunDirError(f"{run.config} is not a cnnlab run config (no \"config\" table)")
    return Config.from_dict(raw["config"])


def write_split(run: RunDir, train_idx: torch.Tensor, val_idx: torch.Tensor, seed: int) -> None:
    write_json(run.split, {"seed": seed, "train": train_idx.tolist(), "val": val_idx.tolist()})


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
            if run.metrics.read_text(encoding="utf-8") == csv_text(METRIC_COLUMNS, rows):
                return False
        except (OSError, UnicodeDecodeError):
            pass
    write_csv(run.metrics, METRIC_COLUMNS, rows)
    return True


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """``metrics.csv`` as a list of rows: numbers as float (``None`` when blank), ``best`` as bool."""
    with open(path, newline="", encoding="utf-8") as fh:
        return parse_metrics(fh.read())


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
