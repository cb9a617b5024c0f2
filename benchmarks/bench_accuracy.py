"""Test accuracy of a recipe over several seeds: mean, spread, and every run's numbers.

    python benchmarks/bench_accuracy.py --data-dir ../shared/data --recipe mnist-smallcnn \
        --seeds 0 1 2 --threads 1 --out benchmarks/results/accuracy_smallcnn.json

Each seed is a full ``cnnlab`` training run (model init, shuffling and
augmentation seeded; the 50k/10k split is the lesson's, the same for all
seeds); the best-by-validation checkpoint is scored once on the 10k test set.
The JSON holds the recipe, the per-seed results and provenance (versions,
git commit, machine, threads, wall time).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from provenance import machine_provenance

from cnnlab import __version__
from cnnlab.core.config import load_recipe
from cnnlab.core.files import write_json
from cnnlab.service.training import train_config as train


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def summarize(accs: list[float]) -> dict:
    return {
        "mean": statistics.fmean(accs),
        "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "min": min(accs),
        "max": max(accs),
        "n": len(accs),
    }


def combine(paths: list[str], out_path: str) -> None:
    """One summary over the runs of several result files (refused unless their configs match, seeds aside)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    first = parts[0]
    for p, part in zip(paths[1:], parts[1:]):
        if part["config"] != first["config"] or part["recipe"] != first["recipe"]:
            raise SystemExit(f"{p} ran another recipe/config than {paths[0]}; not combining")
    runs = sorted((r for part in parts for r in part["runs"]), key=lambda r: r["seed"])
    seeds = [r["seed"] for r in runs]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"seeds repeat across the files: {seeds}")
    summary = summarize([r["test_accuracy"] for r in runs])
    out = {**first, "summary": summary, "runs": runs,
           "combined_from": [{"file": p, "provenance": part["provenance"]} for p, part in zip(paths, parts)]}
    out.pop("provenance", None)
    write_json(out_path, out)
    print(f"{first['recipe']}: test accuracy {summary['mean']:.4%} +- {summary['std']:.4%} (std over {len(runs)} "
          f"seeds {seeds}; min {summary['min']:.4%}, max {summary['max']:.4%}) -> {out_path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="mnist-smallcnn")
    ap.add_argument("--data-dir", help="the folder holding MNIST/raw (required unless --combine)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads per run (1 is fastest on a shared 2-core machine: no oversubscription)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="benchmarks/results/accuracy.json")
    ap.add_argument("--combine", nargs="+", metavar="JSON", default=None,
                    help="instead of training, merge result files of the same recipe and config (other seeds)")
    args = ap.parse_args()
    if args.combine:
        combine(args.combine, args.out)
        return
    if not args.data_dir:
        ap.error("--data-dir is required")

    cfg = load_recipe(args.recipe).override("data", data_dir=args.data_dir, download=False)
    cfg = cfg.override("train", epochs=args.epochs, threads=args.threads, device=args.device, progress=False,
                       train_eval=False)
    runs = []
    commit = git_commit()  # the code that ran, not whatever is checked out when it ends
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-acc-") as tmp:
        for seed in args.seeds:
            run_cfg = cfg.override("train", seed=seed)
            t0 = time.perf_counter()
            result = train(run_cfg, Path(tmp) / f"seed{seed}", log=lambda s: print(f"  [seed {seed}] {s}", flush=True))
            runs.append({
                "seed": seed,
                "test_accuracy": result.test.accuracy,
                "test_loss": result.test.loss,
                "best_epoch": result.best_epoch,
                "best_val_loss": result.best_val_loss,
                "val_accuracy": [row["val_acc"] for row in result.history],
                "seconds": round(time.perf_counter() - t0, 1),
            })
            print(f"seed {seed}: test accuracy {result.test.accuracy:.4%} ({runs[-1]['seconds']}s)", flush=True)
    accs = [r["test_accuracy"] for r in runs]
    summary = summarize(accs)
    out = {
        "benchmark": "test accuracy over seeds",
        "recipe": args.recipe,
        "config": cfg.to_dict(),
        "summary": summary,
        "runs": runs,
        "provenance": {
            **machine_provenance(),  # CPU, its speed flags and matmul peaks
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "cnnlab_version": __version__,
            "git_commit": commit,
            "torch": str(torch.__version__),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
            "wall_seconds": round(time.perf_counter() - t_all, 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }
    write_json(args.out, out)
    print(f"{args.recipe}: test accuracy {summary['mean']:.4%} +- {summary['std']:.4%} (std over {len(accs)} seeds; "
          f"min {summary['min']:.4%}, max {summary['max']:.4%}) -> {args.out}")


if __name__ == "__main__":
    main()
