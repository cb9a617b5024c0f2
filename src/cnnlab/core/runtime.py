"""Process-wide runtime settings that every entry point applies for itself.

Kept apart from ``cnnlab.engine`` so that prediction and serving, which need no
ignite, can apply them without importing it.
"""
from __future__ import annotations

import os

import torch

from cnnlab.core.config import check_device
from cnnlab.core.errors import ConfigError
from cnnlab.core.i18n import _


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS (Apple silicon), then the CPU; an absent device is a clear error."""
    check_device(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(_("device {name!r} was asked for, but no CUDA GPU is available; use cpu or auto")
                              .format(name=name), option="device")
        index = int(name[5:]) if name[5:] else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(_("device {name!r} was asked for, but this machine has {n} CUDA GPU(s): cuda:0 to "
                                "cuda:{last}").format(name=name, n=torch.cuda.device_count(),
                                                      last=torch.cuda.device_count() - 1), option="device")
    if name == "mps" and not mps_available():
        raise ConfigError(_("device 'mps' was asked for, but Apple's MPS is not available here "
                            "(it needs a Mac with Apple silicon and a PyTorch built with MPS); use cpu or auto"),
                          option="device")
    return torch.device(name)


def bf16_instructions(device: torch.device) -> str | None:
    """What makes bfloat16 arithmetic fast on ``device`` (e.g. ``"AVX512-BF16"``), or None where nothing does.

    On a CPU, oneDNN's bfloat16 convolutions and matmuls only beat float32 with AMX or AVX512-BF16;
    without them bfloat16 is emulated and slower. torch.cpu's probes are the ones oneDNN itself uses.
    """
    if device.type == "cuda":
        return "bfloat16 tensor cores" if torch.cuda.is_bf16_supported(including_emulation=False) else None
    if device.type == "cpu":
        found = [name for name, probe in (("AMX", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported"))
                 if getattr(torch.cpu, probe, lambda: False)()]
        return " + ".join(found) or None
    return None


def resolve_amp(amp: str, device: torch.device) -> tuple[str, str | None]:
    """``amp`` with ``auto`` decided for ``device``: ``(mode, why)``; ``why`` is None unless ``amp`` was auto."""
    if amp != "auto":
        return amp, None
    found = bf16_instructions(device)
    if found:
        return "bf16", _("amp auto: bfloat16 autocast for the training forward pass ({device} has {found}); "
                         "weights, optimizer and loss stay float32").format(device=device.type, found=found)
    return "off", _("amp auto: float32 ({device} has neither AMX nor AVX512-BF16, so bfloat16 would be slower)").format(
        device=device.type)


def mps_available() -> bool:
    """Apple's Metal (MPS) backend is built into this PyTorch and usable on this machine."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def set_threads(threads: int | None) -> None:
    """torch's intra-op threads: ``threads``, or :func:`default_threads` when None."""
    torch.set_num_threads(threads or default_threads())


def default_threads() -> int:
    """Intra-op threads: 1 on machines with 2 cores or fewer, else all cores up to 8.

    On a shared 2-core machine two OpenMP threads spin-wait for each other
    whenever anything else runs, and a batch-32 LeNet step becomes many times
    slower than with one thread (benchmarks/README.md, "Threads"). On a
    quiet machine one thread costs little at these layer sizes. Beyond 8
    threads LeNet-sized layers gain nothing.
    """
    cores = available_cores()
    return 1 if cores <= 2 else min(8, cores)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, as a container or taskset limits it;
    ``os.cpu_count()`` where the platform cannot say): the one count every default uses."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
