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


def machine_provenance() -> dict:
    """Date (UTC), commit, Python/torch versions, CPU model and core count."""
    import torch

    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
    }
