"""Try variants of the `fast` recipe on real MNIST: test accuracy over 5 seeds and in-process seconds.

    python benchmarks/sweep_fast.py --data-dir ../shared/data 64:0.006:1 batch=128,lr=0.008,epochs=1,tta=1

A SPEC is either BATCH:PEAK_LR:EPOCHS (round 1's form) or comma-separated KEY=VALUE overrides of
round 1's `fast` recipe, written out below as BASE so that the sweep does not move when the shipped
recipe does (LeNet-5, Adam one-cycle peaking at 4e-3, batch 64, 2 epochs, label smoothing 0.05,
mean loss, no train-set pass, 10,000 validation images):

    batch, lr, epochs, model, opt (adam|adamw|sgd), wd, sched, warmup (onecycle warm-up fraction),
    ls (label smoothing), val (validation images held out; the rest is trained on),
    augment, nesterov (0|1)
    ema=DECAY   an exponential moving average of the weights, updated after every optimizer step
                (decay warmed up as min(DECAY, (1+n)/(10+n))) and swapped into the model after
                the last step, so the checkpoint and the test score are the average's
    tta=PIXELS  test-time augmentation: the test score also averages the softmax of the image
                shifted by +-PIXELS along x and y (5 views); reported as `tta` next to the plain score
    lookahead=K lookahead (Zhang et al. 2019) around the optimizer: every K steps the weights move
                halfway from their slow copy towards the fast ones, and the fast weights restart there
    seeds=N     this variant over N seeds only (an expensive model: its time is the finding)
    stop=ACC    stop this variant after a seed whose (plain, or tta when asked) score is below ACC

Progressive resizing is not among the variants: LeNet-5's classifier is sized for a 28x28 input
(16x5x5 features), so it cannot take smaller images early on; only a global-average-pooling model
(smallcnn) could, and one epoch of smallcnn already costs many times a LeNet-5 epoch (seeds=1 row).

A variant is only worth shipping if *every* seed reaches the target; the table shows the minimum
for that reason. EMA and TTA are applied here, around the library's own `train_config`, so a
variant that wins can be judged before the engine grows an option for it. Writes
benchmarks/results/<--name>.json with provenance; with --append, rows are added to that file.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sklearn.metrics  # noqa: F401  (imported before the timer, as bench.py's runner does)
import torch

from provenance import machine_provenance

import cnnlab.engine.train as engine_train
from cnnlab.core.config import Config, load_recipe
from cnnlab.service.training import train_config as train
from cnnlab.data.tensors import TensorBatches

KEYS = {
    "batch": ("train", "batch_size", int), "epochs": ("train", "epochs", int), "ls": ("train", "label_smoothing", float),
    "augment": ("train", "augment", str), "lr": ("optim", "lr", float), "opt": ("optim", "name", str),
    "wd": ("optim", "weight_decay", float), "sched": ("optim", "schedule", str), "warmup": ("optim", "warmup_pct", float),
    "nesterov": ("optim", "nesterov", lambda v: bool(int(v))), "model": ("model", "name", str),
    "val": ("data", "val_size", int), "beta1": ("optim", "beta1", float), "beta2": ("optim", "beta2", float),
    "amp": ("train", "amp", str), "smooth": ("train", "label_smoothing", float),
    "split": ("train", "batch_split", int),
}


BASE = {"model": {"name": "lenet5"}, "optim": {"name": "adam", "lr": 0.004, "schedule": "onecycle"},
        "train": {"epochs": 2, "batch_size": 64, "loss_reduction": "mean", "label_smoothing": 0.05,
                  "train_eval": False}}


def base_config(recipe: str | None) -> Config:
    cfg = load_recipe(recipe) if recipe else Config.from_dict(BASE)
    return cfg.override("model", tta_shift=0)  # the engine scores the plain network; TTA is applied here


def parse_spec(spec: str) -> dict[str, str]:
    if "=" not in spec:
        batch, lr, epochs = spec.split(":")
        return {"batch": batch, "lr": lr, "epochs": epochs}
    return dict(part.split("=", 1) for part in spec.split(","))


class Hooks:
    """EMA of the weights around the engine's optimizer, and the trained model kept for TTA."""

    def __init__(self, ema: float | None, lookahead: int = 0) -> None:
        self.ema, self.lookahead, self.model, self.total = ema, lookahead, None, 0
        self._build_model, self._build_opt, self._build_sched = (
            engine_train.build_model, engine_train.build_optimizer, engine_train.build_scheduler)

    def __enter__(self) -> "Hooks":
        engine_train.build_model = self.build_model
        engine_train.build_optimizer = self.build_optimizer
        engine_train.build_scheduler = self.build_scheduler
        return self

    def __exit__(self, *exc: object) -> None:
        engine_train.build_model, engine_train.build_optimizer, engine_train.build_scheduler = (
            self._build_model, self._build_opt, self._build_sched)

    def build_model(self, cfg, data):
        self.model = self._build_model(cfg, data)
        return self.model

    def build_scheduler(self, cfg, optimizer, steps_per_epoch, epochs, trainer=None):
        self.total = steps_per_epoch * epochs
        return self._build_sched(cfg, optimizer, steps_per_epoch, epochs, trainer)

    def build_optimizer(self, cfg, params, device):
        params = list(params)
        opt = self._build_opt(cfg, params, device)
        if self.lookahead:
            slow = [p.detach().clone() for p in params]
            steps = [0]

            @torch.no_grad()
            def look(_opt, _args, _kwargs) -> None:
                steps[0] += 1
                if steps[0] % self.lookahead == 0 or steps[0] == self.total:
                    torch._foreach_lerp_(slow, [p.detach() for p in params], 0.5)
                    for p, s_ in zip(params, slow):
                        p.copy_(s_)

            opt.register_step_post_hook(look)
        if self.ema:
            shadow = [p.detach().clone() for p in params]
            count = [0]

            @torch.no_grad()
            def update(_opt, _args, _kwargs) -> None:
                count[0] += 1
                d = min(self.ema, (1 + count[0]) / (10 + count[0]))
                torch._foreach_lerp_(shadow, [p.detach() for p in params], 1 - d)
                if count[0] == self.total:  # the last step: the model becomes the average
                    for p, s in zip(params, shadow):
                        p.copy_(s)

            opt.register_step_post_hook(update)
        return opt


