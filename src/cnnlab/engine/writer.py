"""What training writes into its run folder, written by one process.

In a distributed run every rank trains, but only rank 0 writes files and prints. :class:`RunWriter`
is that decision, made once: ``fit`` calls its methods on every rank, and on the other ranks they
do nothing (payloads are built lazily, so those ranks do not even assemble them).
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

import torch

from cnnlab.core.config import Config
from cnnlab.core.errors import CheckpointError
from cnnlab.core.i18n import _
from cnnlab.core.runs import RunDir, clear_run_dir, locked, write_config, write_metrics, write_split
from cnnlab.engine import distributed
from cnnlab.engine.checkpoint import best_from_last, load_checkpoint, save_checkpoint


class RunWriter:
    """The run folder's files, written only where ``active`` (rank 0; every process when not distributed)."""

    def __init__(self, run: RunDir, active: bool) -> None:
        self.run, self.active = run, active

    @classmethod
    def for_this_process(cls, run: RunDir) -> "RunWriter":
        return cls(run, distributed.is_main())

    def __repr__(self) -> str:
        return f"RunWriter({str(self.run.path)!r}, active={self.active})"

    def log(self, log: Callable[[str], None]) -> Callable[[str], None]:
        """``log`` where this process writes; a no-op elsewhere (one copy of every line)."""
        return log if self.active else (lambda _line: None)

    def lock(self) -> ContextManager[RunDir]:
        """Hold the folder's lock for the whole run (the writer's process only): no second process
        trains into it, and temporary files found there are a dead process's leftovers."""
        return locked(self.run) if self.active else contextlib.nullcontext(self.run)

    def clear(self) -> None:
        """Start afresh (``overwrite``): remove what cnnlab wrote in the folder, under the lock;
        a folder that holds anything else is refused (:func:`cnnlab.core.runs.clear_run_dir`)."""
        if self.active:
            clear_run_dir(self.run)

    def remove_temp_files(self) -> None:
        if self.active:
            self.run.remove_temp_files()

    def start(self, cfg: Config, provenance: dict, train_idx: torch.Tensor, val_idx: torch.Tensor) -> None:
        """config.json first and atomically: until it exists the folder counts as empty, so a kill
        before or during this write leaves a folder that the same command starts afresh."""
        if self.active:
            write_config(self.run, cfg, {"provenance": provenance})
            write_split(self.run, train_idx, val_idx, cfg.data.split_seed)

    def last(self, payload: Callable[[], dict]) -> None:
        """``last.pt``: the full training state (``payload()`` is only built here)."""
        if self.active:
            save_checkpoint(self.run.last, payload())

    def epoch_end(self, history: list[dict], best_payload: Callable[[], dict] | None) -> None:
        """After ``last.pt``: ``best.pt`` when the epoch is the best so far, then ``metrics.csv``."""
        if self.active:
            if best_payload is not None:
                save_checkpoint(self.run.best, best_payload())
            write_metrics(self.run, history)

    def repair_from_last(self, state: dict, log: Callable[[str], None]) -> None:
        """Bring ``best.pt`` and ``metrics.csv`` up to ``last.pt``, which is always written first.

        ``best.pt`` can only lag when ``last.pt`` was saved at the end of the best epoch (the
        kill came between the two writes): then ``last.pt``'s weights are the best weights.
        ``metrics.csv`` is rewritten from ``last.pt``'s history every time (it is small).
        """
        if not self.active:
            return
        run = self.run
        best_epoch = int(state["best"]["epoch"])
        trainer = state["trainer"]
        if best_epoch and trainer["iteration"] == best_epoch * trainer["epoch_length"]:
            try:
                current = load_checkpoint(run.best).get("epoch") if run.best.exists() else None
            except CheckpointError:
                current = None
            if current != best_epoch:
                save_checkpoint(run.best, best_from_last(state))
                log(_("rebuilt {best} (epoch {epoch}) from {last}: the run had stopped between the two").format(
                    best=run.best, epoch=best_epoch, last=run.last))
        if write_metrics(run, [dict(row) for row in state["history"]], only_if_changed=True):
            log(_("rebuilt {metrics} from {last}").format(metrics=run.metrics, last=run.last))
