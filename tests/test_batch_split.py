"""A training batch split among threads (train.batch_split): the same gradients up to float32
summation order, only for models where that holds, and a clear error where it does not."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from cnnlab.accel import workers
from cnnlab.core.config import OptimConfig
from cnnlab.core.errors import ConfigError
from cnnlab.engine.step import build_optimizer, create_train_step
from cnnlab.models import create_model
from cnnlab.service.training import train_config as train


def _step_grads(parts: int, reduction: str, smoothing: float) -> tuple[float, list[torch.Tensor]]:
    torch.manual_seed(0)
    model = create_model("lenet5").to(memory_format=torch.channels_last)
    grads: list[torch.Tensor] = []

    class Keep(torch.optim.SGD):  # records the gradients the step hands to the optimizer, then updates nothing
        def step(self, closure=None):  # noqa: ANN001
            grads.extend(p.grad.clone() for p in model.parameters())

    opt = Keep(model.parameters(), lr=0.0)
    step = create_train_step(model, opt, nn.CrossEntropyLoss(reduction=reduction, label_smoothing=smoothing),
                             parts=parts)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(37, 1, 28, 28, generator=g).contiguous(memory_format=torch.channels_last)  # odd: unequal parts
    y = torch.randint(0, 10, (37,), generator=g)
    loss = step(SimpleNamespace(state=SimpleNamespace(epoch=1, iteration=1)), (x, y))
    return loss, grads


@pytest.mark.parametrize("reduction, smoothing", [("sum", 0.0), ("mean", 0.1)])
@pytest.mark.parametrize("parts", [2, 3])
def test_split_step_gives_the_batchs_loss_and_gradients(parts, reduction, smoothing):
    loss1, grads1 = _step_grads(1, reduction, smoothing)
    loss_n, grads_n = _step_grads(parts, reduction, smoothing)
    assert loss_n == pytest.approx(loss1, rel=1e-6)
    assert len(grads_n) == len(grads1) == 10
    for a, b in zip(grads_n, grads1):  # the same sums in another order: float32 rounding apart
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert _step_grads(parts, reduction, smoothing)[1][0].equal(grads_n[0])  # and reproducible


def test_parts_follow_the_cores_the_batch_and_the_model(monkeypatch):
    monkeypatch.setattr(workers, "available_cores", lambda: 2 * torch.get_num_threads())
    lenet = create_model("lenet5")
    assert workers.batch_parts(lenet, 256, None) == 2
    assert workers.batch_parts(lenet, 128, None) == 2  # two parts of 64
    assert workers.batch_parts(lenet, 32, None) == 1  # the lesson's batch stays one piece
    assert workers.batch_parts(lenet, 32, 3) == 3  # asked for: as asked
    monkeypatch.setattr(workers, "available_cores", lambda: torch.get_num_threads())
    assert workers.batch_parts(lenet, 256, None) == 1  # no idle core
    # Batch-coupled or random layers, a user's own class, hooks: never split.
    assert workers.unsplittable(create_model("smallcnn")) == "BatchNorm2d"
    assert workers.unsplittable(nn.Sequential(nn.Flatten(), nn.Linear(784, 10))) == "Sequential"
    handle = lenet.features[0].register_forward_hook(lambda *args: None)
    assert workers.unsplittable(lenet) == "forward hook"
    handle.remove()
    assert workers.unsplittable(lenet) is None


def test_a_split_run_records_its_parts_and_learns(tiny_config, tmp_path):
    lines: list[str] = []
    result = train(tiny_config.override("train", batch_split=2, epochs=2), tmp_path / "run", log=lines.append)
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["provenance"]["batch_parts"] == 2 and saved["config"]["train"]["batch_split"] == 2
    assert any("split among 2 threads" in line for line in lines)


def test_a_split_the_model_cannot_take_is_refused_before_training(tiny_config, tmp_path):
    class Mine(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(28 * 28, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1))

    cfg = tiny_config.override("model", name="custom:Mine").override("train", batch_split=2)
    with pytest.raises(ConfigError, match="batch_split 2 needs .* not so: Mine") as err:
        train(cfg, tmp_path / "run", model=Mine(), log=lambda line: None)
    assert err.value.option == "train.batch_split"
    assert not (tmp_path / "run" / "best.pt").exists()


def test_cli_names_the_flag(tiny_mnist, tmp_path):
    from click.testing import CliRunner

    from cnnlab.apps.cli import cli

    res = CliRunner().invoke(cli, ["train", "--model", "smallcnn", "--data-dir", str(tiny_mnist), "--no-download",
                                   "--epochs", "1", "--batch-split", "2", "--run-dir", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "BatchNorm2d" in res.output and "--batch-split" in res.output
