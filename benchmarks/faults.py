"""Fault injection: kill -9 a real `cnnlab train` at many points, resume it, check nothing was lost.

    python benchmarks/faults.py --data-dir /work/shared/data --subset 2000 --random 12 \
        --out benchmarks/results/faults.json

One uninterrupted reference run, then one trial per kill point:

* aimed: ``CNNLAB_KILL_AT=FILE:PHASE:N`` makes cnnlab SIGKILL itself at the N-th write of FILE,
  either with the new temporary file complete but not yet renamed (``tmp``) or right after the
  rename (``done``) -- every write of a run: config, split, each epoch's last.pt / best.pt /
  metrics.csv, and the final report files;
* random: ``kill -9`` from outside at a uniformly random moment of the run.

Each killed run is then resumed -- alternately by the same command again and by
``cnnlab train --resume RUN`` -- and checked: it exits 0; last.pt and best.pt hold weights
bit-identical (``torch.equal``) to the reference's, for the same epoch; metrics.csv has exactly
one row per epoch with the reference's values (timings aside); report.json has the same test
accuracy; no temporary file is left. The script exits 1 if any trial fails.

Then ``--races`` concurrency trials (issue 24): two ``cnnlab train`` on one new run folder at once
(half of them with the test-only ``CNNLAB_TEST_PAUSE`` widening the race window), a third
``--resume`` and an ``evaluate`` while the winner trains: exactly one may exit 0, the others must be
refused ("being trained by process N", exit 2), and the run must equal the reference.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from provenance import machine_provenance

from cnnlab.core.files import temp_target
from cnnlab.engine.checkpoint import load_checkpoint


def train_cmd(args: argparse.Namespace, run: Path) -> list[str]:
    return [sys.executable, "-m", "cnnlab", "train", "--data-dir", args.data_dir, "--run-dir", str(run),
            "--subset", str(args.subset), "--val-size", str(args.val_size), "--epochs", str(args.epochs),
            "--threads", "1", "--no-train-eval", "--no-progress"]


def resume_cmd(args: argparse.Namespace, run: Path) -> list[str]:
    return [sys.executable, "-m", "cnnlab", "train", "--resume", str(run), "--no-progress"]


def aimed_points(epochs: int, best_epochs: list[int]) -> list[str]:
    """Every write of a run, as FILE:PHASE:N (N counts that file's writes in the run)."""
    writes = ["config.json:1", "split.json:1"]
    for epoch in range(1, epochs + 1):
        writes.append(f"last.pt:{epoch}")
        if epoch in best_epochs:
            writes.append(f"best.pt:{best_epochs.index(epoch) + 1}")
        writes.append(f"metrics.csv:{epoch}")
    writes += ["report.txt:1", "report.json:1", "confusion_matrix.csv:1", "confusion_matrix.png:1"]
    points = []
    for w in writes:
        name, n = w.split(":")
        points += [f"{name}:tmp:{n}", f"{name}:done:{n}"]
    return points


def untimed(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.endswith("_time_s")}


def metrics_rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as fh:
        return [untimed(r) for r in csv.DictReader(fh)]


def check(run: Path, ref: Path, epochs: int) -> list[str]:
    """What differs from the reference run (empty: nothing lost)."""
    problems = []
    for name in ("last.pt", "best.pt"):
        try:
            a, b = load_checkpoint(ref / name), load_checkpoint(run / name)
        except Exception as exc:  # noqa: BLE001 - a missing or unreadable file is a finding, not a crash
            problems.append(f"{name}: {exc}")
            continue
        if a["epoch"] != b["epoch"] or untimed(a["metrics"]) != untimed(b["metrics"]):
            problems.append(f"{name}: epoch/metrics {b['epoch']} {b['metrics']} != {a['epoch']} {a['metrics']}")
        if a["state_dict"].keys() != b["state_dict"].keys() or not all(
                torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"]):
            problems.append(f"{name}: weights differ from the uninterrupted run")
    try:
        rows = metrics_rows(run)
        if len(rows) != epochs:
            problems.append(f"metrics.csv has {len(rows)} rows for {epochs} epochs")
        elif rows != metrics_rows(ref):
            problems.append("metrics.csv values differ from the uninterrupted run")
    except OSError as exc:
        problems.append(f"metrics.csv: {exc}")
    try:
        acc = json.loads((run / "report.json").read_text())["accuracy"]
        if acc != json.loads((ref / "report.json").read_text())["accuracy"]:
            problems.append("report.json accuracy differs")
    except (OSError, KeyError, ValueError) as exc:
        problems.append(f"report.json: {exc}")
    leftovers = [p.name for p in run.rglob("*") if temp_target(p.name) is not None]
    if leftovers:
        problems.append(f"temp files left: {leftovers}")
    return problems


def files_present(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir()) if run.is_dir() else []


def trial(args: argparse.Namespace, ref: Path, run: Path, *, point: str | None, at_s: float | None,
          resume_with: str) -> dict:
    env = {**os.environ}
    if point:
        env["CNNLAB_KILL_AT"] = point
    start = time.perf_counter()
    proc = subprocess.Popen(train_cmd(args, run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if at_s is not None:
        try:
            proc.wait(timeout=at_s)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=args.timeout)
    record = {"point": point or f"random {at_s:.2f}s", "killed": proc.returncode == -signal.SIGKILL,
              "killed_after_s": round(time.perf_counter() - start, 2), "files_at_kill": files_present(run)}
    if proc.returncode not in (0, -signal.SIGKILL):
        record["problems"] = [f"killed run exited {proc.returncode}: {err.decode()[-300:]}"]
        return record
    if not (run / "config.json").exists():
        resume_with = "same command"  # --resume needs the run's config; before it exists only the command knows it
    cmd = train_cmd(args, run) if resume_with == "same command" else resume_cmd(args, run)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    record["resumed_with"] = resume_with
    record["resume_exit"] = done.returncode
    record["resume_said"] = next((line for line in done.stdout.splitlines() if "resum" in line or "rebuilt" in line
                                  or "nothing to train" in line), "")
    record["problems"] = ([f"resume exited {done.returncode}: {done.stderr.strip()[-300:]}"]
                          if done.returncode else check(run, ref, args.epochs))
    return record


# --- concurrency (issue 24): a second writer is always refused, readers never write a stale report ---


def _wait_running(proc: subprocess.Popen, lock: Path, seconds: float = 60) -> None:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline and proc.poll() is None:
        if lock.is_file() and lock.read_text().startswith("train"):
            return
        time.sleep(0.02)


def concurrency_trial(args: argparse.Namespace, ref: Path, work: Path, i: int) -> dict:
    """Two trainers (and a third ``--resume``, and an ``evaluate``) on one new run folder at once.

    Odd trials widen the race window with the test-only pause (``CNNLAB_TEST_PAUSE``, at the lock or
    right after the folder is created); even ones start both trainers within a few milliseconds. The
    resume and the evaluate start as soon as the winner has written config.json. Passes when exactly
    one trainer exits 0, no other process exits 0 *before the winner finished* (each is refused with
    exit 2 and "being trained by process N"), the run equals the uninterrupted reference, and its
    report.json is about best.pt's epoch. A process that exits 0 after the winner finished started
    too late to race it; it is counted as ``late``, not as a pass or a failure.
    """
    args = argparse.Namespace(**{**vars(args), "epochs": args.race_epochs})  # a winner busy long enough to race
    run = work / f"race{i:02d}"
    lock = run.parent / f".{run.name}.lock"
    env = dict(os.environ)
    pause = ["run-locked", "run-created"][(i // 2) % 2] if i % 2 else None
    if pause:
        env["CNNLAB_TEST_PAUSE"] = f"{pause}:2"

    def start(cmd: list[str]) -> subprocess.Popen:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    first = subprocess.Popen(train_cmd(args, run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    if pause:
        _wait_running(first, lock)
    else:
        time.sleep(random.Random(i).uniform(0, 0.05))
    others = [start(train_cmd(args, run))]
    while first.poll() is None and not (run / "config.json").exists():
        time.sleep(0.02)
    others += [start(resume_cmd(args, run)), start([sys.executable, "-m", "cnnlab", "evaluate", str(run)])]
    ended: dict[int, float] = {}
    procs = [first, *others]
    while len(ended) < len(procs):
        for p in procs:
            if p.pid not in ended and p.poll() is not None:
                ended[p.pid] = time.perf_counter()
        time.sleep(0.02)
    errs = {p.pid: p.stderr.read() for p in procs}
    codes = [p.returncode for p in procs]
    winners = [p for p in procs if p.returncode == 0]
    record = {"point": f"race {'pause ' + pause if pause else 'simultaneous'}", "killed": False,
              "exit_codes": codes, "late": 0, "problems": []}
    if not winners:
        record["problems"].append(f"no process finished the run (codes {codes}): {errs[first.pid][-200:]}")
    else:
        winner = min(winners, key=lambda p: ended[p.pid])
        for p in procs:
            if p is winner:
                continue
            if p.returncode == 0:
                if ended[p.pid] < ended[winner.pid]:
                    record["problems"].append("a second process exited 0 while the winner was still training")
                else:
                    record["late"] += 1
            elif not (p.returncode == 2 and "being trained by process" in errs[p.pid]):
                record["problems"].append(f"a refused process said: {errs[p.pid].strip()[-200:]}")
        if ref is not None:
            record["problems"] += check(run, ref, args.epochs)
        if len(metrics_rows(run)) != args.epochs:
            record["problems"].append("metrics.csv does not have one row per epoch")
        if [p.name for p in run.rglob("*") if temp_target(p.name) is not None]:
            record["problems"].append("temporary files left")
        best = load_checkpoint(run / "best.pt")["epoch"]
        if json.loads((run / "report.json").read_text()).get("epoch") != best:
            record["problems"].append("report.json is about another epoch than best.pt")
    shutil.rmtree(run, ignore_errors=True)
    return record


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--subset", type=int, default=2000)
    p.add_argument("--val-size", type=int, default=500)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--random", type=int, default=12, help="random-time kills on top of the aimed ones")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--only", default=None, help="comma-separated aimed points to run (default: every write)")
    p.add_argument("--races", type=int, default=6, help="concurrency trials: two trainers, a resume and an evaluate "
                   "on one new run at once")
    p.add_argument("--race-epochs", type=int, default=6, help="epochs of the race trials' runs (compared with "
                   "the reference only when equal to --epochs)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cnnlab-faults-"))
    ref = work / "reference"
    t0 = time.perf_counter()
    done = subprocess.run(train_cmd(args, ref), capture_output=True, text=True, timeout=args.timeout)
    if done.returncode:
        print(done.stderr, file=sys.stderr)
        return 1
    ref_seconds = time.perf_counter() - t0
    history = load_checkpoint(ref / "last.pt")["history"]
    best_epochs = [int(r["epoch"]) for r in history if r.get("best")]
    points = args.only.split(",") if args.only else aimed_points(args.epochs, best_epochs)
    rng = random.Random(args.seed)
    times = [rng.uniform(0.3, ref_seconds) for _ in range(args.random)]
    print(f"reference run: {ref_seconds:.1f}s; {len(points)} aimed kills + {len(times)} random kills", flush=True)

    results = []
    plan = [(pt, None) for pt in points] + [(None, t) for t in times]
    for i, (point, at_s) in enumerate(plan):
        run = work / f"trial{i:02d}"
        resume_with = "same command" if i % 2 == 0 else "--resume"
        rec = trial(args, ref, run, point=point, at_s=at_s, resume_with=resume_with)
        for _ in range(3):  # a random time after the run already finished kills nothing: draw again, earlier
            if point is not None or rec["killed"]:
                break
            shutil.rmtree(run, ignore_errors=True)
            at_s = rng.uniform(0.3, rec["killed_after_s"])
            rec = trial(args, ref, run, point=None, at_s=at_s, resume_with=resume_with)
        results.append(rec)
        status = "ok" if not rec["problems"] else "FAIL " + "; ".join(rec["problems"])
        print(f"{i + 1:2d}/{len(plan)} {rec['point']:<26} killed={rec['killed']!s:<5} resume: "
              f"{rec.get('resumed_with', '-'):<12} {status}", flush=True)
        shutil.rmtree(run, ignore_errors=True)
    for i in range(args.races):
        rec = concurrency_trial(args, ref if args.race_epochs == args.epochs else None, work, i)
        results.append(rec)
        status = "ok" if not rec["problems"] else "FAIL " + "; ".join(rec["problems"])
        print(f"race {i + 1}/{args.races} {rec['point']:<24} exit codes {rec['exit_codes']} (late {rec['late']}) "
              f"{status}", flush=True)
    shutil.rmtree(work, ignore_errors=True)

    failed = [r for r in results if r["problems"]]
    summary = {
        "command": "python benchmarks/faults.py " + " ".join(sys.argv[1:]),
        "trials": len(results),
        "killed": sum(r["killed"] for r in results),
        "aimed": len(points),
        "random": len(times),
        "races": args.races,
        "races_one_writer": sum(1 for r in results if r["point"].startswith("race") and not r["problems"]),
        "race_processes_late": sum(r.get("late", 0) for r in results),
        "finished_bit_exact": sum(1 for r in results if not r["point"].startswith("race") and not r["problems"]),
        "failed": len(failed),
        "reference_run_s": round(ref_seconds, 1),
        "run": {"subset": args.subset, "val_size": args.val_size, "epochs": args.epochs, "threads": 1},
        "machine": machine_provenance(),  # python, torch, CPU, its speed flags and matmul peaks
        "results": results,
    }
    kills = [r for r in results if not r["point"].startswith("race")]
    print(f"{sum(1 for r in kills if not r['problems'])}/{len(kills)} trials resumed and finished bit-exact "
          f"({summary['killed']} killed: {summary['aimed']} aimed, {summary['random']} random)")
    if args.races:
        print(f"{summary['races_one_writer']}/{summary['races']} races had exactly one writer "
              "(every other process refused: being trained by process N)")
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
