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
    from cnnlab.service.training import train_config as train

    run_dir = tmp_path / "run"
    train(tiny_config.override("train", epochs=1), run_dir, log=lambda s: None)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    with pytest.raises(RunDirError, match="optim.lr"):
        train(tiny_config.override("train", epochs=1).override("optim", lr=0.01), run_dir, log=lambda s: None)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


# --- the command line as declarations (issue 15) ---------------------------------------------------


def _complete(words: str, incomplete: str = "") -> list[str]:
    """What bash completion offers after ``cnnlab WORDS INCOMPLETE`` (click's bash_complete protocol)."""
    parts = ["cnnlab", *words.split(), incomplete]
    env = {"_CNNLAB_COMPLETE": "bash_complete", "COMP_WORDS": " ".join(parts), "COMP_CWORD": str(len(parts) - 1)}
    result = CliRunner().invoke(cli, [], env=env, prog_name="cnnlab")
    assert result.exit_code == 0, result.output
    return [item.split(",", 1)[1] for item in result.stdout.splitlines()]


def test_shell_completion_of_model_dataset_recipe_and_device_values():
    from cnnlab.core.config import list_recipes
    from cnnlab.data.sets import describe
    from cnnlab.models import list_models

    assert _complete("train --model") == list_models()
    assert _complete("train --model", "lenet") == ["lenet5", "lenet5-classic"]
    assert _complete("train --dataset", "fa") == ["fashion-mnist"]
    assert "folder:" in _complete("train --dataset") and len(_complete("train --dataset")) == len(describe())
    assert _complete("train --recipe") == list_recipes() and "tutorial" in list_recipes()
    assert _complete("evaluate RUN --device", "m") == ["mps"]
    assert _complete("layers", "res") == ["resnet18"]
    assert "--eval-batch-size" in _complete("evaluate RUN", "--ev")


def test_help_lists_come_from_the_registries():
    from cnnlab.core.config import list_recipes
    from cnnlab.data.sets import NAMES
    from cnnlab.models import list_models

    text = " ".join(CliRunner().invoke(cli, ["train", "--help"], terminal_width=400).output.split())
    for name in [*list_models(), *list_recipes(), *NAMES, "folder:PATH"]:
        assert name in text, name


def test_train_options_are_generated_from_the_config_dataclasses():
    """Each config field with CLI metadata is one option whose choices and shown default are the config's."""
    from cnnlab.apps.cli import config_fields

    params = {p.name: p for p in cli.commands["train"].params}
    text = " ".join(CliRunner().invoke(cli, ["train", "--help"], terminal_width=400).output.split())
    for section, f in config_fields():
        param = params[f"{section}__{f.name}"]
        meta = f.metadata["cli"]
        if meta["choices"]:
            assert tuple(param.type.choices) == meta["choices"], f.name
        if isinstance(f.default, bool):
            assert param.secondary_opts, f.name  # --flag/--no-flag
        if f.default is not None and not meta["default_text"] and not isinstance(f.default, bool):
            assert f"{param.opts[0]} " in text and f"[default: {f.default}]" in text, f.name
    # The allowed values are the ones the config validates against.
    from cnnlab.core.config import AMP_MODES, COMPILE_MODES, OPTIMIZERS, SCHEDULES

    assert tuple(params["optim__name"].type.choices) == OPTIMIZERS and tuple(params["optim__schedule"].type.choices) == SCHEDULES
    assert tuple(params["train__amp"].type.choices) == AMP_MODES and tuple(params["train__compile"].type.choices) == COMPILE_MODES


def test_every_train_flag_lands_in_the_config(monkeypatch, tmp_path):
    import cnnlab.engine.distributed as distributed

    seen = {}
    monkeypatch.setattr(distributed, "launch", lambda fn, cfg, run_dir, nproc=None: seen.update(cfg=cfg, run=run_dir) or 0)
    result = CliRunner().invoke(cli, [
        "train", "--optimizer", "sgd", "--schedule", "cosine", "--min-lr", "0.0001", "--warmup-pct", "0.2",
        "--no-train-eval", "--no-channels-last", "--nesterov", "--no-download", "--device", "cpu",
        "--dataset", "folder:~/photos", "--recipe", "tutorial",
    ])
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert (cfg.optim.name, cfg.optim.schedule, cfg.optim.min_lr, cfg.optim.warmup_pct, cfg.optim.nesterov) == \
        ("sgd", "cosine", 0.0001, 0.2, True)
    assert (cfg.train.train_eval, cfg.train.channels_last, cfg.data.download, cfg.train.device) == (False, False, False, "cpu")
    assert cfg.train.progress is False  # not a terminal here
    assert str(seen["run"]).startswith("runs/lenet5-folder-photos-")


