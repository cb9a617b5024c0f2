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
from typing import TYPE_CHECKING

from cnnlab.core.errors import ConfigError
from cnnlab.core.i18n import _, localize_number

if TYPE_CHECKING:  # torch is imported only where a model is summarised
    import torch


class ShapeError(ConfigError):
    """A layer cannot be applied to an input of this size."""


def _check_hyper(kernel: int, stride: int, padding: int, dilation: int) -> None:
    for name, value, low in (("kernel", kernel, 1), ("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ShapeError(_("{name} must be a whole number >= {low}, got {value!r}").format(name=name, low=low,
                                                                                               value=value))


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output side of a Conv2d: ``floor((size + 2*padding - dilation*(kernel-1) - 1) / stride) + 1``."""
    _check_hyper(kernel, stride, padding, dilation)
    if size < 1:
        raise ShapeError(_("input size must be >= 1, got {size}").format(size=size))
    span = dilation * (kernel - 1) + 1  # the kernel's footprint once dilated
    if span > size + 2 * padding:
        raise ShapeError(
            _("a {k}x{k} kernel with dilation {dilation} spans {span} pixels, more than the {size}-pixel input plus "
              "padding 2*{padding} = {total}; use a smaller kernel or more padding").format(
                k=kernel, dilation=dilation, span=span, size=size, padding=padding, total=size + 2 * padding)
        )
    return (size + 2 * padding - span) // stride + 1


def pool_output_size(
    size: int, kernel: int, stride: int | None = None, padding: int = 0, dilation: int = 1, ceil_mode: bool = False
) -> int:
    """Output side of MaxPool2d/AvgPool2d (stride defaults to the kernel, as in PyTorch)."""
    stride = kernel if stride is None else stride
    _check_hyper(kernel, stride, padding, dilation)
    if size < 1:
        raise ShapeError(_("input size must be >= 1, got {size}").format(size=size))
    span = dilation * (kernel - 1) + 1
    if padding > kernel // 2:  # PyTorch's rule, on the undilated kernel size
        raise ShapeError(_("padding {padding} is more than half the kernel size {kernel}; PyTorch refuses this").format(
            padding=padding, kernel=kernel))
    top = size + 2 * padding - span
    out = (math.ceil(top / stride) if ceil_mode else top // stride) + 1
    # PyTorch drops a last window that would start entirely in the right padding.
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    if out < 1:
        raise ShapeError(
            _("a {k}x{k} pooling window (stride {stride}, padding {padding}) does not fit a {size}-pixel input").format(
                k=kernel, stride=stride, padding=padding, size=size)
        )
    return out


# --- worked formulas ------------------------------------------------------------------------


def explain_conv(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> str:
    """The conv output-size formula with the numbers filled in."""
    out = conv_output_size(size, kernel, stride, padding, dilation)
    layer = f"Conv2d(kernel_size={kernel}, stride={stride}, padding={padding}, dilation={dilation})"
    return (_("{layer} on {size}x{size}:").format(layer=layer, size=size) + "\n"
            f"  out = floor((in + 2*padding - dilation*(kernel-1) - 1) / stride) + 1\n"
            f"      = floor(({size} + 2*{padding} - {dilation}*({kernel}-1) - 1) / {stride}) + 1 = {out}\n"
            f"  -> {out}x{out}")


def explain_pool(size: int, kernel: int, stride: int | None = None, padding: int = 0, dilation: int = 1,
                 ceil_mode: bool = False) -> str:
    """The pooling output-size formula with the numbers filled in."""
    s = kernel if stride is None else stride
    out = pool_output_size(size, kernel, s, padding, dilation, ceil_mode)
    rnd = "ceil" if ceil_mode else "floor"
    layer = (f"MaxPool2d/AvgPool2d(kernel_size={kernel}, stride={s}, padding={padding}, dilation={dilation}, "
             f"ceil_mode={ceil_mode})")
    return (_("{layer} on {size}x{size}:").format(layer=layer, size=size) + "\n"
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
        return ["  " + " ".join(localize_number(f"{v:5g}") for v in row.tolist()) for row in t]

    lines = [_("input {h}x{w}, {k}x{k} windows, stride {k}:").format(h=x.shape[0], w=x.shape[1], k=kernel)]
    lines += grid(x)
    lines.append("")
    sep = ", " if localize_number("0.5") == "0.5" else "; "  # a decimal comma needs another list separator
    for i in range(mx.shape[0]):
        for j in range(mx.shape[1]):
            win = x[i * kernel : (i + 1) * kernel, j * kernel : (j + 1) * kernel].flatten().tolist()
            ws = sep.join(localize_number(f"{v:g}") for v in win)
            lines.append("  " + _("window ({i},{j}) = [{values}]: max {max}, mean {mean}").format(
                i=i, j=j, values=ws, max=localize_number(f"{mx[i, j].item():g}"),
                mean=localize_number(f"{av[i, j].item():g}")))
    lines += ["", _("MaxPool2d(2) -> the largest value of each window:")] + grid(mx)
    lines += ["", _("AvgPool2d(2) -> the mean of each window:")] + grid(av)
    return "\n".join(lines)


# --- model summary ----------------------------------------------------------------------------


