from __future__ import annotations

import csv
import json
import subprocess
import sys

import click
import pytest
import torch
from click.testing import CliRunner

from cnnlab.apps.cli import cli


def _all_commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from _all_commands(cmd, (*prefix, name))


@pytest.mark.parametrize("path", [p for p, _ in _all_commands(cli)], ids=" ".join)
def test_every_command_has_help(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    cmd = dict(_all_commands(cli))[path]
    assert cmd.help and len(cmd.help.strip()) > 20


def test_train_then_evaluate_end_to_end(tiny_mnist, tmp_path):
    run_dir = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(cli, [
        "train", "--data-dir", str(tiny_mnist), "--run-dir", str(run_dir), "--epochs", "2",
        "--val-size", "100", "--no-progress", "--threads", "1",
    ])
    assert result.exit_code == 0, result.output
    assert "epoch 1/2" in result.output and "epoch 2/2" in result.output
    assert "precision" in result.output and "test accuracy" in result.output
    for name in ["config.json", "split.json", "metrics.csv", "best.pt", "report.txt", "report.json",
                 "confusion_matrix.csv", "confusion_matrix.png"]:
        assert (run_dir / name).is_file(), name
    cfg = json.loads((run_dir / "config.json").read_text())
    optim = cfg["config"]["optim"]
    assert (optim["name"], optim["lr"], optim["weight_decay"]) == ("adam", 0.001, 0.0)
    assert cfg["config"]["train"]["loss_reduction"] == "sum" and cfg["config"]["train"]["epochs"] == 2
    assert cfg["config"]["train"]["batch_size"] == 32 and cfg["config"]["data"]["split_seed"] == 1234
    split = json.loads((run_dir / "split.json").read_text())
    assert len(split["train"]) == 500 and len(split["val"]) == 100
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,train_loss,train_acc,val_loss,val_acc") and len(rows) == 3
    for row in csv.DictReader(rows):  # the evaluation passes are part of the epoch's time
        assert 0 < float(row["eval_time_s"]) < float(row["epoch_time_s"])
    report = json.loads((run_dir / "report.json").read_text())
    assert report["num_images"] == 200 and 0.0 <= report["accuracy"] <= 1.0
    assert set(report["per_class"]["3"]) == {"precision", "recall", "f1", "support"}
    torch.load(run_dir / "best.pt", weights_only=True)

    (run_dir / "report.json").unlink()
    result = runner.invoke(cli, ["evaluate", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / "report.json").read_text())["accuracy"] == report["accuracy"]


@pytest.mark.parametrize("args, message", [
    (["train", "--model", "nope"], "unknown model 'nope'"),
    (["train", "--epochs", "0"], "epochs must be"),
    (["train", "--data-dir", "{tmp}/empty", "--no-download"], "MNIST is not in"),
    (["evaluate", "{tmp}/missing"], "does not exist"),
])
def test_user_mistakes_are_one_line_without_traceback(args, message, tmp_path):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = subprocess.run([sys.executable, "-m", "cnnlab", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_a_different_run_is_never_overwritten(tiny_config, tmp_path):
    from cnnlab.core.errors import RunDirError
    from cnnlab.apps.api import train_config as train

    run_dir = tmp_path / "run"
    train(tiny_config.override("train", epochs=1), run_dir, log=lambda s: None)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    with pytest.raises(RunDirError, match="optim.lr"):
        train(tiny_config.override("train", epochs=1).override("optim", lr=0.01), run_dir, log=lambda s: None)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before
