"""The layer explorer: output sizes of conv/pool layers, and a per-layer summary of a model.

Two tools from the lesson's first section:

* :func:`conv_output_size` / :func:`pool_output_size` give the output side of a
  Conv2d / MaxPool2d / AvgPool2d for a kernel, stride, padding and dilation,
  with PyTorch's own rules (and a clear error where PyTorch would refuse);
* :func:`summarize` runs one forward pass with hooks and lists every layer's
  output shape, parameters and multiply-adds (MACs).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cnnlab.errors import ConfigError

if TYPE_CHECKING:  # torch is imported only where a model is summarised
    import torch
    import torch.nn as nn


class ShapeError(ConfigError):
    """A layer cannot be applied to an input of this size."""


def _check_hyper(kernel: int, stride: int, padding: int, dilation: int) -> None:
    for name, value, low in (("kernel", kernel, 1), ("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ShapeError(f"{name} must be a whole number >= {low}, got {value!r}")


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output side of a Conv2d: ``floor((size + 2*padding - dilation*(kernel-1) - 1) / stride) + 1``."""
    _check_hyper(kernel, stride, padding, dilation)
    if size < 1:
        raise ShapeError(f"input size must be >= 1, got {size}")
    span = dilation * (kernel - 1) + 1  # the kernel's footprint once dilated
    if span > size + 2 * padding:
        raise ShapeError(
            f"a {kernel}x{kernel} kernel with dilation {dilation} spans {span} pixels, more than the "
            f"{size}-pixel input plus padding 2*{padding} = {size + 2 * padding}; use a smaller kernel or more padding"
        )
    return (size + 2 * padding - span) // stride + 1


