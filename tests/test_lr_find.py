"""The learning-rate range test: a curve, a suggestion, and nothing left behind."""
from __future__ import annotations

import math
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.core.errors import ConfigError
from cnnlab.engine.lr_find import suggest
from cnnlab.models import create_model
from cnnlab.service.lr_find import lr_find


def test_range_test_leaves_model_process_and_folder_as_they_were(tiny_config, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(3)
    model = create_model("lenet5", in_channels=1, num_classes=10, image_size=28)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    threads = torch.get_num_threads()
    result = lr_find(tiny_config, model=model, num_it=60)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and next(model.parameters()).is_contiguous()
    assert torch.equal(rng[0], torch.get_rng_state()) and (rng[1] == np.random.get_state()[1]).all()
    assert rng[2] == random.getstate() and torch.get_num_threads() == threads
    assert list(tmp_path.iterdir()) == []  # no run folder, nothing else
    n = len(result.lrs)
    assert 12 < n <= 60 and len(result.losses) == len(result.smoothed) == n
    ratios = np.diff(np.log(result.lrs))
    assert np.allclose(ratios, ratios[0])  # an exponential ramp
    assert result.suggestion is not None and result.lrs[0] <= result.suggestion <= result.lrs[-1]
    assert result.suggestion == result.suggestions["steep"]


def test_stops_when_the_loss_diverges(tiny_config) -> None:
    cfg = tiny_config.override("optim", name="sgd", momentum=0.9)
    result = lr_find(cfg, start_lr=1e-4, end_lr=1e4, num_it=200)
    assert result.diverged and len(result.lrs) < 200
    assert "diverged" in repr(result)


def test_plot_is_an_inline_figure(tiny_config) -> None:
    result = lr_find(tiny_config, num_it=30)
    fig = result.plot()
    assert type(fig).__name__ == "InlineFigure" and fig.axes[0].get_xscale() == "log"
    assert fig._repr_png_().startswith(b"\x89PNG")
    assert "suggested learning rate" in result.text()
    doc = result.to_dict()
    assert doc["suggestion"] == result.suggestion and len(doc["lrs"]) == len(result.lrs)


def test_suggestions_on_a_known_curve() -> None:
    lrs = list(np.logspace(-6, 0, 61))
    # flat, then falling fastest at lr 1e-3 (index 30), a minimum at 1e-2 (index 40), then rising
    x = np.arange(61)
    loss = 2.3 - 2.0 / (1 + np.exp(-(x - 30) / 2.0)) + np.where(x > 40, 0.2 * (x - 40), 0.0)
    got = suggest(lrs, list(loss))
    assert got["steep"] == pytest.approx(1e-3, rel=0.01)
    assert got["minimum"] == pytest.approx(lrs[int(np.argmin(loss))] / 10)


@pytest.mark.parametrize("kwargs", [{"start_lr": 1.0, "end_lr": 0.1}, {"num_it": 5}, {"method": "valley"},
                                    {"stop_factor": 0.5}])
def test_bad_settings_are_config_errors(tiny_config, kwargs) -> None:
    with pytest.raises(ConfigError):
        lr_find(tiny_config, **kwargs)


def test_cli_lr_find_refuses_what_it_cannot_do(tiny_mnist, tmp_path) -> None:
    from click.testing import CliRunner

    from cnnlab.apps.cli import cli

    common = ["train", "--lr-find", "--data-dir", str(tiny_mnist), "--val-size", "100", "--threads", "1"]
    for extra in (["--resume", str(tmp_path)], ["--run-dir", str(tmp_path / "r")], ["--nproc", "2"]):
        result = CliRunner().invoke(cli, [*common, *extra])
        assert result.exit_code == 2 and "--lr-find trains nothing" in result.output, extra
    plot = tmp_path / "curve.png"
    plot.write_bytes(b"mine")
    result = CliRunner().invoke(cli, [*common, "--lr-find-plot", str(plot)])
    assert result.exit_code != 0 and "already exists" in result.stderr and plot.read_bytes() == b"mine"
    fresh = tmp_path / "new.png"
    result = CliRunner().invoke(cli, [*common, "--lr-find-plot", str(fresh)])
    assert result.exit_code == 0, result.output
    assert fresh.read_bytes().startswith(b"\x89PNG") and result.stdout.startswith("suggested learning rate")
    assert f"wrote {fresh}" in result.stderr and sorted(p.name for p in tmp_path.iterdir()) == ["curve.png", "new.png"]


def test_a_module_that_cannot_be_copied_gets_its_weights_back(tiny_config) -> None:
    import copy
    import threading

    class Locked(torch.nn.Module):  # a lock attribute: deepcopy refuses the module
        def __init__(self) -> None:
            super().__init__()
            self.net = create_model("lenet5", in_channels=1, num_classes=10, image_size=28)
            self.lock = threading.Lock()

        def forward(self, x):
            return self.net(x)

    torch.manual_seed(1)
    model = Locked()
    with pytest.raises(TypeError):
        copy.deepcopy(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = lr_find(tiny_config.override("model", name="custom:Locked"), model=model, num_it=30)
    assert len(result.lrs) > 12
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.is_contiguous() for p in model.parameters()) and model.training
