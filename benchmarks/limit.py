"""`bench.py limit`: a recipe's training step against what this CPU can do, layer by layer.

One process measures, in this order:
- the CPU (model, speed flags) and its float32 and bfloat16 matmul peaks on the threads used;
- the recipe's real training step (``cnnlab.engine.step.create_train_step``: zero_grad, forward
  under the recipe's autocast, loss, ``.item()``, backward, optimizer step) on real MNIST batches,
  as achieved GFLOP/s and as a share of both peaks;
- every layer on its own (forward, and backward for the weight and input gradients the step
  needs), the loss, the optimizer step and zero_grad; what the layers do not add up to is the
  autograd engine and Python between them;
- for each convolution and linear layer, a plain matmul of the same shape as its im2col GEMM:
  what one matrix multiply of that shape reaches here, i.e. the ceiling for that layer short of a
  different algorithm.

The FLOP count is that of the layers' arithmetic: per image, 2 x multiply-adds of every conv and
linear forward, their weight gradients, and the input gradients of every layer but the first (the
image needs none). Pooling, ReLU, the loss and Adam are counted as time, not FLOPs.
"""
from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace


def median_time(fn, repeats: int, inner: int) -> float:
    """Median over ``repeats`` blocks of the seconds one call of ``fn`` takes (``inner`` calls a block,
    after one untimed call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times)


def _gemm_rate(m: int, k: int, n: int, dtype, repeats: int) -> float:
    """GFLOP/s of one ``(m x k) @ (k x n)`` matmul in ``dtype``: the im2col GEMM of a layer."""
    import torch

    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    inner = max(1, int(2e8 // max(1, 2 * m * k * n)))
    return 2 * m * k * n / median_time(lambda: a @ b, repeats, inner) / 1e9


def _layers(model):
    """(name, module) in the order cnnlab's training forward runs them (ReLU after each max-pool)."""
    import torch.nn as nn

    from cnnlab.accel.fastpath import _relu_after_pool

    names = {id(m): f"features.{i}" for i, m in enumerate(model.features)}
    out = [(names[id(m)], m) for m in _relu_after_pool(list(model.features))]
    out.append(("flatten", nn.Flatten()))
    out += [(f"classifier.{i}", m) for i, m in enumerate(model.classifier)]
    return out


