"""Prediction speed on image files: the 10k MNIST test images saved as PNG, predicted from disk.

    python benchmarks/bench_predict.py --data-dir ../shared/data --run-dir runs/lenet5

Measures, on one machine in one invocation:

* end to end (`Predictor.predict_files` on the folder: find, read, decode,
  preprocess, batched forward pass) in images/second, for several decoding
  thread counts, median of ``--repeats``;
* the same through the command line (`cnnlab predict RUN DIR -q -o preds.csv`),
  once, including Python and torch start-up;
* the parts: decode + preprocess alone (one thread), forward pass alone;
* correctness: top-1 from the PNG files vs. the model on the dataset tensors,
  accuracy; and how faithful the MNIST reconstruction is (every digit forced
  through crop / refit / recentre instead of being recognised as already
  MNIST-built).

Without ``--run-dir`` a quick model is trained first (1 epoch on 10k images).
Writes benchmarks/results/predict.json (with provenance) and prints a summary.
"""
from __future__ import annotations

import argparse
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


def provenance() -> dict:
    import torch

    return {
        **machine_provenance(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "command": " ".join(["python", "benchmarks/bench_predict.py", *sys.argv[1:]]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--run-dir", default=None, help="trained run (default: train a quick one)")
    ap.add_argument("--work-dir", default=None, help="where the PNGs go (default: a temporary folder)")
    ap.add_argument("--n", type=int, default=10000, help="test images to save and predict")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--out", default=str(HERE / "results" / "predict.json"))
    args = ap.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from cnnlab.data.mnist import load_mnist
    from cnnlab.service.predictor import load
    from cnnlab.data.images import decode_image, mnist_pixels, preprocess

    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="cnnlab-bench-predict-"))
    run_dir = Path(args.run_dir) if args.run_dir else None
    if run_dir is None:
        run_dir = work / "run"
        if not (run_dir / "best.pt").exists():
            print("training a quick model (1 epoch, 10k images) ...", flush=True)
            subprocess.run([sys.executable, "-m", "cnnlab", "train", "--data-dir", args.data_dir, "--run-dir",
                            str(run_dir), "--epochs", "1", "--subset", "10000", "--no-progress"], check=True,
                           stdout=subprocess.DEVNULL)

    test = load_mnist(args.data_dir, train=False, download=False)
    images, labels = test.images[: args.n], test.labels[: args.n]
    folder = work / "pngs"
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i in range(len(images)):
        Image.fromarray(images[i, 0].numpy()).save(folder / f"{i:05d}.png")
    write_s = time.perf_counter() - t0
    n = len(images)
    print(f"wrote {n} PNGs to {folder} in {write_s:.1f}s", flush=True)

    predictor = load(run_dir, batch_size=args.batch_size)
    result: dict = {"provenance": provenance(), "run_dir": str(run_dir), "n": n, "batch_size": args.batch_size,
                    "png_bytes_total": sum(p.stat().st_size for p in folder.iterdir())}

    # End to end through the library, per decoding thread count (warm-up run first: file cache, allocator).
    predictor.predict_files([folder], workers=1)
    end_to_end = {}
    files_top1 = None
    for w in args.workers:
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            res = predictor.predict_files([folder], top_k=3, workers=w)
            times.append(time.perf_counter() - t0)
            assert not res.failed and len(res) == n
            files_top1 = torch.tensor([r.prediction.indices[0] for r in res])
        end_to_end[str(w)] = {"seconds": times, "median_s": statistics.median(times),
                              "images_per_s": n / statistics.median(times)}
        print(f"predict_files, {w} decoding thread(s): {n / statistics.median(times):,.0f} images/s "
              f"(median of {args.repeats}: {statistics.median(times):.2f}s)", flush=True)
    result["end_to_end"] = end_to_end

    # The command line, once, start-up included.
    out_csv = work / "preds.csv"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cnnlab", "predict", str(run_dir), str(folder), "-q", "-o", str(out_csv),
                    "--overwrite", "--eval-batch-size", str(args.batch_size)], check=True, stderr=subprocess.DEVNULL)
    cli_s = time.perf_counter() - t0
    result["cli"] = {"seconds": cli_s, "images_per_s": n / cli_s}
    print(f"cnnlab predict (CLI, incl. start-up): {cli_s:.2f}s = {n / cli_s:,.0f} images/s", flush=True)

    # Parts: decode + preprocess alone, forward alone.
    paths = sorted(folder.iterdir())
    t0 = time.perf_counter()
    inputs = torch.stack([preprocess(decode_image(p), predictor.spec) for p in paths])
    prep_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    logits = predictor.logits(inputs)
    fwd_s = time.perf_counter() - t0
    result["parts"] = {"decode_preprocess_s": prep_s, "decode_preprocess_us_per_image": prep_s / n * 1e6,
                       "forward_s": fwd_s, "forward_images_per_s": n / fwd_s}
    print(f"parts: decode+preprocess {prep_s / n * 1e6:.0f} us/image (1 thread); "
          f"forward {n / fwd_s:,.0f} images/s (batch {args.batch_size})", flush=True)

    # Correctness: files vs tensors; and the forced full reconstruction.
    tensor_logits = predictor.logits(images.float() / 255)
    tensor_top1 = tensor_logits.argmax(1)
    forced = torch.from_numpy(np.stack([mnist_pixels(im[0].numpy(), passthrough=False) for im in images]))
    forced_top1 = predictor.logits(forced.unsqueeze(1) / 255).argmax(1)
    result["correctness"] = {
        "files_vs_tensors_top1_equal": int((files_top1 == tensor_top1).sum()),
        "files_vs_tensors_max_abs_logit_diff": float((logits - tensor_logits).abs().max()),
        "accuracy_from_files": float((files_top1 == labels).float().mean()),
        "accuracy_from_tensors": float((tensor_top1 == labels).float().mean()),
        "forced_reconstruction_accuracy": float((forced_top1 == labels).float().mean()),
        "forced_reconstruction_top1_changed": int((forced_top1 != tensor_top1).sum()),
        "forced_reconstruction_pixels_identical_images": int(
            sum(bool(torch.equal(forced[i], images[i, 0].float())) for i in range(n))),
    }
    c = result["correctness"]
    print(f"top-1 from PNG files == from tensors: {c['files_vs_tensors_top1_equal']}/{n} "
          f"(largest |logit diff| {c['files_vs_tensors_max_abs_logit_diff']:.3g}); accuracy {c['accuracy_from_files']:.2%}")
    print(f"forced reconstruction (crop, fit 20x20, recentre every digit): accuracy "
          f"{c['forced_reconstruction_accuracy']:.2%}, top-1 changed on {c['forced_reconstruction_top1_changed']}/{n}, "
          f"pixel-identical {c['forced_reconstruction_pixels_identical_images']}/{n}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
