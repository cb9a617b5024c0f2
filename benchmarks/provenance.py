"""Provenance shared by every benchmark: when, on what, from which commit.

Saved next to each result so a figure can always be traced to its machine and code.
The scripts run as ``python benchmarks/NAME.py``, which puts this folder on sys.path.
"""
from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return ""


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return ""


# The instruction sets that decide which fast paths a CPU has: AVX-512 for float32, avx512_bf16
# and AMX for bfloat16 (oneDNN and MKL pick their kernels from these).
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


def cpu_flags() -> list[str]:
    """The CPU's :data:`SPEED_FLAGS`, as /proc/cpuinfo lists them."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next(line.split(":", 1)[1].split() for line in fh if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return [f for f in SPEED_FLAGS if f in flags]


def matmul_peaks(threads: int | None = None, n: int = 2048, repeats: int = 5) -> dict:
    """Float32 and bfloat16 ``n x n`` matmul rates (GFLOP/s, best of ``repeats``) on ``threads`` threads.

    The ceiling every speed figure is read against: the next session may run on another CPU, so
    each result file carries the peaks of the machine and the threads that produced it.
    """
    import time

    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        out = {"threads": torch.get_num_threads(), "n": n}
        for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
            a @ b  # the first call picks and warms up the kernel
            best = 0.0
            for _ in range(repeats):
                t0 = time.perf_counter()
                a @ b
                best = max(best, 2 * n**3 / (time.perf_counter() - t0))
            out[f"{name}_gflops"] = round(best / 1e9, 1)
        return out
    finally:
        torch.set_num_threads(previous)


def machine_provenance(*, peaks: bool = True) -> dict:
    """Date (UTC), commit, Python/torch versions, CPU model, its speed flags, core count and matmul
    peaks on one thread (cnnlab's default on small machines) and on every core."""
    import torch

    counts = sorted({1, os.cpu_count() or 1})
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        **({"matmul_peaks": [matmul_peaks(n) for n in counts]} if peaks else {}),
    }
