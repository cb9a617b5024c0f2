"""Numbers about predictions: test report, confusion, calibration, McNemar. Pure: arrays in, data out."""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.core.errors import ConfigError
from cnnlab.core.i18n import DEFAULT, _, format_float, format_int, language, use_language


@dataclass
class TestReport:
    """The numbers a user reads after training; ``text`` is scikit-learn's report with 3 digits.

    ``text`` is always scikit-learn's English text (programs compare it); ``print(report)`` shows the
    headline and the per-class table in ``lang`` (None: the language in force when it is printed).
    """

    accuracy: float
    loss: float
    classes: list[str]
    text: str  # scikit-learn's classification report, 3 digits (computed by classification_report below)
    per_class: dict[str, dict[str, float]]
    confusion: np.ndarray
    num_images: int
    extra: dict[str, Any] = field(default_factory=dict)
    lang: str | None = None

    def __repr__(self) -> str:
        return (f"TestReport(accuracy={self.accuracy:.4f}, loss={self.loss:.4f}, images={self.num_images}, "
                f"classes={len(self.classes)})")

    def __str__(self) -> str:
        """What ``print(report)`` shows: the headline numbers and sklearn's report."""
        with use_language(self.lang):
            return f"{self.headline()}\n\n{self.table()}"

    def headline(self) -> str:
        """``test accuracy 0.9870  loss 0.0412  (10000 images)``, in the language in force."""
        return _("test accuracy {accuracy}  loss {loss}  ({images} images)").format(
            accuracy=format_float(self.accuracy), loss=format_float(self.loss), images=self.num_images)

    def table(self, digits: int = 3) -> str:
        """The per-class table: scikit-learn's text in English; in another language its column and row
        names translated and its numbers written that language's way (class names are data, kept)."""
        if language() == DEFAULT and digits == 3:
            return self.text
        return _report_from_confusion(self.confusion, self.classes, digits, words=True)[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "loss": self.loss,
            "num_images": self.num_images,
            "classes": self.classes,
            "per_class": self.per_class,
            **self.extra,
        }


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str],
                          digits: int = 3) -> tuple[str, dict[str, dict[str, float]]]:
    """scikit-learn's ``classification_report`` (labels 0..K-1, ``zero_division=0``): its text and its dict.

    The same numbers and the same text, character for character (``tests/test_analysis.py`` checks
    it against scikit-learn), computed here so that scoring a run does not import scikit-learn and
    SciPy (their import time is in benchmarks/README.md, "Start-up").
    """
    return _report_from_confusion(confusion_matrix(y_true, y_pred, len(classes)), classes, digits)


def _report_from_confusion(cm: np.ndarray, classes: Sequence[str], digits: int = 3,
                           words: bool = False) -> tuple[str, dict[str, dict[str, float]]]:
    """The report's text and numbers; ``words=True`` writes its text in the language in force."""
    k = len(classes)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
        denom = 2 * tp + (predicted - tp) + (support - tp)  # sklearn's f1: 2tp / (2tp + fp + fn)
        f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    total = int(support.sum())
    out: dict[str, dict[str, float]] = {}
    for i, name in enumerate(classes):
        out[name] = {"precision": float(precision[i]), "recall": float(recall[i]), "f1-score": float(f1[i]),
                     "support": int(support[i])}
    accuracy = float(tp.sum() / total) if total else 0.0
    macro = [float(np.mean(a)) if k else 0.0 for a in (precision, recall, f1)]
    weights = support / total if total else np.zeros(k)
    weighted = [float(np.sum(a * weights)) for a in (precision, recall, f1)]
    out["accuracy"] = accuracy  # type: ignore[assignment]
    out["macro avg"] = dict(zip(("precision", "recall", "f1-score"), macro), support=total)
    out["weighted avg"] = dict(zip(("precision", "recall", "f1-score"), weighted), support=total)

    if words:
        return _translated_report(classes, precision, recall, f1, support, accuracy, macro, weighted, total,
                                  digits), out
    width = max(max((len(c) for c in classes), default=0), len("weighted avg"), digits)
    headers = ("precision", "recall", "f1-score", "support")
    text = ("{:>{width}s} " + " {:>9}" * 4).format("", *headers, width=width) + "\n\n"
    row_fmt = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}\n"
    for i, name in enumerate(classes):
        text += row_fmt.format(name, precision[i], recall[i], f1[i], int(support[i]), width=width, digits=digits)
    text += "\n"
    text += ("{:>{width}s} " + " {:>9.{digits}}" * 2 + " {:>9.{digits}f}" + " {:>9}\n").format(
        "accuracy", "", "", accuracy, total, width=width, digits=digits)
    text += row_fmt.format("macro avg", *macro, total, width=width, digits=digits)
    text += row_fmt.format("weighted avg", *weighted, total, width=width, digits=digits)
    return text, out