def pool_output_size(
    size: int, kernel: int, stride: int | None = None, padding: int = 0, dilation: int = 1, ceil_mode: bool = False
) -> int:
    """Output side of MaxPool2d/AvgPool2d (stride defaults to the kernel, as in PyTorch)."""
    stride = kernel if stride is None else stride
    _check_hyper(kernel, stride, padding, dilation)
    if size < 1:
        raise ShapeError(f"input size must be >= 1, got {size}")
    span = dilation * (kernel - 1) + 1
    if padding > kernel // 2:  # PyTorch's rule, on the undilated kernel size
        raise ShapeError(f"padding {padding} is more than half the kernel size {kernel}; PyTorch refuses this")
    top = size + 2 * padding - span
    out = (math.ceil(top / stride) if ceil_mode else top // stride) + 1
    # PyTorch drops a last window that would start entirely in the right padding.
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    if out < 1:
        raise ShapeError(
            f"a {kernel}x{kernel} pooling window (stride {stride}, padding {padding}) does not fit a {size}-pixel input"
        )
    return out


# --- worked formulas ------------------------------------------------------------------------


def explain_conv(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> str:
    """The conv output-size formula with the numbers filled in."""
    out = conv_output_size(size, kernel, stride, padding, dilation)
    return (f"Conv2d(kernel_size={kernel}, stride={stride}, padding={padding}, dilation={dilation}) on {size}x{size}:\n"
            f"  out = floor((in + 2*padding - dilation*(kernel-1) - 1) / stride) + 1\n"
            f"      = floor(({size} + 2*{padding} - {dilation}*({kernel}-1) - 1) / {stride}) + 1 = {out}\n"
            f"  -> {out}x{out}")


def explain_pool(size: int, kernel: int, stride: int | None = None, padding: int = 0, dilation: int = 1,
                 ceil_mode: bool = False) -> str:
    """The pooling output-size formula with the numbers filled in."""
    s = kernel if stride is None else stride
    out = pool_output_size(size, kernel, s, padding, dilation, ceil_mode)
    rnd = "ceil" if ceil_mode else "floor"
    return (f"MaxPool2d/AvgPool2d(kernel_size={kernel}, stride={s}, padding={padding}, dilation={dilation}, "
            f"ceil_mode={ceil_mode}) on {size}x{size}:\n"
            f"  out = {rnd}((in + 2*padding - dilation*(kernel-1) - 1) / stride) + 1\n"
            f"      = {rnd}(({size} + 2*{padding} - {dilation}*({kernel}-1) - 1) / {s}) + 1 = {out}\n"
            f"  -> {out}x{out}")


POOL_EXAMPLE_INPUT = [[1, 3, 2, 4], [5, 6, 1, 2], [7, 2, 9, 0], [3, 4, 1, 8]]


def pooling_example(values: list[list[float]] | None = None, kernel: int = 2) -> str:
    """Max and average pooling of a small matrix, computed by PyTorch, shown window by window."""
    import torch
    import torch.nn.functional as F

    x = torch.tensor(values or POOL_EXAMPLE_INPUT, dtype=torch.float32)
    mx = F.max_pool2d(x[None, None], kernel)[0, 0]
    av = F.avg_pool2d(x[None, None], kernel)[0, 0]

    def grid(t: torch.Tensor) -> list[str]:
        return ["  " + " ".join(f"{v:5g}" for v in row.tolist()) for row in t]

    lines = [f"input {x.shape[0]}x{x.shape[1]}, {kernel}x{kernel} windows, stride {kernel}:"]
    lines += grid(x)
    lines.append("")
    for i in range(mx.shape[0]):
        for j in range(mx.shape[1]):
            win = x[i * kernel : (i + 1) * kernel, j * kernel : (j + 1) * kernel].flatten().tolist()
            ws = ", ".join(f"{v:g}" for v in win)
            lines.append(f"  window ({i},{j}) = [{ws}]: max {mx[i, j].item():g}, mean {av[i, j].item():g}")
    lines += ["", "MaxPool2d(2) -> the largest value of each window:"] + grid(mx)
    lines += ["", "AvgPool2d(2) -> the mean of each window:"] + grid(av)
    return "\n".join(lines)


# --- model summary ----------------------------------------------------------------------------


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


@dataclass
class ModelSummary:
    model: str
    input_shape: tuple[int, int, int]
    rows: list[LayerRow]
    total_params: int
    total_macs: int

    def to_text(self) -> str:
        c, h, w = self.input_shape
        name_w = max([len("layer")] + [len(r.name) for r in self.rows])
        kind_w = max([len("type")] + [len(r.kind) for r in self.rows])
        head = f"{'layer':<{name_w}}  {'type':<{kind_w}}  {'output shape':>14}  {'params':>11}  {'MACs':>13}"
        lines = [f"{self.model} on a {c}x{h}x{w} input", head, "-" * len(head)]
        for r in self.rows:
            shape = "x".join(str(d) for d in r.output_shape)
            lines.append(f"{r.name:<{name_w}}  {r.kind:<{kind_w}}  {shape:>14}  {r.params:>11,}  {r.macs:>13,}")
        lines.append("-" * len(head))
        lines.append(f"{'total':<{name_w}}  {'':<{kind_w}}  {'':>14}  {self.total_params:>11,}  {self.total_macs:>13,}")
        lines.append("MACs: multiply-adds of one image through conv and linear layers (bias, activations, "
                     "pooling and normalisation not counted).")
        return "\n".join(lines)


def layer_macs(module: "nn.Module", inputs: tuple, output: "torch.Tensor") -> int:
    """Multiply-adds of one call of a conv or linear layer, per image."""
    import torch.nn as nn

    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        per_out = (module.in_channels // module.groups) * kh * kw
        return int(output[0].numel()) * per_out
    if isinstance(module, nn.Linear):
        return int(output[0].numel()) * module.in_features
    return 0


def summarize(model: "nn.Module", input_shape: tuple[int, int, int], name: str = "model") -> ModelSummary:
    """One forward pass of a single zero image with hooks on every leaf module."""
    import torch

    rows: list[LayerRow] = []
    handles = []

    def hook(mod_name: str):
        def fn(module, inputs, output):
            if isinstance(output, torch.Tensor):
                params = sum(p.numel() for p in module.parameters(recurse=False))
                rows.append(LayerRow(mod_name, type(module).__name__, tuple(output.shape[1:]), params,
                                     layer_macs(module, inputs, output)))
        return fn

    for mod_name, module in model.named_modules():
        if mod_name and not any(True for _ in module.children()):
            handles.append(module.register_forward_hook(hook(mod_name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    total_params = sum(p.numel() for p in model.parameters())
    return ModelSummary(name, tuple(input_shape), rows, total_params, sum(r.macs for r in rows))


def summarize_model(name: str, input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10) -> ModelSummary:
    """Summary of a registered model built for ``input_shape``."""
    from cnnlab.models import create_model

    c, h, w = input_shape
    if h != w:
        raise ShapeError(f"cnnlab models take square images; got {h}x{w}")
    try:
        model = create_model(name, in_channels=c, num_classes=num_classes, image_size=h)
    except ValueError as exc:
        raise ShapeError(str(exc)) from None
    return summarize(model, input_shape, name)


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"1x28x28"`` / ``"3,32,32"`` -> (C, H, W)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        c, h, w = (int(p) for p in parts)
    except ValueError:
        raise ShapeError(f"input shape must look like 1x28x28 (channels x height x width), got {text!r}") from None
    if min(c, h, w) < 1:
        raise ShapeError(f"input shape must be positive, got {text!r}")
    return c, h, w


def models_table(input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10) -> str:
    """Every registered model with its parameters and MACs for one ``input_shape`` image."""
    from cnnlab.models import get_model_entry, list_models, supports_pretrained

    c, h, w = input_shape
    rows = []
    for name in list_models():
        try:
            s = summarize_model(name, input_shape, num_classes)
            params, macs = f"{s.total_params:,}", f"{s.total_macs:,}"
        except ShapeError as exc:
            params, macs = "-", f"({exc})"[:40]
        rows.append((name, params, macs, "yes" if supports_pretrained(name) else "", get_model_entry(name).description))
    nw = max(len("model"), *(len(r[0]) for r in rows))
    pw = max(len("params"), *(len(r[1]) for r in rows))
    mw = max(len("MACs"), *(len(r[2]) for r in rows))
    lines = [f"models for a {c}x{h}x{w} input, {num_classes} classes (MACs: multiply-adds per image)",
             f"{'model':<{nw}}  {'params':>{pw}}  {'MACs':>{mw}}  pretrained  description"]
    lines += [f"{r[0]:<{nw}}  {r[1]:>{pw}}  {r[2]:>{mw}}  {r[3]:<10}  {r[4]}" for r in rows]
    return "\n".join(lines)
