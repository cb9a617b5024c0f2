"""Scoring a model on a test set: predictions, the classification report, the confusion matrix."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.config import EVAL_BATCH_SIZE
from cnnlab.data import ImageSet, TensorBatches
from cnnlab.fastpath import inference_forward
from cnnlab.files import save_figure, write_csv, write_json, write_text
from cnnlab.runtime import tune_malloc


@dataclass
class TestReport:
    """The numbers a user reads after training; ``text`` is sklearn's report with 3 digits."""

    accuracy: float
    loss: float
    classes: list[str]
    text: str
    per_class: dict[str, dict[str, float]]
    confusion: np.ndarray
    num_images: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "loss": self.loss,
            "num_images": self.num_images,
            "classes": self.classes,
            "per_class": self.per_class,
            **self.extra,
        }


@torch.no_grad()
def predict_logits(model: nn.Module, data: ImageSet, *, batch_size: int = EVAL_BATCH_SIZE, channels_last: bool = False) -> torch.Tensor:
    """Logits for every image of ``data`` in order, as a CPU float tensor (N, classes)."""
    tune_malloc()  # process-wide and idempotent: batch buffers are reused instead of re-faulted
    model.eval()
    forward = inference_forward(model)  # exact; faster on CPU for LeNet-style models
    out = [forward(x).float().cpu() for x, _ in TensorBatches(data, batch_size, channels_last=channels_last)]
    return torch.cat(out) if out else torch.empty(0, len(data.classes))


def score(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> TestReport:
    """Accuracy, mean cross-entropy, sklearn's classification report and confusion matrix."""
    from sklearn.metrics import classification_report, confusion_matrix

    labels = labels.cpu().long()
    preds = logits.argmax(dim=1)
    y_true, y_pred = labels.numpy(), preds.numpy()
    ids = list(range(len(classes)))
    text = classification_report(y_true, y_pred, labels=ids, target_names=classes, digits=3, zero_division=0)
    raw = classification_report(y_true, y_pred, labels=ids, target_names=classes, output_dict=True, zero_division=0)
    per_class = {
        name: {
            "precision": float(raw[name]["precision"]),
            "recall": float(raw[name]["recall"]),
            "f1": float(raw[name]["f1-score"]),
            "support": int(raw[name]["support"]),
        }
        for name in classes
    }
    loss = float(F.cross_entropy(logits.float(), labels)) if len(labels) else math.nan
    return TestReport(
        accuracy=float((preds == labels).double().mean()) if len(labels) else math.nan,
        loss=loss,
        classes=list(classes),
        text=text,
        per_class=per_class,
        confusion=confusion_matrix(y_true, y_pred, labels=ids),
        num_images=len(labels),
        extra={
            "macro_avg": {k.replace("-score", ""): float(v) for k, v in raw["macro avg"].items()},
            "weighted_avg": {k.replace("-score", ""): float(v) for k, v in raw["weighted avg"].items()},
        },
    )


def write_report(run_path: Path, report: TestReport, *, extra: dict[str, Any] | None = None) -> None:
    """report.txt, report.json, confusion_matrix.csv and confusion_matrix.png in a run directory."""
    from cnnlab.plots import confusion_matrix_figure

    run_path = Path(run_path)
    header = f"test accuracy {report.accuracy:.4f}  loss {report.loss:.4f}  ({report.num_images} images)\n\n"
    write_text(run_path / "report.txt", header + report.text)
    write_json(run_path / "report.json", {**report.to_dict(), **(extra or {})})
    write_csv(
        run_path / "confusion_matrix.csv",
        ["true\\pred", *report.classes],
        [[name, *map(int, row)] for name, row in zip(report.classes, report.confusion)],
    )
    save_figure(confusion_matrix_figure(report.confusion, report.classes), run_path / "confusion_matrix.png")


@dataclass
class RunTestLogits:
    """A run's best checkpoint applied to its dataset's test set (nothing written)."""

    run_path: Path
    payload: dict[str, Any]  # the loaded best.pt (epoch, metrics, data info)
    test: ImageSet  # the test set on the CPU, in file order
    info: Any  # cnnlab.data.DatasetInfo
    logits: torch.Tensor  # (N, classes), CPU float


def load_best_and_test_set(run_dir: str | Path, *, data_dir: str | None = None) -> tuple:
    """A run's (path, config, ``best.pt`` payload, test set, dataset info); clear errors when missing."""
    from cnnlab.checkpoint import load_checkpoint
    from cnnlab.data import load_dataset
    from cnnlab.errors import RunDirError
    from cnnlab.runs import open_run, read_config

    run = open_run(run_dir)
    cfg = read_config(run)
    if not run.best.is_file():
        raise RunDirError(f"{run.path} has no best.pt yet; train it first (cnnlab train --run-dir {run.path})")
    payload = load_checkpoint(run.best)
    _, test, info = load_dataset(cfg.data.dataset, data_dir or cfg.data.data_dir, download=cfg.data.download,
                                 image_size=cfg.data.image_size)
    return run.path, cfg, payload, test, info


def run_test_logits(
    run_dir: str | Path, *, data_dir: str | None = None, device: str = "auto", batch_size: int = EVAL_BATCH_SIZE
) -> RunTestLogits:
    """Load a run's ``best.pt`` and its dataset's test set, and return the test logits."""
    from cnnlab.checkpoint import model_from_checkpoint
    from cnnlab.engine import resolve_device

    run_path, cfg, payload, test, info = load_best_and_test_set(run_dir, data_dir=data_dir)
    dev = resolve_device(device)
    model = model_from_checkpoint(payload, expect_dataset=cfg.data.dataset).to(dev)
    logits = predict_logits(model, test.to(dev), batch_size=batch_size)
    return RunTestLogits(run_path, payload, test, info, logits)


def evaluate_run(
    run_dir: str | Path, *, data_dir: str | None = None, device: str = "auto", batch_size: int = EVAL_BATCH_SIZE
) -> TestReport:
    """Load a run's ``best.pt``, score it on its dataset's test set, and rewrite the report files."""
    r = run_test_logits(run_dir, data_dir=data_dir, device=device, batch_size=batch_size)
    report = score(r.logits, r.test.labels, r.info.classes)
    write_report(r.run_path, report, extra={"checkpoint": "best.pt", "epoch": r.payload["epoch"], "dataset": r.info.name})
    return report
