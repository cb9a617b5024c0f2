"""Data-parallel training on one machine: 1 process against N processes (gloo, CPU), real MNIST.

    python benchmarks/bench_distributed.py --data-dir ../shared/data --subset 20000 --epochs 1

Each configuration is a fresh ``cnnlab train`` command (``--nproc N`` for N > 1),
run ``--repeats`` times, interleaved so that a change in machine load hits all
configurations alike:

* ``1 proc x all cores`` — the default single-process run;
* ``1 proc x 1 thread``  — what each of the N processes gets on an N-core machine;
* ``N procs x 1 thread`` — DistributedDataParallel, batch 32 per process.

Reported per run: wall time of the whole command (start-up, data loading,
training, evaluation, test report), the training epochs' time from
``metrics.csv`` (training steps plus the per-epoch evaluation), optimizer steps,
validation and test accuracy. Writes benchmarks/results/distributed.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import machine_provenance

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def provenance(argv: list[str]) -> dict:
    return {**machine_provenance(), "command": " ".join(["python", "benchmarks/bench_distributed.py", *argv])}


def run_once(name: str, nproc: int, threads: int | None, args: argparse.Namespace, workdir: Path) -> dict:
    run_dir = workdir / f"{name.replace(' ', '')}-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "cnnlab", "train", "--data-dir", args.data_dir, "--no-download",
           "--epochs", str(args.epochs), "--no-progress", "--run-dir", str(run_dir), "--batch-size", str(args.batch_size)]
    if args.subset:
        cmd += ["--subset", str(args.subset)]
    if threads:
        cmd += ["--threads", str(threads)]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    report = json.loads((run_dir / "report.json").read_text())
    last = json.loads((run_dir / "config.json").read_text())
    n_train = len(json.loads((run_dir / "split.json").read_text())["train"])
    steps = args.epochs * (n_train // nproc // args.batch_size + (1 if n_train // nproc % args.batch_size else 0))
    return {
        "config": name, "nproc": nproc, "threads_per_process": last["provenance"]["threads"],
        "wall_s": round(wall, 2), "epochs_s": round(sum(float(r["epoch_time_s"]) for r in rows), 2),
        "steps": steps, "val_acc": float(rows[-1]["val_acc"]), "test_acc": report["accuracy"],
        "load_average_1min_before": load,
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--subset", type=int, default=20000, help="training images (0: all 50k)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32, help="per process")
    p.add_argument("--nproc", type=int, default=2, help="processes of the distributed configuration")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", default=str(HERE / "results" / "distributed.json"))
    args = p.parse_args(argv)
    cores = os.cpu_count() or 1
    configs = [
        (f"1 proc x {cores} threads", 1, None),
        ("1 proc x 1 thread", 1, 1),
        (f"{args.nproc} procs x 1 thread", args.nproc, 1),
    ]
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for name, nproc, threads in configs:
                r = run_once(name, nproc, threads, args, Path(tmp))
                results.append(r)
                print(f"[{rep + 1}/{args.repeats}] {name:<22} wall {r['wall_s']:7.1f}s  epochs {r['epochs_s']:7.1f}s  "
                      f"steps {r['steps']:5d}  val acc {r['val_acc']:.4f}  test acc {r['test_acc']:.4f}  "
                      f"(load {r['load_average_1min_before']:.1f})", flush=True)
    print(f"\nmedians over {args.repeats} run(s) each:")
    print(f"{'configuration':<22} {'wall s':>8} {'epochs s':>9} {'steps':>6} {'val acc':>8} {'test acc':>9}")
    summary = []
    for name, _, _ in configs:
        rs = [r for r in results if r["config"] == name]
        row = {
            "config": name,
            "wall_s": statistics.median(r["wall_s"] for r in rs),
            "epochs_s": statistics.median(r["epochs_s"] for r in rs),
            "steps": rs[0]["steps"],
            "val_acc": statistics.median(r["val_acc"] for r in rs),
            "test_acc": statistics.median(r["test_acc"] for r in rs),
        }
        summary.append(row)
        print(f"{name:<22} {row['wall_s']:8.1f} {row['epochs_s']:9.1f} {row['steps']:6d} {row['val_acc']:8.4f} "
              f"{row['test_acc']:9.4f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"provenance": provenance(argv), "runs": results, "summary": summary}, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
