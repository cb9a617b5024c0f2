"""Experiment tracking: TensorBoard event files through ignite's ``TensorboardLogger``.

``cnnlab train --tensorboard`` writes ``RUN/tensorboard/`` with

* ``training/batch_loss`` (mean cross-entropy of a batch) every ``log_every`` iterations,
* ``lr/group_0``, the learning rate, every ``log_every`` iterations,
* ``epoch/{train,val}_{loss,acc}``: the numbers of each ``metrics.csv`` row,
* weight and gradient histograms of every parameter after every epoch.

View it with ``tensorboard --logdir RUN/tensorboard``. TensorBoard is an
optional dependency: ``pip install "cnnlab[tensorboard]"``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from ignite.engine import Engine, Events

from cnnlab.core.errors import CnnlabError
from cnnlab.core.files import make_dirs
from cnnlab.core.i18n import _

INSTALL_HINT = 'pip install "cnnlab[tensorboard]"'
EPOCH_SCALARS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s", "eval_time_s")


class TrackingError(CnnlabError):
    """Experiment tracking was asked for but cannot run."""


def require_tensorboard() -> None:
    """Raise a clear error naming the extra to install when TensorBoard is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise TrackingError(_("TensorBoard logging needs the optional TensorBoard package; install it with: {hint}")
                            .format(hint=INSTALL_HINT), option="train.tensorboard")


def attach_tensorboard(
    trainer: Engine,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    log_dir: str | Path,
    *,
    history: list[dict] | None = None,
    train_cfg: Any = None,
    log_every: int = 100,
) -> Any:
    """Attach ignite's ``TensorboardLogger`` to ``trainer``; returns the logger (closed when training ends).

    ``history`` is the list the training loop appends one metrics row to per
    epoch: attach after that loop's ``EPOCH_COMPLETED`` handler so the row is
    already there. ``train_cfg`` (a ``TrainConfig``) turns a summed batch loss
    into a per-image mean.
    """
    require_tensorboard()
    from ignite.handlers.tensorboard_logger import (
        GradsHistHandler,
        OptimizerParamsHandler,
        OutputHandler,
        TensorboardLogger,
        WeightsHistHandler,
    )

    per_image = 1
    if train_cfg is not None and getattr(train_cfg, "loss_reduction", "mean") == "sum":
        per_image = train_cfg.batch_size
    make_dirs(log_dir)  # a read-only disk is one `error:` line (exit 4), not a traceback
    tb = TensorboardLogger(log_dir=str(log_dir))
    every = max(1, log_every)

    def due(engine: Engine, iteration: int) -> bool:
        # Every `log_every` iterations, and at least once per epoch (its last batch) for short epochs.
        return iteration % every == 0 or iteration % max(1, engine.state.epoch_length or every) == 0

    tb.attach(trainer, log_handler=OutputHandler(tag="training", output_transform=lambda loss: {"batch_loss": loss / per_image}),
              event_name=Events.ITERATION_COMPLETED(event_filter=due))
    tb.attach(trainer, log_handler=OptimizerParamsHandler(optimizer, param_name="lr"),
              event_name=Events.ITERATION_COMPLETED(event_filter=due))
    # Gradients of the epoch's last batch are still in .grad at EPOCH_COMPLETED.
    tb.attach(trainer, log_handler=WeightsHistHandler(model), event_name=Events.EPOCH_COMPLETED)
    tb.attach(trainer, log_handler=GradsHistHandler(model), event_name=Events.EPOCH_COMPLETED)

    if history is not None:
        @trainer.on(Events.EPOCH_COMPLETED)
        def _log_epoch(engine: Engine) -> None:
            if not history:
                return
            row = history[-1]
            for key in EPOCH_SCALARS:
                value = row.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    tb.writer.add_scalar(f"epoch/{key}", value, int(row.get("epoch", engine.state.epoch)))

    def _close(_engine: Engine) -> None:
        tb.close()

    trainer.add_event_handler(Events.COMPLETED, _close)
    trainer.add_event_handler(Events.TERMINATE, _close)
    trainer.add_event_handler(Events.EXCEPTION_RAISED, lambda engine, exc: (tb.close(), _reraise(exc)))
    return tb


def _reraise(exc: BaseException) -> None:
    # ignite swallows an exception once an EXCEPTION_RAISED handler exists; keep it visible.
    raise exc
