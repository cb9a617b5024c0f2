"""Progress bars on ignite engines: tqdm on stderr, redrawn at most a few times a second.

ignite's own ``ProgressBar`` forces a redraw on every iteration (its ``set_postfix`` refreshes), which
for one MNIST epoch is 1,563 redraws and about 600 KB of terminal output. Here the loss is handed
to tqdm without a refresh, so tqdm's ``mininterval`` alone decides when to draw.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

from ignite.engine import Engine, Events

#: Seconds between redraws: at most four a second, smooth to the eye, a few KB per epoch.
MININTERVAL = 0.25
#: An evaluation pass shorter than this draws nothing (tqdm's ``delay``): most passes are quick.
EVAL_DELAY = 1.0


def stderr_is_terminal() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def attach_bar(engine: Engine, desc: str, *, postfix: Callable[[Any], dict[str, float]] | None = None,
               delay: float = 0.0, leave: bool = False) -> Callable[[str], None]:
    """A tqdm bar over each run of ``engine`` (one per epoch, closed at its end).

    ``postfix(output)``: numbers shown beside the bar after each iteration (the loss). ``delay``:
    draw nothing for a pass shorter than this many seconds. Returns ``say(log)``: a wrapper for a
    ``log`` callable that prints a line without tearing the bar.
    """
    from tqdm.auto import tqdm

    bars: dict[str, Any] = {}

    @engine.on(Events.EPOCH_STARTED)
    def _open(e: Engine) -> None:
        total = e.state.epoch_length
        done = e.state.iteration % total if total else 0  # a resumed epoch starts part way
        bars["bar"] = tqdm(total=total, initial=done, desc=desc, leave=leave, mininterval=MININTERVAL, delay=delay,
                           file=sys.stderr, dynamic_ncols=True)

    @engine.on(Events.ITERATION_COMPLETED)
    def _step(e: Engine) -> None:
        bar = bars.get("bar")
        if bar is None:
            return
        if postfix is not None:
            bar.set_postfix(postfix(e.state.output), refresh=False)  # tqdm redraws on its own clock
        bar.update(1)

    # Not on EXCEPTION_RAISED: a handler there makes ignite swallow the exception.
    @engine.on(Events.EPOCH_COMPLETED)
    @engine.on(Events.TERMINATE)
    @engine.on(Events.COMPLETED)
    def _close(e: Engine) -> None:
        bar = bars.pop("bar", None)
        if bar is not None:
            bar.close()

    def say(log: Callable[[str], None]) -> Callable[[str], None]:
        def write(message: str) -> None:
            with tqdm.external_write_mode(file=sys.stderr):
                log(message)

        return write

    return say
