"""Faults a careful user can cause (docs/reliability.md): each ends in one `error:` line and its exit code,
and a kill -9 at any write leaves a run that the same command finishes bit-exact."""
from __future__ import annotations

import csv
import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from cnnlab.apps import cli as cli_module
from cnnlab.apps.cli import cli
from cnnlab.core.errors import CheckpointError, SaveError
from cnnlab.core.files import remove_temp_files, temp_target, write_text
from cnnlab.engine.checkpoint import load_checkpoint, save_checkpoint


def one_line_error(result: Result, code: int) -> str:
    """The single `error:` line a failed command printed; fails on a traceback or any other stderr line."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def train_args(data: Path, run: Path, *extra: str, epochs: int = 2) -> list[str]:
    return ["train", "--data-dir", str(data), "--run-dir", str(run), "--epochs", str(epochs), "--val-size", "100",
            "--no-progress", "--threads", "1", "--no-train-eval", *extra]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if temp_target(p.name) is not None)


def metric_rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# --- kill -9 at the writes (the kept script, benchmarks/faults.py, does 20+ of these) -------------------


def _cmd(data: Path, run: Path) -> list[str]:
    return [sys.executable, "-m", "cnnlab", *train_args(data, run)]


@pytest.fixture(scope="module")
def reference_run(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("faults") / "reference"
    done = subprocess.run(_cmd(tiny_mnist, run), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return run


def assert_same_weights(a: Path, b: Path) -> None:
    pa, pb = load_checkpoint(a), load_checkpoint(b)
    untimed = lambda m: {k: v for k, v in m.items() if not k.endswith("_time_s")}  # noqa: E731
    assert pa["epoch"] == pb["epoch"] and untimed(pa["metrics"]) == untimed(pb["metrics"])
    assert pa["state_dict"].keys() == pb["state_dict"].keys()
    for k in pa["state_dict"]:
        assert torch.equal(pa["state_dict"][k], pb["state_dict"][k]), k


@pytest.mark.slow
@pytest.mark.parametrize("point", [
    "config.json:tmp:1",   # the folder holds only a temp file: counts as empty
    "last.pt:done:1",      # the window: last.pt written, best.pt not yet
    "best.pt:tmp:1",
    "metrics.csv:tmp:2",   # epoch 2 saved, metrics.csv still has one row
    "report.json:tmp:1",   # during the final scoring
])
def test_kill_9_at_a_write_then_the_same_command_finishes_bit_exact(tiny_mnist, tmp_path, reference_run, point):
    run = tmp_path / "run"
    killed = subprocess.run(_cmd(tiny_mnist, run), env={**os.environ, "CNNLAB_KILL_AT": point},
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    name, phase, _ = point.split(":")
    if phase == "tmp":  # killed with the new file complete but not yet in place
        assert temp_files(run) == [p.name for p in run.glob(f".{name}.*.tmp")] != []
    else:  # killed right after it was replaced
        assert (run / name).exists()
    if point == "last.pt:done:1":
        assert not (run / "best.pt").exists()  # the window that used to make a run unresumable
    done = subprocess.run(_cmd(tiny_mnist, run), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert_same_weights(reference_run / "last.pt", run / "last.pt")
    assert_same_weights(reference_run / "best.pt", run / "best.pt")
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("_time_s")} for r in rows]  # noqa: E731
    assert strip(metric_rows(run)) == strip(metric_rows(reference_run))
    assert json.loads((run / "report.json").read_text())["accuracy"] == \
        json.loads((reference_run / "report.json").read_text())["accuracy"]
    assert temp_files(run) == []


# --- item 1-4: a folder a dead process left ---------------------------------------------------------


def test_a_folder_holding_only_temp_files_counts_as_empty_and_is_cleaned(tiny_mnist, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in (".config.json.ab12cd34.tmp", ".best.pt.x_y_z_12.tmp"):
        (run / name).write_bytes(b"half")
    result = invoke(*train_args(tiny_mnist, run, epochs=1))
    assert result.exit_code == 0, result.output
    assert temp_files(run) == [] and len(metric_rows(run)) == 1


def test_a_folder_with_other_files_is_still_refused(tiny_mnist, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    assert "holds no cnnlab run" in one_line_error(invoke(*train_args(tiny_mnist, run)), 2)
    assert (run / "notes.txt").read_text() == "mine"


def test_remove_temp_files_only_touches_atomic_write_leftovers(tmp_path):
    keep = [".hidden", "a.tmp", ".x.tmp", "best.pt", ".best.pt.toolongname.tmp"]
    for name in keep + [".best.pt.abcd1234.tmp", ".metrics.csv.__x__yz1.tmp"]:
        (tmp_path / name).write_text("x")
    removed = remove_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == [".best.pt.abcd1234.tmp", ".metrics.csv.__x__yz1.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def test_metrics_csv_is_rebuilt_from_last_pt_on_resume(tiny_mnist, tmp_path):
    run = tmp_path / "run"
    assert invoke(*train_args(tiny_mnist, run)).exit_code == 0
    full = metric_rows(run)
    lines = (run / "metrics.csv").read_text().splitlines()
    write_text(run / "metrics.csv", "\n".join(lines[:2]) + "\n")  # as if killed before epoch 2's row
    again = invoke(*train_args(tiny_mnist, run))
    assert again.exit_code == 0, again.output
    assert metric_rows(run) == full


def test_a_second_process_on_the_same_run_dir_is_refused(tiny_mnist, tmp_path):
    """The issue's race, made to happen every time: the first trainer holds the run's lock and is paused
    before its folder exists (a test-only hook); the second is refused, and removes nothing."""
    run = tmp_path / "run"
    first = subprocess.Popen(_cmd(tiny_mnist, run), env={**os.environ, "CNNLAB_TEST_PAUSE": "run-locked:4"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / ".run.lock"
    for _ in range(300):  # until the first process holds the lock
        if lock.is_file() and lock.read_text().startswith("train"):
            break
        time.sleep(0.05)
    assert not run.exists()  # paused between taking the lock and creating the folder
    line = one_line_error(invoke(*train_args(tiny_mnist, run)), 2)
    assert f"is being trained by process {first.pid}" in line
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert (run / "best.pt").is_file() and (run / "report.json").is_file()


# --- item 5: cannot write (exit 4) ------------------------------------------------------------------------


def test_run_dir_under_a_file_is_one_line_exit_4(tiny_mnist, tmp_path):
    (tmp_path / "afile").write_text("x")
    line = one_line_error(invoke(*train_args(tiny_mnist, tmp_path / "afile" / "sub")), 4)
    # The run's lock file goes beside the run, in afile/, so the first folder made is afile itself.
    assert "afile" in line and ("not a folder" in line or "a file of that name is in the way" in line)


@pytest.fixture
def read_only_disk(monkeypatch: pytest.MonkeyPatch):
    """Every new file or folder fails with EROFS, as on a read-only mount (works as root too)."""
    import tempfile

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    def mkdir(self, *args, exist_ok=False, **kwargs):  # an existing folder is fine, as on a real read-only mount
        if exist_ok and self.is_dir():
            return
        refuse()

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    monkeypatch.setattr(Path, "mkdir", mkdir)


def test_read_only_target_in_evaluate_predict_and_resume_is_exit_4(tiny_trained_run, tmp_path, read_only_disk):
    assert "Read-only file system" in one_line_error(invoke("evaluate", str(tiny_trained_run)), 4)
    image = tiny_trained_run / "confusion_matrix.png"
    one_line_error(invoke("predict", str(tiny_trained_run), str(image), "-o", str(tmp_path / "p.csv")), 4)
    one_line_error(invoke("visualize", str(tiny_trained_run), "-o", str(tmp_path / "v")), 4)
    one_line_error(invoke("export", str(tiny_trained_run), "--format", "torchscript", "-o", str(tmp_path / "m.pt")), 4)
    # resuming a finished run rewrites its report (and nothing else: metrics.csv is already right)
    line = one_line_error(invoke("train", "--resume", str(tiny_trained_run), "--no-progress"), 4)
    assert "report" in line
    line = one_line_error(invoke(*train_args(tiny_trained_run, tmp_path / "new" / "run")), 4)
    assert "cannot create folder" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders anyway; the EROFS test covers it")
def test_folder_without_write_permission_is_exit_4(tiny_trained_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_trained_run, run)
    run.chmod(0o555)
    try:
        assert "Permission denied" in one_line_error(invoke("evaluate", str(run)), 4)
    finally:
        run.chmod(0o755)


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnlab", *args], capture_output=True, text=True, timeout=300)


def assert_one_line(done: subprocess.CompletedProcess, code: int) -> str:
    assert done.returncode == code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


@pytest.fixture
def mount_point(tmp_path: Path):
    """An empty folder to mount on (needs root with CAP_SYS_ADMIN; skips otherwise); unmounted after."""
    target = tmp_path / "mnt"
    target.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(target)):
        pytest.skip("cannot mount here (needs root and CAP_SYS_ADMIN)")
    subprocess.run(["umount", str(target)], check=True)
    yield target
    subprocess.run(["umount", str(target)], capture_output=True)


@pytest.mark.slow
def test_a_real_read_only_mount_is_exit_4_everywhere(tiny_trained_run, tmp_path, mount_point):
    import shutil

    shutil.copytree(tiny_trained_run, tmp_path / "src" / "run")
    assert _mount("--bind", "-o", "ro", str(tmp_path / "src"), str(mount_point))
    run = mount_point / "run"
    assert "Read-only file system" in assert_one_line(_cli("evaluate", str(run)), 4)
    assert_one_line(_cli("train", "--resume", str(run), "--no-progress"), 4)
    assert_one_line(_cli("predict", str(run), str(run / "confusion_matrix.png"), "-o", str(mount_point / "p.csv")), 4)
    line = assert_one_line(_cli(*train_args(tiny_trained_run, mount_point / "new")), 4)
    assert "cannot create" in line and "Read-only file system" in line  # the run's lock file, made first


@pytest.mark.slow
def test_a_real_full_disk_is_exit_4_and_after_freeing_space_the_same_command_finishes(tiny_mnist, mount_point):
    # 600 KB: config.json and split.json fit, epoch 1's last.pt (weights + Adam state, ~750 KB) does not.
    assert _mount("-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount_point))
    run = mount_point / "run"
    assert "the disk is full" in assert_one_line(_cli(*train_args(tiny_mnist, run)), 4)
    assert temp_files(run) == [] and (run / "config.json").exists()
    assert _mount("-o", "remount,size=20m", str(mount_point))  # space freed
    done = _cli(*train_args(tiny_mnist, run))
    assert done.returncode == 0, done.stderr
    assert len(metric_rows(run)) == 2 and temp_files(run) == [] and (run / "report.json").exists()


def test_disk_full_at_epoch_end_is_one_line_exit_4_and_the_rerun_finishes(tiny_mnist, tmp_path, monkeypatch):
    run = tmp_path / "run"
    real_fsync = os.fsync
    calls = {"n": 0}

    def fill_up(fd):  # config, split, epoch 1's last.pt fit (a file and a folder fsync each); then full
        calls["n"] += 1
        if calls["n"] > 6:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fill_up)
    assert "disk is full" in one_line_error(invoke(*train_args(tiny_mnist, run)), 4)
    monkeypatch.setattr(os, "fsync", real_fsync)  # space freed
    assert load_checkpoint(run / "last.pt")["epoch"] == 1 and not (run / "best.pt").exists()
    done = invoke(*train_args(tiny_mnist, run))
    assert done.exit_code == 0, done.output
    assert "rebuilt" in done.output and load_checkpoint(run / "best.pt")["epoch"] >= 1
    assert len(metric_rows(run)) == 2 and temp_files(run) == []


# --- item 6: resume with fewer epochs -------------------------------------------------------------------


def test_resume_with_fewer_epochs_than_done_has_nothing_to_do(tiny_trained_run):
    result = invoke("train", "--resume", str(tiny_trained_run), "--epochs", "1", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "already trained 2 epochs (asked for 1): nothing to train" in result.stdout
    assert result.stderr == "" and len(metric_rows(tiny_trained_run)) == 2


# --- item 7: optimizer values, before any data is read ---------------------------------------------------


@pytest.mark.parametrize("flags, says", [
    (["--optimizer", "sgd", "--momentum", "-1"], "optim.momentum must be in [0, 1)"),
    (["--optimizer", "sgd", "--momentum", "5"], "optim.momentum must be in [0, 1)"),
    (["--optimizer", "sgd", "--nesterov", "--momentum", "0"], "nesterov needs optim.momentum > 0"),
    (["--lr", "0"], "optim.lr must be > 0"),
    (["--lr", "nan"], "optim.lr must be a finite number"),
    (["--weight-decay", "inf"], "optim.weight_decay must be a finite number"),
])
def test_bad_optimizer_values_are_refused_before_data_is_read(tmp_path, flags, says):
    # The data folder does not exist: reading data first would fail with another message.
    result = invoke(*train_args(tmp_path / "no-data", tmp_path / "run", *flags), "--no-download")
    assert says in one_line_error(result, 2)
    assert not (tmp_path / "run").exists()


# --- item 8: malformed checkpoints -----------------------------------------------------------------------


@pytest.mark.parametrize("damage, says", [
    (lambda p: p.pop("model"), "'model' must be a table"),
    (lambda p: p.update(model="lenet5"), "'model' must be a table"),
    (lambda p: p["model"].update(num_classes="10"), "model.num_classes must be a whole number"),
    (lambda p: p.update(state_dict="weights"), "'state_dict' must map parameter names to tensors"),
    (lambda p: p.update(data=[1, 2]), "'data' must be a dict"),
])
def test_malformed_best_pt_names_the_file_and_the_entry(tiny_trained_run, tmp_path, damage, says):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_trained_run, run)
    payload = load_checkpoint(run / "best.pt")
    damage(payload)
    save_checkpoint(run / "best.pt", payload)
    with pytest.raises(CheckpointError, match="best.pt is a malformed cnnlab checkpoint"):
        load_checkpoint(run / "best.pt")
    for args in (["evaluate", str(run)], ["visualize", str(run), "-o", str(tmp_path / "v")],
                 ["export", str(run), "--format", "torchscript", "-o", str(tmp_path / "m.pt")],
                 ["predict", str(run), str(run / "confusion_matrix.png")]):
        line = one_line_error(invoke(*args), 2)
        assert f"{run / 'best.pt'} is a malformed cnnlab checkpoint" in line and says in line, args


def test_malformed_last_pt_on_resume_is_one_line(tiny_trained_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_trained_run, run)
    payload = load_checkpoint(run / "last.pt")
    payload["trainer"] = "step 7"
    save_checkpoint(run / "last.pt", payload)
    line = one_line_error(invoke("train", "--resume", str(run), "--epochs", "3", "--no-progress"), 2)
    assert "last.pt is a malformed cnnlab checkpoint: 'trainer' must hold the iteration" in line


# --- item 9: Ctrl-C / SIGTERM outside the training loop ---------------------------------------------------


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("where", ["cnnlab.engine.train.prepare_data", "cnnlab.service.training.evaluate_checkpoint"])
def test_a_signal_during_start_up_or_final_scoring_exits_130_or_143(tiny_mnist, tmp_path, monkeypatch, sig, code,
                                                                     where):
    def signalled(*args, **kwargs):
        signal.raise_signal(sig)  # delivered for real; Python's handler raises in this frame
        raise AssertionError("the signal did not interrupt")

    monkeypatch.setattr(where, signalled)
    previous = signal.signal(signal.SIGTERM, cli_module._raise_terminated)  # what main() installs
    try:
        result = invoke(*train_args(tiny_mnist, tmp_path / "run", epochs=1))
    finally:
        signal.signal(signal.SIGTERM, previous)
    line = one_line_error(result, code)
    assert signal.Signals(sig).name in line and "run the same command again" in line.lower()
    assert "Aborted" not in result.output


# --- item 11: the smaller things --------------------------------------------------------------------------


def test_nan_loss_is_one_line_without_ignite_log_lines(tiny_mnist, tmp_path, monkeypatch):
    real = torch.nn.CrossEntropyLoss

    class Poisoned(real):
        def forward(self, input, target):  # noqa: A002
            return super().forward(input, target) * float("nan")

    monkeypatch.setattr(torch.nn, "CrossEntropyLoss", Poisoned)
    assert "the training loss became nan" in one_line_error(invoke(*train_args(tiny_mnist, tmp_path / "run")), 3)


def test_validation_loss_that_became_inf_stops_with_exit_3(tiny_mnist, tmp_path, monkeypatch):
    import cnnlab.engine.train as train_module

    real = train_module.run_evaluation

    def overflowing(evaluator, batches):
        return {**real(evaluator, batches), "loss": math.inf}

    monkeypatch.setattr(train_module, "run_evaluation", overflowing)
    line = one_line_error(invoke(*train_args(tiny_mnist, tmp_path / "run")), 3)
    assert "the validation loss became inf at epoch 1" in line


def test_resume_accepts_an_option_repeated_with_its_unchanged_value(tiny_mnist, tmp_path):
    run = tmp_path / "run"
    assert invoke(*train_args(tiny_mnist, run, "--deterministic", "--lr", "0.002", epochs=1)).exit_code == 0
    again = invoke("train", "--resume", str(run), "--deterministic", "--lr", "0.002", "--epochs", "2",
                   "--no-progress")
    assert again.exit_code == 0, again.output
    assert "resuming" in again.stdout and len(metric_rows(run)) == 2
    changed = invoke("train", "--resume", str(run), "--lr", "0.1", "--no-progress")
    assert changed.exit_code == 2 and "optim.lr cannot be changed" in changed.stderr


def test_save_error_names_the_path_when_the_temp_file_cannot_be_made(tmp_path, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(SaveError, match=f"could not write {tmp_path / 'x.json'}: Permission denied"):
        write_text(tmp_path / "x.json", "{}")


def test_a_run_that_fails_before_writing_leaves_no_empty_folder(tmp_path):
    result = invoke(*train_args(tmp_path / "no-data", tmp_path / "run"), "--no-download")
    assert result.exit_code == 2 and not (tmp_path / "run").exists()


def test_serve_refuses_a_malformed_checkpoint_in_one_line(tiny_trained_run, tmp_path):
    pytest.importorskip("fastapi")
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_trained_run, run)
    payload = load_checkpoint(run / "best.pt")
    payload["model"] = "lenet5"
    save_checkpoint(run / "best.pt", payload)
    line = assert_one_line(_cli("serve", str(run), "--port", "0"), 2)  # a hang here would time out
    assert "best.pt is a malformed cnnlab checkpoint: 'model' must be a table" in line
