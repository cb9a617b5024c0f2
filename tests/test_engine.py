from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from cnnlab.core.config import Config, OptimConfig
from cnnlab.data.tensors import TensorBatches
from cnnlab.data.mnist import load_mnist
from cnnlab.engine.step import build_optimizer, create_evaluator, create_trainer, run_evaluation
from cnnlab.core.errors import NonFiniteLossError
from cnnlab.models import create_model


def test_training_lowers_the_loss(tiny_mnist):
    torch.manual_seed(0)
    data = load_mnist(tiny_mnist, train=True, download=False)
    model = create_model("lenet5")
    optimizer = build_optimizer(OptimConfig(), model.parameters(), torch.device("cpu"))
    trainer = create_trainer(model, optimizer, nn.CrossEntropyLoss(reduction="sum"))
    evaluator = create_evaluator(model)
    before = run_evaluation(evaluator, TensorBatches(data, 200))
    trainer.run(TensorBatches(data, 32, shuffle=True), max_epochs=3)
    after = run_evaluation(evaluator, TensorBatches(data, 200))
    assert after["loss"] < before["loss"] * 0.5
    assert after["accuracy"] > 0.8


def test_evaluator_loss_is_the_mean_per_image_whatever_the_batch_size(tiny_mnist):
    data = load_mnist(tiny_mnist, train=False, download=False)
    model = create_model("lenet5")
    evaluator = create_evaluator(model)
    with torch.no_grad():
        expected = nn.functional.cross_entropy(model(data.images.float() / 255), data.labels).item()
    for bs in (7, 64, 1000):
        m = run_evaluation(evaluator, TensorBatches(data, bs))
        assert m["loss"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("parts", [1, 2])
def test_non_finite_loss_stops_before_the_update(tiny_mnist, parts):
    data = load_mnist(tiny_mnist, train=True, download=False)
    model = create_model("lenet5")
    with torch.no_grad():
        model.classifier[4].bias.fill_(float("nan"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = build_optimizer(OptimConfig(), model.parameters(), torch.device("cpu"))
    trainer = create_trainer(model, optimizer, nn.CrossEntropyLoss(reduction="sum"), parts=parts)
    with pytest.raises(NonFiniteLossError, match="iteration 1"):
        trainer.run(TensorBatches(data, 32), max_epochs=1)
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]) or (v.isnan() == after[k].isnan()).all()


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_optimizers_build(name):
    model = create_model("lenet5")
    opt = build_optimizer(OptimConfig(name=name, lr=0.01), model.parameters(), torch.device("cpu"))
    assert opt.param_groups[0]["lr"] == 0.01


def test_config_rejects_unknown_keys_and_bad_values():
    from cnnlab.core.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown config key train.epoch"):
        Config.from_dict({"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match="batch_size"):
        Config().override("train", batch_size=0)
    assert Config.from_dict(Config().to_dict()) == Config()

