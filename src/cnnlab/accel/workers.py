"""Evaluation on the cores training leaves idle: batches forwarded by several Python threads.

cnnlab trains with one intra-op thread on small machines, because OpenMP threads spin-wait for
each other whenever another program takes a core (benchmarks/README.md, "Threads"). Evaluation
needs no such lock-step: each batch's forward is independent, so plain Python threads, each
running whole batches on its own core with one intra-op thread, use the other cores without
spinning. PyTorch releases the GIL inside its kernels, and a thread that finds its core taken
simply waits its turn, as a second process would. Every batch is computed exactly as the one
thread would compute it (same batches, same kernels), so the logits are bit-for-bit the same
(tests/test_fastpath.py); only the order of the work changes, and results come back in order.

Threads share the model, so this is only done for modules whose forward is known to change
nothing: PyTorch's and torchvision's layers and cnnlab's own models, with no hooks registered. A
user's own class, whose forward may keep state, gets one thread.
"""
from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Sized

import torch
import torch.nn as nn

from cnnlab.accel.fastpath import _has_forward_hooks
from cnnlab.core.runtime import available_cores

# At most this many: the batches of one pass are few, and more threads only add contention.
MAX_WORKERS = 4
_PURE_PACKAGES = ("torch.nn.", "torchvision.", "cnnlab.")


def _known_pure(model: nn.Module) -> bool:
    return all(type(m).__module__.startswith(_PURE_PACKAGES) for m in model.modules())


def _threads_room(model: nn.Module) -> int:
    """How many threads of the current intra-op size the cores leave room for, up to ``MAX_WORKERS``;
    1 for a model not wholly on the CPU (a GPU runs one stream: more threads only interleave its launches)."""
    params = list(model.parameters())
    if not params or any(p.device.type != "cpu" for p in params):
        return 1
    return max(1, min(MAX_WORKERS, available_cores() // max(1, torch.get_num_threads())))


def eval_workers(model: nn.Module) -> int:
    """How many threads may forward batches of ``model`` at once: the cores one intra-op thread
    setting leaves room for, on a CPU, for a module known to be safe to share; else 1."""
    if not _known_pure(model) or _has_forward_hooks(model):
        return 1
    return _threads_room(model)


# Layers whose output for one image depends on that image alone and that draw no random numbers:
# a batch split into parts gives each image the same arithmetic, and the parts' gradients sum to the
# batch's. (BatchNorm couples the images of a batch; dropout draws from the shared generator.)
_PER_IMAGE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU,
              nn.ELU, nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
              nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Identity, nn.LayerNorm, nn.GroupNorm)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
# Parts smaller than this lose more to the threads' hand-offs than they gain (benchmarks/README.md,
# "Round 3"): batch 32 stays one piece, batch 256 becomes two parts of 128 on two cores.
MIN_PART = 64


def unsplittable(model: nn.Module) -> str | None:
    """Why a training batch of ``model`` cannot be split into parts (a layer's class name), or None.

    The model must be one of cnnlab's own, with a forward it declares to be
    ``classifier(flatten(features(x)))`` (``inference_parts``), made only of per-image layers,
    with no hooks: its forward then runs in several threads at once without sharing any state.
    """
    for m in model.modules():
        if m is not model and not isinstance(m, _PER_IMAGE + _CONTAINERS):
            return type(m).__name__
    if getattr(model, "inference_parts", None) is None or not type(model).__module__.startswith("cnnlab."):
        return type(model).__name__  # a forward cnnlab has not declared: it may keep state
    if _has_forward_hooks(model):
        return "forward hook"
    return None


def batch_parts(model: nn.Module, batch_size: int, asked: int | None) -> int:
    """Parts a training batch is split into: ``asked``, else what the cores and ``MIN_PART`` allow."""
    if asked is not None:
        return asked
    if unsplittable(model) is not None:
        return 1
    return max(1, min(_threads_room(model), batch_size // MIN_PART))


class Forwarded:
    """``(forward(x), y)`` for every ``(x, y)`` of ``batches``, in order.

    With ``workers > 1`` up to ``2 * workers`` batches are forwarded ahead by a thread pool.
    ``forward`` runs in those threads, so it must set up what is per thread itself (grad mode,
    autocast). Has ``len`` when ``batches`` has, for progress bars and ignite.
    """

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], batches: Iterable, workers: int = 1) -> None:
        self.forward, self.batches, self.workers = forward, batches, workers

    def __len__(self) -> int:
        return len(self.batches) if isinstance(self.batches, Sized) else 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.workers <= 1 or len(self) == 1:  # one batch (a served image): no pool to start
            for x, y in self.batches:
                yield self.forward(x), y
            return
        with ThreadPoolExecutor(self.workers, thread_name_prefix="cnnlab-eval") as pool:
            ahead: collections.deque = collections.deque()
            for x, y in self.batches:
                ahead.append((pool.submit(self.forward, x), y))
                if len(ahead) >= 2 * self.workers:
                    done, labels = ahead.popleft()
                    yield done.result(), labels
            while ahead:
                done, labels = ahead.popleft()
                yield done.result(), labels
