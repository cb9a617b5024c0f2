"""cnnlab speed and accuracy against the lesson's own pipeline, measured side by side.

Every speed figure is a ratio against ../shared/bench/seed_reference.py run in the
same invocation, interleaved (reference, cnnlab, reference, cnnlab, ...), because
absolute times on a shared machine swing by 2x from minute to minute. Medians of
the repeats are reported; every raw measurement is kept in the JSON.

    python benchmarks/bench.py lesson     --data-dir ../shared/data --repeats 3
    python benchmarks/bench.py fast       --data-dir ../shared/data --seeds 5
    python benchmarks/bench.py flops
    python benchmarks/bench.py throughput --data-dir ../shared/data
    python benchmarks/bench.py threads    --data-dir ../shared/data
    python benchmarks/bench.py profile    --data-dir ../shared/data
    python benchmarks/bench.py malloc     --data-dir ../shared/data
    python benchmarks/bench.py tried      --data-dir ../shared/data
    python benchmarks/bench.py wall       --data-dir ../shared/data --repeats 3
    python benchmarks/bench.py startup    --data-dir ../shared/data --repeats 5
    python benchmarks/bench.py limit      --data-dir ../shared/data --recipe fast
    python benchmarks/bench.py to99       --data-dir ../shared/data --recipe fast --seeds 10
    python benchmarks/bench.py tricks     --data-dir ../shared/data

Each prints a table and writes benchmarks/results/<name>.json with provenance.
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
REFERENCE = REPO.parent / "shared" / "bench" / "seed_reference.py"


# --- helpers -------------------------------------------------------------------------------


def provenance() -> dict:
    import torch

    return {
        **machine_provenance(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def run_json_lines(cmd: list[str], timeout: float = 3600, env: dict | None = None) -> tuple[float, list[dict], str]:
    """Run a command; return (wall seconds, JSON objects it printed, stderr tail)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    objs = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                objs.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return wall, objs, proc.stderr[-500:]


def reference(data_dir: str, epochs: int, *, no_train_eval: bool = False, threads: int | None = None) -> dict:
    """Run the lesson's script unchanged; ``threads`` only sets OMP_NUM_THREADS in its environment."""
    if not REFERENCE.exists():
        raise SystemExit(f"the reference {REFERENCE} is missing")
    cmd = [sys.executable, str(REFERENCE), "--data-dir", data_dir, "--epochs", str(epochs)]
    if no_train_eval:
        cmd.append("--no-train-eval")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    wall, objs, _ = run_json_lines(cmd, env=env)
    summary = next(o for o in objs if o.get("summary"))
    epochs_ = [o for o in objs if "epoch" in o and not o.get("summary")]
    # Its per-epoch lines give the training part (train_s) and the whole epoch (epoch_s).
    train_s, epoch_s = sum(e["train_s"] for e in epochs_), sum(e["epoch_s"] for e in epochs_)
    return {"wall_s": wall, "inner_s": summary["total_s"], "test_acc": summary["test_acc"],
            "val_acc": epochs_[-1]["valid_acc"] if epochs_ else None,
            "best_val_acc": max((e["valid_acc"] for e in epochs_), default=None),
            "phases_s": phases(train_s, epoch_s - train_s, summary["total_s"] - epoch_s)}


def phases(training: float, evaluation: float, rest: float) -> dict:
    """Where a run's in-process time went: training steps, the per-epoch evaluation passes, and the
    rest (data loading, model set-up, checkpoints, the test-set report)."""
    return {"training": round(training, 2), "evaluation": round(evaluation, 2), "rest": round(rest, 2)}


# "In-process" time starts after imports, as the reference's does (its torch, torchvision,
# ignite and numpy imports come before its timer). cnnlab imports torchvision and
# scikit-learn lazily, inside train(), so the runner imports them first; the process wall
# time still counts every import on both sides.
CNNLAB_RUNNER = r"""
import json, sys, tempfile
import sklearn.metrics, torchvision.datasets  # noqa: F401  (imported before the timer, as in the reference)
from cnnlab.core.config import Config, load_recipe
from cnnlab.service.training import train_config as train
args = json.loads(sys.argv[1])
cfg = load_recipe(args["recipe"]) if args.get("recipe") else Config()
for section, values in args.get("override", {}).items():
    cfg = cfg.override(section, **values)
with tempfile.TemporaryDirectory() as tmp:
    r = train(cfg, tmp + "/run", log=lambda s: None)
best = next(h for h in r.history if h["epoch"] == r.best_epoch)
print(json.dumps({"inner_s": r.seconds, "test_acc": r.test.accuracy, "val_acc": r.history[-1]["val_acc"],
                  "best_val_acc": best["val_acc"], "best_epoch": r.best_epoch,
                  "epoch_s": [h["epoch_time_s"] for h in r.history], "eval_s": [h["eval_time_s"] for h in r.history]}))
"""


