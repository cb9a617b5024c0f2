"""glibc allocator tuning: batch buffers reused instead of re-faulted (benchmarks/README.md, "Memory allocator")."""
from __future__ import annotations

import ctypes
import os
import sys

# mallopt's parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8


def _mallopt(settings: list[tuple[int, int]]) -> bool:
    """Apply glibc ``mallopt`` settings in order; whether all took. A no-op (False) outside glibc
    or with ``CNNLAB_NO_MALLOC_TUNING=1``."""
    if os.environ.get("CNNLAB_NO_MALLOC_TUNING") == "1" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = True
        for param, value in settings:
            ok &= libc.mallopt(param, value) == 1
        return bool(ok)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False


def tune_malloc() -> bool:
    """Keep freed activation buffers in the heap instead of returning them to the OS (glibc only).

    glibc serves allocations above a (dynamic) threshold with a fresh mmap and trims
    the heap back to the OS when its free top grows past another: every batch's
    activations, a few hundred KB to a few MB each, then arrive as new pages that the
    kernel must fault in and zero. Raising both thresholds once makes those buffers
    reusable, with the same arithmetic (the gain is measured in benchmarks/README.md,
    "Memory allocator"). Returns whether the settings were applied; a no-op (False)
    outside glibc or with ``CNNLAB_NO_MALLOC_TUNING=1``.
    """
    # 32 MiB is glibc's largest mmap threshold on 64-bit; larger blocks (datasets) stay mmapped.
    return _mallopt([(M_MMAP_THRESHOLD, 32 * 2**20), (M_TRIM_THRESHOLD, 1 * 2**30)])


def tune_malloc_for_serving() -> bool:
    """Hand large freed buffers back to the OS at once (glibc only): for ``cnnlab serve``.

    A server decodes the odd large upload (a 25-megapixel PNG is 100 MB decoded, in Pillow's
    16 MB blocks and numpy's few-MB work arrays) on whichever worker thread is free. glibc's
    dynamic mmap threshold rises to 32 MiB after the first large free, so those blocks then
    come from per-thread heaps that keep them, resident after the answer (measured by
    benchmarks/serve_memory.py). A fixed 1 MiB threshold (which also stops the dynamic rise) maps
    every large buffer on its own, returned when freed; at most two arenas bound what small ones keep.
    Returns whether the settings were applied; a no-op outside glibc or with ``CNNLAB_NO_MALLOC_TUNING=1``.
    """
    return _mallopt([(M_MMAP_THRESHOLD, 1 * 2**20), (M_TRIM_THRESHOLD, 4 * 2**20), (M_ARENA_MAX, 2)])
