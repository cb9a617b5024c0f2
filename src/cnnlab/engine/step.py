"""pytorch-ignite trainer and evaluator factories, and the training step.

The training step is the lesson's: zero the gradients, forward, summed
cross-entropy, backward, optimizer step. Two additions keep work safe: the loss
is checked for NaN/inf *before* the optimizer step, so a diverged batch never
reaches the weights, and the step returns a Python float for the progress bar.
"""
from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn
from ignite.engine import Engine, Events
from ignite.metrics import Accuracy, Loss

from cnnlab.inference import Forwarded, eval_forward, eval_workers, train_forward
from cnnlab.core.config import OPTIMIZERS, OptimConfig
from cnnlab.core.errors import ConfigError, NonFiniteLossError
from cnnlab.core.i18n import _


# ignite logs "Engine run is terminating due to exception: ..." before re-raising; with no
# handler configured Python prints that to stderr, so a NaN or a full disk would not be one
# `error:` line. cnnlab's engines log under "cnnlab.ignite", which has a NullHandler: silent by
# default, shown when the caller configures logging (e.g. logging.basicConfig(level="INFO")).
ENGINE_LOGGER = logging.getLogger("cnnlab.ignite")
ENGINE_LOGGER.addHandler(logging.NullHandler())


def _quiet(engine: Engine) -> Engine:
    engine.logger = ENGINE_LOGGER
    return engine


def build_optimizer(cfg: OptimConfig, params: Iterable[torch.nn.Parameter], device: torch.device) -> torch.optim.Optimizer:
    """Adam (the lesson's), AdamW or SGD with momentum/Nesterov."""
    params = list(params)
    # The single-tensor loop is the slow path on CPU; fused (Adam/AdamW) and foreach (SGD) kernels
    # compute the same update with one call per step instead of one per parameter tensor.
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay,
                                fused=True)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay,
                                 fused=True)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay,
            foreach=True,
        )
    raise ConfigError(_("unknown optimizer {name!r}; available: {names}").format(name=cfg.name,
                                                                                names=", ".join(OPTIMIZERS)))


