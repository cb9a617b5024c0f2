"""The learning-rate finder on the lesson's LeNet-5 and real MNIST (benchmarks/README.md, "Learning-rate finder").

    OMP_NUM_THREADS=1 python benchmarks/lr_find_lenet5.py --data-dir ../shared/data --seeds 7

Prints each seed's suggestions (steepest descent, minimum/10) and their medians, and saves the
first seed's curve as benchmarks/results/lr_find_lenet5.png.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cnnlab
from cnnlab.core.files import save_figure


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--seeds", type=int, default=7)
    ap.add_argument("--num-it", type=int, default=400)
    ap.add_argument("--figure", default=str(Path(__file__).parent / "results" / "lr_find_lenet5.png"))
    args = ap.parse_args()
    steep, minimum = [], []
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        r = cnnlab.lr_find("lenet5", "mnist", data_dir=args.data_dir, download=False, seed=seed, threads=1,
                           num_it=args.num_it)
        steep.append(r.suggestions["steep"])
        minimum.append(r.suggestions["minimum"])
        print(f"seed {seed}: steep {steep[-1]:.2e}  minimum/10 {minimum[-1]:.2e}  steps {len(r.lrs)}"
              f"{' (diverged)' if r.diverged else ''}  {time.perf_counter() - t0:.1f}s", flush=True)
        if seed == 0:
            save_figure(r.plot(), args.figure)
    print(f"median: steep {statistics.median(steep):.2e} (range {min(steep):.2e}-{max(steep):.2e}); "
          f"minimum/10 {statistics.median(minimum):.2e} (range {min(minimum):.2e}-{max(minimum):.2e})")


if __name__ == "__main__":
    main()
