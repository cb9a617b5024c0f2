"""Train a config end to end: fit, then score the best checkpoint on the test set.

``cnnlab train`` and the notebook API (:func:`cnnlab.train`) both come through :func:`train_config`,
so the two can never drift apart. Library calls leave the process as they found it (threads,
global RNGs): training and the scoring after it run inside one ``restored_process_state``.
"""
from __future__ import annotations

import contextlib
import copy
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from cnnlab.analysis import figures
from cnnlab.analysis.interpret import Interpretation
from cnnlab.analysis.metrics import TestReport
from cnnlab.analysis.report import evaluate_checkpoint, interpret_run
from cnnlab.core.config import EVAL_BATCH_SIZE, Config, DataConfig
from cnnlab.core.i18n import check_language
from cnnlab.core.runs import RunDir, default_run_dir, locked
from cnnlab.core.runtime import set_threads
from cnnlab.data.tensors import DataBundle
from cnnlab.engine import distributed
from cnnlab.engine.checkpoint import load_checkpoint, model_from_checkpoint
from cnnlab.engine.train import fit, restored_process_state
from cnnlab.inference import predict_logits

__all__ = ["TrainResult", "train_config"]


@dataclass
class TrainResult:
    """A finished run: its folder, metrics history, best epoch and the best checkpoint's test report.

    ``path``: the run directory. ``history``: one dict per epoch (epoch, train_loss, train_acc,
    val_loss, val_acc, lr, times). ``test``: the best checkpoint on the test set (``print(run.test)``).
    ``model``: the best weights in eval mode. ``interpret()``: the error analysis, in memory.
    """

    run: RunDir
    best_epoch: int
    best_val_loss: float
    history: list[dict]
    test: TestReport
    seconds: float
    resumed_from: int = 0  # epoch the run resumed after (0: a fresh run)
    # Kept so that `model` and `interpret()` need neither the registry nor a second read of the data.
    data: DataBundle | None = field(default=None, repr=False)
    device: torch.device | None = field(default=None, repr=False)
    _model: nn.Module | None = field(default=None, repr=False)
    _interpretation: Interpretation | None = field(default=None, repr=False)
    lang: str | None = field(default=None, repr=False)  # the language its report and interpretation speak

    def __repr__(self) -> str:
        return (f"TrainResult({str(self.run.path)!r}, epochs={len(self.history)}, best_epoch={self.best_epoch}, "
                f"test_accuracy={self.test.accuracy:.4f})")

    @property
    def path(self) -> Path:
        return self.run.path

    @property
    def model(self) -> nn.Module:
        """The best checkpoint's model (``best.pt``), in eval mode, on the training device."""
        if self._model is None:
            model = model_from_checkpoint(load_checkpoint(self.run.best))
            self._model = model.to(self.device or "cpu").eval()
        return self._model

    def interpret(self, *, batch_size: int = EVAL_BATCH_SIZE, lang: str | None = None) -> Interpretation:
        """The best model's predictions on the test set, as an :class:`Interpretation` (computed once).

        ``lang``: the language of its figures and text (default: the run's, else the one in force).
        """
        if self._interpretation is None:
            if self.data is None:
                self._interpretation = interpret_run(self.run.path, model=self._model, batch_size=batch_size)
                self._interpretation.lang = self.lang
            else:
                test = self.data.test
                logits = predict_logits(self.model, test, batch_size=batch_size)
                self._interpretation = Interpretation(
                    logits, test.labels, test.images.cpu(), test.classes, history=self.history,
                    run_path=self.run.path, epoch=self.best_epoch, dataset=self.data.info.name, model=self.model,
                    lang=self.lang,
                )
        if (lang or self.lang) == self._interpretation.lang:
            return self._interpretation
        # The same predictions, speaking another language: the cached one is left as it was.
        spoken = copy.copy(self._interpretation)
        spoken.lang = check_language(lang) if lang else self.lang
        return spoken


def train_config(
    cfg: Config,
    run_dir: str | Path | None = None,
    *,
    log: Callable[[str], None] = print,
    model: nn.Module | None = None,
    load_data: Callable[[DataConfig, torch.device], DataBundle] | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train as ``cfg`` says into ``run_dir`` (resuming an unfinished run there), then score ``best.pt`` on the test set.

    ``model`` and ``load_data``: the user's own module and data (see :func:`cnnlab.engine.train.fit`).
    ``overwrite``: start afresh, deleting only what cnnlab wrote there (:func:`cnnlab.core.runs.clear_run_dir`).
    The run's lock is held from before training until the report is written, so no other process
    trains into the run, or reports on it, in between. Threads and global RNGs are as they were when
    this returns.
    """
    t0 = time.perf_counter()
    run = RunDir(Path(run_dir) if run_dir is not None else default_run_dir(cfg))
    # Rank 0 alone holds the lock (fit takes it again, reentrantly); other ranks of a distributed run write nothing.
    with (locked(run) if distributed.rank_from_env() == 0 else contextlib.nullcontext(run)):
        return _train_locked(cfg, run, t0, log=log, model=model, load_data=load_data, overwrite=overwrite)


def _warm_up_figures() -> None:
    """The report's figure comes after training: let matplotlib load meanwhile, off the training thread.

    Started once training starts, so that it competes with kernels that release the GIL rather than
    with the imports and set-up before them.
    """
    if distributed.rank_from_env() == 0 and "matplotlib.backends.backend_agg" not in sys.modules:
        threading.Thread(target=figures.warm_up, name="cnnlab-warm-up-figures", daemon=True).start()


def _train_locked(cfg: Config, run: RunDir, t0: float, *, log: Callable[[str], None], model: nn.Module | None,
                  load_data: Callable[[DataConfig, torch.device], DataBundle] | None, overwrite: bool) -> TrainResult:
    with restored_process_state():
        fitted = fit(cfg, run.path, log=log, model=model, load_data=load_data, overwrite=overwrite,
                     on_start=_warm_up_figures)
        set_threads(cfg.train.threads)  # scoring as fast as training (restored on return, as training's)
        if model is not None:  # the user's module, from here on the best checkpoint's, as load() gives it
            model.to(memory_format=torch.contiguous_format)
        # Rank 0 scores best.pt and writes the report; the other ranks get the same report object.
        report = None
        if distributed.is_main():
            report = evaluate_checkpoint(fitted.run, fitted.data, fitted.device, batch_size=cfg.train.eval_batch_size,
                                         model=model)
        report = distributed.broadcast_object(report)
    if model is not None:
        model.eval()
    return TrainResult(fitted.run, fitted.best_epoch, fitted.best_val_loss, fitted.history, report,
                       time.perf_counter() - t0, fitted.resumed_from, data=fitted.data, device=fitted.device,
                       _model=model)
