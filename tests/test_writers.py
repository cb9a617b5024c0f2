"""One writer per run, and overwrite removes only what cnnlab wrote (issue 24, items 1-3 and 9)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import cnnlab
from cnnlab.apps.cli import cli
from cnnlab.core.errors import RunDirError
from cnnlab.core.runs import RunBusyError, RunDir, being_trained, clear_run_dir, lock_path, locked, reading

TRAIN = ["--epochs", "1", "--val-size", "100", "--no-progress", "--threads", "1", "--no-train-eval"]
QUIET = dict(log=None, epochs=1, val_size=20, threads=1)


def train_cmd(data: Path, run: Path) -> list[str]:
    return [sys.executable, "-m", "cnnlab", "train", "--data-dir", str(data), "--run-dir", str(run), *TRAIN]


def wait_for_holder(lock: Path, role: str = "train", seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if lock.is_file() and lock.read_text().startswith(role):
            return
        time.sleep(0.05)
    raise AssertionError(f"nobody took {lock}")


def one_error_line(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes ({} when there is no folder)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} \
        if folder.is_dir() else {}


# --- overwrite ------------------------------------------------------------------------------


def small_data(n: int = 80) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_overwrite_refuses_a_project_folder_and_deletes_nothing(tmp_path: Path) -> None:
    """The issue's case: a folder with its own config.json and a src/ tree was deleted whole."""
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "config.json").write_text('{"mine": true}')
    (project / "src" / "main.py").write_text("print('hi')")
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    with pytest.raises(RunDirError, match=r"holds files cnnlab did not write \(src/\); nothing was removed"):
        cnnlab.train("lenet5", small_data(), run_dir=project, overwrite=True, **QUIET)
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before


def test_overwrite_keeps_notes_beside_a_real_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cnnlab.train("lenet5", small_data(), run_dir=run, **QUIET)
    (run / "NOTES.md").write_text("my notes")
    (run / "my_plots").mkdir()
    (run / "my_plots" / "a.png").write_bytes(b"x")
    with pytest.raises(RunDirError, match=r"\(NOTES.md, my_plots/\)"):
        cnnlab.train("lenet5", small_data(), run_dir=run, overwrite=True, seed=1, **QUIET)
    assert (run / "NOTES.md").read_text() == "my notes" and (run / "my_plots" / "a.png").is_file()
    assert (run / "best.pt").is_file()  # the run itself untouched too


