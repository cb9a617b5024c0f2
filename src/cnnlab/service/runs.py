"""Every run under a folder, one record each: ``cnnlab runs`` and ``cnnlab.runs()``.

    import cnnlab, pandas as pd
    pd.DataFrame(cnnlab.runs("runs"))       # one row per run: model, dataset, epochs, accuracies, state

A record is read from the run's small files only (``config.json``, ``metrics.csv``,
``report.json``, each refused above :data:`SMALL_FILE_LIMIT`), never from a checkpoint, and a
folder that is damaged or half-written gives a record whose ``state`` says so (``broken``,
``incomplete``) and whose ``problem`` says why: a listing never stops at one bad folder.
The file names come from :mod:`cnnlab.core.runs`, the only place that names run files.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from cnnlab.core.config import Config, list_recipes, load_recipe
from cnnlab.core.errors import CnnlabError, ConfigError, RunDirError, first_line
from cnnlab.core.i18n import N_, _, format_percent
from cnnlab.core.runs import RunDir, being_trained, parse_metrics, read_run_file, run_files

#: config.json, metrics.csv and report.json are kilobytes; a bigger one is not what cnnlab wrote.
SMALL_FILE_LIMIT = 8 * 2**20
#: How deep under the folder runs are looked for (``runs/sweep-1/lenet5-mnist-...`` is depth 2).
MAX_DEPTH = 4

# What a record's state means. "training": a live process holds the run's lock.
STATES = ("finished", "interrupted", "training", "incomplete", "broken")
STATE_WORDS = {"finished": N_("finished"), "interrupted": N_("interrupted"), "training": N_("training"),
               "incomplete": N_("incomplete"), "broken": N_("broken")}


@dataclass
class RunRecord:
    """One run as ``cnnlab runs`` lists it; ``dataclasses.asdict`` / ``pd.DataFrame([...])`` friendly.

    ``epochs_done``: epochs in ``metrics.csv``; ``epochs_planned``: ``train.epochs`` as configured.
    ``val_acc``: validation accuracy at ``best_epoch`` (lowest validation loss); ``test_acc``: the
    best checkpoint's test accuracy (``report.json``), None until it is scored. ``wall_time_s``: the
    epochs' time summed. ``started``: ISO time the run began. ``recipe``: the named recipe its config
    is (``tutorial`` is the lesson's defaults), None for any other config. ``problem``: why a run
    is ``broken`` or ``incomplete``. ``config``: the whole resolved config, as ``config.json`` has it.
    """

    path: str
    state: str
    model: str | None = None
    dataset: str | None = None
    recipe: str | None = None
    epochs_done: int | None = None
    epochs_planned: int | None = None
    best_epoch: int | None = None
    val_acc: float | None = None
    test_acc: float | None = None
    wall_time_s: float | None = None
    started: str | None = None
    problem: str | None = None
    config: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return Path(self.path).name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


COLUMNS = tuple(f.name for f in fields(RunRecord))
# Short keys for --filter that mean a config field (the record's own columns need no alias).
CONFIG_ALIASES = {"model": "model.name", "dataset": "data.dataset", "optimizer": "optim.name"}


def list_runs(folder: str | os.PathLike = "runs", *, filters: Sequence[str] | Mapping[str, Any] = (),
              sort: str | None = None) -> list[RunRecord]:
    """A record for every run under ``folder`` (the folder itself may be one run).

    ``filters``: ``"key=value"`` strings (or a mapping) that must all hold: a record column
    (``state=finished``), a dotted config key (``optim.lr=0.001``), a config key named alone when
    it is unique (``lr=0.001``), or ``model``/``dataset``/``optimizer``. ``sort``: a column name,
    ``-name`` for descending; missing values go last. Default: by start time, oldest first.
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise RunDirError(f"{root} does not exist: no runs to list")
    if not root.is_dir():
        raise RunDirError(f"{root} is a file, not a folder of runs")
    wanted = parse_filters(filters)
    records = [r for r in (read_run(path) for path in find_runs(root)) if all(m(r) for m in wanted)]
    return sort_records(records, sort or "started")


def find_runs(root: Path, max_depth: int = MAX_DEPTH) -> list[Path]:
    """Folders under ``root`` (itself included) that hold run files; a run's own subfolders are not searched."""
    found: list[Path] = []
    # os.walk without following links: a link loop or a link to a huge tree is not walked.
    for here, dirs, _files in os.walk(root, onerror=lambda _exc: None):
        path = Path(here)
        depth = len(path.relative_to(root).parts)
        if run_files(RunDir(path)):
            found.append(path)
            dirs[:] = []  # analysis/, visualize/ and tensorboard/ of a run are not runs
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < max_depth else []
    return found


def read_run(path: str | os.PathLike) -> RunRecord:
    """One run's record; whatever is wrong with the folder ends up in ``state`` and ``problem``."""
    run = RunDir(Path(path))
    rec = RunRecord(path=str(run.path), state="incomplete")
    try:
        _fill(rec, run)
    except (CnnlabError, OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError) as exc:
        rec.state, rec.problem = "broken", first_line(exc)
    return rec


def _fill(rec: RunRecord, run: RunDir) -> None:
    training = being_trained(run.path) is not None
    if not run.config.is_file():
        # A training process writes config.json first: until then its folder holds only its lock.
        rec.state, rec.problem = ("training", None) if training else ("broken", _("no config.json"))
        return
    stored = _read_json(run.config)
    cfg = stored.get("config") if isinstance(stored, dict) else None
    if not isinstance(cfg, dict):
        raise RunDirError(_("config.json holds no \"config\" table"))
    rec.config = cfg
    section = lambda name: cfg.get(name) if isinstance(cfg.get(name), dict) else {}  # noqa: E731
    rec.model, rec.dataset = section("model").get("name"), section("data").get("dataset")
    rec.epochs_planned = _int(section("train").get("epochs"))
    rec.recipe = stored.get("recipe") if isinstance(stored.get("recipe"), str) else recipe_of(cfg)
    rec.started = _started(stored, run)

    history = parse_metrics(read_run_file(run.metrics, SMALL_FILE_LIMIT)) if run.metrics.is_file() else []
    if history:
        rec.epochs_done = len(history)
        rec.wall_time_s = round(sum(row.get("epoch_time_s") or 0.0 for row in history), 1)
        best = [row for row in history if row.get("best")]
        if best:
            rec.best_epoch = _int(best[-1].get("epoch"))
            rec.val_acc = best[-1].get("val_acc")
    if run.report_json.is_file():
        report = _read_json(run.report_json)
        acc = report.get("accuracy") if isinstance(report, dict) else None
        rec.test_acc = float(acc) if isinstance(acc, (int, float)) else None
    rec.state, rec.problem = _state(rec, run, training, section("train").get("patience"))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(read_run_file(path, SMALL_FILE_LIMIT))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(_("{name} is not valid JSON: {reason}").format(name=path.name, reason=exc)) from None


def _state(rec: RunRecord, run: RunDir, training: bool, patience: Any) -> tuple[str, str | None]:
    if training:
        return "training", None
    done, planned = rec.epochs_done or 0, rec.epochs_planned or 0
    if done == 0:
        return "incomplete", _("no epoch finished")
    if not run.best.is_file():
        return "broken", _("metrics.csv but no best.pt")
    stopped_early = isinstance(patience, int) and rec.best_epoch is not None and done - rec.best_epoch >= patience
    if done >= planned or stopped_early:
        return "finished", None
    return "interrupted", None


def recipe_of(cfg: Mapping[str, Any]) -> str | None:
    """The named recipe this config is, ignoring how it was computed (device, threads, data folder, ...)."""
    try:
        config = Config.from_dict(cfg)
    except (CnnlabError, TypeError, ValueError):
        return None
    for name in list_recipes():
        try:
            recipe = load_recipe(name)
        except ConfigError:
            continue
        if not config.differences(recipe, ignore=HOW_NOT_WHAT):
            return name
    return None


# Settings that change how a run computes, not what: the same recipe on another machine is the same recipe.
HOW_NOT_WHAT = ("train.progress", "train.threads", "train.device", "train.eval_batch_size", "train.tensorboard",
                "data.data_dir", "data.download", "train.channels_last")


# --- filter and sort -----------------------------------------------------------------------------


def parse_filters(filters: Sequence[str] | Mapping[str, Any]) -> list[Any]:
    """Predicates on a record from ``key=value`` strings; an unknown key is a ConfigError naming the choices."""
    pairs: list[tuple[str, Any]] = []
    if isinstance(filters, Mapping):
        pairs = list(filters.items())
    else:
        for text in filters:
            key, sep, value = str(text).partition("=")
            if not sep or not key.strip():
                raise ConfigError(_("a filter is key=value (e.g. model=lenet5 or optim.lr=0.001), got {text!r}")
                                  .format(text=text))
            pairs.append((key.strip(), value.strip()))
    return [_predicate(key, value) for key, value in pairs]


def _config_keys() -> dict[str, str]:
    """Every dotted config key, and each key name that is unique across sections."""
    cfg = Config().to_dict()
    dotted = {f"{s}.{k}": f"{s}.{k}" for s, values in cfg.items() for k in values}
    names: dict[str, list[str]] = {}
    for key in dotted:
        names.setdefault(key.split(".", 1)[1], []).append(key)
    return {**{n: keys[0] for n, keys in names.items() if len(keys) == 1}, **CONFIG_ALIASES, **dotted}


def _predicate(key: str, value: Any) -> Any:
    if key in COLUMNS and key not in CONFIG_ALIASES and key != "config":
        return lambda rec: _matches(getattr(rec, key), value)
    dotted = _config_keys().get(key)
    if dotted is None:
        choices = ", ".join(c for c in COLUMNS if c != "config")
        raise ConfigError(_("unknown filter key {key!r}: use a column ({choices}) or a config key such as "
                            "optim.lr or model").format(key=key, choices=choices))
    section, name = dotted.split(".")
    missing = object()

    def test(rec: RunRecord) -> bool:
        values = rec.config.get(section)
        return isinstance(values, dict) and _matches(values.get(name, missing), value)

    return test


def _matches(actual: Any, wanted: Any) -> bool:
    """``wanted`` (a command-line string, or a Python value) equals ``actual`` in ``actual``'s own type."""
    if not isinstance(wanted, str):
        return actual == wanted
    text = wanted.strip()
    if actual is None:
        return text.lower() in ("none", "null", "")
    if isinstance(actual, bool):
        return text.lower() in (("true", "1", "yes", "on") if actual else ("false", "0", "no", "off"))
    if isinstance(actual, (int, float)):
        try:
            return float(text) == float(actual)
        except ValueError:
            return False
    return str(actual) == text


def sort_records(records: Iterable[RunRecord], key: str) -> list[RunRecord]:
    """Sorted by a column (``-column``: descending); records without a value go last either way."""
    name = key.lstrip("-")
    if name not in COLUMNS or name == "config":
        raise ConfigError(_("cannot sort by {key!r}: choose one of {choices}").format(
            key=key, choices=", ".join(c for c in COLUMNS if c != "config")))
    records = list(records)
    have = [r for r in records if getattr(r, name) is not None]
    lack = [r for r in records if getattr(r, name) is None]
    have.sort(key=lambda r: (getattr(r, name), r.path), reverse=key.startswith("-"))
    return have + sorted(lack, key=lambda r: r.path)


# --- the table -----------------------------------------------------------------------------------

TABLE_COLUMNS = (N_("run"), N_("model"), N_("dataset"), N_("recipe"), N_("epochs"), N_("best"), N_("val acc"),
                 N_("test acc"), N_("time"), N_("started"), N_("state"))


def format_runs(records: Sequence[RunRecord], folder: str | os.PathLike | None = None) -> str:
    """The records as an aligned text table (what ``cnnlab runs`` prints)."""
    base = Path(folder) if folder is not None else None
    rows = [[_(c) for c in TABLE_COLUMNS]]
    for r in records:
        rows.append([
            _relative(r.path, base), r.model or "-", r.dataset or "-", r.recipe or "-",
            f"{r.epochs_done or 0}/{r.epochs_planned if r.epochs_planned is not None else '?'}",
            str(r.best_epoch) if r.best_epoch else "-",
            format_percent(r.val_acc) if r.val_acc is not None else "-",
            format_percent(r.test_acc) if r.test_acc is not None else "-",
            _duration(r.wall_time_s), _short_time(r.started),
            _(STATE_WORDS.get(r.state, r.state)) + (f" ({r.problem})" if r.problem else ""),
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    numeric = {4, 5, 6, 7, 8}
    lines = ["  ".join(cell.rjust(w) if i in numeric else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             .rstrip() for row in rows]
    return "\n".join(lines)


def _relative(path: str, base: Path | None) -> str:
    if base is None:
        return path
    try:
        rel = Path(path).relative_to(base)
    except ValueError:
        return path
    return str(rel) if rel.parts else str(path)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _short_time(iso: str | None) -> str:
    if not iso:
        return "-"
    try:
        return _dt.datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso


def _started(stored: Mapping[str, Any], run: RunDir) -> str | None:
    """When the run began: its provenance, else config.json's time (written first, at the start)."""
    prov = stored.get("provenance")
    if isinstance(prov, dict) and isinstance(prov.get("started"), str):
        text = prov["started"]
        try:  # "2026-12-06T13:15:40+0000" (time.strftime's %z) as ISO 8601 that every reader takes
            return _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z").isoformat()
        except ValueError:
            return text
    return _dt.datetime.fromtimestamp(run.config.stat().st_mtime).astimezone().isoformat(timespec="seconds")


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
