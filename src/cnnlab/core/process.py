"""Ending a command-line process without tearing down every imported module.

After its last line of output a Python process still finalizes every module it imported: with
torch loaded, and more so after a training run (torch._dynamo, which every torch optimizer imports,
ignite, matplotlib), that is a large part of what `cnnlab train` spends outside its work
(measured in benchmarks/README.md, "Start-up"). :func:`exit_now` does what matters of that shutdown (the
``atexit`` handlers, which also run ``weakref.finalize`` callbacks such as temporary-folder
clean-up, and flushing stdout/stderr), then ends the process with ``os._exit``. cnnlab closes
every file it writes before returning (core/files.py writes atomically), so nothing is left for
module teardown to do. Only the command line uses it (``apps/cli.main``), never a library call;
``CNNLAB_NO_FAST_EXIT=1`` restores the ordinary exit.
"""
from __future__ import annotations

import atexit
import os
import sys


def exit_code(code: object) -> int:
    """``SystemExit.code`` as a process exit status (a message is printed and exits 1, as Python does)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def exit_now(code: object = 0) -> None:
    """Run the atexit handlers, flush the standard streams and end the process with ``code``."""
    status = exit_code(code)
    if os.environ.get("CNNLAB_NO_FAST_EXIT") == "1":
        sys.exit(status)
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe (`cnnlab models | head -1`) or stream: nothing to do
                pass
        os._exit(status)
