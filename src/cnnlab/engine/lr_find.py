"""The learning-rate range test (Leslie Smith, "Cyclical Learning Rates", 2015; fastai's ``lr_find``,
Lightning's ``Tuner.lr_find``).

Train a copy of the model for up to ``num_it`` steps while the learning rate grows exponentially
from ``start_lr`` to ``end_lr``; record each step's loss, smooth it (an exponential moving
average with bias correction, ``beta`` 0.98, as both references do), and stop once the smoothed
loss passes ``stop_factor`` times its best (or is not finite): beyond that the model diverges.

400 steps, not the references' 100: an average with ``beta`` 0.98 spans about 50 steps, which
over 8 decades of rate in 100 steps is 4 decades of lag, and both suggestions then land about
ten times too high for the lesson's LeNet-5 (measured in benchmarks/README.md, "Learning-rate
finder"); at 400 steps the lag is one decade.

Two suggestions are read from the curve:

- ``steep``: where the smoothed loss falls fastest (the most negative slope against the step,
  which the exponential ramp makes the same as against log lr), leaving out the first 10 and the
  last step, as Lightning's ``suggestion()`` does. This is :attr:`RangeTest.suggestion` by default.
- ``minimum``: the rate of the lowest smoothed loss divided by 10 (fastai's ``lr_min``).

Nothing is written and the caller's model is not touched: a deep copy trains (when the module
cannot be copied, its weights are put back afterwards). Thread count and global RNGs are restored.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
from ignite.engine import Engine, Events

from cnnlab.core.config import Config, DataConfig
from cnnlab.core.errors import ConfigError, NonFiniteLossError
from cnnlab.core.i18n import _
from cnnlab.core.runtime import resolve_amp
from cnnlab.data.augment import attach_augmentation, build_augmenter
from cnnlab.data.registry import prepare_data
from cnnlab.data.tensors import DataBundle, TensorBatches
from cnnlab.engine.step import build_optimizer, create_trainer
from cnnlab.engine.train import build_model, restored_process_state, setup_runtime

SUGGESTIONS = ("steep", "minimum")
NUM_IT = 400  # steps of the test (see the module's docstring for why not 100)
SKIP_BEGIN, SKIP_END = 10, 1  # Lightning's suggestion() defaults: the first steps are noise, the last diverged


@dataclass
class RangeTest:
    """What the range test measured: one entry per step in ``lrs``, ``losses`` (per image) and ``smoothed``.

    ``suggestions``: ``{"steep": ..., "minimum": ...}`` (None when the curve is too short to say);
    ``suggestion``: the one ``method`` names. ``diverged``: the test stopped early because the loss
    ran away (the usual end); otherwise it ran all ``num_it`` steps.
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestions: dict[str, float | None]
    method: str = "steep"
    diverged: bool = False
    num_it: int = NUM_IT
    config: dict = field(default_factory=dict, repr=False)

    @property
    def suggestion(self) -> float | None:
        return self.suggestions.get(self.method)

    def __repr__(self) -> str:
        s = self.suggestion
        shown = f"{s:.2e}" if s is not None else "None"
        end = "stopped when the loss diverged" if self.diverged else f"ran all {self.num_it} steps"
        return f"{type(self).__name__}(suggestion={shown} ({self.method}), {len(self.lrs)} steps, {end})"

    def to_dict(self) -> dict:
        return {"suggestion": self.suggestion, "method": self.method, "suggestions": dict(self.suggestions),
                "diverged": self.diverged, "steps": len(self.lrs), "lrs": list(self.lrs),
                "losses": list(self.losses), "smoothed": list(self.smoothed)}


DataSource = Callable[[DataConfig, torch.device], DataBundle]


def range_test(
    cfg: Config,
    *,
    model: nn.Module | None = None,
    load_data: DataSource | None = None,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_it: int = NUM_IT,
    stop_factor: float | None = 4.0,
    beta: float = 0.98,
    method: str = "steep",
    on_step: Callable[[int, float, float], None] | None = None,
) -> RangeTest:
    """Run the range test with ``cfg``'s model, data, optimizer, batch size, loss and augmentation.

    ``model``: the user's module (a copy trains; the module itself is left as it is); else
    ``cfg.model.name`` is built from the registry with ``cfg.train.seed``. ``load_data``: the
    user's data instead of ``cfg.data.dataset``. ``stop_factor``: stop once the smoothed loss
    exceeds this multiple of its best (None: run every step). ``on_step(step, lr, loss)``: called
    after each step (a progress bar). ``cfg.optim.lr`` and its schedule are not used: the test sets
    the rate itself.
    """
    _check(start_lr, end_lr, num_it, stop_factor, beta, method)
    cfg.validate()
    with restored_process_state():
        device = setup_runtime(cfg)
        data = (load_data or prepare_data)(cfg.data, device)
        if model is None:
            return _run(cfg, build_model(cfg, data), data, device, start_lr, end_lr, num_it, stop_factor, beta,
                        method, on_step)
        try:
            work = copy.deepcopy(model)
        except Exception:  # a module that cannot be copied (open files, locks): train it, then put it back
            work = None
        if work is not None:
            return _run(cfg, work, data, device, start_lr, end_lr, num_it, stop_factor, beta, method, on_step)
        return _run_and_restore(cfg, model, data, device, start_lr, end_lr, num_it, stop_factor, beta, method, on_step)