def cnnlab(data_dir: str, recipe: str | None = None, **override: dict) -> dict:
    args = {"recipe": recipe, "override": {**override, "data": {"data_dir": data_dir, **override.get("data", {})}}}
    args["override"].setdefault("train", {})["progress"] = False
    wall, objs, _ = run_json_lines([sys.executable, "-c", CNNLAB_RUNNER, json.dumps(args)])
    r = objs[-1]
    epoch_s, eval_s = sum(r["epoch_s"]), sum(r["eval_s"])
    return {"wall_s": wall, **r, "phases_s": phases(epoch_s - eval_s, eval_s, r["inner_s"] - epoch_s)}


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> str:
    return f"{median(xs):.4f} (min {min(xs):.4f}, max {max(xs):.4f})" if xs else "-"


def save(name: str, result: dict) -> Path:
    out = HERE / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"provenance": provenance(), **result}, indent=2) + "\n")
    return out


# --- benchmarks ----------------------------------------------------------------------------


PHASES = {"training": "  training steps (s)", "evaluation": "  eval passes (s)", "rest": "  everything else (s)"}


def bench_lesson(a: argparse.Namespace) -> None:
    """The lesson's exact recipe (5 epochs, train+val eval every epoch, test report): ours vs the reference.

    The reference runs as written (torch's default threads: every core). With
    ``--ref-1thread`` it also runs with OMP_NUM_THREADS=1, to show how much of the
    speed-up is cnnlab's code and how much its thread choice.
    """
    who_all = ["ref", "ours"] + (["ref1t"] if a.ref_1thread else [])
    pairs = []
    for i in range(a.repeats):
        order = who_all[i % len(who_all):] + who_all[: i % len(who_all)]
        pair: dict = {"loadavg_before": os.getloadavg()[0]}
        for who in order:
            if who == "ours":
                train = {"epochs": a.epochs, **({"threads": a.threads} if a.threads else {})}
                pair[who] = cnnlab(a.data_dir, train=train)
            else:
                pair[who] = reference(a.data_dir, a.epochs, threads=1 if who == "ref1t" else None)
            print(f"  repeat {i + 1} {who:5s}: wall {pair[who]['wall_s']:.1f}s  in-process {pair[who]['inner_s']:.1f}s  "
                  f"test acc {pair[who]['test_acc']:.4f}  (load {os.getloadavg()[0]:.1f})", flush=True)
        for who in [w for w in who_all if w != "ours"]:
            pair[f"ratio_wall_{who}"] = pair[who]["wall_s"] / pair["ours"]["wall_s"]
            pair[f"ratio_inner_{who}"] = pair[who]["inner_s"] / pair["ours"]["inner_s"]
        pairs.append(pair)
    summary: dict = {}
    for who in who_all:
        summary[f"{who}_wall_s"] = median([p[who]["wall_s"] for p in pairs])
        summary[f"{who}_test_acc"] = [p[who]["test_acc"] for p in pairs]
        summary[f"{who}_val_acc"] = [p[who]["val_acc"] for p in pairs]
        summary[f"{who}_phases_s"] = {k: median([p[who]["phases_s"][k] for p in pairs]) for k in PHASES}
        if who != "ours":
            summary[f"speedup_wall_vs_{who}"] = median([p[f"ratio_wall_{who}"] for p in pairs])
            summary[f"speedup_in_process_vs_{who}"] = median([p[f"ratio_inner_{who}"] for p in pairs])
    names = {"ref": "reference", "ref1t": "reference 1 thr", "ours": "cnnlab"}
    print()
    print(f"lesson recipe, {a.epochs} epochs, {a.repeats} interleaved repeats (median)")
    print(f"{'':22s}" + "".join(f"{names[w]:>17s}" for w in who_all))
    print(f"{'wall time (s)':22s}" + "".join(f"{summary[w + '_wall_s']:17.1f}" for w in who_all))
    print(f"{'test accuracy':22s}" + "".join(f"{median(summary[w + '_test_acc']):17.4f}" for w in who_all))
    print(f"{'final val accuracy':22s}" + "".join(f"{median(summary[w + '_val_acc']):17.4f}" for w in who_all))
    for k in PHASES:  # where the in-process time went
        print(f"{PHASES[k]:22s}" + "".join(f"{summary[w + '_phases_s'][k]:17.1f}" for w in who_all))
    for who in who_all:
        if who != "ours":
            print(f"speed-up vs {names[who]}: {summary['speedup_wall_vs_' + who]:.2f}x end to end (process wall), "
                  f"{summary['speedup_in_process_vs_' + who]:.2f}x in-process (after imports)")
    print(f"results: {save(a.name or 'lesson', {'summary': summary, 'pairs': pairs})}")


