"""Data-parallel training: 2 CPU processes on gloo, spawned (--nproc) and under torchrun.

Two multi-process runs are shared by all tests (they dominate this file's time):

* ``two_proc`` — ``cnnlab train``'s worker in 2 processes started by
  ``distributed.spawn`` (what ``--nproc 2`` does); each rank records the split it
  loaded, the training shards it drew and what it printed;
* ``torchrun_restart`` — ``torchrun --max-restarts 1 -m cnnlab train`` (through a
  small wrapper) whose rank 1 is SIGKILLed after epoch 1 on the first attempt;
  torchrun restarts both workers and they resume from last.pt.

Both skip cleanly where the sandbox cannot open a gloo process group.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cnnlab.engine import distributed
from cnnlab.core.config import Config
from cnnlab.core.errors import ConfigError, RunDirError

pytestmark = [
    pytest.mark.skipif(
        not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
        reason="this PyTorch build has no gloo backend",
    ),
    pytest.mark.timeout(300),  # a sandbox that silently drops loopback connections must not hang CI
]

EPOCHS = 2
GLOO_FAILURES = ("could not join the gloo process group", "RendezvousConnectionError", "Address already in use")


def tiny_cfg(data_dir: Path) -> Config:
    cfg = Config().override("data", data_dir=str(data_dir), val_size=100, download=False)
    return cfg.override("train", epochs=EPOCHS, progress=False, threads=1)


def skip_if_gloo_failed(text: str) -> None:
    for marker in GLOO_FAILURES:
        if marker in text:
            pytest.skip(f"cannot open a gloo process group in this sandbox: {marker}")


# --- the spawned 2-process run ------------------------------------------------------------


def _recording_worker(cfg: Config, run_dir: str, out: str) -> None:
    """One worker of the spawned run: record what this rank saw, then run the CLI's worker."""
    import cnnlab.engine.train as T
    from cnnlab.apps.cli import train_and_report

    me = int(os.environ["RANK"])
    outdir = Path(out)
    sys.stdout = open(outdir / f"stdout{me}.txt", "w", buffering=1)  # who prints what
    sys.stderr = open(outdir / f"stderr{me}.txt", "w", buffering=1)
    record: dict = {"orders": {}}

    distributed.ensure_initialized(cfg.train.device)
    try:  # the disagreement check must fire, identically, on every rank
        distributed.same_on_all_ranks(f"value of rank {me}", "a test value")
        record["disagreement"] = None
    except distributed.DistributedError as exc:
        record["disagreement"] = str(exc)

    real_prepare = T.prepare_data

    def prepare(*args, **kwargs):
        data = real_prepare(*args, **kwargs)
        record["split"] = distributed.fingerprint(data.train_indices, data.val_indices)
        record["n_train"] = len(data.train)
        return data

    class Recording(T.TensorBatches):
        def _order(self):
            order = super()._order()
            if self.shuffle:  # the training shard this rank draws in this epoch
                record["orders"].setdefault(str(self.epoch), order.tolist())
            return order

    T.prepare_data, T.TensorBatches = prepare, Recording
    try:
        train_and_report(cfg, run_dir)
    finally:
        record.update(rank=distributed.rank(), world_size=distributed.world_size())
        (outdir / f"record{me}.json").write_text(json.dumps(record))


@pytest.fixture(scope="module")
def two_proc(tmp_path_factory: pytest.TempPathFactory, tiny_mnist: Path) -> dict:
    root = tmp_path_factory.mktemp("dist")
    run_dir, out = root / "run", root / "out"
    out.mkdir()
    code = distributed.spawn(_recording_worker, tiny_cfg(tiny_mnist), str(run_dir), str(out), nproc=2)
    logs = {f.name: f.read_text() for f in out.glob("std*.txt")}
    if code:
        skip_if_gloo_failed("\n".join(logs.values()))
        pytest.fail(f"2-process run exited with {code}: {logs}")
    records = [json.loads((out / f"record{r}.json").read_text()) for r in (0, 1)]
    return {"run": run_dir, "records": records, "logs": logs}


@pytest.fixture(scope="module")
def one_proc(tmp_path_factory: pytest.TempPathFactory, tiny_mnist: Path) -> Path:
    from cnnlab.service.training import train_config as train

    run_dir = tmp_path_factory.mktemp("single") / "run"
    train(tiny_cfg(tiny_mnist), run_dir, log=lambda _: None)
    return run_dir