def measure(recipe: str, data_dir: str, *, batch: int | None, amp: str | None, threads: int, repeats: int) -> dict:
    """Everything `bench.py limit` prints, as a dict."""
    import torch
    import torch.nn as nn

    from provenance import cpu_flags, cpu_model, matmul_peaks

    from cnnlab.accel.malloc import tune_malloc
    from cnnlab.core.config import load_recipe
    from cnnlab.data.registry import load_dataset
    from cnnlab.data.tensors import TensorBatches
    from cnnlab.engine.step import autocast, build_optimizer, create_train_step
    from cnnlab.models import create_model

    torch.set_num_threads(threads)
    tune_malloc()  # as cnnlab's train() does
    cfg = load_recipe(recipe)
    batch = batch or cfg.train.batch_size
    amp = amp or cfg.train.amp
    peaks = matmul_peaks(threads)
    low = torch.bfloat16 if amp == "bf16" else torch.float32

    torch.manual_seed(0)
    model = create_model(cfg.model.name).to(memory_format=torch.channels_last)
    opt = build_optimizer(cfg.optim, model.parameters(), torch.device("cpu"))
    reduction = cfg.train.loss_reduction
    loss_fn = nn.CrossEntropyLoss(reduction=reduction, label_smoothing=cfg.train.label_smoothing)
    train, _, _ = load_dataset(cfg.data.dataset, data_dir, download=False)
    batches = TensorBatches(train, batch, shuffle=True, drop_last=True, channels_last=True)
    pool = [b for b, _ in zip(batches, range(32))]  # 32 real batches, cycled
    step = create_train_step(model, opt, loss_fn, amp)
    engine = SimpleNamespace(state=SimpleNamespace(epoch=1, iteration=0))
    it = {"i": 0}

    def one_step() -> None:
        it["i"] += 1
        step(engine, pool[it["i"] % len(pool)])

    inner = max(4, 2048 // batch)
    step_s = median_time(one_step, repeats, inner)

    # The step as cnnlab's trainer runs it here: split among the cores (train.batch_split) where it
    # splits, against the matmul peak on that many threads.
    from cnnlab.inference import batch_parts

    parts = batch_parts(model, batch, cfg.train.batch_split)
    split = None
    if parts > 1:
        split_step = create_train_step(model, opt, loss_fn, amp, parts)

        def one_split_step() -> None:
            it["i"] += 1
            split_step(engine, pool[it["i"] % len(pool)])

        split = {"parts": parts, "step_ms": median_time(one_split_step, repeats, inner) * 1e3,
                 "peaks": matmul_peaks(parts)}

    # Layer by layer, on the activations a real batch produces.
    x = pool[0][0]
    rows = []
    flop_total = 0
    for i, (name, m) in enumerate(_layers(model)):
        inp = x.detach().requires_grad_(i > 0)
        with autocast(x.device, amp):
            out = m(inp)
        grad_out = torch.randn_like(out)
        targets = ([inp] if i > 0 else []) + [p for p in m.parameters()]

        def fwd(m=m, inp=inp) -> None:
            with autocast(inp.device, amp):
                m(inp)

        fwd_s = median_time(fwd, repeats, inner)
        bwd_s = median_time(lambda: torch.autograd.grad(out, targets, grad_out, retain_graph=True),
                             repeats, inner) if targets else 0.0
        row = {"layer": name, "kind": type(m).__name__, "out_shape": list(out.shape), "fwd_ms": fwd_s * 1e3,
               "bwd_ms": bwd_s * 1e3}
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if isinstance(m, nn.Conv2d):
                kk = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                rows_out = out.numel() // m.out_channels  # batch x output pixels
                gemm = (rows_out, kk, m.out_channels)
            else:
                gemm = (out.shape[0], m.in_features, m.out_features)
            macs = gemm[0] * gemm[1] * gemm[2]
            flop = 2 * macs * (3 if i > 0 else 2)  # forward, weight gradient, input gradient (none for the image)
            flop_total += flop
            t = fwd_s + bwd_s
            row.update(mflop=flop / 1e6, gflops=flop / t / 1e9, share_fp32_peak=flop / t / 1e9 / peaks["float32_gflops"],
                       gemm_shape=list(gemm), gemm_gflops=_gemm_rate(*gemm, low, repeats))
        rows.append(row)
        x = out.detach()

    logits = x.detach().float().requires_grad_(True)
    y = pool[0][1]
    loss_s = median_time(lambda: loss_fn(logits, y).backward(), repeats, inner)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt_s = median_time(opt.step, repeats, inner)
    zero_s = median_time(lambda: opt.zero_grad(set_to_none=True), repeats, inner)
    layers_s = sum(r["fwd_ms"] + r["bwd_ms"] for r in rows) / 1e3
    rate = flop_total / step_s / 1e9
    if split:
        split_rate = flop_total / (split["step_ms"] / 1e3) / 1e9
        split.update(achieved_gflops=split_rate, images_per_s=batch / split["step_ms"] * 1e3,
                     epoch_59k_s=59_000 / batch * split["step_ms"] / 1e3,
                     share_fp32_peak=split_rate / split["peaks"]["float32_gflops"],
                     share_bf16_peak=split_rate / split["peaks"]["bfloat16_gflops"])
    return {
        "recipe": recipe, "model": cfg.model.name, "batch": batch, "amp": amp, "threads": threads,
        "cpu": cpu_model(), "cpu_flags": cpu_flags(), "peaks": peaks,
        "step_ms": step_s * 1e3, "images_per_s": batch / step_s, "epoch_59k_s": 59_000 / batch * step_s,
        "flop_per_image": flop_total / batch, "achieved_gflops": rate,
        "share_fp32_peak": rate / peaks["float32_gflops"], "share_bf16_peak": rate / peaks["bfloat16_gflops"],
        "layers": rows, "loss_ms": loss_s * 1e3, "optimizer_ms": opt_s * 1e3, "zero_grad_ms": zero_s * 1e3,
        "between_ms": (step_s - layers_s - loss_s - opt_s - zero_s) * 1e3,
        "split": split,
    }


def report(r: dict) -> None:
    p = r["peaks"]
    print(f"CPU: {r['cpu']}  flags: {' '.join(r['cpu_flags']) or '-'}  threads: {r['threads']}")
    print(f"matmul {p['n']}x{p['n']} peak: float32 {p['float32_gflops']:.1f} GFLOP/s, bfloat16 {p['bfloat16_gflops']:.1f} GFLOP/s")
    print(f"recipe {r['recipe']}: {r['model']}, batch {r['batch']}, amp {r['amp']}: step {r['step_ms']:.2f} ms, "
          f"{r['images_per_s']:,.0f} images/s, one 59k-image epoch {r['epoch_59k_s']:.2f} s")
    print(f"arithmetic: {r['flop_per_image'] / 1e6:.2f} MFLOP/image -> {r['achieved_gflops']:.1f} GFLOP/s = "
          f"{r['share_fp32_peak']:.0%} of the float32 peak, {r['share_bf16_peak']:.0%} of the bfloat16 peak")
    sp = r.get("split")
    if sp:
        q = sp["peaks"]
        print(f"as cnnlab trains it here, each batch split among {sp['parts']} threads: step {sp['step_ms']:.2f} ms, "
              f"{sp['images_per_s']:,.0f} images/s, epoch {sp['epoch_59k_s']:.2f} s, {sp['achieved_gflops']:.1f} GFLOP/s = "
              f"{sp['share_fp32_peak']:.0%} of the float32 peak on {sp['parts']} threads ({q['float32_gflops']:.1f}), "
              f"{sp['share_bf16_peak']:.0%} of bfloat16's ({q['bfloat16_gflops']:.1f})")
    step = r["step_ms"]
    print()
    print("layer by layer, one thread:")
    print(f"{'layer':15s}{'kind':11s}{'output':>17s}{'fwd ms':>8s}{'bwd ms':>8s}{'share':>7s}{'MFLOP':>8s}"
          f"{'GFLOP/s':>9s}{'of peak':>8s}  same-shape GEMM")
    for row in r["layers"]:
        shape = "x".join(str(s) for s in row["out_shape"])
        share = (row["fwd_ms"] + row["bwd_ms"]) / step
        line = f"{row['layer']:15s}{row['kind']:11s}{shape:>17s}{row['fwd_ms']:8.3f}{row['bwd_ms']:8.3f}{share:7.1%}"
        if "gflops" in row:
            m, k, n = row["gemm_shape"]
            line += (f"{row['mflop']:8.1f}{row['gflops']:9.1f}{row['share_fp32_peak']:8.0%}  "
                     f"({m}x{k})@({k}x{n}): {row['gemm_gflops']:.1f} GFLOP/s")
        print(line)
    for label, key in (("loss fwd+bwd", "loss_ms"), ("optimizer", "optimizer_ms"), ("zero_grad", "zero_grad_ms"),
                       ("between layers", "between_ms")):
        print(f"{label:15s}{'':11s}{'':17s}{r[key]:16.3f}{r[key] / step:7.1%}")


def bench_limit(a: argparse.Namespace, save) -> None:
    """The machine's limit: CPU flags, float32/bfloat16 matmul peaks, the recipe step's GFLOP/s and a per-layer split."""
    r = measure(a.recipe, a.data_dir, batch=a.batch, amp=a.amp, threads=a.threads or 1, repeats=a.repeats)
    report(r)
    print(f"results: {save(a.name or f'limit_{a.recipe}', r)}")
