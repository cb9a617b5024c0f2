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

from cnnlab.errors import ConfigError


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
    if 2 * padding > span:
        raise ShapeError(f"padding {padding} is more than half the (dilated) {span}-pixel kernel; PyTorch refuses this")
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
