"""Paths and devices as a user's machine has them: relative folders, missing data, MPS, no fchmod."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat

import pytest
import torch
from click.testing import CliRunner

from cnnlab.apps.cli import cli
from cnnlab.core import runtime
from cnnlab.core.config import Config
from cnnlab.core.errors import ConfigError


def tree(root) -> dict[str, bytes | None]:
    """Every file (with its bytes) and folder under ``root``."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def test_a_run_trained_with_a_relative_data_dir_evaluates_from_anywhere(tiny_mnist, tmp_path, monkeypatch):
    here, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(here)
    relative = os.path.relpath(tiny_mnist, here)
    assert relative.startswith("..")
    result = CliRunner().invoke(cli, ["train", "--data-dir", relative, "--run-dir", "run", "--epochs", "1",
                                      "--val-size", "100", "--no-train-eval", "--threads", "1"])
    assert result.exit_code == 0, result.output
    stored = json.loads((here / "run" / "config.json").read_text())["config"]["data"]["data_dir"]
    assert stored == str(tiny_mnist) and os.path.isabs(stored)

    monkeypatch.chdir(elsewhere)
    result = CliRunner().invoke(cli, ["evaluate", str(here / "run"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["num_images"] == 200
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("command", [
    ["evaluate", "{run}"], ["analyze", "{run}"], ["visualize", "{run}"], ["compare", "{run}", "{run}"],
])
def test_read_only_commands_on_missing_data_fail_clearly_and_create_nothing(command, tiny_trained_run, tmp_path,
                                                                           monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(tiny_trained_run, run)
    raw = json.loads((run / "config.json").read_text())
    raw["config"]["data"]["data_dir"] = str(tmp_path / "moved" / "data")  # the data was moved away
    (run / "config.json").write_text(json.dumps(raw))
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    result = CliRunner().invoke(cli, [a.replace("{run}", str(run)) for a in command])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: MNIST is not in") and result.stderr.count("\n") == 1
    assert "never download" in result.stderr and "--data-dir" in result.stderr
    after = tree(tmp_path)
    # Only the run's own lock file beside it (docs/reliability.md, "One writer per run"): a reader holds it
    # while it reads, so that no training replaces best.pt meanwhile.
    assert after.pop(".run.lock", None) in (None, b"read " + str(os.getpid()).encode() + b"\n")
    assert after == before  # no MNIST/raw, no analysis/, no visualize/, nothing


def test_export_of_a_run_whose_data_is_gone_writes_only_its_file(tiny_mnist, tmp_path, monkeypatch):
    from conftest import train_tiny_run

    shutil.copytree(tiny_mnist, tmp_path / "data")
    run = train_tiny_run(tmp_path / "data", tmp_path / "run", epochs=1, train_eval=False)
    shutil.rmtree(tmp_path / "data")  # the data moved away since training
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    result = CliRunner().invoke(cli, ["export", str(run), "--format", "pt2", "-o", str(tmp_path / "m.pt2")])
    assert result.exit_code == 0, result.output
    assert "compared on random inputs" in result.output
    after = tree(tmp_path)
    lock = {".run.lock"}  # the run's lock file: export held it as a reader (its note now says so)
    assert set(after) - set(before) == {"m.pt2"}
    assert {k: after[k] for k in set(before) - lock} == {k: before[k] for k in set(before) - lock}


@pytest.mark.parametrize("dataset, name", [
    ("mnist", "lenet5-mnist"),
    ("folder:~/photos", "lenet5-folder-photos"),
    ("folder:../my data/cats & dogs/", "lenet5-folder-cats-dogs"),
    ("folder:C:\\Users\\me\\pics", "lenet5-folder-C-Users-me-pics"),
])
def test_default_run_dir_names_are_safe_for_any_dataset_spec(dataset, name):
    from cnnlab.core.runs import default_run_dir

    path = default_run_dir(Config().override("data", dataset=dataset))
    assert path.parent.name == "runs" and re.fullmatch(r"[A-Za-z0-9._-]+", path.name), path
    assert path.name.startswith(name + "-"), path.name


def test_folder_datasets_are_stored_absolute(tmp_path, monkeypatch):
    from cnnlab.data.registry import absolute_paths

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = absolute_paths(Config().override("data", dataset="folder:~/photos", data_dir="data").data)
    assert cfg.dataset == f"folder:{tmp_path / 'home' / 'photos'}" and cfg.data_dir == str(tmp_path / "data")


def test_atomic_writes_work_without_os_fchmod(tmp_path, monkeypatch):
    """Windows has no os.fchmod before Python 3.13: the file still gets the usual permissions."""
    from cnnlab.core.files import write_text

    monkeypatch.delattr(os, "fchmod")
    write_text(tmp_path / "a.txt", "hello")
    assert (tmp_path / "a.txt").read_text() == "hello"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~umask


# --- devices: MPS cannot be tested on this machine, so its availability is mocked -----------------


@pytest.mark.parametrize("cuda, mps, expected", [
    (True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu"),
])
def test_auto_picks_cuda_then_mps_then_cpu(cuda, mps, expected, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert runtime.resolve_device("auto").type == expected


def test_mps_is_used_when_asked_for_and_present(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert runtime.resolve_device("mps") == torch.device("mps")
    assert Config().override("train", device="mps").train.device == "mps"  # no longer refused by the config


@pytest.mark.parametrize("name, message", [
    ("mps", "MPS is not available"),
    ("cuda", "no CUDA GPU is available"),
    ("cuda:1", "no CUDA GPU is available"),
    ("gpu", "device must be one of auto, cpu, cuda, cuda:N, mps"),
])
def test_an_absent_or_unknown_device_is_a_clear_error(name, message, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=message):
        runtime.resolve_device(name)


def test_a_gpu_index_beyond_the_machine_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match="has 2 CUDA GPU"):
        runtime.resolve_device("cuda:2")


MODEL_COMMANDS = ["train", "evaluate", "analyze", "compare", "predict", "visualize", "serve"]


@pytest.mark.parametrize("name", MODEL_COMMANDS)
def test_every_command_that_runs_a_model_takes_device_with_default_auto(name):
    params = {p.name: p for p in cli.commands[name].params}
    assert "device" in params or "train__device" in params, name
    if name == "train":  # None means "the recipe's", whose default is auto
        assert Config().train.device == "auto"
        assert "[default: auto]" in CliRunner().invoke(cli, ["train", "--help"]).output.replace("\n", " ")
    else:
        assert params["device"].default == "auto"


def test_an_absent_device_on_the_command_line_is_one_line(tiny_trained_run, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    result = CliRunner().invoke(cli, ["evaluate", str(tiny_trained_run), "--device", "mps"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.startswith("error: device 'mps' was asked for, but Apple's MPS is not available")