def bench_fast(a: argparse.Namespace) -> None:
    """Time to the lesson's accuracy with the `fast` recipe (and to 99% with `fast99`), over seeds."""
    ref = reference(a.data_dir, 5)
    print(f"  reference: in-process {ref['inner_s']:.1f}s, wall {ref['wall_s']:.1f}s, test acc {ref['test_acc']:.4f}", flush=True)
    out: dict = {"reference": ref, "recipes": {}}
    for recipe, target in (("fast", 0.989), ("fast99", 0.990)):
        runs = []
        for seed in range(a.seeds):
            r = cnnlab(a.data_dir, recipe, train={"seed": seed})
            runs.append(r)
            print(f"  {recipe} seed {seed}: in-process {r['inner_s']:.2f}s  test acc {r['test_acc']:.4f}", flush=True)
        ref2 = reference(a.data_dir, 5)  # bracket the cnnlab runs with reference runs
        ref_s = median([ref["inner_s"], ref2["inner_s"]])
        t = median([r["inner_s"] for r in runs])
        out["recipes"][recipe] = {
            "target": target, "runs": runs, "reference_after": ref2,
            "median_s": t, "speedup": ref_s / t,
            "all_reached": all(r["test_acc"] >= target for r in runs),
            "test_acc": [r["test_acc"] for r in runs],
        }
        ref = ref2
    print()
    for recipe, r in out["recipes"].items():
        print(f"{recipe:7s} target {r['target']:.3f}: median {r['median_s']:.2f}s, {r['speedup']:.1f}x faster than the "
              f"reference's full run; test acc {spread(r['test_acc'])}; every seed reached it: {r['all_reached']}")
    print(f"results: {save(a.name or 'fast', out)}")


def bench_flops(a: argparse.Namespace) -> None:
    """LeNet-5 training FLOP/s at batch 256 against a large float32 matmul, in the same process."""
    import torch
    import torch.nn as nn

    from cnnlab.engine.step import build_optimizer
    from cnnlab.core.runtime import default_threads
    from cnnlab.accel.malloc import tune_malloc
    from cnnlab.core.config import OptimConfig
    from cnnlab.accel.fastpath import training_forward
    from cnnlab.models import create_model

    torch.set_num_threads(a.threads or default_threads())
    tune_malloc()  # as cnnlab's train() does
    n = 2048
    x, y = torch.randn(n, n), torch.randn(n, n)
    rates = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(5):
            x @ y
        rates.append(5 * 2 * n**3 / (time.perf_counter() - t0))
    peak = max(rates)

    model = create_model("lenet5").to(memory_format=torch.channels_last)
    macs, first = layer_macs(model, (1, 28, 28))
    # forward + weight gradients + input gradients (none for the first layer: the input needs none)
    flop_per_image = 2 * (3 * macs - first)
    forward = training_forward(model)  # the forward pass cnnlab's trainer runs
    opt = build_optimizer(OptimConfig(), model.parameters(), torch.device("cpu"))
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    xb = torch.rand(a.batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    yb = torch.randint(0, 10, (a.batch,))
    step_rates = []
    for rep in range(6):
        t0 = time.perf_counter()
        for _ in range(40):
            opt.zero_grad(set_to_none=True)
            loss_fn(forward(xb), yb).backward()
            opt.step()
        if rep:
            step_rates.append(40 * a.batch * flop_per_image / (time.perf_counter() - t0))
    train_rate = median(step_rates)
    result = {"matmul_flops": peak, "lenet_train_flops": train_rate, "fraction": train_rate / peak,
              "flop_per_image": flop_per_image, "macs_per_image": macs, "batch": a.batch,
              "threads": torch.get_num_threads()}
    print(f"float32 matmul {n}x{n}: {peak / 1e9:.1f} GFLOP/s (best of 5)")
    print(f"LeNet-5 training, batch {a.batch}: {train_rate / 1e9:.1f} GFLOP/s "
          f"({flop_per_image / 1e6:.2f} MFLOP per image) = {result['fraction']:.0%} of the matmul rate")
    print(f"results: {save(a.name or 'flops', result)}")


def layer_macs(model, shape: tuple[int, int, int]) -> tuple[int, int]:
    """Multiply-adds of conv and linear layers for one image, and those of the first layer."""
    import torch
    import torch.nn as nn

    counts: list[int] = []

    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv2d):
            counts.append(out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1])
        elif isinstance(mod, nn.Linear):
            counts.append(mod.in_features * mod.out_features)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return sum(counts), counts[0]


