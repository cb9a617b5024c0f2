"""What a trained CNN looks at: first-layer filters and every conv layer's feature maps.

``visualize_run(RUN)`` writes, for one test image:

    filters.png            the first conv layer's kernels (one tile per output channel;
                           RGB kernels shown in colour, others channel by channel)
    input.png              the test image as the network received it, with label and prediction
    maps_01_<layer>.png    the feature maps after each conv layer, in forward order

Figures are pure functions (data in, Figure out); only :func:`visualize_run` writes files.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn as nn

from cnnlab.core.runs import RunDir, reading

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from cnnlab.analysis.figures import feature_maps_figure, filters_figure, input_figure
from cnnlab.analysis.report import load_best_and_test_set
from cnnlab.core.errors import ConfigError
from cnnlab.core.files import save_figure
from cnnlab.core.runtime import resolve_device
from cnnlab.data.tensors import to_float
from cnnlab.engine.checkpoint import model_from_checkpoint


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
                  data_dir: str | None = None, max_maps: int = 32, device: str = "auto") -> list[Path]:
    """Write filters.png, input.png and one maps_NN_<layer>.png per conv layer; returns the paths."""

    with reading(run_dir):  # the pictures are of the best.pt beside them
        return _visualize(run_dir, out_dir, index=index, data_dir=data_dir, max_maps=max_maps, device=device)


def _visualize(run_dir: str | Path, out_dir: str | Path | None, *, index: int, data_dir: str | None, max_maps: int,
               device: str) -> list[Path]:
    run_path, _, payload, test, info = load_best_and_test_set(run_dir, data_dir=data_dir)
    dev = resolve_device(device)
    model = model_from_checkpoint(payload, tta=False).to(dev)  # the network's own filters and maps
    if not 0 <= index < len(test):
        raise ConfigError(f"--index must be between 0 and {len(test) - 1} for this test set, got {index}")
    x = to_float(test.images[index : index + 1])
    label = info.classes[int(test.labels[index])]
    acts = [(name, out.cpu()) for name, out in conv_activations(model, x.to(dev))]
    model = model.cpu()
    logits = acts.pop()[1]
    pred = info.classes[int(logits.argmax())]
    prob = float(torch.softmax(logits, 0).max())

    out = Path(out_dir) if out_dir else RunDir(Path(run_path)).visualize
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
