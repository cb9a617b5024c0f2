"""One batched forward, for evaluation, prediction, serving and the export check.

This is also the one seam where the CPU speed paths of ``cnnlab.accel`` plug in:
nothing else in the package imports them. They are exact (the eager model's
results bit for bit, tests/test_fastpath.py), so they are on by default;
:func:`set_speed_paths` turns them off, e.g. to time the plain model.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn as nn

from cnnlab.accel import fastpath
from cnnlab.core.config import EVAL_BATCH_SIZE
from cnnlab.data.tensors import ImageSet, TensorBatches
from cnnlab.models.tta import ShiftTTA

Forward = Callable[[torch.Tensor], torch.Tensor]
_SPEED_PATHS = {"on": True}


def set_speed_paths(on: bool) -> bool:
    """Use (True) or bypass (False) the exact CPU speed paths; returns the previous setting."""
    previous, _SPEED_PATHS["on"] = _SPEED_PATHS["on"], bool(on)
    return previous


def eval_forward(model: nn.Module) -> Forward:
    """The forward to use for inference on ``model``: a speed path where one is exact, else the model."""
    if not _SPEED_PATHS["on"]:
        return model
    if isinstance(model, ShiftTTA):  # test-time augmentation: its five views through the network's own fast path
        return functools.partial(model.forward_with, eval_forward(model.model))
    return fastpath.inference_forward(model)


def train_forward(model: nn.Module) -> Forward:
    """The forward to use in a training step; the model's own results, bit for bit."""
    return fastpath.training_forward(model) if _SPEED_PATHS["on"] else model


@torch.no_grad()
def predict_logits(model: nn.Module, data: ImageSet, *, batch_size: int = EVAL_BATCH_SIZE, channels_last: bool = False) -> torch.Tensor:
    """Logits for every image of ``data`` in order, as a CPU float tensor (N, classes)."""
    model.eval()
    forward = eval_forward(model)
    out = [forward(x).float().cpu() for x, _ in TensorBatches(data, batch_size, channels_last=channels_last)]
    return torch.cat(out) if out else torch.empty(0, len(data.classes))


@torch.no_grad()
def forward_batches(model: nn.Module, x: torch.Tensor, *, batch_size: int = EVAL_BATCH_SIZE) -> torch.Tensor:
    """Logits of float inputs ``x`` (N, C, H, W), ``batch_size`` at a time, as a CPU float tensor."""
    model.eval()
    forward = eval_forward(model)
    out = [forward(chunk).float().cpu() for chunk in x.split(batch_size)] if len(x) else []
    return torch.cat(out) if out else torch.empty(0, 0)
