"""Process-wide runtime settings that every entry point applies for itself.

Kept apart from ``cnnlab.engine`` so that prediction and serving, which need no
ignite, can apply them without importing it.
"""
from __future__ import annotations

import os

import torch

from cnnlab.core.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; asking for CUDA without one is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for, but no CUDA GPU is available; use --device cpu or auto")
    return torch.device(name)


def default_threads() -> int:
    """Intra-op threads: 1 on machines with 2 cores or fewer, else all cores up to 8.

    On a shared 2-core machine two OpenMP threads spin-wait for each other
    whenever anything else runs, and a batch-32 LeNet step becomes many times
    slower than with one thread (benchmarks/README.md, "Threads"). On a
    quiet machine one thread costs little at these layer sizes. Beyond 8
    threads LeNet-sized layers gain nothing.
    """
    cores = os.cpu_count() or 1
    return 1 if cores <= 2 else min(8, cores)