def _translated_report(classes: Sequence[str], precision: np.ndarray, recall: np.ndarray, f1: np.ndarray,
                       support: np.ndarray, accuracy: float, macro: list[float], weighted: list[float], total: int,
                       digits: int) -> str:
    """scikit-learn's layout with the words of the language in force and its numbers' decimal mark."""
    headers = (_("precision"), _("recall"), _("f1-score"), _("support"))
    accuracy_name, macro_name, weighted_name = _("accuracy"), _("macro avg"), _("weighted avg")
    width = max(max((len(c) for c in classes), default=0), len(accuracy_name), len(macro_name), len(weighted_name),
                digits)
    col = max(9, *(len(h) for h in headers))

    def row(name: str, values: Sequence[float | None], n: int) -> str:
        cells = ["" if v is None else format_float(v, digits) for v in values]
        return f"{name:>{width}s} " + "".join(f" {c:>{col}}" for c in cells) + f" {format_int(n):>{col}}\n"

    text = f"{'':>{width}s} " + "".join(f" {h:>{col}}" for h in headers) + "\n\n"
    for i, name in enumerate(classes):
        text += row(name, (precision[i], recall[i], f1[i]), int(support[i]))
    text += "\n"
    text += row(accuracy_name, (None, None, accuracy), total)
    text += row(macro_name, macro, total)
    text += row(weighted_name, weighted, total)
    return text


def score(logits: torch.Tensor, labels: torch.Tensor, classes: list[str], *, lang: str | None = None) -> TestReport:
    """Accuracy, mean cross-entropy, the classification report and the confusion matrix (printed in ``lang``)."""
    labels = labels.cpu().long()
    preds = logits.argmax(dim=1)
    confusion = confusion_matrix(labels.numpy(), preds.numpy(), len(classes))
    text, raw = _report_from_confusion(confusion, classes, digits=3)
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
        confusion=confusion,
        num_images=len(labels),
        extra={
            "macro_avg": {k.replace("-score", ""): float(v) for k, v in raw["macro avg"].items()},
            "weighted_avg": {k.replace("-score", ""): float(v) for k, v in raw["weighted avg"].items()},
        },
        lang=lang,
    )


ECE_BINS = 15