def test_overwrite_replaces_a_run_with_its_analysis(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = cnnlab.train("lenet5", small_data(), run_dir=run, **QUIET)
    first.interpret().save()  # analysis/
    (run / ".config.json.abcd1234.tmp").write_text("a dead writer's temp file")
    again = cnnlab.train("lenet5", small_data(), run_dir=run, overwrite=True, seed=5, **QUIET)
    assert again.resumed_from == 0 and not (run / "analysis").exists()
    assert not list(run.glob(".*.tmp"))


def test_overwrite_refuses_a_symlinked_run_dir_in_one_line(tmp_path: Path) -> None:
    real = tmp_path / "real"
    cnnlab.train("lenet5", small_data(), run_dir=real, **QUIET)
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    with pytest.raises(RunDirError, match="is a symbolic link"):
        cnnlab.train("lenet5", small_data(), run_dir=link, overwrite=True, seed=2, **QUIET)
    assert (real / "best.pt").is_file()


def test_clear_run_dir_treats_links_and_misplaced_kinds_as_the_users(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (run.path / "analysis").symlink_to(tmp_path / "elsewhere")  # a link where cnnlab makes a folder
    (run.path / "best.pt").mkdir()  # a folder where cnnlab writes a file
    with pytest.raises(RunDirError, match=r"\(analysis, best.pt/\)"):
        clear_run_dir(run)
    assert (tmp_path / "elsewhere").is_dir()


# --- one writer -----------------------------------------------------------------------------


def test_the_lock_lives_beside_the_run_and_names_every_spelling_the_same(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    assert lock_path(tmp_path / "runs" / "x") == tmp_path.resolve() / "runs" / ".x.lock"
    assert lock_path(f"{tmp_path}/runs/./x/") == lock_path(tmp_path / "runs" / "x")
    (tmp_path / "alias").symlink_to(tmp_path / "runs", target_is_directory=True)
    assert lock_path(tmp_path / "alias" / "x") == lock_path(tmp_path / "runs" / "x")


def test_a_second_trainer_is_refused_while_the_first_has_created_its_folder(tiny_mnist, tmp_path) -> None:
    """The other race point: the folder exists and is still empty (the old code removed it from under
    the winner). The loser is refused, and the winner's folder survives and finishes."""
    run = tmp_path / "run"
    first = subprocess.Popen(train_cmd(tiny_mnist, run), env={**os.environ, "CNNLAB_TEST_PAUSE": "run-created:4"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_holder(tmp_path / ".run.lock")
    deadline = time.monotonic() + 30
    while not run.is_dir() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.is_dir() and not any(run.iterdir())
    line = one_error_line(CliRunner().invoke(cli, ["train", "--data-dir", str(tiny_mnist), "--run-dir", str(run),
                                                   *TRAIN]))
    assert f"being trained by process {first.pid}" in line
    assert run.is_dir()  # not removed by the loser
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert (run / "report.json").is_file()


def test_readers_refuse_a_run_being_trained(tiny_trained_run: Path, tmp_path: Path) -> None:
    """evaluate, analyze, visualize, compare and export: one line naming the trainer, and nothing written."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_trained_run, run)
    report = (run / "report.json").read_bytes()
    analysis, visual = snapshot(run / "analysis"), snapshot(run / "visualize")  # other tests may have made them
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from cnnlab.core.runs import RunDir, locked\n"
        f"with locked(RunDir({str(run)!r})):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert being_trained(run) == holder.pid
        for args in (["evaluate", str(run)], ["analyze", str(run)], ["visualize", str(run)],
                     ["compare", str(run), str(tiny_trained_run)], ["export", str(run), "-o", str(tmp_path / "m.pt2"),
                                                                    "--format", "pt2"]):
            line = one_error_line(CliRunner().invoke(cli, args))
            assert f"is being trained by process {holder.pid}" in line, args
        assert (run / "report.json").read_bytes() == report
        assert snapshot(run / "analysis") == analysis and snapshot(run / "visualize") == visual
    finally:
        holder.kill()
        holder.wait()
    assert being_trained(run) is None  # the OS released the lock with its process


def test_an_interpretation_is_not_saved_once_best_pt_changed(tiny_trained_run: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_trained_run, run)
    interp = cnnlab.interpret(run)
    data = (run / "best.pt").read_bytes()
    (run / "best.pt").unlink()
    (run / "best.pt").write_bytes(data)  # a new file: what a training run's atomic replace gives
    before = snapshot(run / "analysis")
    with pytest.raises(RunDirError, match="changed after it was scored"):
        interp.save()
    assert snapshot(run / "analysis") == before


def test_readers_wait_for_each_other_not_refuse(tmp_path: Path) -> None:
    run = tmp_path / "r"
    run.mkdir()
    done = []

    def second() -> None:
        with reading(run):
            done.append(time.monotonic())

    with reading(run):
        t = threading.Thread(target=second)
        start = time.monotonic()
        t.start()
        time.sleep(0.5)
        assert not done  # waiting, not refused
    t.join(10)
    assert done and done[0] - start >= 0.5


def test_another_thread_of_the_process_is_a_second_writer(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r")
    errors = []

    def second() -> None:
        try:
            with locked(run):
                pass
        except RunBusyError as exc:
            errors.append(exc)

    with locked(run):
        with locked(run):  # the same thread again: reentrant (the front door scores under fit's lock)
            pass
        t = threading.Thread(target=second)
        t.start()
        t.join(10)
    assert len(errors) == 1 and errors[0].pid == os.getpid()


def test_import_cnnlab_and_lock_a_run_without_fcntl(tmp_path: Path) -> None:
    """As on Windows: fcntl cannot be imported; cnnlab imports, and a run can be locked."""
    code = (
        "import sys, warnings; sys.modules['fcntl'] = None; warnings.simplefilter('error')\n"
        "import cnnlab, cnnlab.engine.train, cnnlab.analysis.report\n"
        "from cnnlab.core.runs import RunDir, locked\n"
        f"with locked(RunDir({str(tmp_path / 'r')!r})):\n    print('locked')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "locked", done.stderr


def test_a_reader_of_a_missing_run_creates_no_lock_file(tmp_path: Path) -> None:
    line = one_error_line(CliRunner().invoke(cli, ["evaluate", str(tmp_path / "typo")]))
    assert "does not exist" in line
    assert list(tmp_path.iterdir()) == []
