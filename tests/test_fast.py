"""The speed recipes train correctly (their speed is measured in benchmarks/, never here)."""
from __future__ import annotations

import pytest

from cnnlab.core.config import load_recipe
from cnnlab.service.training import train_config as train


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


def test_bf16_autocast_is_opt_in_and_trains(tiny_config, tmp_path):
    assert load_recipe("tutorial").train.amp == "off" and load_recipe("fast").train.amp == "off"
    result = train(tiny_config.override("train", amp="bf16", epochs=3), tmp_path / "run", log=lambda line: None)
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    assert result.test.accuracy > 0.5
    # Weights, optimizer state and the checkpoint stay float32: only the forward pass is autocast.
    import torch

    from cnnlab.engine.checkpoint import load_checkpoint

    state = load_checkpoint(tmp_path / "run" / "best.pt")["state_dict"]
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("has", [True, False])
def test_amp_auto_picks_bf16_only_where_the_cpu_has_the_instructions(has, tiny_config, tmp_path, monkeypatch):
    import json

    import torch

    # The probes torch.cpu offers (oneDNN's own); both faked, so both answers run on any machine.
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: has)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    lines: list[str] = []
    cfg = tiny_config.override("train", amp="auto", epochs=1, device="cpu")
    train(cfg, tmp_path / "run", log=lines.append)
    chosen = "bf16" if has else "off"
    # The run's config says what auto chose, and the log says why, once.
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["train"]["amp"] == chosen
    said = [line for line in lines if line.startswith("amp auto:")]
    assert len(said) == 1 and ("AVX512-BF16" in said[0] if has else "neither AMX nor AVX512-BF16" in said[0])
    # Resuming with the same request is the same run: auto decides the same way, so nothing mismatches.
    more = train(cfg.override("train", epochs=2), tmp_path / "run", log=lines.append)
    assert len(more.history) == 2


def test_compile_trains_and_saves_a_plain_checkpoint(tiny_config, tmp_path):
    import shutil

    import torch

    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    from cnnlab.engine.checkpoint import load_checkpoint
    from cnnlab.models import create_model

    cfg = tiny_config.override("train", compile="default", epochs=2).override("data", subset=200)
    result = train(cfg, tmp_path / "run", log=lambda line: None)
    assert result.test.accuracy > 0.3
    state = load_checkpoint(tmp_path / "run" / "best.pt")["state_dict"]
    assert not any(k.startswith("_orig_mod.") for k in state)  # loads into the plain model
    create_model("lenet5").load_state_dict(state)
    assert torch.compiler.is_compiling() is False


@pytest.mark.parametrize("key, value", [("amp", "fp16"), ("compile", "fast")])
def test_speed_options_reject_unknown_values(tiny_config, key, value):
    from cnnlab.core.errors import ConfigError

    with pytest.raises(ConfigError, match=f"train.{key} must be one of"):
        tiny_config.override("train", **{key: value}).validate()
