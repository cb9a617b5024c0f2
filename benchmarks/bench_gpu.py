"""cnnlab on a GPU, in one call: seconds per epoch and time to 99% MNIST test accuracy.

    python benchmarks/bench_gpu.py --data-dir ../shared/data            # on a CUDA machine, ~5 min
    python benchmarks/bench_gpu.py --data-dir ../shared/data --with-reference   # + the lesson's script on its CPU

Everything runs as fresh `cnnlab` training processes (bench.py's runner: timed
after imports), with the data resident on the GPU (cnnlab decodes the dataset
once into device tensors; batches are slices of them). Variants:

- the lesson's recipe (LeNet-5, batch 32, Adam 1e-3, 5 epochs with train and
  validation evaluation, test report) in float32, with bf16 autocast, and with
  bf16 + ``torch.compile(mode="reduce-overhead")`` (CUDA graphs: a batch-32
  LeNet-5 step is a few dozen tiny kernels, so launch overhead is the cost);
- time to >= 99.0% test accuracy: the ``fast99`` recipe (3 epochs, batch 128)
  in float32 and in bf16 + compile, over ``--seeds`` seeds.

It prints a table and writes benchmarks/results/gpu.json with provenance
(GPU name, driver-visible CUDA version, torch). ``--device cpu --quick`` runs the
same code path on a small subset (a smoke test for machines without a GPU; its
figures mean nothing).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import cnnlab, reference, save  # noqa: E402  (benchmarks/ is not a package)

VARIANTS = {
    "fp32": {},
    "bf16": {"amp": "bf16"},
    "bf16+compile": {"amp": "bf16", "compile": "reduce-overhead"},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --quick: a smoke test)")
    p.add_argument("--seeds", type=int, default=3, help="seeds for the time-to-99%% runs")
    p.add_argument("--quick", action="store_true", help="1 epoch on 2,000 images: checks the script, measures nothing")
    p.add_argument("--with-reference", action="store_true", help="also time the lesson's script (on this host's CPU)")
    p.add_argument("--name", default="gpu", help="results file name")
    a = p.parse_args()

    import torch

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run this on a GPU machine (or --device cpu --quick to smoke-test it)")
    quick = {"data": {"subset": 2000}} if a.quick else {}
    epochs = 1 if a.quick else None

    def run(recipe: str | None, variant: str, **train: object) -> dict:
        over = {"train": {"device": a.device, **VARIANTS[variant], **train, **({"epochs": epochs} if epochs else {})},
                **quick}
        r = cnnlab(a.data_dir, recipe, **over)
        r["variant"] = variant
        print(f"  {recipe or 'tutorial':8s} {variant:13s} seed {train.get('seed', 0)}: {r['inner_s']:6.2f}s  "
              f"epochs {[round(s, 2) for s in r['epoch_s']]}  test acc {r['test_acc']:.4f}", flush=True)
        return r

    out: dict = {"device": a.device, "quick": a.quick, "lesson": {}, "time_to_99": {}}
    if a.device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        out["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                      "cuda": torch.version.cuda}

    print("lesson recipe (5 epochs, batch 32, train + val evaluation every epoch, test report):")
    for variant in VARIANTS:
        out["lesson"][variant] = run(None, variant)
    print("time to >= 99.0% test accuracy (fast99: LeNet-5, batch 128, one-cycle, 3 epochs):")
    for variant in ("fp32", "bf16+compile"):
        runs = [run("fast99", variant, seed=s) for s in range(a.seeds)]
        out["time_to_99"][variant] = {
            "runs": runs, "median_s": statistics.median(r["inner_s"] for r in runs),
            "test_acc": [r["test_acc"] for r in runs], "all_reached": all(r["test_acc"] >= 0.99 for r in runs),
        }
    if a.with_reference:
        out["reference"] = reference(a.data_dir, 1 if a.quick else 5)

    print()
    print(f"{'lesson recipe':22s}{'total s':>9s}{'s/epoch (median)':>18s}{'test acc':>10s}")
    for variant, r in out["lesson"].items():
        print(f"{variant:22s}{r['inner_s']:9.2f}{statistics.median(r['epoch_s']):18.2f}{r['test_acc']:10.4f}")
    for variant, r in out["time_to_99"].items():
        print(f"time to 99% ({variant}): median {r['median_s']:.2f}s over {len(r['runs'])} seeds, "
              f"test acc {r['test_acc']}, every seed >= 99%: {r['all_reached']}")
    if "reference" in out:
        ref = out["reference"]
        print(f"reference (the lesson's script, this host's CPU): {ref['inner_s']:.1f}s in-process, "
              f"test acc {ref['test_acc']:.4f}; lesson recipe fp32 on the GPU is "
              f"{ref['inner_s'] / out['lesson']['fp32']['inner_s']:.1f}x faster")
    print(f"results: {save(a.name, out)}")


if __name__ == "__main__":
    main()