def test_resume_rules_live_in_the_library(tiny_trained_run):
    result = CliRunner().invoke(cli, ["train", "--resume", str(tiny_trained_run), "--lr", "0.1", "--seed", "3"])
    assert result.exit_code == 2
    assert "optim.lr, train.seed cannot be changed" in result.stderr and "train.epochs" in result.stderr


def test_print_config_round_trips_through_config_and_a_runs_config_json(tiny_mnist, tmp_path, monkeypatch):
    """--print-config writes the TOML that --config reads back, and a run's own config.json trains again
    as it was: the same config three times, from a fresh folder."""
    import tomllib

    from cnnlab.core.config import Config

    monkeypatch.chdir(tmp_path)
    options = ["--data-dir", str(tiny_mnist), "--val-size", "100", "--epochs", "1", "--lr", "0.002",
               "--schedule", "cosine", "--subset", "300", "--threads", "1"]
    printed = CliRunner().invoke(cli, ["train", "--print-config", *options])
    assert printed.exit_code == 0, printed.output
    assert not list(tmp_path.iterdir())  # printing trains nothing and writes nothing
    cfg = Config.from_dict(tomllib.loads(printed.stdout))
    assert (cfg.optim.lr, cfg.optim.schedule, cfg.data.subset, cfg.train.epochs) == (0.002, "cosine", 300, 1)

    (tmp_path / "my.toml").write_text(printed.stdout)
    first = CliRunner().invoke(cli, ["train", "--config", "my.toml", "--run-dir", "r1", "--no-progress"])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(cli, ["train", "--config", "r1/config.json", "--run-dir", "r2", "--no-progress"])
    assert again.exit_code == 0, again.output

    def stored(run: str) -> Config:
        return Config.from_dict(json.loads((tmp_path / run / "config.json").read_text())["config"])

    assert stored("r1") == stored("r2") == cfg.apply({"train.progress": False})
    reprinted = CliRunner().invoke(cli, ["train", "--print-config", "--config", "r1/config.json", "--progress"])
    assert reprinted.stdout == printed.stdout


@pytest.mark.parametrize("command, folder", [
    ("show-data --data-dir {data} --no-download -o {out}", False),
    ("visualize {run} -o {out}", True),
    ("compare {run} {run} -o {out}", True),
])
def test_what_o_names_is_never_replaced_without_overwrite(command, folder, tiny_mnist, tiny_trained_run, tmp_path):
    out = tmp_path / ("mine" if folder else "mine.png")
    precious = out / "notes.txt" if folder else out
    precious.parent.mkdir(exist_ok=True)
    precious.write_text("precious")
    args = command.format(data=tiny_mnist, run=tiny_trained_run, out=out).split()
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 4 and "pass --overwrite" in refused.stderr, refused.output
    assert precious.read_text() == "precious" and refused.stdout == ""
    done = CliRunner().invoke(cli, [*args, "--overwrite"])
    assert done.exit_code == 0, done.output
    assert (precious.read_text() == "precious") if folder else precious.read_bytes().startswith(b"\x89PNG")


def test_rewriting_derived_files_in_a_run_says_so_on_stderr(tiny_trained_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_trained_run, run)
    first = CliRunner().invoke(cli, ["visualize", str(run)])
    assert first.exit_code == 0 and "note:" not in first.stderr
    again = CliRunner().invoke(cli, ["visualize", str(run)])
    assert again.exit_code == 0 and f"note: rewrote the files cnnlab derived in {run / 'visualize'}" in again.stderr
    assert "note:" not in again.stdout and str(run / "visualize") in again.stdout  # the paths are its result


def test_a_missing_dataset_ends_with_the_command_lines_hint(tmp_path):
    result = CliRunner().invoke(cli, ["show-data", "--data-dir", str(tmp_path), "--no-download", "-o", "-"])
    assert result.exit_code == 2 and result.stdout == ""
    assert "MNIST is not in" in result.stderr and result.stderr.rstrip().endswith(
        "give the folder with --data-dir (or set $CNNLAB_DATA_DIR)")