@torch.no_grad()
def tta_accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, pixels: int) -> float:
    """Accuracy of the softmax averaged over the image and its 4 shifts by ``pixels`` (zero fill)."""
    model.eval()
    total = torch.zeros(len(labels), 10)
    for start in range(0, len(labels), 1000):
        x = images[start:start + 1000].float().div_(255)
        views = [x]
        for dy, dx in ((pixels, 0), (-pixels, 0), (0, pixels), (0, -pixels)):
            v = torch.roll(x, (dy, dx), dims=(2, 3))
            if dy > 0:
                v[:, :, :dy] = 0
            elif dy < 0:
                v[:, :, dy:] = 0
            if dx > 0:
                v[:, :, :, :dx] = 0
            elif dx < 0:
                v[:, :, :, dx:] = 0
            views.append(v)
        for v in views:
            total[start:start + 1000] += model(v.contiguous(memory_format=torch.channels_last)).softmax(1)
    return float((total.argmax(1) == labels).float().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("specs", nargs="+", metavar="SPEC")
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--recipe", default=None, help="a recipe the specs override instead of BASE")
    p.add_argument("--name", default="fast_sweep")
    p.add_argument("--append", action="store_true", help="add rows to an existing results file")
    a = p.parse_args()
    out = Path(__file__).resolve().parent / "results" / f"{a.name}.json"
    old = json.loads(out.read_text()) if a.append and out.exists() else None
    rows = list(old["rows"]) if old else []
    for spec in a.specs:
        kv = parse_spec(spec)
        ema = float(kv.pop("ema")) if "ema" in kv else None
        tta = int(kv.pop("tta")) if "tta" in kv else 0
        stop = float(kv.pop("stop")) if "stop" in kv else None
        lookahead = int(kv.pop("lookahead")) if "lookahead" in kv else 0
        seeds = int(kv.pop("seeds")) if "seeds" in kv else a.seeds
        accs, ttas, secs, tta_secs = [], [], [], []
        for seed in range(seeds):
            cfg = base_config(a.recipe).override("data", data_dir=a.data_dir, download=False)
            cfg = cfg.override("train", progress=False, seed=seed, threads=a.threads)
            for key, value in kv.items():
                section, field, cast = KEYS[key]
                cfg = cfg.override(section, **{field: cast(value)})
            with tempfile.TemporaryDirectory() as tmp, Hooks(ema, lookahead) as hooks:
                r = train(cfg, Path(tmp) / "run", log=lambda _s: None)
                accs.append(r.test.accuracy)
                secs.append(round(r.seconds, 2))
                if tta:
                    from cnnlab.engine.checkpoint import load_checkpoint
                    from cnnlab.data.registry import load_dataset

                    hooks.model.load_state_dict(load_checkpoint(Path(tmp) / "run" / "best.pt")["state_dict"])
                    _, test, _ = load_dataset(cfg.data.dataset, cfg.data.data_dir, download=False)
                    t0 = time.perf_counter()
                    ttas.append(tta_accuracy(hooks.model, test.images, test.labels, tta))
                    tta_secs.append(round(time.perf_counter() - t0, 2))
            score = ttas[-1] if tta else accs[-1]
            print(f"  {spec} seed {seed}: {accs[-1]:.4f}" + (f" tta {ttas[-1]:.4f}" if tta else "")
                  + f" {secs[-1]:.1f}s", flush=True)
            if stop is not None and score < stop:
                print(f"  {spec}: seed {seed} below {stop}; stopped", flush=True)
                break
        row = {"spec": spec, "overrides": kv, "ema": ema, "tta": tta, "lookahead": lookahead, "recipe": a.recipe or "BASE", "test_acc": accs,
               "min": min(accs), "mean": statistics.fmean(accs), "seconds": secs, "median_s": statistics.median(secs),
               "seeds_run": len(accs), "stopped_early": len(accs) < seeds}
        if tta:
            row.update(tta_acc=ttas, tta_min=min(ttas), tta_mean=statistics.fmean(ttas), tta_seconds=tta_secs)
        rows.append(row)
        print(f"{spec:40s} min {min(accs):.4f} mean {statistics.fmean(accs):.4f}"
              + (f" | tta min {min(ttas):.4f} mean {statistics.fmean(ttas):.4f}" if tta else "")
              + f"  median {statistics.median(secs):.1f}s  ({len(accs)} seeds)", flush=True)
        prov = {**machine_provenance(), "command": " ".join(sys.argv), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        provs = (old.get("runs", [old["provenance"]]) if old else []) + [prov]
        out.write_text(json.dumps({"provenance": prov, "runs": provs, "rows": rows}, indent=2) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