def test_two_processes_write_one_run_folder_like_a_single_process(two_proc: dict, one_proc: Path) -> None:
    run = two_proc["run"]
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in one_proc.iterdir())
    assert not list(run.parent.glob("*.tmp*"))
    assert json.loads((run / "split.json").read_text()) == json.loads((one_proc / "split.json").read_text())
    two, one = json.loads((run / "config.json").read_text()), json.loads((one_proc / "config.json").read_text())
    assert two["config"] == one["config"]  # the world size is how, not what: it lives in provenance
    assert (two["provenance"]["world_size"], one["provenance"]["world_size"]) == (2, 1)
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0] == (one_proc / "metrics.csv").read_text().splitlines()[0] and len(rows) == EPOCHS + 1
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["trainer"]["world_size"] == 2 and last["epoch"] == EPOCHS
    assert not any(k.startswith("module.") for k in last["state_dict"])  # DDP unwrapped
    assert json.loads((run / "report.json").read_text())["accuracy"] > 0.3  # it learned something


def test_validation_metrics_equal_a_single_process_evaluation(two_proc: dict, tiny_mnist: Path) -> None:
    from cnnlab.engine.checkpoint import load_checkpoint, model_from_checkpoint
    from cnnlab.data.tensors import TensorBatches
    from cnnlab.data.registry import prepare_data
    from cnnlab.engine.step import create_evaluator, run_evaluation

    run = two_proc["run"]
    best = load_checkpoint(run / "best.pt")
    data = prepare_data(tiny_cfg(tiny_mnist).data)
    evaluator = create_evaluator(model_from_checkpoint(best).eval())
    val = run_evaluation(evaluator, TensorBatches(data.val, 37))  # another batch size, one process
    tr = run_evaluation(evaluator, TensorBatches(data.train, 1000))
    assert val["accuracy"] == best["metrics"]["val_acc"]  # counts: exact
    assert val["loss"] == pytest.approx(best["metrics"]["val_loss"], rel=1e-5)  # sums in another order
    assert tr["accuracy"] == best["metrics"]["train_acc"]
    assert tr["loss"] == pytest.approx(best["metrics"]["train_loss"], rel=1e-5)
    row = [r for r in (run / "metrics.csv").read_text().splitlines()[1:] if r.split(",")[0] == str(best["epoch"])][0]
    assert float(row.split(",")[4]) == pytest.approx(val["accuracy"], abs=1e-6)


def test_both_ranks_see_the_same_split_and_train_on_disjoint_shards(two_proc: dict) -> None:
    r0, r1 = two_proc["records"]
    assert (r0["rank"], r1["rank"], r0["world_size"]) == (0, 1, 2)
    run = two_proc["run"]
    saved = json.loads((run / "split.json").read_text())
    expected = distributed.fingerprint(torch.tensor(saved["train"]), torch.tensor(saved["val"]))
    assert r0["split"] == r1["split"] == expected
    n = r0["n_train"]
    for epoch in map(str, range(1, EPOCHS + 1)):
        a, b = set(r0["orders"][epoch]), set(r1["orders"][epoch])
        assert len(a) == len(b) == n // 2 and not a & b  # equal, disjoint shards of this epoch's permutation
    assert r0["orders"]["1"] != r0["orders"]["2"]  # reshuffled every epoch


def test_only_rank_zero_prints_and_disagreements_are_caught(two_proc: dict) -> None:
    logs, (r0, r1) = two_proc["logs"], two_proc["records"]
    assert logs["stdout1.txt"] == "" and logs["stderr1.txt"] == ""
    out0 = logs["stdout0.txt"]
    assert out0.count(f"epoch {EPOCHS}/{EPOCHS}") == 1 and "test accuracy" in out0
    assert r0["disagreement"] == r1["disagreement"] and "rank 1 has 'value of rank 1'" in r0["disagreement"]


# --- torchrun, with a worker killed mid-run ---------------------------------------------


