"""The speed recipes train correctly (their speed is measured in benchmarks/, never here)."""
from __future__ import annotations

import pytest

from cnnlab.config import load_recipe
from cnnlab.train import train


@pytest.mark.parametrize("name", ["fast", "fast99"])
def test_fast_recipes_keep_the_lessons_network_and_learn(name, tiny_mnist, tmp_path):
    cfg = load_recipe(name)
    assert cfg.model.name == "lenet5" and cfg.data.dataset == "mnist" and cfg.data.split_seed == 1234
    assert cfg.optim.schedule == "onecycle" and not cfg.train.train_eval
    cfg = cfg.override("data", data_dir=str(tiny_mnist), val_size=100, download=False)
    cfg = cfg.override("train", progress=False, threads=1, epochs=4)
    result = train(cfg, tmp_path / "run", log=lambda line: None)
    assert all("train_loss" not in row for row in result.history)  # no train-set pass: faster epochs
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    assert result.test.accuracy > 0.5  # the tiny synthetic digits are learnable; chance is 0.1
    lrs = [row["lr"] for row in result.history]
    assert lrs[-1] < max(lrs)  # the one-cycle schedule has come down at the end