def _run_and_restore(cfg: Config, model: nn.Module, data: DataBundle, device: torch.device, *args: object) -> RangeTest:
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    where = next((p.device for p in model.parameters()), torch.device("cpu"))
    training = model.training
    try:
        return _run(cfg, model, data, device, *args)  # type: ignore[arg-type]
    finally:
        model.to(where).to(memory_format=torch.contiguous_format)
        model.load_state_dict(saved)
        model.train(training)


def _run(cfg: Config, model: nn.Module, data: DataBundle, device: torch.device, start_lr: float, end_lr: float,
         num_it: int, stop_factor: float | None, beta: float, method: str,
         on_step: Callable[[int, float, float], None] | None) -> RangeTest:
    t = cfg.train
    model = model.to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optim, model.parameters(), device)
    loss_fn = nn.CrossEntropyLoss(reduction=t.loss_reduction, label_smoothing=t.label_smoothing)
    trainer = create_trainer(model, optimizer, loss_fn, resolve_amp(t.amp, device)[0])
    attach_augmentation(trainer, build_augmenter(t.augment, cfg.data.dataset, t.seed))
    batches = TensorBatches(data.train, t.batch_size, shuffle=True, seed=t.seed, channels_last=t.channels_last)
    if len(batches) == 0:
        raise ConfigError(_("the range test needs training images; the training split is empty ({dataset})").format(
            dataset=cfg.data.dataset))
    ratio = end_lr / start_lr
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    state = {"avg": 0.0, "best": math.inf, "diverged": False}

    @trainer.on(Events.EPOCH_STARTED)
    def _epoch(engine: Engine) -> None:
        batches.set_epoch(engine.state.epoch)

    @trainer.on(Events.ITERATION_STARTED)
    def _set_lr(engine: Engine) -> None:
        step = engine.state.iteration - 1
        lr = start_lr * ratio ** (step / max(1, num_it - 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        lrs.append(lr)

    @trainer.on(Events.ITERATION_COMPLETED)
    def _record(engine: Engine) -> None:
        n = len(engine.state.batch[1])
        loss = float(engine.state.output) / (n if t.loss_reduction == "sum" else 1)
        _add(loss)
        if on_step is not None:
            on_step(len(losses), lrs[-1], loss)
        if len(losses) >= num_it or state["diverged"]:
            engine.terminate()

    def _add(loss: float) -> None:
        losses.append(loss)
        state["avg"] = beta * state["avg"] + (1 - beta) * loss
        smooth = state["avg"] / (1 - beta ** len(losses))
        smoothed.append(smooth)
        state["best"] = min(state["best"], smooth)
        if not math.isfinite(smooth) or (stop_factor is not None and smooth > stop_factor * state["best"]):
            state["diverged"] = True

    try:
        trainer.run(batches, max_epochs=math.ceil(num_it / len(batches)))
    except NonFiniteLossError:  # the step refuses a NaN loss before the update: the end of the curve
        _add(math.nan)
        state["diverged"] = True
    lrs = lrs[: len(losses)]
    return RangeTest(lrs, losses, smoothed, suggest(lrs, smoothed), method, bool(state["diverged"]), num_it,
                     cfg.to_dict())


def suggest(lrs: list[float], smoothed: list[float]) -> dict[str, float | None]:
    """The ``steep`` and ``minimum`` suggestions of a smoothed curve (see the module's docstring)."""
    lr = np.asarray(lrs, dtype=float)
    loss = np.asarray(smoothed, dtype=float)
    finite = np.isfinite(loss)
    out: dict[str, float | None] = {"steep": None, "minimum": None}
    if finite.any():
        out["minimum"] = float(lr[np.nanargmin(np.where(finite, loss, np.nan))] / 10)
    window = loss[SKIP_BEGIN: len(loss) - SKIP_END]
    if len(window) >= 3 and np.isfinite(window).sum() >= 3:
        slope = np.gradient(np.where(np.isfinite(window), window, np.nan))
        if np.isfinite(slope).any():
            out["steep"] = float(lr[SKIP_BEGIN + int(np.nanargmin(slope))])
    return out


def _check(start_lr: float, end_lr: float, num_it: int, stop_factor: float | None, beta: float, method: str) -> None:
    if not (0 < start_lr < end_lr) or not math.isfinite(end_lr):
        raise ConfigError(_("the range test needs 0 < start_lr < end_lr, got {start} and {end}").format(
            start=start_lr, end=end_lr))
    if not isinstance(num_it, int) or num_it < SKIP_BEGIN + SKIP_END + 3:
        raise ConfigError(_("num_it must be a whole number >= {least}, got {value!r}").format(
            least=SKIP_BEGIN + SKIP_END + 3, value=num_it))
    if stop_factor is not None and not stop_factor > 1:
        raise ConfigError(_("stop_factor must be > 1 (or None), got {value}").format(value=stop_factor))
    if not 0 <= beta < 1:
        raise ConfigError(_("beta must be in [0, 1), got {value}").format(value=beta))
    if method not in SUGGESTIONS:
        raise ConfigError(_("method must be one of {choices}, got {value!r}").format(
            choices=", ".join(SUGGESTIONS), value=method))
