"""Test-time augmentation with small shifts: a trained model answers for the image and its shifts.

``ShiftTTA(model, 1)`` runs ``model`` on the image and on its four copies shifted by one pixel
left, right, up and down (zero fill, as MNIST's black background), averages the five softmax
outputs and returns their log: log-probabilities, which serve as logits everywhere (argmax,
softmax and cross-entropy read them the same way). On MNIST it adds test accuracy to a one-epoch
LeNet-5 for five forward passes of the *test* images (measured in benchmarks/README.md,
"Time to accuracy"); training is unchanged. A recipe turns it on with ``[model] tta_shift = 1``;
the checkpoint's config records it, so evaluate, predict, serve and export all answer with it.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.core.i18n import _


def shifted_views(x: torch.Tensor, pixels: int) -> torch.Tensor:
    """(5N, C, H, W): ``x`` and its shifts by ``pixels`` right, left, down and up, zero filled."""
    p = pixels
    h, w = x.shape[-2:]
    padded = F.pad(x, (p, p, p, p))
    views = [x]
    for dy, dx in ((0, p), (0, -p), (p, 0), (-p, 0)):  # content moves by (dy, dx)
        views.append(padded[..., p - dy : p - dy + h, p - dx : p - dx + w])
    return torch.cat(views)


class ShiftTTA(nn.Module):
    """``model`` with its softmax averaged over the input and its four ``pixels`` shifts; returns log-probabilities."""

    def __init__(self, model: nn.Module, pixels: int = 1) -> None:
        super().__init__()
        if pixels < 1:
            raise ValueError(_("ShiftTTA needs a shift of at least 1 pixel, got {pixels}").format(pixels=pixels))
        self.model = model
        self.pixels = int(pixels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with(self.model, x)

    def forward_with(self, net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The same average, with ``net`` as the network's forward (``cnnlab.inference`` passes its
        exact fast path for ``self.model``, so the shifted views take the fast path too)."""
        # One view at a time: five batches of the caller's size stay in cache, where one batch of five
        # times the size does not (benchmarks/README.md).
        total = None
        for view in shifted_views(x, self.pixels).split(x.shape[0]):
            probs = net(view.contiguous()).float().softmax(dim=1)
            total = probs if total is None else total + probs
        return (total / 5).log()

    def extra_repr(self) -> str:
        return f"pixels={self.pixels}"
