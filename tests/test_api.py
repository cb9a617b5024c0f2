"""The notebook API: cnnlab.train on the user's own module and data, load back, interpret, reprs, process state."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

import cnnlab
from cnnlab.core.errors import CheckpointError, ConfigError, RunDirError
from conftest import synthetic_digits

PNG = b"\x89PNG\r\n\x1a\n"


class Lenet5(nn.Module):
    """The lesson's LeNet-5 as a student writes it: a class of their own, not in cnnlab's registry."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc3(torch.relu(self.fc2(x)))


class DigitsDataset(torch.utils.data.Dataset):
    """A user's Dataset: (float image in [0, 1] of shape 1x28x28, int label), as ToTensor() gives."""

    def __init__(self, n: int, seed: int) -> None:
        self.x, self.y = synthetic_digits(n, seed)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.x[i]).float().div(255).unsqueeze(0), int(self.y[i])


QUIET = {"epochs": 1, "threads": 1, "log": None}


@pytest.fixture(scope="module")
def own_run(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    model = Lenet5()
    return model, cnnlab.train(model, "mnist", data_dir=tiny_mnist, run_dir=tmp_path_factory.mktemp("api") / "own",
                               download=False, **QUIET)


def test_own_module_trains_and_loads_back_into_a_fresh_instance(own_run, tiny_mnist: Path) -> None:
    model, run = own_run
    assert run.model is model and not model.training  # the user's instance, holding the best weights
    cfg = json.loads((run.path / "config.json").read_text())["config"]
    assert cfg["model"]["name"] == "custom:Lenet5"
    assert run.best_epoch == 1 and len(run.history) == 1
    assert {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"} <= set(run.history[0])
    assert 0 <= run.test.accuracy <= 1 and "precision" in run.test.text

    again = cnnlab.load(run.path, model=Lenet5())
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(again.model(x), run.model(x))
    # Same test predictions, through the run object and through the folder alone.
    from_dir = cnnlab.interpret(run.path, model=Lenet5(), data_dir=tiny_mnist)
    interp = run.interpret()
    assert np.array_equal(from_dir.predictions.probs, interp.predictions.probs)
    assert from_dir.accuracy == interp.accuracy == run.test.accuracy


def test_a_run_of_an_own_class_needs_the_instance(own_run, tiny_mnist: Path) -> None:
    _, run = own_run
    for call in (lambda: cnnlab.load(run.path), lambda: cnnlab.interpret(run.path, data_dir=tiny_mnist)):
        with pytest.raises(CheckpointError, match=r"model=Lenet5\(\)"):
            call()

    class Other(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(784, 10)

    with pytest.raises(CheckpointError, match="do not fit"):
        cnnlab.load(run.path, model=Other())
    from cnnlab.apps.cli import cli

    for cmd in (["evaluate", str(run.path), "--data-dir", str(tiny_mnist)], ["analyze", str(run.path)]):
        out = CliRunner().invoke(cli, cmd)
        assert out.exit_code != 0 and "model=Lenet5()" in out.output and "Traceback" not in out.output


def test_interpretation_is_in_memory_until_saved(own_run) -> None:
    _, run = own_run
    interp = run.interpret()
    assert run.interpret() is interp and cnnlab.interpret(run) is interp  # computed once
    assert not (run.path / "analysis").exists()
    cm = interp.confusion_matrix()
    assert cm.shape == (10, 10) and cm.sum() == len(interp.predictions)
    pairs = interp.most_confused(3)
    assert len(pairs) <= 3 and all(isinstance(t, str) and isinstance(n, int) for t, _, n in pairs)
    assert "precision" in str(interp.report)
    figs = [interp.plot_confusion_matrix(), interp.plot_misclassified(classes=[8, 4, 9], per_class=10),
            interp.plot_top_losses(9), interp.plot_calibration(), interp.plot_curves(), interp.plot_per_class()]
    assert not (run.path / "analysis").exists()
    result = interp.save()
    assert (run.path / "analysis" / "misclassified.png").is_file() and result.files["html"].is_file()
    summary = json.loads((run.path / "analysis" / "summary.json").read_text())
    assert summary["accuracy"] == pytest.approx(interp.accuracy)
    for fig in figs:
        fig.savefig(run.path / "fig.png")
        assert (run.path / "fig.png").read_bytes().startswith(PNG)


def test_figures_display_through_jupyters_formatter(own_run) -> None:
    from IPython.core.formatters import DisplayFormatter

    fig = own_run[1].interpret().plot_misclassified(classes=[8, 4, 9], per_class=10)
    data, _ = DisplayFormatter().format(fig)
    assert data["image/png"].startswith(PNG)
    assert fig._repr_png_().startswith(PNG)
    src = Path(cnnlab.__file__).parent
    assert not [p for p in src.rglob("*.py") if "import matplotlib.pyplot" in p.read_text()]


def test_short_reprs(own_run, tiny_mnist: Path, tmp_path: Path) -> None:
    _, run = own_run
    interp = run.interpret()
    predictor = cnnlab.load(run.path, model=Lenet5())
    [pred] = predictor.predict(torch.from_numpy(synthetic_digits(1, 3)[0][0]))
    objects = [run, run.test, interp, interp.predictions, interp.plot_calibration(), predictor, pred,
               cnnlab.summarize(Lenet5(), (1, 28, 28)), interp.save(tmp_path / "a", html=False)]
    for obj in objects:
        assert len(repr(obj)) < 300, repr(obj)
    assert repr(pred).startswith("Prediction('") and "tensor" not in repr(pred)
    assert "conv1" in str(cnnlab.summarize(Lenet5(), (1, 28, 28)))  # print() shows the table


def test_own_dataset_and_tensor_pairs(tmp_path: Path) -> None:
    run = cnnlab.train(Lenet5(), DigitsDataset(300, 0), test_data=DigitsDataset(100, 1), run_dir=tmp_path / "ds",
                       val_size=60, **QUIET)
    assert run.test.num_images == 100 and run.data.info.name == "custom:DigitsDataset"
    assert len(run.data.train) == 240 and len(run.data.val) == 60
    # The same images as a uint8 tensor pair give the same data, bit for bit (ToTensor's floats are exact 8-bit).
    x, y = synthetic_digits(300, 0)
    run2 = cnnlab.train(Lenet5(), (torch.from_numpy(x), torch.from_numpy(y)), run_dir=tmp_path / "t",
                        val_size=60, classes=list("abcdefghij"), **QUIET)
    assert torch.equal(run2.data.train.images, run.data.train.images)
    assert run2.test.num_images == 60 and run2.test.classes[0] == "a"  # no test_data: the validation images
    assert run2.interpret().plot_misclassified(classes=["a"]) is not None
    with pytest.raises(RunDirError, match="trained on data given from Python"):
        cnnlab.interpret(run2.path, model=Lenet5())


def test_bad_inputs_are_clear(tmp_path: Path) -> None:
    x = torch.rand(50, 1, 28, 28)
    y = torch.randint(0, 10, (50,))
    with pytest.raises(ConfigError, match="unknown keyword 'learning_rate'"):
        cnnlab.train(Lenet5(), (x, y), run_dir=tmp_path / "a", learning_rate=0.1, **QUIET)
    with pytest.raises(ConfigError, match=r"in \[0, 1\]"):
        cnnlab.train(Lenet5(), ((x - 0.5) / 0.3, y), run_dir=tmp_path / "b", **QUIET)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match=r"holds files cnnlab did not write \(notes.txt\); nothing was removed"):
        cnnlab.train(Lenet5(), (x, y), run_dir=tmp_path / "c", overwrite=True, **QUIET)
    assert (tmp_path / "c" / "notes.txt").is_file()


def test_config_fields_are_keywords_and_overwrite_replaces(tmp_path: Path) -> None:
    x, y = synthetic_digits(200, 0)
    data = (torch.from_numpy(x), torch.from_numpy(y))
    run = cnnlab.train("lenet5", data, run_dir=tmp_path / "r", lr=0.01, optimizer="sgd", batch_size=16, seed=3,
                       **QUIET)
    cfg = json.loads((run.path / "config.json").read_text())["config"]
    assert (cfg["optim"]["lr"], cfg["optim"]["name"], cfg["train"]["batch_size"], cfg["train"]["seed"]) == (0.01, "sgd", 16, 3)
    assert cfg["model"]["name"] == "lenet5" and cnnlab.load(run.path).model is not None  # registry: by name
    with pytest.raises(RunDirError, match="overwrite=True"):
        cnnlab.train("lenet5", data, run_dir=tmp_path / "r", lr=0.02, **QUIET)
    again = cnnlab.train("lenet5", data, run_dir=tmp_path / "r", lr=0.02, overwrite=True, **QUIET)
    assert json.loads((again.path / "config.json").read_text())["config"]["optim"]["lr"] == 0.02


def test_train_leaves_threads_and_global_rngs_as_they_were(tmp_path: Path) -> None:
    x, y = synthetic_digits(200, 0)
    model = Lenet5()
    torch.set_num_threads(2)
    random.seed(11), np.random.seed(11), torch.manual_seed(11)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(11), np.random.seed(11), torch.manual_seed(11)
    before = torch.get_num_threads()
    try:
        cnnlab.train(model, (torch.from_numpy(x), torch.from_numpy(y)), run_dir=tmp_path / "r", seed=5,
                     **{**QUIET, "threads": 1})
        assert torch.get_num_threads() == before
        assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(1)


def test_the_package_lists_its_api_and_imports_light() -> None:
    for name in ("train", "load", "interpret", "summarize", "list_models", "Interpretation"):
        assert name in dir(cnnlab) and name in cnnlab.__all__
        assert getattr(cnnlab, name) is not None
    assert "lenet5" in cnnlab.list_models()
    import pydoc

    page = pydoc.render_doc(cnnlab, renderer=pydoc.plaintext)
    assert all(f"    {name}(" in page for name in ("train", "load", "interpret", "summarize"))
    code = "import sys, cnnlab; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_command_line_and_python_train_the_same_bits(tiny_mnist: Path, tmp_path: Path) -> None:
    """`cnnlab train` options and `cnnlab.train` keywords go through one Config.apply: same config,
    same metrics.csv (timings aside), same best.pt weights."""
    from cnnlab.apps.cli import cli
    from cnnlab.engine.checkpoint import load_checkpoint

    args = ["train", "--data-dir", str(tiny_mnist), "--val-size", "100", "--epochs", "2", "--lr", "0.002",
            "--threads", "1", "--no-progress", "--run-dir", str(tmp_path / "cli")]
    assert CliRunner().invoke(cli, args).exit_code == 0
    cnnlab.train(data_dir=tiny_mnist, val_size=100, epochs=2, lr=0.002, threads=1, run_dir=tmp_path / "py", log=None)

    def metrics(run: str) -> list[list[str]]:
        rows = [line.split(",") for line in (tmp_path / run / "metrics.csv").read_text().splitlines()]
        keep = [i for i, name in enumerate(rows[0]) if not name.endswith("time_s")]
        return [[row[i] for i in keep] for row in rows]

    def config(run: str) -> dict:
        return json.loads((tmp_path / run / "config.json").read_text())["config"]

    assert config("cli") == config("py")
    assert metrics("cli") == metrics("py")
    a, b = (load_checkpoint(tmp_path / run / "best.pt")["state_dict"] for run in ("cli", "py"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
