"""`bench.py tricks`: every speed trick for the training step, measured on its own.

Each variant is a real LeNet-5 training step (zero_grad, forward, label-smoothed mean loss,
backward, Adam) on a pool of real MNIST batches, built from the same seed, and timed in
interleaved blocks against the step cnnlab's trainer runs (channels-last, ReLU after each
max-pool, fused Adam, float32). One variable changes per row. The table gives microseconds per
training image (median of the blocks) and the speed-up against that baseline at the same batch
size; batch size itself is a row too. Accuracy is not measured here: a trick that changes the
arithmetic is judged over 5 seeds by benchmarks/sweep_fast.py (results/*sweep3*.json).

Variants (``--variants``, comma-separated; default all but compile):
- ``base``       cnnlab's step
- ``nchw``       contiguous (NCHW) activations instead of channels-last
- ``foreach``    Adam's foreach implementation instead of the fused kernel
- ``bf16``       bfloat16 autocast of the forward pass (float32 weights, Adam and loss)
- ``dgrad``      the second convolution's input gradient computed by the NCHW kernel (a custom
                 autograd function; oneDNN's channels-last input gradient is slow for 6 output
                 channels). Differs from the base step in float32 summation order.
- ``split``      each batch split among the cores (``train.batch_split``: Python threads, one part
                 each, gradients summed); differs from the base step in float32 summation order
- ``compile``    torch.compile (inductor, CPU) of the whole step; its compile time is reported
                 separately
"""
from __future__ import annotations

import argparse
import statistics
import time

VARIANTS = ("base", "nchw", "foreach", "bf16", "dgrad", "split")


def _dgrad_nchw_conv():
    """A conv whose input gradient runs on NCHW tensors (weight gradient and forward stay channels-last)."""
    import torch
    import torch.nn.functional as F

    backward = torch.ops.aten.convolution_backward

    class Conv(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w, b):
            ctx.save_for_backward(x, w)
            return F.conv2d(x, w, b)

        @staticmethod
        def backward(ctx, go):
            x, w = ctx.saved_tensors
            args = ([w.shape[0]], [1, 1], [0, 0], [1, 1], False, [0, 0], 1)
            _, gw, gb = backward(go, x, w, *args, [False, True, True])
            gi = None
            if ctx.needs_input_grad[0]:
                gi = backward(go.contiguous(), torch.empty(x.shape), w.contiguous(), *args, [True, False, False])[0]
                gi = gi.contiguous(memory_format=torch.channels_last)
            return gi, gw, gb

    return Conv.apply


def make_step(variant: str, batch: int, images, labels):
    """A fresh model and optimizer and a function running one training step of ``variant``."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from cnnlab.accel.fastpath import training_forward
    from cnnlab.models import create_model

    torch.manual_seed(0)
    cl = variant != "nchw"
    model = create_model("lenet5")
    if cl:
        model = model.to(memory_format=torch.channels_last)
    kind = {"foreach": {"foreach": True}}.get(variant, {"fused": True})
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.7, 0.9), **kind)
    forward = training_forward(model)
    if variant == "dgrad":
        conv = _dgrad_nchw_conv()
        f, c2 = model.features, model.features[3]

        def forward(x):
            x = F.relu(F.max_pool2d(f[0](x), 2))
            x = F.relu(F.max_pool2d(conv(x, c2.weight, c2.bias), 2))
            return model.classifier(torch.flatten(x, 1))

    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    if variant == "split":
        from types import SimpleNamespace

        from cnnlab.engine.step import create_train_step
        from cnnlab.inference import batch_parts

        split_step = create_train_step(model, opt, loss_fn, parts=max(2, batch_parts(model, batch, None)))
        engine = SimpleNamespace(state=SimpleNamespace(epoch=1, iteration=0))
        x_cl, n_batches = images.contiguous(memory_format=torch.channels_last), len(images) // batch

        def step_split(i: int) -> None:
            s = (i % n_batches) * batch
            split_step(engine, (x_cl[s:s + batch], labels[s:s + batch]))

        return step_split
    x_all = images.contiguous(memory_format=torch.channels_last) if cl else images.contiguous()
    n = len(x_all) // batch

    def step(i: int) -> None:
        s = (i % n) * batch
        x, y = x_all[s:s + batch], labels[s:s + batch]
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", torch.bfloat16, enabled=variant == "bf16"):
            logits = forward(x)
        loss = loss_fn(logits.float(), y)
        loss.item()
        loss.backward()
        opt.step()

    if variant == "compile":
        return torch.compile(step)
    return step


def bench_tricks(a: argparse.Namespace, save) -> None:
    """Each training-step trick on its own: microseconds per image, interleaved against cnnlab's step."""
    import subprocess
    import sys

    import torch

    from cnnlab.accel.malloc import tune_malloc

    torch.set_num_threads(a.threads or 1)
    tune_malloc()  # as cnnlab's train() does
    # --hog: another program keeps a core busy (a shared machine's neighbour), for the whole measurement
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if a.hog else None
    try:
        _measure(a, save, hog is not None)
    finally:
        if hog is not None:
            hog.kill()


def _measure(a: argparse.Namespace, save, hog: bool) -> None:
    import torch

    from cnnlab.data.registry import load_dataset
    from cnnlab.data.tensors import to_float

    train, _, _ = load_dataset("mnist", a.data_dir, download=False)
    images, labels = to_float(train.images[:8192]), train.labels[:8192]
    variants = a.variants.split(",")
    rows = []
    for batch in (int(b) for b in a.batches.split(",")):
        steps, compile_s = {}, None
        for v in variants:
            t0 = time.perf_counter()
            steps[v] = make_step(v, batch, images, labels)
            for i in range(3):  # warm-up (and, for compile, the compilation)
                steps[v](i)
            if v == "compile":
                compile_s = time.perf_counter() - t0
        per_image = {v: [] for v in variants}
        inner = max(8, 4096 // batch)
        for rep in range(a.repeats):
            for v in variants:
                t0 = time.perf_counter()
                for i in range(inner):
                    steps[v](rep * inner + i)
                per_image[v].append((time.perf_counter() - t0) / (inner * batch) * 1e6)
        base = statistics.median(per_image["base"]) if "base" in per_image else None
        for v in variants:
            us = statistics.median(per_image[v])
            row = {"batch": batch, "variant": v, "us_per_image": us, "raw": per_image[v],
                   "speedup": base / us if base else None, "epoch_59k_s": us * 59_000 / 1e6}
            if v == "compile":
                row["compile_s"] = compile_s
            rows.append(row)
            extra = f"  (compile {compile_s:.1f} s)" if v == "compile" else ""
            print(f"batch {batch:4d} {v:9s} {us:7.1f} us/image  {row['speedup'] or 0:5.2f}x  "
                  f"59k-image epoch {row['epoch_59k_s']:5.2f} s{extra}", flush=True)
    print(f"results: {save(a.name or 'tricks', {'threads': torch.get_num_threads(), 'cpu_hog': hog, 'rows': rows})}")
