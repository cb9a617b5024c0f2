"""What the decoded-data cache's CRC-32 check costs on a cache hit (issue 24; benchmarks/README.md, "Cache check").

    python benchmarks/cache_check.py --data-dir ../shared/data --repeats 5

Copies MNIST's raw files to a temporary folder (the shared copy is read-only, so it gets no cache),
decodes them once (writing the cache), then times, in-process, median of ``--repeats``:
``hit``: both splits loaded from the cache, check included (what a command waits for);
``check``: the CRC-32 alone over the memory-mapped tensors; ``decode``: the raw files decoded
(with their MD5 check) and the cache rewritten, as after a failed check.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cnnlab.data import cache
from cnnlab.data.mnist import load_mnist
from provenance import machine_provenance  # benchmarks/ is on sys.path when run as a script


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(Path(args.data_dir) / "MNIST" / "raw", root / "MNIST" / "raw")
        load_mnist(root, train=True, download=False), load_mnist(root, train=False, download=False)

        def hit() -> None:
            load_mnist(root, train=True, download=False), load_mnist(root, train=False, download=False)

        def check() -> None:
            for name in ("mnist-train", "mnist-t10k"):
                payload = torch.load(cache.cache_path(root / "MNIST", name), mmap=True, weights_only=True)
                assert cache.digest(payload["tensors"]) == payload["digest"]

        def decode() -> None:
            for name in ("mnist-train", "mnist-t10k"):
                cache.cache_path(root / "MNIST", name).unlink()
            hit()

        result = {"hit_s": timed(hit, args.repeats), "check_s": timed(check, args.repeats),
                  "decode_s": timed(decode, args.repeats)}
    print(json.dumps({**{k: round(v, 4) for k, v in result.items()}, "provenance": machine_provenance()}))


if __name__ == "__main__":
    main()