@dataclass
class Predictions:
    """One model's test-set predictions; index ``i`` everywhere is test image ``i``."""

    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,)
    probs: np.ndarray  # float32 (N, K), softmax of the logits
    losses: np.ndarray  # float32 (N,), cross-entropy of each image
    classes: list[str]

    @classmethod
    def from_logits(
        cls, logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor | np.ndarray, classes: Sequence[str]
    ) -> "Predictions":
        logits = torch.as_tensor(logits).float().cpu()
        labels = torch.as_tensor(labels).long().cpu()
        # Loss from the logits, not -log(prob): exact even where the softmax rounds to 0.
        losses = F.cross_entropy(logits, labels, reduction="none")
        return cls(
            images=np.asarray(torch.as_tensor(images).cpu()),
            labels=labels.numpy(),
            probs=logits.softmax(dim=1).numpy(),
            losses=losses.numpy(),
            classes=list(classes),
        )

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        """The probability of the predicted class."""
        return self.probs.max(axis=1)

    @property
    def correct(self) -> np.ndarray:
        return self.preds == self.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"Predictions(images={len(self)}, classes={len(self.classes)}, accuracy={float(self.correct.mean()):.4f})"


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class (scikit-learn's convention)."""
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    return np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_rates(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class support, correct count, accuracy (= recall) and precision; 0 where undefined."""
    cm = np.asarray(confusion, dtype=np.int64)
    diag = np.diag(cm)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, diag / np.maximum(support, 1), 0.0)
        precision = np.where(predicted > 0, diag / np.maximum(predicted, 1), 0.0)
    return {"support": support, "correct": diag, "recall": recall, "precision": precision}


@dataclass
class ReliabilityBins:
    """Equal-width confidence bins: how often predictions in each bin were right."""

    edges: np.ndarray  # (n_bins + 1,)
    counts: np.ndarray  # images per bin
    accuracy: np.ndarray  # fraction correct per bin (nan for empty bins)
    confidence: np.ndarray  # mean confidence per bin (nan for empty bins)
    ece: float

    def rows(self) -> list[list[Any]]:
        return [
            [f"{lo:.4f}", f"{hi:.4f}", int(n), "" if n == 0 else f"{a:.6f}", "" if n == 0 else f"{c:.6f}"]
            for lo, hi, n, a, c in zip(self.edges[:-1], self.edges[1:], self.counts, self.accuracy, self.confidence)
        ]


def reliability_bins(confidences: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> ReliabilityBins:
    """Bin predictions by confidence into ``n_bins`` equal bins (lo, hi] (0 goes to the first).

    ECE = sum over bins of (bin size / N) * |accuracy(bin) - mean confidence(bin)|,
    the definition of Guo et al. (2017) with 15 bins by default.
    """
    if n_bins < 1:
        raise ConfigError(_("the number of calibration bins must be >= 1, got {n}").format(n=n_bins))
    conf = np.asarray(confidences, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Number of inner edges strictly below the confidence = index of its (lo, hi] bin.
    idx = np.searchsorted(edges[1:-1], conf, side="left")
    counts = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(idx, weights=ok, minlength=n_bins) / counts
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / counts
    n = len(conf)
    gaps = np.where(counts > 0, np.abs(np.nan_to_num(accuracy) - np.nan_to_num(mean_conf)), 0.0)
    ece = float((counts / n * gaps).sum()) if n else math.nan
    return ReliabilityBins(edges, counts, accuracy, mean_conf, ece)


def expected_calibration_error(confidences: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error with ``n_bins`` equal-width bins (see :func:`reliability_bins`)."""
    return reliability_bins(confidences, correct, n_bins).ece


@dataclass
class McNemarResult:
    """McNemar's exact test on paired predictions of two models on the same images."""

    both_right: int
    only_a_right: int  # b: A right, B wrong
    only_b_right: int  # c: A wrong, B right
    both_wrong: int
    p_value: float

    @property
    def table(self) -> list[list[int]]:
        """[[both right, A right/B wrong], [A wrong/B right, both wrong]]."""
        return [[self.both_right, self.only_a_right], [self.only_b_right, self.both_wrong]]

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "only_a_right": self.only_a_right, "only_b_right": self.only_b_right,
                "p_value": self.p_value, "test": "McNemar exact (two-sided binomial on the discordant pairs)"}


def mcnemar_from_table(table: Sequence[Sequence[int]]) -> McNemarResult:
    """Exact McNemar test from a 2x2 table [[both right, A only], [B only, both wrong]].

    Under the null hypothesis (both models have the same error rate) each
    discordant image is equally likely to favour A or B, so
    ``min(b, c) ~ Binomial(b + c, 1/2)``; the two-sided p-value is
    ``min(1, 2 * P(X <= min(b, c)))``.
    """
    (n11, b), (c, n22) = ((int(v) for v in row) for row in table)
    if min(n11, b, c, n22) < 0:
        raise ValueError(f"a contingency table holds counts >= 0, got {table}")
    if b + c == 0:
        p = 1.0
    else:
        from scipy.stats import binomtest

        p = float(binomtest(min(b, c), b + c, 0.5, alternative="two-sided").pvalue)
    return McNemarResult(n11, b, c, n22, min(1.0, p))


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemarResult:
    """McNemar's exact test from two boolean "was this image right" vectors over the same images."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired predictions must cover the same images, got {a.shape} and {b.shape}")
    return mcnemar_from_table([[int((a & b).sum()), int((a & ~b).sum())], [int((~a & b).sum()), int((~a & ~b).sum())]])


@dataclass(frozen=True)
class ConfusedPair:
    true: str
    pred: str
    count: int


def most_confused(confusion: np.ndarray, classes: Sequence[str], *, top: int | None = None, min_count: int = 1) -> list[ConfusedPair]:
    """Off-diagonal (true -> predicted) pairs by count, largest first; ties in class order."""
    cm = np.asarray(confusion)
    pairs = [
        (-int(cm[i, j]), i, j) for i in range(len(classes)) for j in range(len(classes)) if i != j and cm[i, j] >= min_count
    ]
    pairs.sort()
    out = [ConfusedPair(classes[i], classes[j], -n) for n, i, j in pairs]
    return out if top is None else out[:top]


def top_losses(losses: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest losses, highest first; equal losses keep test order."""
    losses = np.asarray(losses)
    return np.argsort(-losses, kind="stable")[: max(0, k)]


def classes_with_most_errors(labels: np.ndarray, preds: np.ndarray, num_classes: int, n: int = 3) -> list[int]:
    """The ``n`` true classes with the most misclassified images (ties: lower class first)."""
    wrong = np.bincount(np.asarray(labels)[np.asarray(labels) != np.asarray(preds)], minlength=num_classes)
    order = sorted(range(num_classes), key=lambda k: (-wrong[k], k))
    return [k for k in order[:n] if wrong[k] > 0] or order[:n]


def resolve_classes(spec: Sequence[str | int], classes: Sequence[str]) -> list[int]:
    """Class names (``"8"``, ``"cat"``) or indices to indices; a clear error for unknown ones."""
    names = {name: i for i, name in enumerate(classes)}
    out = []
    for item in spec:
        key = str(item).strip()
        if key in names:
            out.append(names[key])
        elif key.lstrip("-").isdigit() and 0 <= int(key) < len(classes):
            out.append(int(key))
        else:
            shown = ", ".join(classes[:20]) + (" ..." if len(classes) > 20 else "")
            raise ConfigError(_("unknown class {name!r}; classes are: {classes}").format(name=key, classes=shown))
    return out


def select_misclassified(labels: np.ndarray, preds: np.ndarray, show: Sequence[int], per_class: int) -> dict[int, np.ndarray]:
    """For each class in ``show``: the first ``per_class`` wrong test images of that true class, in test order.

    Test order (not confidence) keeps the selection stable and matches the lesson,
    which walks the test set from the start.
    """
    labels, preds = np.asarray(labels), np.asarray(preds)
    wrong = labels != preds
    return {int(k): np.flatnonzero(wrong & (labels == k))[: max(0, per_class)] for k in show}


def test_set_fingerprint(dataset: str, labels: torch.Tensor | np.ndarray, images: torch.Tensor | np.ndarray) -> dict[str, Any]:
    """What identifies a test set: dataset name, size, and SHA-256 of its labels and pixels."""
    lab = np.ascontiguousarray(np.asarray(torch.as_tensor(labels).cpu(), dtype=np.int64))
    img = np.ascontiguousarray(np.asarray(torch.as_tensor(images).cpu()))
    return {
        "dataset": dataset,
        "num_images": int(len(lab)),
        "labels_sha256": hashlib.sha256(lab.tobytes()).hexdigest(),
        "images_sha256": hashlib.sha256(img.tobytes()).hexdigest(),
    }


def best_epoch(rows: Sequence[dict[str, Any]]) -> int | None:
    """The epoch of the kept checkpoint: the last row flagged ``best`` (else the lowest val loss)."""
    flagged = [r for r in rows if r.get("best")]
    if flagged:
        return int(flagged[-1]["epoch"])
    scored = [r for r in rows if r.get("val_loss") is not None]
    return int(min(scored, key=lambda r: r["val_loss"])["epoch"]) if scored else None
