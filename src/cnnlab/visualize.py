"""What a trained CNN looks at: first-layer filters and every conv layer's feature maps.

``visualize_run(RUN)`` writes, for one test image:

    filters.png            the first conv layer's kernels (one tile per output channel;
                           RGB kernels shown in colour, others channel by channel)
    input.png              the test image as the network received it, with label and prediction
    maps_01_<layer>.png    the feature maps after each conv layer, in forward order

Figures are pure functions (data in, Figure out); only :func:`visualize_run` writes files.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
from matplotlib.figure import Figure

from cnnlab.errors import ConfigError
from cnnlab.files import save_figure
from cnnlab.plots import new_figure


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, max(1, math.ceil(math.sqrt(n * 1.5))))
    return math.ceil(n / cols), cols


def _norm(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def _tile_grid(images: Sequence[np.ndarray], tile: float, pad_w: float, pad_h: float, **imshow: object) -> Figure:
    """One image per tile in a near-square grid, each titled with its index; spare tiles left blank."""
    rows, cols = _grid(len(images))
    fig = new_figure(tile * cols + pad_w, tile * rows + pad_h)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i < len(images):
            ax.imshow(images[i], interpolation="nearest", **imshow)
            ax.set_title(str(i), fontsize=7)
    return fig


def filters_figure(weight: torch.Tensor, title: str = "first conv layer filters") -> Figure:
    """One tile per output channel of a conv weight (out, in, kh, kw).

    3-input-channel kernels are drawn as RGB (each kernel scaled to its own
    range); otherwise each (output, input) kernel pair is a grey tile, with a
    shared colour scale so strengths compare (red positive, blue negative).
    """
    w = weight.detach().float().cpu().numpy()
    out_c, in_c = w.shape[:2]
    if in_c == 3:
        fig = _tile_grid([_norm(k.transpose(1, 2, 0)) for k in w], 1.1, 0.5, 0.6)
    else:
        shown_in = min(in_c, 8)
        rows, cols = out_c, shown_in
        if shown_in == 1:
            rows, cols = _grid(out_c)
        fig = new_figure(1.0 * cols + 1.2, 1.0 * rows + 0.6)
        axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
        vmax = float(np.abs(w).max()) or 1.0
        tiles = [(o, c) for o in range(out_c) for c in range(shown_in)]
        for ax, tile in zip(axes, tiles + [None] * (len(axes) - len(tiles))):
            ax.set_axis_off()
            if tile is not None:
                o, c = tile
                im = ax.imshow(w[o, c], cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
                ax.set_title(f"{o}" if shown_in == 1 else f"{o}/{c}", fontsize=7)
        fig.colorbar(im, ax=list(axes), fraction=0.03, pad=0.02)
    fig.suptitle(f"{title}: {out_c} filters, {in_c} input channel(s), {w.shape[2]}x{w.shape[3]}")
    return fig


def feature_maps_figure(maps: torch.Tensor, title: str, max_maps: int = 32) -> Figure:
    """The (C, H, W) activations of one image after one layer, one tile per channel."""
    m = maps.detach().float().cpu().numpy()
    n = min(len(m), max_maps)
    fig = _tile_grid(m[:n], 1.2, 0.4, 0.7, cmap="viridis")
    shown = f"first {n} of {len(m)}" if n < len(m) else f"{len(m)}"
    fig.suptitle(f"{title}: {shown} channels, {m.shape[1]}x{m.shape[2]}")
    return fig


def input_figure(image: torch.Tensor, caption: str) -> Figure:
    x = image.detach().float().cpu().numpy()
    fig = new_figure(3, 3.3)
    ax = fig.subplots()
    ax.set_axis_off()
    if x.shape[0] == 3:
        ax.imshow(_norm(x.transpose(1, 2, 0)), interpolation="nearest")
    else:
        ax.imshow(x[0], cmap="gray", interpolation="nearest")
    ax.set_title(caption, fontsize=9)
    return fig


def conv_activations(model: nn.Module, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """(layer name, output) of every Conv2d for a batch of one image, in forward order.

    A conv followed directly by BatchNorm/ReLU is shown as the conv's output;
    that is what the layer computed, before any normalisation.
    """
    found: list[tuple[str, torch.Tensor]] = []
    handles = [
        module.register_forward_hook(lambda mod, inp, out, name=name: found.append((name, out[0].detach())))
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d)
    ]
    model.eval()
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
    found.append(("__logits__", logits[0]))
    return found


def first_conv(model: nn.Module) -> nn.Conv2d:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module
    raise ConfigError("this model has no Conv2d layer to visualise")


def visualize_run(run_dir: str | Path, out_dir: str | Path | None = None, *, index: int = 0,
                  data_dir: str | None = None, max_maps: int = 32) -> list[Path]:
    """Write filters.png, input.png and one maps_NN_<layer>.png per conv layer; returns the paths."""
    from cnnlab.checkpoint import model_from_checkpoint
    from cnnlab.data import to_float
    from cnnlab.evaluate import load_best_and_test_set

    run_path, _, payload, test, info = load_best_and_test_set(run_dir, data_dir=data_dir)
    model = model_from_checkpoint(payload)
    if not 0 <= index < len(test):
        raise ConfigError(f"--index must be between 0 and {len(test) - 1} for this test set, got {index}")
    x = to_float(test.images[index : index + 1])
    label = info.classes[int(test.labels[index])]
    acts = conv_activations(model, x)
    logits = acts.pop()[1]
    pred = info.classes[int(logits.argmax())]
    prob = float(torch.softmax(logits, 0).max())

    out = Path(out_dir) if out_dir else run_path / "visualize"
    written: list[Path] = []

    def save(fig: Figure, name: str) -> None:
        save_figure(fig, out / name)
        written.append(out / name)

    save(filters_figure(first_conv(model).weight, f"{payload['model']['name']} first conv layer"), "filters.png")
    save(input_figure(x[0], f"test image {index}: label {label}, predicted {pred} ({prob:.0%})"), "input.png")
    for k, (name, maps) in enumerate(acts, start=1):
        save(feature_maps_figure(maps, f"after {name}", max_maps), f"maps_{k:02d}_{_safe(name)}.png")
    return written


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name) or "layer"


__all__: Sequence[str] = [
    "conv_activations",
    "feature_maps_figure",
    "filters_figure",
    "input_figure",
    "visualize_run",
]
