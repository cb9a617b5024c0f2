"""``fit(cfg)``: the lesson's training loop, as one library call.

    data (decoded once, split with a saved seed) -> model -> ignite trainer
    -> after every epoch: train/val loss and accuracy, best checkpoint by
       validation loss, a full-state last.pt, a metrics.csv row, a one-line summary

Scoring the best checkpoint on the test set is the next layer's job
(``cnnlab.analysis.report.evaluate_checkpoint``; ``cnnlab.service.training`` chains the two).

Work is never lost: ``last.pt`` (model, optimizer, trainer position, every RNG,
best-so-far, metrics history) is written atomically after every epoch and on
Ctrl-C/SIGTERM, and calling ``train`` again on the same run directory resumes
from it, bit-identically on CPU.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
import torch.nn as nn
from ignite.engine import Engine, Events

from cnnlab import __version__
from cnnlab.core.config import CUSTOM_PREFIX, Config, DataConfig, is_custom, resumable_keys
from cnnlab.core.errors import (
    CheckpointError,
    CnnlabError,
    ConfigError,
    ModelError,
    NonFiniteLossError,
    ResumeChangeError,
    RunConfigMismatch,
    RunDirError,
    first_line,
)
from cnnlab.core.i18n import _, format_float, format_percent, ngettext
from cnnlab.core.runs import RunDir, default_run_dir, open_run, read_config
from cnnlab.core.runtime import resolve_amp, resolve_device, set_threads
from cnnlab.data.augment import attach_augmentation, build_augmenter
from cnnlab.data.registry import absolute_paths, prepare_data
from cnnlab.data.tensors import DataBundle, ImageSet, TensorBatches
from cnnlab.engine import distributed
from cnnlab.engine.checkpoint import (
    best_metrics,
    capture_rng_state,
    load_checkpoint,
    make_payload,
    restore_rng_state,
)
from cnnlab.engine.step import (
    build_optimizer,
    build_scheduler,
    compile_model,
    create_evaluator,
    create_trainer,
    run_evaluation,
)
from cnnlab.engine.progress import EVAL_DELAY, attach_bar, stderr_is_terminal
from cnnlab.engine.tracking import attach_tensorboard
from cnnlab.engine.writer import RunWriter
from cnnlab.models import check_pretrained, create_model, get_model_entry
from cnnlab.inference import batch_parts, unsplittable

class Interrupted(CnnlabError):
    """Training was stopped by SIGINT/SIGTERM after saving ``last.pt``; ``path`` is the run to resume."""

    raised_on_every_rank = True  # distributed runs stop together: rank 0 alone reports it
    option = "resume"

    def __init__(self, message: str, exit_code: int, path: Path) -> None:
        super().__init__(message)
        self.exit_code, self.path = exit_code, Path(path)


@dataclass
class FitResult:
    """What training produced: the run folder, its history and best epoch, and the data it used."""

    run: RunDir
    best_epoch: int
    best_val_loss: float
    history: list[dict]
    seconds: float
    resumed_from: int  # epoch the run resumed after (0: a fresh run)
    data: DataBundle  # the split it trained on, and the test set for scoring
    device: torch.device

    def __repr__(self) -> str:
        return f"FitResult({self.run.path}, epochs={len(self.history)}, best_epoch={self.best_epoch})"


def setup_runtime(cfg: Config) -> None:
    """Threads, seeds and (optionally) deterministic kernels, as ``cfg`` says."""
    set_threads(cfg.train.threads)
    seed = cfg.train.seed
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # model init; the split and the shuffling have their own generators
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by cuBLAS for determinism
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


@contextlib.contextmanager
def restored_process_state() -> Iterator[None]:
    """Run the block, then put back what :func:`setup_runtime` changes: a library call leaves the process as it was.

    Restored: torch's intra-op thread count, the global RNGs (Python ``random``, NumPy, torch CPU and
    CUDA), deterministic-kernel flags and ``CUBLAS_WORKSPACE_CONFIG``. The command line exits after
    training, so for it this changes nothing.

    Nested blocks (``service.training.train_config`` around ``fit``) save and restore once, at the
    outermost block: the scoring after training runs in the same captured state.
    """
    if getattr(_PROCESS_STATE, "depth", 0):
        _PROCESS_STATE.depth += 1
        try:
            yield
        finally:
            _PROCESS_STATE.depth -= 1
        return
    _PROCESS_STATE.depth = 1
    try:
        with _restoring_process_state():
            yield
    finally:
        _PROCESS_STATE.depth = 0


_PROCESS_STATE = threading.local()  # how deep in restored_process_state this thread is


@contextlib.contextmanager
def _restoring_process_state() -> Iterator[None]:
    threads = torch.get_num_threads()
    cuda_was_used = torch.cuda.is_available() and torch.cuda.is_initialized()
    rng = capture_rng_state() if cuda_was_used else capture_rng_state(cuda=False)  # never start CUDA here
    deterministic = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        restore_rng_state(rng)
        if not cuda_was_used and torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.manual_seed_all(CUDA_DEFAULT_SEED)  # as a process that has not used CUDA yet finds it
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


CUDA_DEFAULT_SEED = 67280421310721  # torch's seed for a CUDA generator nobody has seeded


DataSource = Callable[[DataConfig, torch.device], DataBundle]


def fit(
    cfg: Config,
    run_dir: str | Path | None = None,
    *,
    log: Callable[[str], None] = print,
    model: nn.Module | None = None,
    load_data: DataSource | None = None,
    overwrite: bool = False,
    on_start: Callable[[], None] | None = None,
) -> FitResult:
    """Train as ``cfg`` says into ``run_dir``; resume if it holds an unfinished run of the same config.

    ``overwrite``: start afresh, first deleting what cnnlab wrote in ``run_dir`` (under the run's lock);
    a folder that holds anything else is refused (:func:`cnnlab.core.runs.clear_run_dir`).

    ``model``: train this module (the user's own class; ``cfg.model.name`` is then ``custom:ClassName``)
    instead of building ``cfg.model.name`` from the registry. It is trained in place, from the weights
    it has. ``load_data(cfg.data, device)``: where the data comes from instead of the dataset registry
    (the user's own tensors or Dataset). ``on_start()``: called once everything is built, just before the
    first training step. Thread count and global RNGs are restored on return.

    Returns the run, its metrics history and best epoch, and the data it trained on.
    """
    with restored_process_state():
        return _fit(cfg, run_dir, log=log, model=model, load_data=load_data, overwrite=overwrite, on_start=on_start)


def _fit(
    cfg: Config, run_dir: str | Path | None, *, log: Callable[[str], None], model: nn.Module | None,
    load_data: DataSource | None, overwrite: bool = False, on_start: Callable[[], None] | None = None,
) -> FitResult:
    cfg.validate()
    cfg = dataclasses.replace(cfg, data=absolute_paths(cfg.data))  # stored so: the run evaluates from anywhere
    device = resolve_device(cfg.train.device)  # once: the process group, the session and the result use it
    # Under torchrun or `cnnlab train --nproc N` this is one process of several: join them.
    distributed.ensure_initialized(device)
    if model is None:
        get_model_entry(cfg.model.name)  # fail on a typo before any data is read
    elif not is_custom(cfg.model.name):
        raise ConfigError(_("a model instance was given, so model.name must start with {prefix!r}, got {name!r}").format(prefix=CUSTOM_PREFIX, name=cfg.model.name))
    if cfg.model.pretrained:
        check_pretrained(cfg.model.name)
    t0 = time.perf_counter()
    # Every file and every printed line comes from one process (rank 0): the writer decides, once.
    # Rank 0 holds the folder's lock for the whole run (taken before the folder exists): no second
    # process trains into it, and temporary files found there are a dead process's leftovers.
    writer = RunWriter.for_this_process(RunDir(Path(run_dir) if run_dir else default_run_dir(cfg)))
    with writer.lock():
        if overwrite:
            writer.clear()  # only what cnnlab wrote; anything else in the folder is refused
        return _fit_locked(cfg, writer, device, writer.log(log), t0, model, load_data, on_start)


def _fit_locked(cfg: Config, writer: RunWriter, device: torch.device, log: Callable[[str], None], t0: float,
                model: nn.Module | None, load_data: DataSource | None,
                on_start: Callable[[], None] | None = None) -> FitResult:
    run = writer.run
    amp, why = resolve_amp(cfg.train.amp, device)
    if why:  # decided here, once: config.json records the mode, so a resume compares like with like
        cfg = cfg.apply({"train.amp": amp})
        log(why)
    resume = check_run_dir(writer, cfg)
    setup_runtime(cfg)
    device = distributed.device_for_rank(device)  # cuda:LOCAL_RANK when distributed on GPUs
    data = (load_data or prepare_data)(cfg.data, device)
    distributed.check_run_agreement(data.train_indices, data.val_indices, resume)
    s = build_session(cfg, writer, data, device, model)
    if s.batch_parts > 1:
        log(_("each batch of {batch} is split among {parts} threads, one per core (train.batch_split; 1: one piece)")
            .format(batch=cfg.train.batch_size, parts=s.batch_parts))
    if resume is not None:
        restore_session(s, resume, log)
    else:
        writer.start(cfg, provenance(device, s.batch_parts), data.train_indices, data.val_indices)
    say = attach_progress(s, log)
    attach_epoch_end(s, say)
    if cfg.train.patience:  # after the epoch end, which updates the best epoch
        attach_early_stopping(s, say)
    if cfg.train.tensorboard and writer.active:  # after the epoch end: each epoch's row exists
        attach_tensorboard(s.trainer, s.model, s.optimizer, run.path / "tensorboard", history=s.history, train_cfg=cfg.train)
    if on_start is not None:
        on_start()
    run_to_the_end(s)
    writer.remove_temp_files()  # none should be left; a no-op unless something wrote beside us
    return FitResult(run, s.best["epoch"], s.best["loss"], s.history, time.perf_counter() - t0, int(s.resumed_from),
                     data, s.device)


@dataclass
class Session:
    """Everything one training run holds while it trains; ``last.pt`` saves all of it."""

    cfg: Config
    writer: RunWriter  # the run folder, and whether this process writes into it
    device: torch.device  # resolved once, in fit
    data: DataBundle
    model: nn.Module
    optimizer: torch.optim.Optimizer
    trainer: Engine
    evaluator: Engine
    train_batches: TensorBatches
    eval_train: TensorBatches
    eval_val: TensorBatches
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"loss": float("inf"), "epoch": 0})
    resumed_from: float = 0.0
    batch_parts: int = 1  # threads each training batch is split among (train.batch_split, resolved)

    @property
    def run(self) -> RunDir:
        return self.writer.run

    @property
    def done(self) -> bool:
        return self.trainer.state.iteration >= self.cfg.train.epochs * len(self.train_batches)


def build_session(cfg: Config, writer: RunWriter, data: DataBundle, device: torch.device,
                  model: nn.Module | None) -> Session:
    """The model, optimizer, ignite trainer and evaluator, and the batches, as ``cfg`` says."""
    t = cfg.train
    if model is not None:
        check_model_parameters(model)
    model = (build_model(cfg, data) if model is None else model).to(device)
    check_model_output(model, data.train, device, channels_last=t.channels_last)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optim, model.parameters(), device)
    loss_fn = nn.CrossEntropyLoss(reduction=t.loss_reduction, label_smoothing=t.label_smoothing)
    # Opt-in speed options (amp, compile) wrap only the forward passes; `model` itself is what
    # checkpoints save and load, so a compiled run's files load into a plain model.
    parts = training_parts(cfg, model, device)
    trainer = create_trainer(compile_model(distributed.wrap_model(model, device), t.compile), optimizer, loss_fn, t.amp,
                             parts=parts)
    # Ranks of a distributed run already share the cores: one forwarding thread each.
    evaluator = create_evaluator(compile_model(model, t.compile), t.amp,
                                 workers=1 if distributed.world_size() > 1 else None)
    # Distributed: t.batch_size is per process; each rank trains on its shard of every epoch's permutation
    # and evaluates its part of each set (ignite's metrics sum over the ranks).
    shard = {"rank": distributed.rank(), "world_size": distributed.world_size()}
    train_batches = TensorBatches(data.train, t.batch_size, shuffle=True, seed=t.seed, channels_last=t.channels_last, **shard)
    eval_train = TensorBatches(data.train, t.eval_batch_size, channels_last=t.channels_last, **shard)
    eval_val = TensorBatches(data.val, t.eval_batch_size, channels_last=t.channels_last, **shard)
    # Recipe options: the lr schedule and augmentation are functions of the iteration number.
    build_scheduler(cfg.optim, optimizer, len(train_batches), t.epochs, trainer)
    attach_augmentation(trainer, build_augmenter(t.augment, cfg.data.dataset, distributed.rank_seed(t.seed)))

    @trainer.on(Events.EPOCH_STARTED)
    def _start_epoch(engine: Engine) -> None:
        # Mid-epoch resume (after Ctrl-C) continues the same permutation where it stopped.
        train_batches.set_epoch(engine.state.epoch, start_batch=engine.state.iteration % len(train_batches))

    return Session(cfg, writer, device, data, model, optimizer, trainer, evaluator, train_batches, eval_train, eval_val,
                   batch_parts=parts)


def training_parts(cfg: Config, model: nn.Module, device: torch.device) -> int:
    """How many threads share each training batch: ``train.batch_split``, or what the cores allow."""
    t = cfg.train
    if t.batch_split is None:
        # Ranks of a distributed run already share the cores, and torch.compile has its own graph.
        auto = distributed.world_size() == 1 and t.compile == "off"
        return batch_parts(model, t.batch_size, None) if auto else 1
    if t.batch_split > 1:
        if device.type != "cpu":
            raise ConfigError(_("train.batch_split splits batches among CPU cores; on {device}, use 1").format(
                device=device.type), option="train.batch_split")
        layer = unsplittable(model)
        if layer is not None:
            raise ConfigError(_("train.batch_split {n} needs one of cnnlab's models made only of per-image layers, "
                                "without hooks; not so: {layer}. Use 1").format(n=t.batch_split, layer=layer),
                              option="train.batch_split")
        if t.compile != "off" or distributed.world_size() > 1:
            raise ConfigError(_("train.batch_split cannot be combined with torch.compile or several processes: use 1"),
                              option="train.batch_split")
    return t.batch_split


def restore_session(s: Session, state: dict, log: Callable[[str], None]) -> None:
    """Put a ``last.pt`` payload back: weights, optimizer, trainer position, RNGs, history, best epoch."""
    run, t = s.run, s.cfg.train
    if not torch.equal(state["split"]["val"], s.data.val_indices) or not torch.equal(state["split"]["train"], s.data.train_indices):
        raise RunDirError(_("{last} was trained on a different train/validation split").format(last=run.last), option="run_dir")
    try:
        s.model.load_state_dict(state["state_dict"])
        s.optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(_("{last} does not fit this run's model or optimizer (did its class change?): {reason}").format(last=run.last, reason=first_line(exc)), option="run_dir") from None
    position = distributed.resume_position(state["trainer"], len(s.train_batches))
    done_epochs = position["iteration"] // len(s.train_batches)
    # ignite refuses max_epochs below the epochs already done; asking for fewer means "nothing to do".
    s.trainer.load_state_dict({**position, "max_epochs": max(t.epochs, done_epochs)})
    restore_rng_state(state["rng"])
    s.history = [dict(row) for row in state["history"]]
    s.best.update(loss=state["best"]["loss"], epoch=state["best"]["epoch"])
    s.resumed_from = s.trainer.state.iteration / len(s.train_batches)
    # A kill between this epoch's writes left last.pt newer than best.pt or metrics.csv:
    # both are functions of last.pt, so rebuild them before going on.
    s.writer.repair_from_last(state, log)
    if s.done:
        done = ngettext("{run} already trained {epochs} epoch (asked for {asked}): nothing to train",
                        "{run} already trained {epochs} epochs (asked for {asked}): nothing to train",
                        1 if s.resumed_from == 1 else 2)
        log(done.format(run=run.path, epochs=f"{s.resumed_from:g}", asked=t.epochs))
    else:
        log(_("resuming {run} from epoch {epoch} (iteration {iteration})").format(
            run=run.path, epoch=f"{s.resumed_from:g}", iteration=s.trainer.state.iteration))


def attach_progress(s: Session, log: Callable[[str], None]) -> Callable[[str], None]:
    """A progress bar on rank 0 when asked for; returns how to print a line without breaking it."""
    t = s.cfg.train
    if not (t.progress and s.writer.active):
        return log
    per_image = t.batch_size if t.loss_reduction == "sum" else 1
    loss_name = _("loss")  # the bar's label for the running loss: "loss=0.123" / "pérdida=0.123"
    say = attach_bar(s.trainer, _("train"), postfix=lambda loss: {loss_name: loss / per_image})
    if stderr_is_terminal():  # the evaluation passes: a bar only for one that takes over a second
        attach_bar(s.evaluator, _("evaluate"), delay=EVAL_DELAY)
    return say(log)


def save_last(s: Session) -> None:
    """The full training state, for an exact resume (rank 0 writes it)."""
    s.writer.last(lambda: last_payload(s))


def last_payload(s: Session) -> dict:
    cfg, data, trainer = s.cfg, s.data, s.trainer
    return make_payload(
        s.model, model_name=cfg.model.name, data_info=data.info.to_dict(), config=cfg.to_dict(),
        epoch=trainer.state.epoch, metrics=s.history[-1] if s.history else {}, kind="last",
        optimizer=s.optimizer.state_dict(),
        trainer={"iteration": trainer.state.iteration, "epoch_length": len(s.train_batches),
                 "world_size": distributed.world_size()},
        rng=capture_rng_state(),
        split={"train": data.train_indices.cpu(), "val": data.val_indices.cpu(), "seed": cfg.data.split_seed},
        best=dict(s.best),
        history=s.history,
    )


def attach_epoch_end(s: Session, say: Callable[[str], None]) -> None:
    """After every epoch: train/val metrics, the best epoch, then last.pt, best.pt and metrics.csv, in that order."""
    t = s.cfg.train
    clock = {"start": time.perf_counter()}

    @s.trainer.on(Events.EPOCH_STARTED)
    def _start_clock(engine: Engine) -> None:
        clock["start"] = time.perf_counter()

    @s.trainer.on(Events.EPOCH_COMPLETED)
    def _end_epoch(engine: Engine) -> None:
        epoch = engine.state.epoch
        row: dict = {"epoch": epoch}
        eval_start = time.perf_counter()
        if t.train_eval:
            m = run_evaluation(s.evaluator, s.eval_train)
            row["train_loss"], row["train_acc"] = m["loss"], m["accuracy"]
        m = run_evaluation(s.evaluator, s.eval_val)
        row["val_loss"], row["val_acc"] = m["loss"], m["accuracy"]
        eval_seconds = time.perf_counter() - eval_start
        row["lr"] = s.optimizer.param_groups[0]["lr"]
        row["best"] = row["val_loss"] < s.best["loss"]  # NaN never counts as best
        if row["best"]:
            s.best.update(loss=row["val_loss"], epoch=epoch)
        row["epoch_time_s"] = round(time.perf_counter() - clock["start"], 3)
        row["eval_time_s"] = round(eval_seconds, 3)
        s.history.append(row)
        # The order is what makes a kill at any instant resumable: last.pt (which holds the whole
        # history and the best epoch) first; best.pt and metrics.csv are rebuilt from it on resume.
        save_last(s)
        s.writer.epoch_end(s.history, (lambda: make_payload(
            s.model, model_name=s.cfg.model.name, data_info=s.data.info.to_dict(), config=s.cfg.to_dict(),
            epoch=epoch, metrics=best_metrics(row),
        )) if row["best"] else None)
        say(format_epoch(row, t.epochs))
        if not math.isfinite(row["val_loss"]):
            raise NonFiniteLossError(
                _("the validation loss became {val_loss} at epoch {epoch}: the model diverged (best.pt keeps "
                  "epoch {best}). Try a lower learning rate.").format(val_loss=row['val_loss'], epoch=epoch, best=s.best['epoch'] or _("none"))
            )


def attach_early_stopping(s: Session, say: Callable[[str], None]) -> None:
    """Stop when the validation loss has not improved for ``train.patience`` epochs."""
    t = s.cfg.train

    @s.trainer.on(Events.EPOCH_COMPLETED)
    def _early_stop(engine: Engine) -> None:
        if engine.state.epoch - s.best["epoch"] >= t.patience and engine.state.epoch < t.epochs:
            say(_("early stop: no better validation loss for {patience} epochs (best: epoch {best})").format(
                patience=t.patience, best=s.best["epoch"]))
            engine.terminate()


def run_to_the_end(s: Session) -> None:
    """Train the remaining iterations; on SIGINT/SIGTERM save last.pt on every rank's say-so and stop."""
    t, trainer = s.cfg.train, s.trainer
    # A resumed run that had already stopped early stays stopped (no extra epoch).
    stopped_early = bool(t.patience and s.history and trainer.state.epoch - s.best["epoch"] >= t.patience)
    with stop_on_signals(trainer) as stopped:
        if not s.done and not stopped_early:
            trainer.run(s.train_batches, max_epochs=t.epochs)
        if distributed.any_rank(bool(stopped)):  # every rank stops, even one that saw no signal
            save_last(s)
            distributed.barrier()  # no rank exits (and gets its launcher to kill the rest) before last.pt is saved
            signame, code = stopped[0] if stopped else ("SIGTERM", 128 + signal.SIGTERM)
            raise Interrupted(
                _("{signame}: stopped at epoch {epoch}, iteration {iteration}; saved {last}").format(signame=signame, epoch=trainer.state.epoch, iteration=trainer.state.iteration, last=s.run.last),
                code, s.run.path,
            )


def check_run_dir(writer: RunWriter, cfg: Config) -> dict | None:
    """Decide between a fresh run and a resume; never touch a run that holds something else.

    Returns the ``last.pt`` payload to resume from, or None for a fresh start. Temporary
    files of a killed writer are deleted first (the caller holds the folder's lock), and a
    folder holding nothing else counts as empty.
    """
    run = writer.run
    if not run.path.exists():
        return None
    if not run.path.is_dir():
        raise RunDirError(_("run directory {path} is a file").format(path=run.path), option="run_dir")
    writer.remove_temp_files()
    if not run.config.exists():
        if run.entries():
            raise RunDirError(_("{path} is not empty and holds no cnnlab run").format(path=run.path), option="run_dir")
        return None
    saved = read_config(run)
    diff = saved.differences(cfg, ignore=resumable_keys())
    if diff:
        raise RunConfigMismatch(run.path, diff, message=_(
            "{path} holds a run with a different config ({keys} differ)").format(path=run.path, keys=", ".join(diff)))
    if not run.last.exists():
        # cnnlab writes last.pt before the first best.pt, so this is a folder someone edited.
        if run.best.exists():
            raise RunDirError(_("{path} has best.pt but no last.pt to resume from").format(path=run.path), option="run_dir")
        return None  # stopped before the first epoch ended: nothing to lose, start again
    return load_checkpoint(run.last, training_state=True)


def resume_config(run_dir: str | Path, changes: Mapping[str, Any] | None = None) -> Config:
    """The config a run was started with, with ``changes`` (as :meth:`Config.apply` takes them) applied.

    Only fields declared resumable (epochs, device, threads, ...: how a run computes, not what) may
    change; :class:`ResumeChangeError` names the others. A setting repeated with the run's own value
    (``deterministic=True`` on a deterministic run) is the same command again, which resumes.
    """
    run = open_run(run_dir)
    cfg = read_config(run)
    allowed = resumable_keys()
    fixed = [dotted for dotted in cfg.changed(changes or {}) if dotted not in allowed]
    if fixed:
        raise ResumeChangeError(run.path, fixed, allowed, message=_(
            "{path} continues as it was configured; {fixed} cannot be changed when resuming (only {allowed} can)").format(
            path=run.path, fixed=", ".join(fixed), allowed=", ".join(allowed)))
    return cfg.apply(changes or {})


@contextlib.contextmanager
def stop_on_signals(trainer: Engine) -> Iterator[list[tuple[str, int]]]:
    """Ctrl-C / SIGTERM finish the current step, then stop the trainer (the caller saves).

    Yields a list that holds ``(signal name, exit code)`` once a signal arrived.
    Only the main thread can install handlers; elsewhere this does nothing.
    """
    stopped: list[tuple[str, int]] = []
    if threading.current_thread() is not threading.main_thread():
        yield stopped
        return

    def handler(signum: int, frame: object) -> None:
        if not stopped:
            stopped.append((signal.Signals(signum).name, 128 + signum))

    @trainer.on(Events.ITERATION_COMPLETED)
    def _maybe_stop(engine: Engine) -> None:
        if distributed.stop_agreed(bool(stopped), engine.state.iteration):
            engine.terminate()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stopped
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        trainer.remove_event_handler(_maybe_stop, Events.ITERATION_COMPLETED)


def check_model_parameters(model: nn.Module) -> None:
    """The user's own module can take float32 batches: no parameter on the meta device, none of another float type."""
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
        if p.device.type == "meta":
            raise ModelError(_("your model's {name} is on the meta device (it has no values yet): create the "
                               "model on a real device, or call model.to_empty(device='cpu') and initialise it")
                             .format(name=name))
        if p.is_floating_point() and p.dtype != torch.float32 and isinstance(p, nn.Parameter):
            raise ModelError(_("your model's {name} is {dtype}, but cnnlab trains on float32 batches: call "
                               "model.float() first (mixed precision: the amp setting)").format(
                name=name, dtype=str(p.dtype).removeprefix("torch.")))


def check_model_output(model: nn.Module, data: ImageSet, device: torch.device, *, channels_last: bool = False) -> None:
    """Run the model on two training images (eval mode, no gradient) and check it returns (N, classes) logits.

    A wrong output otherwise shows up as a shape error deep inside the loss, after the data has loaded;
    here it is one line that says what the model returns and what the data needs.
    """
    k = len(data.classes)
    if not len(data):
        return
    x = next(iter(TensorBatches(data, 2, channels_last=channels_last)))[0].to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:  # noqa: BLE001 -- the user's forward can raise anything; say where it happened
        raise ModelError(_("your model failed on a batch of the data (input {shape}, {dtype}, on {device}): "
                           "{error}").format(shape=tuple(x.shape), dtype=str(x.dtype).removeprefix("torch."),
                                             device=device, error=first_line(exc))) from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise ModelError(_("your model returns a {kind}, not a tensor: forward must return the logits, "
                           "shape (N, {k})").format(kind=type(out).__name__, k=k))
    if out.dim() != 2 or out.shape[0] != len(x) or out.shape[1] != k:
        if not out.dim():
            shown = _("a scalar")
        elif out.shape[0] != len(x):
            shown = _("{shape} for a batch of {n}").format(shape=tuple(out.shape), n=len(x))
        else:
            shown = "(" + ", ".join(["N", *(str(d) for d in out.shape[1:])]) + ")"
        raise ModelError(_("your model returns {shown}; the data has {k} classes, so it must return (N, {k})").format(
            shown=shown, k=k))
    if not out.is_floating_point():
        raise ModelError(_("your model returns {dtype} values; it must return float logits").format(
            dtype=str(out.dtype).removeprefix("torch.")))


def build_model(cfg: Config, data: DataBundle) -> nn.Module:
    try:
        return create_model(
            cfg.model.name,
            in_channels=data.info.channels,
            num_classes=len(data.info.classes),
            image_size=data.info.image_size,
            **({"pretrained": True} if cfg.model.pretrained else {}),
        )
    except ValueError as exc:  # a model that cannot take this image size
        raise ConfigError(_("{exc}; choose another model or resize the images").format(exc=exc), option="data.image_size") from None


def format_epoch(row: dict, epochs: int) -> str:
    """One line of the training log, in the language in force: ``epoch 1/5  train loss ... * best``."""
    parts = [_("epoch {epoch}/{epochs}").format(epoch=f"{row['epoch']:>{len(str(epochs))}}", epochs=epochs)]
    if "train_loss" in row:
        parts.append(_("train loss {loss} acc {acc}").format(loss=format_float(row["train_loss"]),
                                                             acc=format_percent(row["train_acc"])))
    parts.append(_("val loss {loss} acc {acc}").format(loss=format_float(row["val_loss"]),
                                                       acc=format_percent(row["val_acc"])))
    parts.append(_("{seconds}s").format(seconds=format_float(row["epoch_time_s"], 1)))
    if row.get("best"):
        parts.append(_("* best"))
    return "  ".join(parts)


def provenance(device: torch.device, batch_parts: int = 1) -> dict:
    return {
        "cnnlab_version": __version__,
        "torch_version": str(torch.__version__),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch_parts": batch_parts,  # train.batch_split as resolved: threads that shared each batch
        "world_size": distributed.world_size(),  # processes; the global batch is train.batch_size x world_size
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
