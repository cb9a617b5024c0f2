"""Test-time augmentation with small shifts: a trained model answers for the image and its shifts.

``ShiftTTA(model, 1)`` runs ``model`` on the image and on its four copies shifted by one pixel
left, right, up and down (zero fill, as MNIST's black background), averages the five softmax
outputs and returns their log: log-probabilities, which serve as logits everywhere (argmax,
softmax and cross-entropy read them the same way). On MNIST this adds 0.05-0.15% test accuracy
to a one-epoch LeNet-5 for five forward passes of the *test* images (benchmarks/README.md,
"Time to accuracy"); training is unchanged. A recipe turns it on with ``[model] tta_shift = 1``;
the checkpoint's config records it, so evaluate, predict, serve and export all answer with it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


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
            raise ValueError(f"ShiftTTA needs a shift of at least 1 pixel, got {pixels}")
        self.model = model
        self.pixels = int(pixels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        probs = self.model(shifted_views(x, self.pixels)).float().softmax(dim=1)
        return probs.view(5, n, -1).mean(dim=0).log()

    def extra_repr(self) -> str:
        return f"pixels={self.pixels}"
