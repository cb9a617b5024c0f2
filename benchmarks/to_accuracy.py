"""`bench.py to99`: time to a test accuracy, measured two ways, each labelled.

- **in-process, imports and data loading excluded** (how tuomaso/train_mnist_fast and airbench
  report): one process imports cnnlab, loads and splits MNIST once, trains one untimed seed (which
  pays the one-time costs: torch._dynamo's import by the optimizer, matplotlib's first figure), then
  times ``train_config`` for each seed: building the model and optimizer, the training steps,
  validation, checkpoints, scoring ``best.pt`` on the test set (with the recipe's TTA) and writing
  the report files. Mean +- standard deviation over the seeds, and how many reached the target.
- **whole process**: ``python -m cnnlab train --recipe R --seed N`` from a fresh interpreter, wall
  clock, for the first ``--process-seeds`` seeds: what a user waits for at the prompt.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def in_process(recipe: str, data_dir: str, seeds: int, threads: int | None) -> list[dict]:
    """``seeds`` timed runs of ``recipe`` in this process, after one untimed warm-up run."""
    import torch

    from cnnlab.core.config import load_recipe
    from cnnlab.data.registry import prepare_data
    from cnnlab.service.training import train_config

    base = load_recipe(recipe).override("data", data_dir=data_dir, download=False)
    base = base.override("train", progress=False, threads=threads)
    bundle = prepare_data(base.data, torch.device("cpu"))  # once: data loading is not timed

    def load(_cfg, _device):
        return bundle

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, seed in enumerate([0, *range(seeds)]):
            cfg = base.override("train", seed=seed)
            t0 = time.perf_counter()
            r = train_config(cfg, Path(tmp) / f"run{i}", log=lambda _line: None, load_data=load)
            seconds = time.perf_counter() - t0
            if i == 0:
                continue  # the warm-up run
            steps = sum(h["epoch_time_s"] - h["eval_time_s"] for h in r.history)
            rows.append({"seed": seed, "seconds": seconds, "training_steps_s": steps, "test_acc": r.test.accuracy})
            print(f"  in-process seed {seed}: {seconds:5.2f} s (training steps {steps:5.2f} s)  "
                  f"test {r.test.accuracy:.2%}", flush=True)
    return rows


def whole_processes(recipe: str, data_dir: str, seeds: int, train_process) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(seeds):
            r = train_process(data_dir, recipe, tmp, ["--seed", str(seed)])
            rows.append({"seed": seed, **r})
            print(f"  whole process seed {seed}: wall {r['wall_s']:5.2f} s  test {r['test_acc']:.2%}", flush=True)
    return rows


def summary(rows: list[dict], key: str, target: float) -> dict:
    xs = [r[key] for r in rows]
    accs = [r["test_acc"] for r in rows]
    return {"mean_s": statistics.fmean(xs), "std_s": statistics.stdev(xs) if len(xs) > 1 else 0.0,
            "median_s": statistics.median(xs), "reached": sum(a >= target for a in accs), "seeds": len(accs),
            "acc_mean": statistics.fmean(accs), "acc_min": min(accs)}


def bench_to_accuracy(a: argparse.Namespace, save, train_process) -> None:
    """Time to a test accuracy: in-process (imports and data loading excluded, mean +- std over seeds) and whole processes."""
    target = a.target
    inner = in_process(a.recipe, a.data_dir, a.seeds, a.threads)
    whole = whole_processes(a.recipe, a.data_dir, a.process_seeds, train_process) if a.process_seeds else []
    s_in = summary(inner, "seconds", target)
    s_steps = summary(inner, "training_steps_s", target)
    print()
    print(f"recipe {a.recipe}, target {target:.1%}:")
    print(f"  in-process, imports and data loading excluded, {s_in['seeds']} seeds: {s_in['mean_s']:.2f} +- "
          f"{s_in['std_s']:.2f} s (training steps alone {s_steps['mean_s']:.2f} +- {s_steps['std_s']:.2f} s); "
          f"test accuracy mean {s_in['acc_mean']:.2%}, min {s_in['acc_min']:.2%}; "
          f"{s_in['reached']}/{s_in['seeds']} seeds reached {target:.1%}")
    result = {"recipe": a.recipe, "target": target, "in_process": {"summary": s_in, "training_steps": s_steps,
                                                                    "runs": inner}}
    if whole:
        s_w = summary(whole, "wall_s", target)
        print(f"  whole process (fresh interpreter, wall clock), {s_w['seeds']} seeds: median {s_w['median_s']:.2f} s, "
              f"mean {s_w['mean_s']:.2f} +- {s_w['std_s']:.2f} s; {s_w['reached']}/{s_w['seeds']} reached {target:.1%}")
        result["whole_process"] = {"summary": s_w, "runs": whole}
    print(f"results: {save(a.name or f'to99_{a.recipe}', result)}")
