"""Files and values cnnlab did not write (issue 24, items 4-8): a cache that cannot lie, files that are not
checkpoints, run files that are huge, CLI values out of range, and the notebook API's data and model checks.
Each ends in one line (a CnnlabError, or one `error:` line and its exit code): no traceback, no hang."""
from __future__ import annotations

import logging
import os
import pickle
import shutil
import stat
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

import cnnlab
from cnnlab.apps.cli import cli
from cnnlab.core.errors import CheckpointError, ConfigError, DataError, ModelError, RunDirError
from cnnlab.core.runs import SIZE_CAPS, RunDir, read_metrics, read_run_file, read_split
from cnnlab.data import cache
from cnnlab.data.mnist import load_mnist
from cnnlab.engine.checkpoint import load_checkpoint
from conftest import make_mnist_folder

TRAIN = ["--epochs", "1", "--val-size", "100", "--no-progress", "--threads", "1", "--no-train-eval"]


def one_error_line(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


# --- the decoded-data cache -----------------------------------------------------------------


def edit_cache(path: Path, change, *, keep_digest: bool = True) -> None:
    """Change the cached tensors in place of a byte editor: with the stored digest kept (a lie) or redone."""
    payload = torch.load(path, weights_only=True)
    change(payload["tensors"])
    if not keep_digest:
        payload["digest"] = cache.digest(payload["tensors"])
    torch.save(payload, path)


def test_a_cache_with_edited_labels_is_detected_and_rebuilt(tmp_path: Path, caplog) -> None:
    root = make_mnist_folder(tmp_path)
    truth = load_mnist(root, train=False, download=False).labels.clone()
    path = root / "MNIST" / cache.CACHE_DIR / "mnist-t10k.pt"

    def shift(t):
        t["labels"][:100] = (t["labels"][:100] + 1) % 10

    edit_cache(path, shift)
    with caplog.at_level(logging.WARNING, logger="cnnlab.data"):
        again = load_mnist(root, train=False, download=False)
    assert torch.equal(again.labels, truth)  # decoded from the raw files, not the lie
    assert [r.getMessage() for r in caplog.records if "checksum" in r.getMessage()] and len(caplog.records) == 1
    payload = torch.load(path, weights_only=True)  # and the cache was rewritten
    assert torch.equal(payload["tensors"]["labels"], truth)


def test_an_edited_cache_in_a_read_only_folder_is_one_line(tmp_path: Path) -> None:
    root = make_mnist_folder(tmp_path)
    load_mnist(root, train=False, download=False)
    path = root / "MNIST" / cache.CACHE_DIR / "mnist-t10k.pt"
    edit_cache(path, lambda t: t["images"].__setitem__((0, 0, 0, 0), 77))
    folders = [root / "MNIST", path.parent]
    modes = [f.stat().st_mode for f in folders]
    for f in folders:
        f.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(DataError, match="does not match its checksum.*read-only.*CNNLAB_NO_DATA_CACHE=1"):
            load_mnist(root, train=False, download=False)
    finally:
        for f, m in zip(folders, modes):
            f.chmod(m)


def test_a_cached_label_out_of_range_names_the_cache_file(tmp_path: Path) -> None:
    root = make_mnist_folder(tmp_path)
    load_mnist(root, train=False, download=False)
    path = root / "MNIST" / cache.CACHE_DIR / "mnist-t10k.pt"
    edit_cache(path, lambda t: t["labels"].__setitem__(0, 37), keep_digest=False)  # a consistent, wrong cache
    with pytest.raises(DataError, match=r"mnist-t10k.pt: a label is 37, outside 0..9 for 10 classes"):
        load_mnist(root, train=False, download=False)


def test_a_raw_label_out_of_range_names_the_raw_file(tmp_path: Path, monkeypatch) -> None:
    from conftest import synthetic_digits, write_idx_labels

    monkeypatch.setenv("CNNLAB_NO_DATA_CACHE", "1")
    root = make_mnist_folder(tmp_path)
    _, y = synthetic_digits(200, seed=1)
    y[5] = 12
    write_idx_labels(root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", y)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: a label is 12, outside 0..9"):
        load_mnist(root, train=False, download=False)


def test_evaluate_never_reports_on_a_lying_cache(tiny_trained_run: Path, tmp_path: Path) -> None:
    """The issue's case: edited cached test labels made evaluate exit 0 at 1.21% and rewrite report.json."""
    root = make_mnist_folder(tmp_path / "data")
    run = tmp_path / "run"
    shutil.copytree(tiny_trained_run, run)
    honest = invoke("evaluate", str(run), "--data-dir", str(root))
    assert honest.exit_code == 0, honest.output
    expected = (run / "report.json").read_text()
    path = root / "MNIST" / cache.CACHE_DIR / "mnist-t10k.pt"

    def shift(t):
        t["labels"][:] = (t["labels"] + 1) % 10

    edit_cache(path, shift)
    again = invoke("evaluate", str(run), "--data-dir", str(root))
    assert again.exit_code == 0
    assert (run / "report.json").read_text().split('"epoch"')[0] == expected.split('"epoch"')[0]


# --- files that are not checkpoints ---------------------------------------------------------


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("kind, message", [
    ("text", r"is not a PyTorch checkpoint \(it is text: 'epoch 3 was the best'\)"),
    ("lfs", r"is a Git LFS pointer, not the checkpoint itself: run git lfs pull"),
    ("garbage", r"is not a PyTorch checkpoint \(neither torch's zip format nor a pickle"),
    ("empty", r"is empty, not a PyTorch checkpoint"),
    ("evil_zip", r"contains pickled Python objects, which could run code"),
    ("evil_pickle", r"contains pickled Python objects, which could run code"),
    ("truncated", r"truncated or corrupted"),
])
def test_files_that_are_not_checkpoints_get_their_own_line(tmp_path: Path, kind: str, message: str) -> None:
    path = tmp_path / "best.pt"
    if kind == "text":
        path.write_text("epoch 3 was the best\nsee notes\n")
    elif kind == "lfs":
        path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 251436\n")
    elif kind == "garbage":
        path.write_bytes(bytes([0x13, 0x37, 0x00, 0xFF] * 64))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "evil_zip":
        torch.save({"schema": 1, "x": Evil()}, path)
    elif kind == "evil_pickle":
        path.write_bytes(pickle.dumps(Evil(), protocol=4))
    else:
        torch.save({"w": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_evaluate_on_a_text_best_pt_is_one_line(tiny_trained_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_trained_run, run)
    (run / "best.pt").write_text("<html>404 Not Found</html>\n")
    assert "is not a PyTorch checkpoint (it is text" in one_error_line(invoke("evaluate", str(run)))


# --- huge run files -------------------------------------------------------------------------


def sparse_file(path: Path, size: int) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(size)  # no disk space used
    return path


@pytest.mark.parametrize("command", ["evaluate", "resume"])
def test_config_json_linked_to_50_gb_is_one_line(tiny_trained_run: Path, tmp_path: Path, command: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_trained_run, run)
    (run / "config.json").unlink()
    (run / "config.json").symlink_to(sparse_file(tmp_path / "big", 50 * 2**30))
    args = ["evaluate", str(run)] if command == "evaluate" else ["train", "--resume", str(run)]
    line = one_error_line(invoke(*args))
    assert "config.json is 53,687,091,200 bytes, more than the 1,048,576 bytes" in line


def test_analyze_refuses_a_huge_metrics_csv_at_once(tiny_trained_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_trained_run, run)
    (run / "metrics.csv").unlink()
    (run / "metrics.csv").symlink_to(sparse_file(tmp_path / "big", 50 * 2**30))
    line = one_error_line(invoke("analyze", str(run), "--no-html"))
    assert "metrics.csv is 53,687,091,200 bytes" in line


def test_small_run_files_have_caps_and_must_be_regular_files(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    sparse_file(run.split, SIZE_CAPS["split.json"] + 1)
    with pytest.raises(RunDirError, match="split.json is .* bytes, more than"):
        read_split(run)
    with pytest.raises(RunDirError, match="is not a regular file"):
        read_run_file(Path("/dev/zero"), 100)
    run.metrics.write_text("epoch,val_loss,best\n1,0.5,True\n")
    assert read_metrics(run.metrics) == [{"epoch": 1.0, "val_loss": 0.5, "best": True}]


# --- command-line values --------------------------------------------------------------------


def test_a_run_dir_name_of_300_characters_is_one_line(tiny_mnist: Path, tmp_path: Path) -> None:
    line = one_error_line(invoke("train", "--data-dir", str(tiny_mnist), "--run-dir", str(tmp_path / ("x" * 300)),
                                 *TRAIN))
    assert "300 bytes long; at most 249" in line


def test_a_seed_of_2_to_the_70_is_one_line(tiny_mnist: Path, tmp_path: Path) -> None:
    line = one_error_line(invoke("train", "--data-dir", str(tiny_mnist), "--run-dir", str(tmp_path / "r"),
                                 "--seed", str(2**70), *TRAIN))
    assert "train.seed must be a whole number from 0 to 4294967295" in line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("var, value", [
    ("CNNLAB_KILL_AT", "best.pt"), ("CNNLAB_KILL_AT", "best.pt:tmp:x"), ("CNNLAB_KILL_AT", "best.pt:later"),
    ("CNNLAB_TEST_PAUSE", "run-locked:abc"), ("CNNLAB_TEST_PAUSE", "nowhere:1"),
])
def test_a_malformed_fault_hook_is_one_line(tiny_mnist: Path, tmp_path: Path, monkeypatch, var, value) -> None:
    monkeypatch.setenv(var, value)
    line = one_error_line(invoke("train", "--data-dir", str(tiny_mnist), "--run-dir", str(tmp_path / "r"), *TRAIN))
    assert f"{var}={value!r} is malformed" in line
    assert not (tmp_path / "r").exists()


# --- the notebook API's data and model checks -----------------------------------------------


QUIET = dict(log=None, epochs=1, val_size=10, threads=1)


class Head(nn.Module):
    """A linear classifier whose output can be made wrong on purpose."""

    def __init__(self, k: int = 10, out: str = "logits") -> None:
        super().__init__()
        self.fc = nn.Linear(784, k)
        self.out = out

    def forward(self, x):
        y = self.fc(x.flatten(1))
        return {"logits": y, "extra_dim": y.unsqueeze(-1), "scalar": y.sum(), "tuple": (y, y)}[self.out]


def data(n: int = 60):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("make, error, message", [
    (lambda x, y: (torch.where(x > 0.5, torch.nan, x), y), ConfigError, "NaN or infinite"),
    (lambda x, y: (torch.where(x > 0.5, torch.inf, x), y), ConfigError, "NaN or infinite"),
    (lambda x, y: (x > 0.5, y), ConfigError, "the images are bool"),
    (lambda x, y: (x.to("meta"), y), ConfigError, "on the meta device"),
    (lambda x, y: (x, [f"digit {int(v)}" for v in y]), ConfigError, "the labels are strings .* give the indices"),
    (lambda x, y: (x, torch.where(y == 3, torch.tensor(-1), y)), ConfigError, ">= 0"),
    (lambda x, y: (x, y.float()), ConfigError, "labels must be integers"),
])
def test_bad_user_data_is_one_line(tmp_path: Path, make, error, message) -> None:
    with pytest.raises(error, match=message):
        cnnlab.train(Head(), make(*data()), run_dir=tmp_path / "r", **QUIET)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("model, message", [
    (Head(5), r"your model returns \(N, 5\); the data has 10 classes"),
    (Head(out="extra_dim"), r"your model returns \(N, 10, 1\)"),
    (Head(out="scalar"), r"your model returns a scalar"),
    (Head(out="tuple"), r"your model returns a tuple, not a tensor"),
    (Head().double(), r"fc.weight is float64.*model.float\(\)"),
    (Head().to("meta"), r"fc.weight is on the meta device"),
])
def test_a_model_that_does_not_fit_the_data_is_one_line(tmp_path: Path, model, message) -> None:
    with pytest.raises(ModelError, match=message):
        cnnlab.train(model, data(), run_dir=tmp_path / "r", **QUIET)
    assert not (tmp_path / "r").exists()


def test_a_label_beyond_the_class_names_is_one_line(tmp_path: Path) -> None:
    x, y = data()
    y[0] = 37
    with pytest.raises(ConfigError, match="10 class names, but the labels go up to 37"):
        cnnlab.train(Head(), (x, y), classes=[str(i) for i in range(10)], run_dir=tmp_path / "r", **QUIET)
    with pytest.raises(ModelError, match=r"returns \(N, 10\); the data has 38 classes"):
        cnnlab.train(Head(), (x, y), run_dir=tmp_path / "r", **QUIET)


def test_a_figure_file_with_an_unknown_suffix_is_one_line_before_any_work(tiny_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid.out"
    line = one_error_line(invoke("show-data", "--data-dir", str(tiny_mnist), "-o", str(out)))
    assert "grid.out" in line and ".out" in line and ".png" in line
    assert not out.exists()
    found = invoke("train", "--data-dir", str(tiny_mnist), "--lr-find", "--lr-find-plot", str(tmp_path / "lr.txt"),
                   "--no-progress")
    assert "lr.txt" in one_error_line(found)