class LRSchedule:
    """The learning rate as a pure function of the iteration number (1-based, as ignite counts).

    Being stateless, it needs nothing saved to resume: the trainer's iteration
    count is enough. ``onecycle`` follows ``torch.optim.lr_scheduler.OneCycleLR``'s
    learning-rate curve (cosine warm-up from lr/25 to lr, cosine down to lr/1e4;
    momentum is not cycled); ``cosine`` anneals lr -> min_lr over all iterations;
    ``step`` multiplies lr by ``step_gamma`` every ``step_epochs`` epochs.
    """

    def __init__(self, cfg: OptimConfig, steps_per_epoch: int, epochs: int) -> None:
        if cfg.schedule not in ("constant", "onecycle", "cosine", "step"):
            raise ConfigError(_("unknown schedule {name!r}; available: {names}").format(
                name=cfg.schedule, names="constant, onecycle, cosine, step"))
        self.cfg = cfg
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total = max(1, self.steps_per_epoch * epochs)

    @property
    def per_iteration(self) -> bool:
        return self.cfg.schedule != "constant"

    def lr_at(self, iteration: int) -> float:
        c, lr = self.cfg, self.cfg.lr
        step = min(max(iteration - 1, 0), self.total - 1)  # 0-based position of this update
        if c.schedule == "constant":
            return lr
        if c.schedule == "step":
            return lr * c.step_gamma ** (step // self.steps_per_epoch // c.step_epochs)
        if c.schedule == "cosine":
            return c.min_lr + (lr - c.min_lr) * 0.5 * (1 + math.cos(math.pi * step / max(1, self.total - 1)))
        # onecycle
        start, end = lr / 25.0, lr / 25.0 / 1e4
        warm = max(1, int(c.warmup_pct * self.total) - 1)
        if step <= warm:
            return _cos_between(start, lr, step / warm)
        return _cos_between(lr, end, (step - warm) / max(1, self.total - 1 - warm))

    def apply(self, optimizer: torch.optim.Optimizer, iteration: int) -> None:
        lr = self.lr_at(iteration)
        for group in optimizer.param_groups:
            group["lr"] = lr


def _cos_between(a: float, b: float, frac: float) -> float:
    return b + (a - b) * 0.5 * (1 + math.cos(math.pi * min(max(frac, 0.0), 1.0)))


def build_scheduler(
    cfg: OptimConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int, trainer: Engine | None = None
) -> LRSchedule:
    """The configured schedule; with ``trainer`` it also sets the lr before every iteration."""
    schedule = LRSchedule(cfg, steps_per_epoch, epochs)
    if trainer is not None and schedule.per_iteration:

        @trainer.on(Events.ITERATION_STARTED)
        def _set_lr(engine: Engine) -> None:
            schedule.apply(optimizer, engine.state.iteration)

    return schedule


def autocast(device: torch.device, amp: str) -> Any:
    """The forward pass's autocast context: bfloat16 for ``amp="bf16"``, a no-op for ``"off"``."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp == "bf16")


def compile_model(model: nn.Module, mode: str) -> nn.Module:
    """``torch.compile(model, mode=mode)``, or ``model`` itself for ``mode="off"``.

    The compiled wrapper shares the model's parameters, so checkpoints keep saving
    ``model.state_dict()`` (no ``_orig_mod.`` prefixes) and load into a plain model.
    """
    if mode == "off":
        return model
    return torch.compile(model, mode=None if mode == "default" else mode)  # type: ignore[return-value]


def create_train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module, amp: str = "off", parts: int = 1
) -> Callable[[Engine, Any], float]:
    """The training step; ``parts > 1`` splits every batch among that many threads (:func:`_split_step`)."""
    forward = train_forward(model)  # the model's own results, bit for bit; faster on CPU for LeNet-5
    if parts > 1:
        return _split_step(model, forward, optimizer, loss_fn, amp, parts)

    def train_step(engine: Engine, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        model.train()
        x, y = batch
        optimizer.zero_grad(set_to_none=True)
        with autocast(x.device, amp):
            logits = forward(x)
        # The loss in float32 (autocast would pick it anyway); bf16 has no loss scaling to undo.
        loss = loss_fn(logits.float(), y)
        value = loss.item()
        check_finite(value, engine)
        loss.backward()
        optimizer.step()
        return value

    return train_step


def check_finite(value: float, engine: Engine) -> None:
    """Stop with :class:`NonFiniteLossError` before a NaN/inf loss's update reaches the weights."""
    if not math.isfinite(value):
        raise NonFiniteLossError(
            _("the training loss became {value} at epoch {epoch}, iteration {iteration}; training stopped before "
              "the bad update reached the weights. Try a lower learning rate.").format(
                value=value, epoch=engine.state.epoch, iteration=engine.state.iteration)
        )


def _split_step(model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer,
                loss_fn: nn.Module, amp: str, parts: int) -> Callable[[Engine, Any], float]:
    """The training step with each batch cut into ``parts`` slices, forwarded and back-propagated at once.

    The calling thread computes the first slice, a pool the others; PyTorch releases the GIL in its
    kernels, so on a CPU each slice runs on its own core. Each slice's loss is its images' summed loss
    (divided by the whole batch's size for a mean), so the slices' losses and gradients add up to the
    batch's: the same arithmetic per image, summed in another order. ``torch.autograd.grad`` returns
    each slice's gradients instead of accumulating into ``.grad`` from several threads (which PyTorch
    does not make safe); they are added in slice order, so a run is reproducible. As in the one-piece
    step, nothing reaches the weights before the loss is known to be finite.
    """
    if not isinstance(loss_fn, nn.CrossEntropyLoss) or loss_fn.weight is not None:
        raise ConfigError(_("splitting the batch needs the plain cross-entropy loss"), option="train.batch_split")
    summed = nn.CrossEntropyLoss(reduction="sum", label_smoothing=loss_fn.label_smoothing,
                                 ignore_index=loss_fn.ignore_index)
    mean = loss_fn.reduction == "mean"
    params = [p for p in model.parameters() if p.requires_grad]
    pool = ThreadPoolExecutor(parts - 1, thread_name_prefix="cnnlab-train")

    def part(x: torch.Tensor, y: torch.Tensor, batch: int) -> tuple[torch.Tensor, tuple]:
        with autocast(x.device, amp):  # per thread, as grad mode is
            logits = forward(x)
        loss = summed(logits.float(), y)
        if mean:
            loss = loss / batch
        return loss.detach(), torch.autograd.grad(loss, params, allow_unused=True)

    def train_step(engine: Engine, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        model.train()
        x, y = batch
        optimizer.zero_grad(set_to_none=True)
        xs, ys = x.tensor_split(min(parts, len(x))), y.tensor_split(min(parts, len(x)))
        others = [pool.submit(part, xs[i], ys[i], len(x)) for i in range(1, len(xs))]
        try:
            results = [part(xs[0], ys[0], len(x))]
        finally:  # the other slices finish (or fail) before this step returns or raises
            results += [f.result() for f in others]
        loss = results[0][0]
        for other, _grads in results[1:]:
            loss = loss + other
        value = loss.item()
        check_finite(value, engine)
        for i, p in enumerate(params):
            grads = [r[1][i] for r in results if r[1][i] is not None]
            if grads:
                total = grads[0]
                for g in grads[1:]:
                    total = total + g
                p.grad = total
        optimizer.step()
        return value

    return train_step


def create_trainer(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module, amp: str = "off",
                   parts: int = 1) -> Engine:
    """An ignite ``Engine`` running the lesson's training step (each batch in ``parts`` slices, see :func:`create_train_step`)."""
    return _quiet(Engine(create_train_step(model, optimizer, loss_fn, amp, parts)))


class Evaluator(Engine):
    """An ignite ``Engine`` over ``(logits, labels)`` batches with ``loss`` (mean cross-entropy per
    image) and ``accuracy`` metrics; :meth:`evaluate` forwards a pass's batches and runs it.

    The lesson attaches ``Loss(criterion)`` with the *summed* criterion; ignite's
    ``Loss`` expects a mean and multiplies it by the batch size, so the lesson's
    printed loss is scaled by the evaluation batch size. cnnlab reports the true
    mean per image, which does not depend on the batch size.

    On a CPU the forwards run in the threads the cores allow (:func:`cnnlab.inference.eval_workers`),
    ahead of the metrics, which see the batches in order: the same numbers as one thread, bit for bit.
    """

    def __init__(self, model: nn.Module, amp: str = "off", workers: int | None = None) -> None:
        super().__init__(lambda engine, batch: batch)  # the forward already ran: a batch is (logits, labels)
        self.model, self.amp = model, amp
        self.workers = eval_workers(model) if workers is None else workers
        Loss(nn.CrossEntropyLoss()).attach(self, "loss")
        Accuracy().attach(self, "accuracy")

    def evaluate(self, batches: Iterable) -> dict[str, float]:
        """Loss and accuracy of the model over ``batches`` of ``(images, labels)``."""
        self.model.eval()
        # The weights are fixed for one pass: build the exact oneDNN path once per pass.
        forward = eval_forward(self.model) if self.amp == "off" else self.model
        amp = self.amp

        def logits(x: torch.Tensor) -> torch.Tensor:  # runs in the worker threads: grad mode and autocast are per thread
            with torch.no_grad(), autocast(x.device, amp):
                return forward(x).float()

        self.run(Forwarded(logits, batches, self.workers))
        return {k: float(v) for k, v in self.state.metrics.items()}


def create_evaluator(model: nn.Module, amp: str = "off", workers: int | None = None) -> Evaluator:
    """An :class:`Evaluator` of ``model``; ``workers``: forwarding threads (default: as the cores allow)."""
    return _quiet(Evaluator(model, amp, workers))  # type: ignore[return-value]


def run_evaluation(evaluator: Evaluator, batches: Iterable) -> dict[str, float]:
    return evaluator.evaluate(batches)


__all__ = [
    "Engine",
    "Evaluator",
    "Events",
    "LRSchedule",
    "autocast",
    "compile_model",
    "build_optimizer",
    "build_scheduler",
    "create_evaluator",
    "create_train_step",
    "create_trainer",
    "run_evaluation",
]
