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

from cnnlab.accel import fastpath, workers
from cnnlab.accel.workers import Forwarded, batch_parts, unsplittable
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


def _no_grad(forward: Forward) -> Forward:
    """``forward`` without autograd, as float32 on the CPU: grad mode is per thread, so each worker sets it."""

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return forward(x).float().cpu()

    return run


def predict_logits(model: nn.Module, data: ImageSet, *, batch_size: int = EVAL_BATCH_SIZE, channels_last: bool = False) -> torch.Tensor:
    """Logits for every image of ``data`` in order, as a CPU float tensor (N, classes).

    On a CPU, batches are forwarded by as many threads as the cores allow (:mod:`cnnlab.accel.workers`;
    bit-identical to one thread)."""
    model.eval()
    batches = TensorBatches(data, batch_size, channels_last=channels_last)
    out = [logits for logits, _ in Forwarded(_no_grad(eval_forward(model)), batches, eval_workers(model))]
    return torch.cat(out) if out else torch.empty(0, len(data.classes))


def forward_batches(model: nn.Module, x: torch.Tensor, *, batch_size: int = EVAL_BATCH_SIZE) -> torch.Tensor:
    """Logits of float inputs ``x`` (N, C, H, W), ``batch_size`` at a time, as a CPU float tensor."""
    model.eval()
    chunks = [(chunk, None) for chunk in x.split(batch_size)] if len(x) else []
    out = [logits for logits, _ in Forwarded(_no_grad(eval_forward(model)), chunks, eval_workers(model))]
    return torch.cat(out) if out else torch.empty(0, 0)


def eval_workers(model: nn.Module) -> int:
    """Threads that may forward batches of ``model`` at once (:func:`cnnlab.accel.workers.eval_workers`);
    1 with the speed paths off."""
    return workers.eval_workers(model) if _SPEED_PATHS["on"] else 1
