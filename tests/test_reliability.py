"""The promises of docs/reliability.md, one test each."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cnnlab.engine.checkpoint import load_checkpoint, save_checkpoint
from cnnlab.core.errors import CheckpointError, DataError, NonFiniteLossError, RunDirError, SaveError
from cnnlab.service.training import train_config as train


def quiet(_: str) -> None:
    pass


class Crash(Exception):
    pass


def crash_after_epoch(n: int):
    """A log callback that kills the run right after epoch ``n`` was saved (like a power cut)."""

    def log(line: str) -> None:
        if line.startswith(f"epoch {n}/"):
            raise Crash(line)

    return log


def tensors(payload: dict) -> dict[str, torch.Tensor]:
    out = {f"model.{k}": v for k, v in payload["state_dict"].items()}
    for pid, st in payload.get("optimizer", {}).get("state", {}).items():
        for k, v in st.items():
            out[f"opt.{pid}.{k}"] = torch.as_tensor(v)
    return out


def assert_same_tensors(a: dict, b: dict) -> None:
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


@pytest.mark.parametrize("split", [None, 2])
def test_resume_is_bit_exact(tiny_config, tmp_path, split):
    # split=2: each batch in two parts on two threads, gradients summed in a fixed order: just as exact
    cfg = tiny_config.override("train", epochs=3, batch_split=split)
    full = train(cfg, tmp_path / "full", log=quiet)

    with pytest.raises(Crash):
        train(cfg, tmp_path / "resumed", log=crash_after_epoch(1))
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 1
    resumed = train(cfg, tmp_path / "resumed", log=quiet)  # the same call again resumes

    assert resumed.resumed_from == 1
    assert_same_tensors(load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "resumed" / "last.pt"))
    assert_same_tensors(load_checkpoint(tmp_path / "full" / "best.pt"), load_checkpoint(tmp_path / "resumed" / "best.pt"))
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("_time_s")} for r in rows]  # noqa: E731
    assert strip(resumed.history) == strip(full.history)
    assert resumed.test.accuracy == full.test.accuracy


def test_last_checkpoint_holds_the_full_state_and_loads_weights_only(tiny_config, tmp_path):
    train(tiny_config.override("train", epochs=1), tmp_path / "run", log=quiet)
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert {"schema", "cnnlab_version", "torch_version", "state_dict", "optimizer", "trainer", "rng", "split",
            "config", "best", "history"} <= set(last)
    assert {"torch", "python", "numpy"} <= set(last["rng"])
    assert last["trainer"]["iteration"] == last["trainer"]["epoch_length"]


def test_extending_a_finished_run_trains_only_the_new_epochs(tiny_config, tmp_path):
    first = train(tiny_config.override("train", epochs=1), tmp_path / "run", log=quiet)
    again = train(tiny_config.override("train", epochs=2), tmp_path / "run", log=quiet)
    assert [r["epoch"] for r in again.history] == [1, 2]
    assert again.history[0] == first.history[0]


def _train_cmd(data_dir: Path, run_dir: Path, epochs: int = 3) -> list[str]:
    return [sys.executable, "-m", "cnnlab", "train", "--data-dir", str(data_dir), "--run-dir", str(run_dir),
            "--epochs", str(epochs), "--val-size", "100", "--batch-size", "4", "--no-progress", "--threads", "1"]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(tiny_mnist, tmp_path):
    reference = subprocess.run(_train_cmd(tiny_mnist, tmp_path / "ref"), capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr

    run = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(tiny_mnist, run), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(run / "last.pt", proc)
    time.sleep(0.15)  # somewhere inside epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    load_checkpoint(run / "last.pt")  # never torn
    load_checkpoint(run / "best.pt")
    # A kill during a write may leave that write's temporary file; the next start removes it.
    done = subprocess.run(_train_cmd(tiny_mnist, run), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stdout
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))
    assert_same_tensors(load_checkpoint(tmp_path / "ref" / "last.pt"), load_checkpoint(run / "last.pt"))


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_save_and_say_how_to_resume(tiny_mnist, tmp_path, sig, code):
    run = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(tiny_mnist, run, epochs=6), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for(run / "last.pt", proc)
    time.sleep(0.1)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert f"cnnlab train --resume {run}" in err and "Traceback" not in err
    last = load_checkpoint(run / "last.pt")
    assert 0 < last["trainer"]["iteration"] < 6 * last["trainer"]["epoch_length"]
    # And it resumes from exactly there, to the end.
    done = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--resume", str(run), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"iteration {last['trainer']['iteration']})" in done.stdout
    final = load_checkpoint(run / "last.pt")
    assert final["trainer"]["iteration"] == 6 * final["trainer"]["epoch_length"]
    assert (run / "report.json").exists()


def test_non_finite_loss_stops_with_its_own_error_and_keeps_best(tiny_config, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(tiny_config.override("train", epochs=1), run, log=quiet)
    best_before = (run / "best.pt").read_bytes()

    real = torch.nn.CrossEntropyLoss

    class Poisoned(real):
        def forward(self, input, target):  # noqa: A002
            return super().forward(input, target) * float("nan")

    monkeypatch.setattr(torch.nn, "CrossEntropyLoss", Poisoned)
    with pytest.raises(NonFiniteLossError) as err:
        train(tiny_config.override("train", epochs=2), run, log=quiet)
    assert err.value.exit_code == 3 and "epoch 2" in str(err.value)
    assert (run / "best.pt").read_bytes() == best_before
    load_checkpoint(run / "last.pt")


def test_disk_full_while_saving_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    import errno

    from cnnlab.engine.checkpoint import make_payload
    from cnnlab.models import create_model

    info = {"name": "mnist", "classes": list("0123456789"), "channels": 1, "image_size": 28, "preprocess": {}}
    path = tmp_path / "best.pt"
    save_checkpoint(path, make_payload(create_model("lenet5"), model_name="lenet5", data_info=info, config={},
                                       epoch=1, metrics={}))
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(SaveError, match=f"{path}.*disk is full"):
        save_checkpoint(path, make_payload(create_model("lenet5"), model_name="lenet5", data_info=info, config={},
                                           epoch=2, metrics={}))
    monkeypatch.undo()
    assert path.read_bytes() == before and load_checkpoint(path)["epoch"] == 1
    assert list(tmp_path.iterdir()) == [path]


def test_a_run_of_another_dataset_is_refused_on_evaluate(tiny_config, tmp_path):
    from cnnlab.engine.checkpoint import model_from_checkpoint

    train(tiny_config.override("train", epochs=1), tmp_path / "run", log=quiet)
    with pytest.raises(CheckpointError, match="trained on dataset 'mnist'"):
        model_from_checkpoint(load_checkpoint(tmp_path / "run" / "best.pt"), expect_dataset="cifar10")


def test_resume_refuses_changes_that_alter_the_run(tiny_config, tmp_path):
    from cnnlab.engine.train import resume_config

    train(tiny_config.override("train", epochs=1), tmp_path / "run", log=quiet)
    assert resume_config(tmp_path / "run", {"train.epochs": 4}).train.epochs == 4
    with pytest.raises(RunDirError, match="optim.lr cannot be changed"):
        resume_config(tmp_path / "run", {"optim.lr": 0.1})


@pytest.mark.parametrize("damage", ["truncate", "magic"])
def test_damaged_dataset_files_name_the_file(tiny_mnist, tmp_path, damage):
    import shutil

    from cnnlab.data.mnist import load_mnist

    root = tmp_path / "data"
    shutil.copytree(tiny_mnist, root)
    path = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
        match = "truncated"
    else:
        data[2] = 0x0D
        path.write_bytes(bytes(data))
        match = "not an IDX file"
    with pytest.raises(DataError, match=match) as err:
        load_mnist(root, train=True, download=False)
    assert str(path) in str(err.value)


def test_corrupted_file_of_the_original_size_fails_its_checksum(tmp_path):
    from cnnlab.data.mnist import MNIST_RAW_MD5, verify_idx_file

    import struct

    path = tmp_path / "t10k-labels-idx1-ubyte"
    _, size = MNIST_RAW_MD5[path.name]
    path.write_bytes(struct.pack(">II", 0x00000801, size - 8) + bytes(size - 8))
    with pytest.raises(DataError, match="corrupted .*MD5"):
        verify_idx_file(path)


def test_deterministic_flag_turns_on_deterministic_algorithms(tiny_config, tmp_path):
    seen = []  # the flags while training (the epoch line is logged from inside the loop)

    def log(_msg: str) -> None:
        seen.append((torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark))

    try:
        train(tiny_config.override("train", epochs=1, deterministic=True), tmp_path / "run", log=log)
        assert seen and all(on and not benchmark for on, benchmark in seen)
        # ... and only while training: a library call leaves the process as it found it.
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
