"""The progress bar redraws on tqdm's clock (a few times a second), not on every step."""
from __future__ import annotations

import io
import sys

import pytest
from ignite.engine import Engine

from cnnlab.engine.progress import MININTERVAL, attach_bar


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_redraws_a_few_times_not_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    term = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", term)
    engine = Engine(lambda e, batch: 1.0)
    attach_bar(engine, "train", postfix=lambda loss: {"loss": loss})
    steps = 5000
    engine.run(range(steps), max_epochs=1)
    redraws = term.getvalue().count("\r")
    # ignite's own ProgressBar redraws on every step (5000 here); tqdm's clock allows one per
    # MININTERVAL plus the first and the last, however long the run took.
    assert 0 < redraws < steps / 50, redraws
    assert MININTERVAL >= 0.2


def test_log_lines_go_through_the_callers_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    engine = Engine(lambda e, batch: 1.0)
    said: list[str] = []
    say = attach_bar(engine, "train")(said.append)
    engine.run(range(3), max_epochs=1)
    say("epoch 1/1")
    assert said == ["epoch 1/1"]


def test_short_evaluation_pass_draws_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    term = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", term)
    engine = Engine(lambda e, batch: None)
    attach_bar(engine, "evaluate", delay=60.0)
    engine.run(range(100), max_epochs=1)
    assert term.getvalue() == ""
