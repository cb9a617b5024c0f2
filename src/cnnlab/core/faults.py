"""Fault injection, for ``benchmarks/faults.py`` and the reliability tests only.

Two environment variables, each read in one place here, never set by cnnlab itself:

``CNNLAB_KILL_AT=NAME:PHASE[:N]``
    SIGKILL this process at the N-th (default 1st) atomic write of the file NAME, at PHASE
    ``tmp`` (the temporary file is complete, the target not yet replaced) or ``done`` (the
    target was just replaced).
``CNNLAB_TEST_PAUSE=POINT:SECONDS``
    Sleep SECONDS at the named race point, to make a race window that is microseconds wide
    happen every time. Points: ``run-locked`` (the run's lock is held, its folder not yet
    created) and ``run-created`` (the folder was just created, nothing written in it).

A malformed value is a :class:`ConfigError` (one line naming the variable), never a traceback.
Unset, each costs one dictionary lookup.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from cnnlab.core.errors import ConfigError
from cnnlab.core.i18n import _

KILL_VAR = "CNNLAB_KILL_AT"
PAUSE_VAR = "CNNLAB_TEST_PAUSE"
PHASES = ("tmp", "done")
PAUSE_POINTS = ("run-locked", "run-created")

_kill_counts: dict[str, int] = {}


def _malformed(var: str, value: str, expected: str) -> ConfigError:
    return ConfigError(_("{var}={value!r} is malformed: expected {expected} (a test-only setting; unset it)").format(
        var=var, value=value, expected=expected))


def kill_point(target: Path, phase: str) -> None:
    """SIGKILL this process here if ``CNNLAB_KILL_AT`` names this write of ``target`` at ``phase``."""
    spec = os.environ.get(KILL_VAR)
    if not spec:
        return
    name, _sep, rest = spec.partition(":")
    want_phase, _sep, nth = rest.partition(":")
    expected = "NAME:PHASE[:N], PHASE tmp or done, N a whole number >= 1"
    if not name or want_phase not in PHASES or (nth and not (nth.isdigit() and int(nth) >= 1)):
        raise _malformed(KILL_VAR, spec, expected)
    if name != target.name or want_phase != phase:
        return
    key = f"{name}:{phase}"
    _kill_counts[key] = _kill_counts.get(key, 0) + 1
    if _kill_counts[key] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def pause_point(point: str) -> None:
    """Sleep here if ``CNNLAB_TEST_PAUSE`` names ``point`` (test-only: widens a race window)."""
    spec = os.environ.get(PAUSE_VAR)
    if not spec:
        return
    name, _sep, seconds = spec.partition(":")
    try:
        delay = float(seconds)
    except ValueError:
        delay = -1.0
    if name not in PAUSE_POINTS or not 0 <= delay <= 3600:
        raise _malformed(PAUSE_VAR, spec, f"POINT:SECONDS, POINT one of {', '.join(PAUSE_POINTS)}, 0 <= SECONDS <= 3600")
    if name == point:
        time.sleep(delay)
