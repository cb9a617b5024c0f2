"""Recipes (TOML) load and validate; CLI flags override them; the training options work end to end."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cnnlab.apps.cli import cli
from cnnlab.core.config import Config, list_recipes, load_recipe
from cnnlab.data.sets import is_known
from cnnlab.engine.step import LRSchedule
from cnnlab.core.errors import ConfigError
from cnnlab.models import list_models


def test_tutorial_is_the_lesson_and_the_default():
    assert "tutorial" in list_recipes()
    assert load_recipe("tutorial") == Config()


@pytest.mark.parametrize("name", list_recipes())
def test_every_shipped_recipe_loads_and_names_real_things(name):
    cfg = load_recipe(name)
    assert cfg.model.name in list_models() and is_known(cfg.data.dataset)
    from cnnlab.data.augment import parse_spec

    parse_spec(cfg.train.augment, cfg.data.dataset)  # a valid augmentation spec


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("[train]\nepochz = 3\n", "unknown config key train.epochz"),
    ("[trian]\nepochs = 3\n", "unknown config section 'trian'"),
    ("[train]\nepochs = 'three'\n", "train.epochs must be of type int"),
    ("[optim]\nlr = true\n", "optim.lr must be of type float"),
    ("[optim]\nschedule = 'linear'\n", "optim.schedule must be one of constant, onecycle, cosine, step"),
    ("[train]\nlabel_smoothing = 1.5\n", "label_smoothing must be in"),
    ("[train\nepochs = 3\n", "is not valid TOML"),
])
def test_bad_recipes_are_clear_errors(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe(str(write(tmp_path, text)))


def test_unknown_recipe_name_lists_the_named_ones():
    with pytest.raises(ConfigError, match="unknown recipe 'nope'; named recipes: .*tutorial"):
        load_recipe("nope")


def test_ints_are_accepted_for_floats(tmp_path):
    assert load_recipe(str(write(tmp_path, "[optim]\nlr = 1\n"))).optim.lr == 1.0


def test_schedules():
    from cnnlab.core.config import OptimConfig

    lrs = lambda cfg: [LRSchedule(cfg, 10, 3).lr_at(i) for i in range(1, 31)]  # noqa: E731
    assert set(lrs(OptimConfig())) == {0.001}
    step = lrs(OptimConfig(lr=1.0, schedule="step", step_epochs=1, step_gamma=0.5))
    assert step[0] == 1.0 and step[10] == 0.5 and step[29] == 0.25
    cos = lrs(OptimConfig(lr=1.0, schedule="cosine", min_lr=0.1))
    assert cos[0] == 1.0 and abs(cos[-1] - 0.1) < 1e-12 and cos == sorted(cos, reverse=True)
    one = lrs(OptimConfig(lr=1.0, schedule="onecycle"))
    peak = one.index(max(one))
    assert abs(one[0] - 1 / 25) < 1e-12 and max(one) == 1.0 and 5 <= peak <= 10 and one[-1] < 1e-4


def _train(args: list[str], tiny_mnist: Path, run_dir: Path):
    result = CliRunner().invoke(cli, ["train", "--data-dir", str(tiny_mnist), "--run-dir", str(run_dir),
                                      "--val-size", "100", "--no-progress", "--threads", "1", "--no-train-eval", *args])
    assert result.exit_code == 0, result.output
    cfg = json.loads((run_dir / "config.json").read_text())["config"]
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    return result, cfg, rows


def test_recipe_file_with_flags_overriding_it(tiny_mnist, tmp_path):
    recipe = write(tmp_path, """
[model]
name = "lenet5-classic"
[optim]
name = "sgd"
lr = 0.05
nesterov = true
schedule = "onecycle"
[train]
epochs = 3
batch_size = 64
loss_reduction = "mean"
label_smoothing = 0.1
augment = "auto"
""")
    result, cfg, rows = _train(["--config", str(recipe), "--epochs", "2", "--augment", "shift:pixels=1"],
                               tiny_mnist, tmp_path / "run")
    assert cfg["model"]["name"] == "lenet5-classic" and cfg["optim"]["nesterov"] is True
    assert cfg["train"]["epochs"] == 2 and cfg["train"]["augment"] == "shift:pixels=1"  # flags win
    assert cfg["train"]["label_smoothing"] == 0.1 and cfg["optim"]["schedule"] == "onecycle"
    assert len(rows) == 2 and float(rows[-1]["lr"]) < 0.05 / 100  # one-cycle ends far below its peak
    assert "test accuracy" in result.output


def test_early_stopping_on_validation_loss(tiny_mnist, tmp_path):
    # A learning rate far below float32 resolution leaves the weights, and so the validation loss,
    # unchanged: no epoch after the first is better, and patience 1 stops after epoch 2.
    result, cfg, rows = _train(["--epochs", "6", "--patience", "1", "--lr", "1e-12"], tiny_mnist, tmp_path / "run")
    assert len(rows) == 2 and "early stop: no better validation loss for 1 epochs" in result.output
    assert cfg["train"]["patience"] == 1
    # Running the same command again resumes a run that is over: no extra epoch.
    result, cfg, rows = _train(["--epochs", "6", "--patience", "1", "--lr", "1e-12"], tiny_mnist, tmp_path / "run")
    assert result.exit_code == 0 and len(rows) == 2


def test_named_recipe_and_conflicting_sources(tiny_mnist, tmp_path):
    r = CliRunner().invoke(cli, ["train", "--recipe", "tutorial", "--config", "x.toml"])
    assert r.exit_code == 2 and "either --recipe or --config" in r.output
    r = CliRunner().invoke(cli, ["train", "--recipe", "nope", "--no-progress"])
    assert r.exit_code == 2 and "unknown recipe 'nope'" in r.output


def test_channels_and_size_flow_to_the_model(tmp_path):
    """An RGB folder dataset trains a 3-channel model at the folder's size; a grey set resized works too."""
    from test_datasets import write_folder

    root = write_folder(tmp_path / "rgb", n=10, size=(16, 16))
    result, cfg, rows = _train(["--dataset", f"folder:{root}", "--epochs", "1", "--val-size", "4",
                                "--model", "smallcnn", "--augment", "auto"], tmp_path, tmp_path / "run")
    import torch

    payload = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert payload["model"]["in_channels"] == 3 and payload["model"]["image_size"] == 16
    assert payload["data"]["classes"] == ["cat", "dog"]
    assert payload["data"]["preprocess"]["style"] == "resize"


def test_schedule_and_augmentation_resume_bit_exactly(tiny_config, tmp_path):
    """The lr schedule and the augmentation are functions of the iteration: a resumed run matches."""
    import torch

    from cnnlab.engine.checkpoint import load_checkpoint
    from cnnlab.service.training import train_config as train

    class Crash(Exception):
        pass

    def crash_after_first_epoch(line: str) -> None:
        if line.startswith("epoch 1/"):
            raise Crash(line)

    cfg = tiny_config.override("optim", schedule="onecycle", lr=0.003).override(
        "train", epochs=2, augment="affine", label_smoothing=0.1, train_eval=False)
    full = train(cfg, tmp_path / "full", log=lambda s: None)
    with pytest.raises(Crash):
        train(cfg, tmp_path / "resumed", log=crash_after_first_epoch)
    resumed = train(cfg, tmp_path / "resumed", log=lambda s: None)
    assert resumed.resumed_from == 1
    a = load_checkpoint(tmp_path / "full" / "last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["lr"] for r in resumed.history] == [r["lr"] for r in full.history]
