"""`cnnlab.runs` / `cnnlab runs`: every run under a folder, one record each, whatever state it is in."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from cnnlab.core.errors import ConfigError, RunDirError
from cnnlab.core.runs import RunDir, locked
from cnnlab.service.runs import SMALL_FILE_LIMIT, format_runs, list_runs, read_run

@pytest.fixture(scope="module")
def runs_folder(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two finished runs (2 epochs seed 0; 1 epoch seed 1), a nested one, and damaged folders beside them."""
    from conftest import train_tiny_run

    root = tmp_path_factory.mktemp("runs")
    train_tiny_run(tiny_mnist, root / "a")
    train_tiny_run(tiny_mnist, root / "b", seed=1, epochs=1)
    shutil.copytree(root / "a", root / "sweep" / "nested")
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text("{not json")
    (root / "no-config").mkdir()
    (root / "no-config" / "metrics.csv").write_text("epoch\n1\n")
    (root / "not-a-run").mkdir()
    (root / "not-a-run" / "notes.txt").write_text("hello")
    return root

def by_name(records) -> dict:
    return {Path(r.path).name: r for r in records}

def test_lists_every_run_with_its_numbers(runs_folder: Path) -> None:
    recs = by_name(list_runs(runs_folder))
    assert set(recs) == {"a", "b", "nested", "broken", "no-config"}  # not-a-run holds no run files
    a = recs["a"]
    assert (a.state, a.model, a.dataset, a.epochs_done, a.epochs_planned) == ("finished", "lenet5", "mnist", 2, 2)
    report = json.loads((runs_folder / "a" / "report.json").read_text())
    assert a.test_acc == pytest.approx(report["accuracy"])
    assert a.best_epoch in (1, 2) and 0 <= a.val_acc <= 1 and a.wall_time_s >= 0 and a.started
    assert recs["b"].epochs_done == 1 and recs["b"].config["train"]["seed"] == 1
    assert recs["broken"].state == "broken" and "config.json" in recs["broken"].problem
    assert recs["no-config"].state == "broken" and recs["no-config"].problem == "no config.json"

def test_records_are_dataframe_friendly(runs_folder: Path) -> None:
    recs = list_runs(runs_folder)
    rows = [dataclasses.asdict(r) for r in recs]
    assert all(set(rows[0]) == set(row) for row in rows)
    json.dumps(rows)  # plain values only
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(recs)
    assert len(frame) == len(recs) and {"model", "test_acc", "state"} <= set(frame.columns)

def test_filter_on_config_fields_and_columns(runs_folder: Path) -> None:
    names = lambda **kw: sorted(Path(r.path).name for r in list_runs(runs_folder, **kw))  # noqa: E731
    assert names(filters=["train.seed=1"]) == ["b"]
    assert names(filters=["seed=0", "state=finished"]) == ["a", "nested"]
    assert names(filters=["model=lenet5", "optim.lr=0.001", "epochs=2"]) == ["a", "nested"]
    assert names(filters={"epochs_done": 1}) == ["b"]
    with pytest.raises(ConfigError, match="unknown filter key 'nope'"):
        list_runs(runs_folder, filters=["nope=1"])
    with pytest.raises(ConfigError, match="key=value"):
        list_runs(runs_folder, filters=["model"])

def test_sort_puts_missing_values_last(runs_folder: Path) -> None:
    recs = list_runs(runs_folder, sort="-epochs_done")
    assert [r.epochs_done for r in recs][:3] == [2, 2, 1] and recs[-1].epochs_done is None
    with pytest.raises(ConfigError, match="cannot sort by 'colour'"):
        list_runs(runs_folder, sort="colour")

def test_interrupted_incomplete_and_training_states(runs_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs_folder / "a", run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["config"]["train"]["epochs"] = 5  # planned 5, trained 2, nobody training: interrupted
    (run / "config.json").write_text(json.dumps(cfg))
    assert read_run(run).state == "interrupted"
    with locked(RunDir(run)):  # what a training process holds while it trains into the folder
        assert read_run(run).state == "training"
    (run / "metrics.csv").unlink()
    assert read_run(run).state == "incomplete"

def test_huge_files_are_not_read(runs_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs_folder / "a", run)
    with open(run / "metrics.csv", "ab") as fh:
        fh.truncate(SMALL_FILE_LIMIT + 1)  # sparse: no disk used
    rec = read_run(run)
    assert rec.state == "broken" and "bytes" in rec.problem

def test_missing_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="does not exist"):
        list_runs(tmp_path / "nowhere")

def test_table_has_one_line_per_run(runs_folder: Path) -> None:
    recs = list_runs(runs_folder, filters=["state=finished"])
    text = format_runs(recs, runs_folder)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["run", "model", "dataset"] and len(lines) == 1 + len(recs)
    assert any(line.startswith("sweep/nested") for line in lines) and "2/2" in text

def test_notebook_api(runs_folder: Path, tiny_mnist: Path) -> None:
    import cnnlab

    assert sorted(Path(r.path).name for r in cnnlab.runs(runs_folder, seed=1)) == ["b"]
    assert [r.epochs_done for r in cnnlab.runs(runs_folder, state="finished", sort="-epochs_done")] == [2, 2, 1]
    fig = cnnlab.show_batch("mnist", n=32, data_dir=tiny_mnist, download=False)
    assert type(fig).__name__ == "InlineFigure" and sum(ax.has_data() for ax in fig.axes) == 32
    import torch

    images, labels = torch.randint(0, 256, (50, 1, 28, 28), dtype=torch.uint8), torch.arange(50) % 10
    fig = cnnlab.show_batch((images, labels), n=12, classes=[f"c{i}" for i in range(10)])
    assert sum(ax.has_data() for ax in fig.axes) == 12
    titles = {ax.get_title() for ax in fig.axes if ax.has_data()}
    assert titles <= {f"c{i}" for i in range(10)}

def test_runs_command(runs_folder: Path) -> None:
    from click.testing import CliRunner

    from cnnlab.apps.cli import cli

    result = CliRunner().invoke(cli, ["runs", str(runs_folder), "--filter", "state=finished", "--sort", "-test_acc"])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 4
    doc = __import__("json").loads(CliRunner().invoke(cli, ["runs", str(runs_folder), "--json"]).stdout)
    assert len(doc["runs"]) == 5 and {"state", "config", "test_acc"} <= set(doc["runs"][0])
    bad = CliRunner().invoke(cli, ["runs", str(runs_folder), "--filter", "nope=1"])
    assert bad.exit_code == 2 and bad.output.count("\n") == 1 and "unknown filter key" in bad.output