CRASHING_WORKER = textwrap.dedent(
    """
    # `torchrun ... this.py OUT -- cnnlab train args`: cnnlab's CLI, plus a crash and some records.
    import json, os, signal, sys, time
    from pathlib import Path

    import cnnlab.engine.train as T
    from cnnlab.engine import distributed

    out, run_dir = Path(sys.argv[1]), Path(sys.argv[sys.argv.index("--run-dir") + 1])
    rank, attempt = int(os.environ["RANK"]), int(os.environ["TORCHELASTIC_RESTART_COUNT"])
    real_prepare = T.prepare_data

    def prepare(*args, **kwargs):
        data = real_prepare(*args, **kwargs)
        rec = {"split": distributed.fingerprint(data.train_indices, data.val_indices),
               "local_rank": distributed.local_rank(), "world_size": distributed.world_size()}
        (out / f"rank{rank}-attempt{attempt}.json").write_text(json.dumps(rec))
        return data

    class Crashing(T.TensorBatches):
        def set_epoch(self, epoch, start_batch=0):
            if self.shuffle and epoch == 2 and rank == 1 and attempt == 0:
                deadline = time.time() + 60
                while not (run_dir / "metrics.csv").exists() and time.time() < deadline:
                    time.sleep(0.05)  # rank 0 writes last.pt, then metrics.csv, after epoch 1
                os.kill(os.getpid(), signal.SIGKILL)  # a worker dies mid-run
            super().set_epoch(epoch, start_batch)

    T.prepare_data, T.TensorBatches = prepare, Crashing
    sys.argv = ["cnnlab", *sys.argv[sys.argv.index("--") + 1:]]
    from cnnlab.apps.cli import main
    main()
    """
)


