"""Round 3's exact alternatives to slow kernels, measured against what cnnlab runs (one thread).

    python benchmarks/tried_round3.py [--data-dir DIR]

- max-pool 2x2 of a channels-last conv1 output (256x6x28x28), forward and backward, three ways:
  PyTorch's ``max_pool2d`` (kept), strided ``torch.maximum`` of the four window positions with
  the first-max index handed to PyTorch's own backward, and the same maxima with a one-hot
  backward. All three give the same values and gradients (checked here, ties included).
- evaluation of the 10k MNIST test images by ``cnnlab.inference.predict_logits``, plain and with
  shift TTA, in one thread and in the threads the cores allow (bit-identical logits, checked here);
- the shift/crop augmentation's random crop: the indexing with four broadcast index tensors that
  cnnlab used until round 3, against ``cnnlab.data.augment.random_crop`` (one gather); same values.

Prints median milliseconds per call and writes benchmarks/results/tried_round3.json.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from limit import median_time
from provenance import machine_provenance

from cnnlab.data.augment import random_crop


def ms(fn, inner: int = 20, repeats: int = 7) -> float:
    """Median milliseconds per call of ``fn`` (limit.py's timer)."""
    return median_time(fn, repeats, inner) * 1e3


def _windows(x: torch.Tensor):
    n, c, h, w = x.shape
    v = x.permute(0, 2, 3, 1).view(n, h // 2, 2, w // 2, 2, c)  # free for channels-last memory
    return v[:, :, 0, :, 0], v[:, :, 0, :, 1], v[:, :, 1, :, 0], v[:, :, 1, :, 1]


class PoolIndex(torch.autograd.Function):
    """Maxima of the four strided views; the first max's index for PyTorch's own backward."""

    @staticmethod
    def forward(ctx, x):
        n, c, h, w = x.shape
        s = x.permute(0, 2, 3, 1).view(n, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 5, 2, 4).reshape(n, h // 2, w // 2, c, 4)
        m, k = s.max(dim=-1)  # the first maximum, in max_pool2d's scan order
        rows = torch.arange(h // 2).mul_(2 * w).view(1, -1, 1, 1)
        cols = torch.arange(w // 2).mul_(2).view(1, 1, -1, 1)
        ctx.save_for_backward(x, (rows + cols + (k // 2) * w + (k % 2)).permute(0, 3, 1, 2))
        return m.permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, go):
        x, idx = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(go, x, [2, 2], [2, 2], [0, 0], [1, 1], False, idx)


class PoolOneHot(torch.autograd.Function):
    """Maxima of the four strided views; a one-hot mask of the first max for the backward."""

    @staticmethod
    def forward(ctx, x):
        a, b, d, e = _windows(x)
        m = torch.maximum(torch.maximum(a, b), torch.maximum(d, e))
        na = a != m
        nab = na & (b != m)
        k = na.to(torch.uint8) + nab + (nab & (d != m))
        ctx.save_for_backward(k)
        ctx.shape = x.shape
        return m.permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, go):
        (k,) = ctx.saved_tensors
        n, c, h, w = ctx.shape
        hit = k.unsqueeze(-1) == torch.arange(4, dtype=torch.uint8)
        gx = torch.where(hit, go.permute(0, 2, 3, 1).unsqueeze(-1), 0.0)
        gx = gx.view(n, h // 2, w // 2, c, 2, 2).permute(0, 1, 4, 2, 5, 3).reshape(n, h, w, c)
        return gx.permute(0, 3, 1, 2)


def crop_by_indexing(x: torch.Tensor, pad: int, g: torch.Generator) -> torch.Tensor:
    """cnnlab's random crop until round 3."""
    n, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
    return xp[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def evaluation_threads(data_dir: str, out: dict) -> None:
    from cnnlab.accel import workers
    from cnnlab.data.registry import load_dataset
    from cnnlab.inference import predict_logits
    from cnnlab.models import create_model
    from cnnlab.models.tta import ShiftTTA

    _, test, _ = load_dataset("mnist", data_dir, download=False)
    lenet = create_model("lenet5").eval()
    auto = workers.eval_workers(lenet)
    for name, model in (("plain", lenet), ("shift TTA", ShiftTTA(lenet, 1))):
        original = workers.available_cores
        workers.available_cores = lambda: 1  # one thread
        try:
            one = predict_logits(model, test)
            t_one = ms(lambda: predict_logits(model, test), inner=2, repeats=5)
        finally:
            workers.available_cores = original
        assert torch.equal(predict_logits(model, test), one)
        t_auto = ms(lambda: predict_logits(model, test), inner=2, repeats=5)
        out["eval_ms"][name] = {"one_thread": t_one, f"{auto}_threads": t_auto}
        print(f"10k test images, {name:9s}: one thread {t_one:7.1f} ms, {auto} threads {t_auto:7.1f} ms "
              f"({t_one / t_auto:.2f}x, same logits)")


def main() -> None:
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    a = p.parse_args()
    torch.set_num_threads(1)
    out: dict = {"provenance": machine_provenance(), "maxpool_ms": {}, "crop_ms": {}, "eval_ms": {}}
    evaluation_threads(a.data_dir, out)
    x0 = torch.randn(256, 6, 28, 28).contiguous(memory_format=torch.channels_last)
    x0[:, :, :4] = 0.5  # ties, as a blank background gives
    g = torch.randn(256, 6, 14, 14).contiguous(memory_format=torch.channels_last)

    def run(pool):
        x = x0.detach().requires_grad_()
        y = pool(x)
        y.backward(g)
        return y, x.grad

    ways = {"max_pool2d (kept)": lambda x: F.max_pool2d(x, 2), "maxima + PyTorch's backward": PoolIndex.apply,
            "maxima + one-hot backward": PoolOneHot.apply}
    y0, g0 = run(ways["max_pool2d (kept)"])
    for name, pool in ways.items():
        y, gx = run(pool)
        assert torch.equal(y, y0) and torch.equal(gx, g0), name  # exact, or not worth timing
        out["maxpool_ms"][name] = ms(lambda pool=pool: run(pool))
        print(f"max-pool 256x6x28x28, forward + backward, {name:28s} {out['maxpool_ms'][name]:7.3f} ms")
    for n, pad in ((128, 1), (256, 1)):
        x = torch.rand(n, 1, 28, 28).contiguous(memory_format=torch.channels_last)
        assert torch.equal(crop_by_indexing(x, pad, torch.Generator().manual_seed(3)),
                           random_crop(x, pad, torch.Generator().manual_seed(3)))
        old = ms(lambda: crop_by_indexing(x, pad, torch.Generator().manual_seed(3)), inner=50)
        new = ms(lambda: random_crop(x, pad, torch.Generator().manual_seed(3)), inner=50)
        out["crop_ms"][f"batch {n}, pad {pad}"] = {"indexing": old, "gather (kept)": new}
        print(f"random crop, batch {n}, pad {pad}: indexing {old:.3f} ms, gather (kept) {new:.3f} ms")
    path = Path(__file__).resolve().parent / "results" / "tried_round3.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