def bench_throughput(a: argparse.Namespace) -> None:
    """Evaluation throughput on the 10k MNIST test set (images per second), ours vs DataLoader+ToTensor."""
    import torch
    import torch.utils.data as tdata
    import torchvision.transforms as transforms
    from torchvision.datasets import MNIST

    from cnnlab.data.mnist import load_mnist
    from cnnlab.core.runtime import default_threads
    from cnnlab.inference import predict_logits
    from cnnlab.models import create_model

    torch.set_num_threads(a.threads or default_threads())
    model = create_model("lenet5").eval()
    test = load_mnist(a.data_dir, train=False, download=False)
    ref_ds = MNIST(a.data_dir, train=False, download=False, transform=transforms.ToTensor())
    ours, ref = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        with torch.no_grad():
            for xb, _ in tdata.DataLoader(ref_ds, batch_size=512):
                model(xb)
        ref.append(len(ref_ds) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        predict_logits(model, test, batch_size=256, channels_last=True)
        ours.append(len(test) / (time.perf_counter() - t0))
    result = {"ours_images_per_s": median(ours), "reference_images_per_s": median(ref), "ratio": median(ours) / median(ref)}
    print(f"test-set evaluation: cnnlab {result['ours_images_per_s']:,.0f} img/s, "
          f"DataLoader+ToTensor {result['reference_images_per_s']:,.0f} img/s ({result['ratio']:.1f}x)")
    print(f"results: {save(a.name or 'throughput', result)}")


def lesson_step(pool, batch_size: int = 32, *, channels_last: bool = True, forward=None):
    """A fresh LeNet-5 + the lesson's optimizer and loss; returns a function running one training step
    on the next shuffled batch of ``pool`` (batch 32 unless told), with the forward pass cnnlab's
    trainer uses (``cnnlab.fastpath.training_forward``). ``forward(model)``, if given, returns the
    function to run instead; the step function's ``.model`` is the model."""
    import torch
    import torch.nn as nn

    from cnnlab.core.config import OptimConfig
    from cnnlab.data.tensors import TensorBatches
    from cnnlab.engine.step import build_optimizer
    from cnnlab.accel.fastpath import training_forward
    from cnnlab.models import create_model

    model = create_model("lenet5")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    fwd = (forward or training_forward)(model)
    opt = build_optimizer(OptimConfig(), model.parameters(), torch.device("cpu"))
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    batches = TensorBatches(pool, batch_size, shuffle=True, drop_last=True, channels_last=channels_last)
    it = iter(batches)

    def step() -> None:
        nonlocal it
        try:
            x, y = next(it)
        except StopIteration:  # a long measurement runs past one epoch of the pool
            it = iter(batches)
            x, y = next(it)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(fwd(x), y)
        loss.item()
        loss.backward()
        opt.step()

    step.model = model  # type: ignore[attr-defined]
    return step


def _eager(model):
    """The model's own forward, in the lesson's layer order (ReLU before each max-pool)."""
    return model


def _onednn_pool_then_relu(model):
    """ReLU after each max-pool (as cnnlab's trainer runs LeNet-5), with the max-pools run by oneDNN
    (``mkldnn_max_pool2d``, which has its own backward) on oneDNN tensors; the features come back
    as dense NCHW tensors."""
    import torch

    f = model.features

    def pool(z):
        return torch.mkldnn_max_pool2d(z.to_mkldnn(), [2, 2], [2, 2]).to_dense()

    def forward(x):
        z = torch.relu(pool(f[0](x)))
        z = torch.relu(pool(f[3](z)))
        return model.classifier(torch.flatten(z, 1))

    return forward


def bench_tried(a: argparse.Namespace) -> None:
    """Exact variants of the lesson's training step at batch 32 and 256, against the eager step in the
    lesson's layer order: cnnlab's step (ReLU after max-pool), NCHW, and oneDNN's max-pool. Each variant
    is checked bit for bit against the eager step of its memory layout."""
    import torch

    from cnnlab.data.mnist import load_mnist
    from cnnlab.core.runtime import default_threads
    from cnnlab.accel.malloc import tune_malloc

    torch.set_num_threads(a.threads or default_threads())
    tune_malloc()
    pool = load_mnist(a.data_dir, train=True, download=False)
    eager_cl, eager_nchw = "eager, channels-last (lesson's order)", "eager, NCHW"
    variants = {  # name: (channels_last, forward (None: cnnlab's), the variant it must equal bit for bit)
        eager_cl: (True, _eager, None),
        "cnnlab: ReLU after pool, channels-last": (True, None, eager_cl),
        eager_nchw: (False, _eager, None),
        "ReLU after pool, NCHW": (False, None, eager_nchw),
        "oneDNN pool + ReLU after, NCHW": (False, _onednn_pool_then_relu, eager_nchw),
        "oneDNN pool + ReLU after, ch-last": (True, _onednn_pool_then_relu, eager_cl),
    }
    result: dict = {"threads": torch.get_num_threads(), "batches": {}}
    for bs in (32, 256):
        steps = {}
        for name, (cl, fwd, _) in variants.items():
            torch.manual_seed(0)  # the same initial weights and batch order for every variant
            steps[name] = lesson_step(pool, bs, channels_last=cl, forward=fwd)
        n = max(5, 3200 // bs)
        for step in steps.values():  # warm-up, and the same number of updates before the check
            for _ in range(n):
                step()
        times: dict = {name: [] for name in steps}
        for _ in range(a.repeats):  # interleaved blocks of n steps
            for name, step in steps.items():
                t0 = time.perf_counter()
                for _ in range(n):
                    step()
                times[name].append((time.perf_counter() - t0) / n * 1e3)
        base = median(times[eager_cl])
        rows = {}
        for name, (_, _, twin) in variants.items():
            same = None
            if twin:
                same = all(torch.equal(p, q) for p, q in zip(steps[name].model.parameters(), steps[twin].model.parameters()))
            rows[name] = {"ms_per_step": median(times[name]), "speedup": base / median(times[name]),
                          "bit_identical_to": twin if same else None, "all_ms": times[name]}
            if twin and not same:
                print(f"  warning: {name} differs from {twin}")
        result["batches"][str(bs)] = rows
        print(f"batch {bs}, median of {a.repeats} interleaved blocks of {n} steps:")
        for name, r in rows.items():
            check = f"  bit-identical to {r['bit_identical_to']}" if r["bit_identical_to"] else ""
            print(f"  {name:40s}{r['ms_per_step']:8.2f} ms/step  {r['speedup']:5.2f}x{check}")
    print(f"results: {save(a.name or 'tried', result)}")


def bench_threads(a: argparse.Namespace) -> None:
    """Batch-32 LeNet-5 training steps and evaluation with 1 vs 2 (..) threads, interleaved in one process."""
    import torch

    from cnnlab.data.tensors import TensorBatches
    from cnnlab.data.mnist import load_mnist
    from cnnlab.models import create_model

    pool = load_mnist(a.data_dir, train=True, download=False)

    def steps(threads: int, n: int = 300) -> float:
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        step = lesson_step(pool)
        for _ in range(20):
            step()
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        return (time.perf_counter() - t0) / n * 1e3

    def evaluate(threads: int, n: int = 20_000) -> float:
        torch.set_num_threads(threads)
        model = create_model("lenet5").eval().to(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        with torch.no_grad():
            for x, _ in TensorBatches(pool.subset(range(n)), 500, channels_last=True):
                model(x)
        return (time.perf_counter() - t0) / n * 1e6

    counts = sorted({1, 2, os.cpu_count() or 1})
    raw: dict[str, list[float]] = {}
    for _ in range(a.repeats):
        for th in counts:
            raw.setdefault(f"train_ms_per_step_{th}t", []).append(steps(th))
            raw.setdefault(f"eval_us_per_image_{th}t", []).append(evaluate(th))
    for k, v in raw.items():
        print(f"{k:26s} median {median(v):8.2f}   runs {[round(x, 2) for x in v]}")
    print(f"results: {save(a.name or 'threads', {'raw': raw, 'median': {k: median(v) for k, v in raw.items()}})}")


def bench_profile(a: argparse.Namespace) -> None:
    """Where a batch-32 LeNet-5 training step spends its time (torch.profiler, self CPU time per op)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from cnnlab.data.mnist import load_mnist
    from cnnlab.core.runtime import default_threads

    torch.set_num_threads(a.threads or default_threads())
    step = lesson_step(load_mnist(a.data_dir, train=True, download=False))

    for _ in range(30):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(200):
            step()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows)
    table = [{"op": e.key, "calls_per_step": e.count / 200, "us_per_step": e.self_cpu_time_total / 200,
              "share": e.self_cpu_time_total / total} for e in rows[:15]]
    print(f"{'op (self CPU time)':45s}{'us/step':>10s}{'share':>8s}{'calls':>7s}")
    for r in table:
        print(f"{r['op'][:44]:45s}{r['us_per_step']:10.0f}{r['share']:8.1%}{r['calls_per_step']:7.1f}")
    print(f"total {total / 200 / 1e3:.2f} ms per step (profiled, {torch.get_num_threads()} thread(s))")
    print(f"results: {save(a.name or 'profile', {'top_ops': table, 'ms_per_step': total / 200 / 1e3})}")


MALLOC_PROBE = r"""
import json, sys, time
import torch
sys.path.insert(0, "benchmarks")
from bench import lesson_step
from cnnlab.data import TensorBatches, load_mnist
from cnnlab.engine import create_evaluator, run_evaluation
from cnnlab.accel.malloc import tune_malloc
from cnnlab.models import create_model
torch.set_num_threads(1)
print("tuned", tune_malloc(), file=sys.stderr)  # a no-op under CNNLAB_NO_MALLOC_TUNING=1
out = {}
pool = load_mnist(sys.argv[1], train=True, download=False)
for bs in (32, 64, 128, 256):
    torch.manual_seed(0)
    step = lesson_step(pool, bs)
    for _ in range(10):
        step()
    n = max(20, 4000 // bs)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        best = min(best, (time.perf_counter() - t0) / n)
    out[f"train_ms_per_step_bs{bs}"] = best * 1e3
test = load_mnist(sys.argv[1], train=False, download=False)
m = create_model("lenet5").to(memory_format=torch.channels_last)
ev = create_evaluator(m)
for bs in (256, 1000):
    batches = TensorBatches(test, bs, channels_last=True)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        run_evaluation(ev, batches)
        best = min(best, time.perf_counter() - t0)
    out[f"eval_images_per_s_bs{bs}"] = len(test) / best
print(json.dumps(out))
"""


def bench_malloc(a: argparse.Namespace) -> None:
    """LeNet-5 training steps and test-set evaluation with and without cnnlab's glibc malloc tuning."""
    raw: dict[str, dict[str, list[float]]] = {"default": {}, "tuned": {}}
    for _ in range(a.repeats):
        for name in ("default", "tuned"):
            env = {**os.environ, "CNNLAB_NO_MALLOC_TUNING": "1" if name == "default" else "0"}
            _, objs, _ = run_json_lines([sys.executable, "-c", MALLOC_PROBE, a.data_dir], env=env)
            for k, v in objs[-1].items():
                raw[name].setdefault(k, []).append(v)
    med = {name: {k: median(v) for k, v in d.items()} for name, d in raw.items()}
    print(f"{'1 thread, median of ' + str(a.repeats):32s}{'glibc default':>15s}{'cnnlab tuned':>15s}{'speed-up':>10s}")
    for k in med["default"]:
        d, t = med["default"][k], med["tuned"][k]
        gain = d / t if k.startswith("train") else t / d
        print(f"{k:32s}{d:15.2f}{t:15.2f}{gain:9.2f}x")
    print(f"results: {save(a.name or 'malloc', {'raw': raw, 'median': med})}")


# --- whole processes: what a user waits for ----------------------------------------------------


def cnnlab_cli(args: list[str], timeout: float = 3600) -> tuple[float, str]:
    """Run ``python -m cnnlab ARGS`` from this checkout (its src/ first on the path); (wall seconds, stdout)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cnnlab", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): cnnlab {' '.join(args)}\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def train_process(data_dir: str, recipe: str | None, tmp: str, extra: list[str] = ()) -> dict:
    """`cnnlab train [--recipe R]` as a whole process: wall, the in-process seconds it prints, test accuracy."""
    import re

    run_dir = tempfile.mkdtemp(dir=tmp)
    args = ["train", "--data-dir", data_dir, "--no-download", "--no-progress", "--run-dir", run_dir + "/run",
            *(["--recipe", recipe] if recipe else []), *extra]
    wall, out = cnnlab_cli(args)
    m = re.search(r"test accuracy ([0-9.]+)%.*\(([0-9.]+)s\)", out)
    if not m:
        raise SystemExit(f"could not read the test accuracy from cnnlab train's output:\n{out[-2000:]}")
    return {"wall_s": wall, "inner_s": float(m.group(2)), "test_acc": float(m.group(1)) / 100}


def bench_wall(a: argparse.Namespace) -> None:
    """Whole processes, wall clock: the reference, `cnnlab train` (the lesson's recipe), `--recipe fast` and `--recipe fast99`.

    Interleaved, the order rotated every repeat, so a slow minute on the shared machine hits
    every contender; each repeat's ratio is the reference's wall time over the contender's in
    that same repeat, and the medians of those ratios are reported.
    """
    who_all = ["ref", "lesson", "fast", "fast99"]
    recipes = {"lesson": None, "fast": "fast", "fast99": "fast99"}
    targets = {"ref": None, "lesson": None, "fast": 0.990, "fast99": 0.992}
    reps = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.repeats):
            order = who_all[i % len(who_all):] + who_all[: i % len(who_all)]
            rep: dict = {"order": order, "loadavg_before": os.getloadavg()[0]}
            for who in order:
                # --seeds: repeat i trains the speed recipes with seed i, so 5 repeats are 5 seeds
                extra = ["--seed", str(i)] if a.seeds and who in ("fast", "fast99") else []
                rep[who] = (reference(a.data_dir, 5) if who == "ref"
                            else train_process(a.data_dir, recipes[who], tmp, extra))
                rep[who]["seed"] = i if extra else None
                rep[who]["loadavg_after"] = os.getloadavg()[0]
                print(f"  repeat {i + 1} {who:7s}: wall {rep[who]['wall_s']:6.1f}s  in-process {rep[who]['inner_s']:6.1f}s  "
                      f"test acc {rep[who]['test_acc']:.4f}  (load {os.getloadavg()[0]:.1f})", flush=True)
            for who in who_all[1:]:
                rep[f"ratio_{who}"] = rep["ref"]["wall_s"] / rep[who]["wall_s"]
            reps.append(rep)
    summary = {}
    for who in who_all:
        summary[who] = {"wall_s": median([r[who]["wall_s"] for r in reps]),
                        "inner_s": median([r[who]["inner_s"] for r in reps]),
                        "test_acc": [r[who]["test_acc"] for r in reps]}
        if targets[who] is not None:
            summary[who]["every_repeat_reached"] = all(acc >= targets[who] for acc in summary[who]["test_acc"])
        if who != "ref":
            ratios = [r[f"ratio_{who}"] for r in reps]
            summary[who].update(speedup_wall=median(ratios), speedup_min=min(ratios), speedup_max=max(ratios),
                                fraction_of_reference=1 / median(ratios))
    print()
    print(f"whole processes, wall clock, {a.repeats} interleaved repeats (median; ratio = reference / contender, same repeat)")
    print(f"{'':10s}{'wall (s)':>10s}{'in-proc (s)':>13s}{'speed-up':>10s}{'range':>14s}{'share':>8s}  test accuracy")
    for who in who_all:
        s_ = summary[who]
        sp = (f"{s_['speedup_wall']:9.2f}x{s_['speedup_min']:7.2f}-{s_['speedup_max']:.2f}x{'1/' + format(1 / s_['fraction_of_reference'], '.1f'):>8s}"
              if who != "ref" else f"{'':10s}{'':14s}{'':8s}")
        accs = ", ".join(f"{x:.4f}" for x in s_["test_acc"])
        print(f"{who:10s}{s_['wall_s']:10.1f}{s_['inner_s']:13.1f}{sp}  {accs}")
    print(f"results: {save(a.name or 'wall', {'summary': summary, 'repeats': reps, 'targets': targets})}")


STARTUP_CASES = ("python -c pass", "import torch", "cnnlab --help", "cnnlab models", "cnnlab layers lenet5",
                 "cnnlab predict RUN one.png", "cnnlab train (overhead)")


def bench_startup(a: argparse.Namespace) -> None:
    """Start-up, wall clock of whole processes: `import torch` against `cnnlab models`, `layers`, `predict` and train's overhead.

    Interleaved, ``--repeats`` rounds, medians. Train's start-up overhead is the process wall
    time minus the in-process seconds it prints (a 1-epoch run on 2,000 images).
    """
    import numpy as np
    from PIL import Image

    py = sys.executable
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def wall(cmd: list[str]) -> float:
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=REPO, env=env)
        return time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        # A trained run and one MNIST test digit as a PNG for predict.
        train_process(a.data_dir, None, tmp, ["--epochs", "1", "--subset", "2000", "--no-train-eval",
                                              "--run-dir", tmp + "/predict-run"])
        raw = Path(a.data_dir) / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
        img = np.frombuffer(raw.read_bytes()[16:16 + 784], dtype=np.uint8).reshape(28, 28)
        Image.fromarray(img).save(tmp + "/one.png")
        cmds = {
            "python -c pass": [py, "-c", "pass"],
            "import torch": [py, "-c", "import torch"],
            "cnnlab --help": [py, "-m", "cnnlab", "--help"],
            "cnnlab models": [py, "-m", "cnnlab", "models"],
            "cnnlab layers lenet5": [py, "-m", "cnnlab", "layers", "lenet5"],
            "cnnlab predict RUN one.png": [py, "-m", "cnnlab", "predict", tmp + "/predict-run", tmp + "/one.png"],
        }
        raw_s: dict[str, list[float]] = {k: [] for k in STARTUP_CASES}
        train_runs = []
        for i in range(a.repeats):
            names = list(STARTUP_CASES)
            names = names[i % len(names):] + names[: i % len(names)]
            for name in names:
                if name == "cnnlab train (overhead)":
                    r = train_process(a.data_dir, None, tmp, ["--epochs", "1", "--subset", "2000", "--no-train-eval",
                                                              "--threads", "1"])
                    train_runs.append(r)
                    raw_s[name].append(r["wall_s"] - r["inner_s"])
                else:
                    raw_s[name].append(wall(cmds[name]))
            print(f"  repeat {i + 1}: " + "  ".join(f"{k.replace('cnnlab ', '')} {v[-1]:.2f}" for k, v in raw_s.items())
                  + f"  (load {os.getloadavg()[0]:.1f})", flush=True)
        # The decoded-data cache, in-process: both MNIST splits from the cache (a hit), decoded from the
        # raw files (CNNLAB_NO_DATA_CACHE=1: read + verify), and through torchvision (round 1's way).
        snippet = ("import os, sys, time, torch\n"
                   "from cnnlab.data.mnist import load_mnist\n"
                   "load_mnist(sys.argv[1], train=True, download=False)  # make sure the cache exists\n"
                   "t = time.perf_counter()\n"
                   "if sys.argv[2] == 'torchvision':\n"
                   "    from torchvision.datasets import MNIST\n"
                   "    MNIST(sys.argv[1], train=True), MNIST(sys.argv[1], train=False)\n"
                   "else:\n"
                   "    os.environ['CNNLAB_NO_DATA_CACHE'] = '1' if sys.argv[2] == 'decode' else ''\n"
                   "    load_mnist(sys.argv[1], train=True, download=False), load_mnist(sys.argv[1], train=False, download=False)\n"
                   "print(time.perf_counter() - t)\n")
        loads: dict[str, list[float]] = {"cache hit": [], "decode": [], "torchvision": []}
        for i in range(a.repeats):
            for how in loads:
                out = subprocess.run([py, "-c", snippet, a.data_dir, how.split()[0] if how != "cache hit" else "hit"],
                                     check=True, capture_output=True, text=True, cwd=REPO, env=env).stdout
                loads[how].append(float(out.strip().splitlines()[-1]))
        print("  MNIST load, in-process (s): " + "  ".join(f"{k} {median(v):.3f}" for k, v in loads.items()), flush=True)
    med = {k: median(v) for k, v in raw_s.items()}
    med.update({f"MNIST load, {k} (in-process)": median(v) for k, v in loads.items()})
    torch_s = med["import torch"]
    targets = {"cnnlab models": 1.0, "cnnlab layers lenet5": 1.0, "cnnlab predict RUN one.png": torch_s + 0.7,
               "cnnlab train (overhead)": torch_s + 0.5}
    print()
    print(f"start-up, wall clock, median of {a.repeats} interleaved repeats")
    print(f"{'':30s}{'median (s)':>11s}{'min':>7s}{'max':>7s}{'target':>9s}  met")
    for k in STARTUP_CASES:
        t = targets.get(k)
        print(f"{k:30s}{med[k]:11.2f}{min(raw_s[k]):7.2f}{max(raw_s[k]):7.2f}"
              + (f"{t:9.2f}  {'yes' if med[k] <= t else 'no'}" if t else ""))
    for k, v in loads.items():
        print(f"{'MNIST load, ' + k:30s}{median(v):11.3f}{min(v):7.3f}{max(v):7.3f}   (in-process, both splits)")
    print(f"results: {save(a.name or 'startup', {'median_s': med, 'raw_s': raw_s, 'mnist_load_s': loads, 'targets_s': targets, 'train_runs': train_runs})}")


def bench_limit(a: argparse.Namespace) -> None:
    """The machine's limit: CPU flags, float32/bfloat16 matmul peaks, a recipe step's GFLOP/s, a per-layer split."""
    from limit import bench_limit as run

    run(a, save)


def bench_to99(a: argparse.Namespace) -> None:
    """Time to >= 99.0% test accuracy: in-process (imports and data loading excluded; mean +- std over seeds) and whole processes."""
    from to_accuracy import bench_to_accuracy

    bench_to_accuracy(a, save, train_process)


def bench_tricks(a: argparse.Namespace) -> None:
    """Each training-step trick on its own (layout, Adam kernel, bf16, batch size, compile): us/image against cnnlab's step."""
    from tricks import bench_tricks as run

    run(a, save)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="bench", required=True)
    for name, fn in (("lesson", bench_lesson), ("fast", bench_fast), ("flops", bench_flops), ("throughput", bench_throughput),
                     ("threads", bench_threads), ("profile", bench_profile),
                     ("malloc", bench_malloc), ("tried", bench_tried), ("wall", bench_wall), ("startup", bench_startup),
                     ("limit", bench_limit), ("to99", bench_to99),
                     ("tricks", bench_tricks)):
        s = sub.add_parser(name, help=(fn.__doc__ or "").replace("%", "%%"))  # argparse formats help with %
        s.set_defaults(fn=fn)
        s.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
        s.add_argument("--name", default=None, help="results file name (default: the benchmark's)")
        s.add_argument("--threads", type=int, default=None)
    sub.choices["lesson"].add_argument("--repeats", type=int, default=3)
    sub.choices["lesson"].add_argument("--epochs", type=int, default=5)
    sub.choices["lesson"].add_argument("--ref-1thread", action="store_true",
                                       help="also run the reference with OMP_NUM_THREADS=1")
    sub.choices["fast"].add_argument("--seeds", type=int, default=5)
    sub.choices["flops"].add_argument("--batch", type=int, default=256)
    sub.choices["threads"].add_argument("--repeats", type=int, default=3)
    sub.choices["malloc"].add_argument("--repeats", type=int, default=3)
    sub.choices["tried"].add_argument("--repeats", type=int, default=7)
    sub.choices["wall"].add_argument("--repeats", type=int, default=3)
    sub.choices["wall"].add_argument("--seeds", action="store_true",
                                     help="repeat i trains fast and fast99 with --seed i (5 repeats: 5 seeds)")
    sub.choices["startup"].add_argument("--repeats", type=int, default=5)
    sub.choices["limit"].add_argument("--recipe", default="fast")
    sub.choices["limit"].add_argument("--batch", type=int, default=None, help="default: the recipe's")
    sub.choices["limit"].add_argument("--amp", choices=("off", "bf16"), default=None, help="default: the recipe's")
    sub.choices["limit"].add_argument("--repeats", type=int, default=5)
    sub.choices["tricks"].add_argument("--batches", default="32,128,256")
    sub.choices["tricks"].add_argument("--variants", default="base,nchw,foreach,bf16,dgrad,split",
                                       help="comma-separated; also: compile")
    sub.choices["tricks"].add_argument("--repeats", type=int, default=7)
    sub.choices["tricks"].add_argument("--hog", action="store_true",
                                       help="keep one core busy with another process while measuring")
    sub.choices["to99"].add_argument("--recipe", default="fast")
    sub.choices["to99"].add_argument("--seeds", type=int, default=10)
    sub.choices["to99"].add_argument("--process-seeds", type=int, default=3)
    sub.choices["to99"].add_argument("--target", type=float, default=0.99)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