@pytest.fixture(scope="module")
def torchrun_restart(tmp_path_factory: pytest.TempPathFactory, tiny_mnist: Path) -> dict:
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    root = tmp_path_factory.mktemp("torchrun")
    script, run_dir, out, logs = root / "worker.py", root / "run", root / "out", root / "logs"
    out.mkdir()
    script.write_text(CRASHING_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("CNNLAB_DATA_DIR", None)
    # As under `srun torchrun` with one task per node: SLURM's local id is 0 for every worker.
    env.update(SLURM_JOB_ID="4242", SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NTASKS="1",
               SLURM_JOB_NUM_NODES="1", SLURM_JOB_NODELIST="localhost")
    cmd = [
        torchrun, "--standalone", "--nnodes", "1", "--nproc-per-node", "2", "--max-restarts", "1",
        "--monitor-interval", "0.1", "--log-dir", str(logs), "--redirects", "3",
        str(script), str(out), "--",
        "train", "--data-dir", str(tiny_mnist), "--no-download", "--val-size", "100", "--epochs", str(EPOCHS),
        "--threads", "1", "--no-progress", "--run-dir", str(run_dir),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    worker_logs = {str(p.relative_to(logs)): p.read_text() for p in sorted(logs.rglob("*.log"))}
    if proc.returncode:
        skip_if_gloo_failed(proc.stderr + "\n".join(worker_logs.values()))
        pytest.fail(f"torchrun exited with {proc.returncode}:\n{proc.stderr[-3000:]}\n{worker_logs}")
    return {"run": run_dir, "out": out, "logs": worker_logs, "stderr": proc.stderr}


def _logs_of(logs: dict, attempt: int, local_rank: int, stream: str) -> str:
    parts = [v for k, v in logs.items() if f"attempt_{attempt}" in k and f"/{local_rank}/{stream}" in k]
    assert len(parts) == 1, sorted(logs)
    return parts[0]


def test_torchrun_restart_resumes_from_last_checkpoint(torchrun_restart: dict, two_proc: dict) -> None:
    logs, out = torchrun_restart["logs"], torchrun_restart["out"]
    first, second = _logs_of(logs, 0, 0, "stdout"), _logs_of(logs, 1, 0, "stdout")
    assert "epoch 1/2" in first and "epoch 2/2" not in first
    assert "resuming" in second and "from epoch 1" in second and "epoch 1/2" not in second and "epoch 2/2" in second
    assert _logs_of(logs, 1, 1, "stdout") == ""  # rank 1 never prints
    recs = {p.stem: json.loads(p.read_text()) for p in out.glob("rank*-attempt*.json")}
    assert sorted(recs) == ["rank0-attempt0", "rank0-attempt1", "rank1-attempt0", "rank1-attempt1"]
    assert len({r["split"] for r in recs.values()}) == 1  # every rank, every attempt: one split
    # torchrun's LOCAL_RANK wins over SLURM_LOCALID (0 for both workers of `srun torchrun`).
    assert [recs[f"rank{r}-attempt1"]["local_rank"] for r in (0, 1)] == [0, 1]
    run = torchrun_restart["run"]
    assert len((run / "metrics.csv").read_text().splitlines()) == EPOCHS + 1
    # The restarted run is the uninterrupted one, to the bit: exact resume on every rank.
    resumed = torch.load(run / "last.pt", weights_only=True)
    straight = torch.load(two_proc["run"] / "last.pt", weights_only=True)
    for key, value in straight["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    assert [r["val_loss"] for r in resumed["history"]] == [r["val_loss"] for r in straight["history"]]


# --- in-process pieces (no extra processes) ------------------------------------------------


def test_training_shards_are_equal_disjoint_and_evaluation_shards_exact() -> None:
    from cnnlab.data.tensors import ImageSet, TensorBatches

    n = 103
    data = ImageSet(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1), torch.arange(n), ["x"])
    seen = []
    for r in range(3):
        b = TensorBatches(data, 8, shuffle=True, seed=5, rank=r, world_size=3)
        b.set_epoch(4)
        seen.append(torch.cat([y for _, y in b]).tolist())
        assert len(b) == len(TensorBatches(data, 8, shuffle=True, rank=0, world_size=3))  # same steps on every rank
    assert [len(s) for s in seen] == [34, 34, 34] and len(set(sum(seen, []))) == 102
    full = TensorBatches(data, 8, shuffle=True, seed=5)
    full.set_epoch(4)
    perm = torch.cat([y for _, y in full]).tolist()
    assert seen[1] == perm[:102][1::3]  # rank r takes every world_size-th image of the same permutation
    evals = [torch.cat([y for _, y in TensorBatches(data, 10, rank=r, world_size=3)]).tolist() for r in range(3)]
    assert sorted(sum(evals, [])) == list(range(n))  # evaluation counts every image exactly once


def test_resume_position_across_world_sizes() -> None:
    saved = {"iteration": 32, "epoch_length": 16, "world_size": 2}
    assert distributed.resume_position(saved, 16) == saved
    assert distributed.resume_position(saved, 32)["iteration"] == 64  # 2 epochs, whatever the steps per epoch
    with pytest.raises(RunDirError, match="middle of an epoch by 2"):
        distributed.resume_position({**saved, "iteration": 40}, 32)


def test_single_process_helpers_are_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in distributed.TORCHRUN_VARS:
        monkeypatch.delenv(k, raising=False)
    assert not distributed.launched_by_torchrun() and not distributed.ensure_initialized("cpu")
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.stop_agreed(True, 3) and not distributed.stop_agreed(False, 10)
    assert distributed.broadcast_object({"a": 1}) == {"a": 1} and distributed.rank_seed(7) == 7
    distributed.same_on_all_ranks("anything", "x")  # nothing to disagree with
    assert distributed.backend_for("cpu") == "gloo"
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not distributed.launched_by_torchrun()  # torchrun with one process: nothing to join
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.launched_by_torchrun()
    with pytest.raises(distributed.DistributedError, match="--nproc_per_node"):
        distributed.launch(print, nproc=2)


def test_worker_errors_are_printed_once(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    def fails(exc: Exception) -> None:
        raise exc

    disagreement = distributed.DisagreementError("the processes disagree about x")
    monkeypatch.setenv("RANK", "1")
    assert distributed.run_worker(fails, (disagreement,)) == 2
    assert distributed.run_worker(fails, (ConfigError("bad value"),)) == 2
    assert distributed.run_worker(fails, (distributed.DistributedError("no GPU 3"),)) == 2
    assert capsys.readouterr().err == "error (rank 1): bad value\nerror (rank 1): no GPU 3\n"  # its own errors only
    monkeypatch.setenv("RANK", "0")
    assert distributed.run_worker(fails, (disagreement,)) == 2
    assert capsys.readouterr().err == "error: the processes disagree about x\n"


def test_cli_nproc_spawns_the_training_worker(monkeypatch: pytest.MonkeyPatch, tiny_mnist: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    import cnnlab.apps.cli as cli

    calls = []
    monkeypatch.setattr(distributed, "spawn", lambda fn, *args, nproc: calls.append((fn, args, nproc)) or 0)
    for k in distributed.TORCHRUN_VARS:
        monkeypatch.delenv(k, raising=False)
    result = CliRunner().invoke(cli.cli, ["train", "--nproc", "2", "--data-dir", str(tiny_mnist), "--run-dir",
                                          str(tmp_path / "r"), "--batch-size", "16"])
    assert result.exit_code == 0, result.output
    (fn, (cfg, run_dir), nproc), = calls
    assert fn is cli.train_and_report and nproc == 2 and cfg.train.batch_size == 16 and run_dir == str(tmp_path / "r")
    assert CliRunner().invoke(cli.cli, ["train", "--nproc", "0"]).exit_code == 2
