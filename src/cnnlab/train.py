"""``train(cfg)``: the lesson's pipeline, end to end, as one library call.

    data (decoded once, split with a saved seed) -> model -> ignite trainer
    -> after every epoch: train/val loss and accuracy, best checkpoint by
       validation loss, a metrics.csv row and a one-line summary
    -> the best checkpoint scored on the test set (report.txt/json, confusion matrix)
"""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from ignite.engine import Engine, Events

from cnnlab import __version__
from cnnlab.checkpoint import load_checkpoint, make_payload, model_from_checkpoint, save_checkpoint
from cnnlab.config import Config
from cnnlab.data import DataBundle, TensorBatches, prepare_data
from cnnlab.engine import (
    build_optimizer,
    create_evaluator,
    create_trainer,
    default_threads,
    resolve_device,
    run_evaluation,
)
from cnnlab.errors import RunDirError
from cnnlab.evaluate import TestReport, predict_logits, score, write_report
from cnnlab.files import write_csv
from cnnlab.models import create_model, get_model_entry
from cnnlab.runs import RunDir, default_run_dir, write_config, write_split

METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s", "best"]


@dataclass
class TrainResult:
    run: RunDir
    best_epoch: int
    best_val_loss: float
    history: list[dict]
    test: TestReport
    seconds: float


def setup_runtime(cfg: Config) -> torch.device:
    """Device and thread count; returns the device."""
    device = resolve_device(cfg.train.device)
    torch.set_num_threads(cfg.train.threads or default_threads())
    return device


def train(cfg: Config, run_dir: str | Path | None = None, *, log: Callable[[str], None] = print) -> TrainResult:
    """Train as ``cfg`` says, write the run directory, and score the best model on the test set."""
    cfg.validate()
    get_model_entry(cfg.model.name)  # fail on a typo before any data is read
    t0 = time.perf_counter()
    device = setup_runtime(cfg)
    run = RunDir(Path(run_dir) if run_dir else default_run_dir(cfg))
    if run.best.exists() or run.config.exists():
        raise RunDirError(f"{run.path} already holds a run; choose another --run-dir")

    data = prepare_data(cfg.data, device)
    torch.manual_seed(cfg.train.seed)  # model init; the split and shuffling have their own generators
    model = build_model(cfg, data).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optim, model.parameters(), device)
    loss_fn = nn.CrossEntropyLoss(reduction=cfg.train.loss_reduction)

    run.path.mkdir(parents=True, exist_ok=True)
    write_config(run, cfg, {"provenance": provenance(device)})
    write_split(run, data.train_indices, data.val_indices, cfg.data.split_seed)

    trainer = create_trainer(model, optimizer, loss_fn)
    evaluator = create_evaluator(model)
    t = cfg.train
    train_batches = TensorBatches(data.train, t.batch_size, shuffle=True, seed=t.seed, channels_last=t.channels_last)
    eval_train = TensorBatches(data.train, t.eval_batch_size, channels_last=t.channels_last)
    eval_val = TensorBatches(data.val, t.eval_batch_size, channels_last=t.channels_last)

    pbar = None
    if t.progress:
        from ignite.handlers import ProgressBar

        pbar = ProgressBar(persist=False, desc="train")
        pbar.attach(trainer, output_transform=lambda loss: {"loss": loss / (t.batch_size if t.loss_reduction == "sum" else 1)})
    say = pbar.log_message if pbar is not None else log

    history: list[dict] = []
    best = {"loss": float("inf"), "epoch": 0}
    clock = {"start": time.perf_counter()}

    @trainer.on(Events.EPOCH_STARTED)
    def _start_epoch(engine: Engine) -> None:
        train_batches.set_epoch(engine.state.epoch)
        clock["start"] = time.perf_counter()

    @trainer.on(Events.EPOCH_COMPLETED)
    def _end_epoch(engine: Engine) -> None:
        epoch = engine.state.epoch
        row: dict = {"epoch": epoch}
        if t.train_eval:
            m = run_evaluation(evaluator, eval_train)
            row["train_loss"], row["train_acc"] = m["loss"], m["accuracy"]
        m = run_evaluation(evaluator, eval_val)
        row["val_loss"], row["val_acc"] = m["loss"], m["accuracy"]
        row["lr"] = optimizer.param_groups[0]["lr"]
        row["best"] = row["val_loss"] < best["loss"]
        if row["best"]:
            best.update(loss=row["val_loss"], epoch=epoch)
            save_checkpoint(run.best, make_payload(
                model, model_name=cfg.model.name, data_info=data.info.to_dict(), config=cfg.to_dict(),
                epoch=epoch, metrics={k: v for k, v in row.items() if isinstance(v, float)},
            ))
        row["epoch_time_s"] = round(time.perf_counter() - clock["start"], 3)
        history.append(row)
        write_metrics(run, history)
        say(format_epoch(row, t.epochs))

    trainer.run(train_batches, max_epochs=t.epochs)

    report = evaluate_checkpoint(run, data, device, batch_size=t.eval_batch_size)
    return TrainResult(run, best["epoch"], best["loss"], history, report, time.perf_counter() - t0)


def build_model(cfg: Config, data: DataBundle) -> nn.Module:
    return create_model(
        cfg.model.name,
        in_channels=data.info.channels,
        num_classes=len(data.info.classes),
        image_size=data.info.image_size,
    )


def evaluate_checkpoint(run: RunDir, data: DataBundle, device: torch.device, *, batch_size: int = 1000) -> TestReport:
    """Score ``best.pt`` on the test set and write the report files."""
    payload = load_checkpoint(run.best)
    model = model_from_checkpoint(payload).to(device)
    logits = predict_logits(model, data.test, batch_size=batch_size)
    report = score(logits, data.test.labels, data.info.classes)
    write_report(run.path, report, extra={"checkpoint": "best.pt", "epoch": payload["epoch"], "dataset": data.info.name})
    return report


def write_metrics(run: RunDir, history: list[dict]) -> None:
    def cell(v: object) -> object:
        return "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)

    write_csv(run.metrics, METRIC_COLUMNS, [[cell(row.get(c)) for c in METRIC_COLUMNS] for row in history])


def format_epoch(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']:>{len(str(epochs))}}/{epochs}"]
    if "train_loss" in row:
        parts.append(f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.2%}")
    parts.append(f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%}")
    parts.append(f"{row['epoch_time_s']:.1f}s")
    if row.get("best"):
        parts.append("* best")
    return "  ".join(parts)


def provenance(device: torch.device) -> dict:
    return {
        "cnnlab_version": __version__,
        "torch_version": str(torch.__version__),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
