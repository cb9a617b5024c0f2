"""The library's front door: train a config end to end (fit, then score the best checkpoint on the test set).

``cnnlab train`` and the notebook API both come through here, so the two can never drift apart.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cnnlab.analysis.metrics import TestReport
from cnnlab.analysis.report import evaluate_checkpoint
from cnnlab.core.config import Config
from cnnlab.core.runs import RunDir
from cnnlab.engine import distributed
from cnnlab.engine.train import fit


@dataclass
class TrainResult:
    """A finished run: its folder, metrics history, best epoch and the best checkpoint's test report."""

    run: RunDir
    best_epoch: int
    best_val_loss: float
    history: list[dict]
    test: TestReport
    seconds: float
    resumed_from: int = 0  # epoch the run resumed after (0: a fresh run)

    def __repr__(self) -> str:
        return (f"TrainResult({str(self.run.path)!r}, epochs={len(self.history)}, best_epoch={self.best_epoch}, "
                f"test_accuracy={self.test.accuracy:.4f})")


def train_config(cfg: Config, run_dir: str | Path | None = None, *, log: Callable[[str], None] = print) -> TrainResult:
    """Train as ``cfg`` says into ``run_dir`` (resuming an unfinished run there), then score ``best.pt`` on the test set."""
    t0 = time.perf_counter()
    fitted = fit(cfg, run_dir, log=log)
    # Rank 0 scores best.pt and writes the report; the other ranks get the same report object.
    report = None
    if distributed.is_main():
        report = evaluate_checkpoint(fitted.run, fitted.data, fitted.device, batch_size=cfg.train.eval_batch_size)
    report = distributed.broadcast_object(report)
    return TrainResult(fitted.run, fitted.best_epoch, fitted.best_val_loss, fitted.history, report,
                       time.perf_counter() - t0, fitted.resumed_from)
