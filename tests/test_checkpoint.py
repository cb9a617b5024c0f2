from __future__ import annotations

import pickle

import pytest
import torch

from cnnlab.engine.checkpoint import SCHEMA_VERSION, load_checkpoint, make_payload, model_from_checkpoint, save_checkpoint
from cnnlab.core.errors import CheckpointError
from cnnlab.models import create_model

INFO = {"name": "mnist", "classes": [str(i) for i in range(10)], "channels": 1, "image_size": 28, "preprocess": {}}


def _payload(model):
    return make_payload(model, model_name="lenet5", data_info=INFO, config={"a": 1}, epoch=3, metrics={"val_loss": 0.1})


def test_round_trip_with_weights_only(tmp_path):
    model = create_model("lenet5")
    save_checkpoint(tmp_path / "best.pt", _payload(model))
    raw = torch.load(tmp_path / "best.pt", weights_only=True)  # the promise, checked with torch itself
    assert raw["schema"] == SCHEMA_VERSION and raw["epoch"] == 3
    restored = model_from_checkpoint(load_checkpoint(tmp_path / "best.pt"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, restored.state_dict()[k])
    assert not list(tmp_path.glob("*.tmp"))


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_pickled_objects_are_refused_and_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"schema": 1, "state_dict": {}, "x": _Evil()}, path)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()


def test_truncated_and_foreign_files_are_clear_errors(tmp_path):
    model = create_model("lenet5")
    good = tmp_path / "good.pt"
    save_checkpoint(good, _payload(model))
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_checkpoint(cut)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not a cnnlab checkpoint"):
        load_checkpoint(plain)
    future = tmp_path / "future.pt"
    torch.save({**_payload(model), "schema": SCHEMA_VERSION + 1}, future)
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(future)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_wrong_model_or_dataset_is_refused(tmp_path):
    payload = _payload(create_model("lenet5"))
    with pytest.raises(CheckpointError, match="trained on dataset 'mnist'"):
        model_from_checkpoint(payload, expect_dataset="cifar10")
    payload["state_dict"].pop("classifier.4.bias")
    with pytest.raises(CheckpointError, match="do not fit"):
        model_from_checkpoint(payload)
