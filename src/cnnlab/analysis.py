"""Error analysis: what a trained model gets wrong, how sure it is, and whether another model is better.

Every function here is usable on its own, from plain arrays (``labels``,
``probs``, ``confusion``), and returns data; :func:`analyze_run` and
:func:`compare_runs` put them together for a run directory::

    RUN/analysis/
        summary.json          accuracy, loss, ECE, errors, the test-set fingerprint, file list
        predictions.csv       one row per test image: label, prediction, confidence, loss
        confusion_matrix.png  counts and row-normalised
        misclassified.png     up to N wrong test images for each chosen class, titled "pred (prob)"
        top_losses.png/.csv   the K test images with the highest loss (likely mislabelled)
        most_confused.csv     true -> predicted pairs by count
        per_class.png/.csv    per-class accuracy (= recall) and precision
        reliability.png/.csv  reliability diagram and its bins (ECE, 15 bins)
        confidence.png        confidence histograms for correct and wrong predictions
        training_curves.png   loss and accuracy per epoch from metrics.csv, best epoch marked
        index.html            all of the above on one self-contained page
"""
from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.config import EVAL_BATCH_SIZE
from cnnlab.errors import CnnlabError, ConfigError

ECE_BINS = 15


class IncomparableRunsError(CnnlabError):
    """Two runs that were not scored on the same test set (or the same classes)."""


# --- predictions ---------------------------------------------------------------------------


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


# --- numbers -------------------------------------------------------------------------------


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
        raise ConfigError(f"the number of calibration bins must be >= 1, got {n_bins}")
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
            raise ConfigError(f"unknown class {key!r}; classes are: {shown}")
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


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """``metrics.csv`` as a list of rows: numbers as float (``None`` when blank), ``best`` as bool."""
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for raw in csv.DictReader(fh):
            row: dict[str, Any] = {}
            for key, value in raw.items():
                if key is None:
                    continue
                if key == "best":
                    row[key] = str(value).strip().lower() in ("true", "1", "yes")
                elif value is None or value == "":
                    row[key] = None
                else:
                    try:
                        row[key] = float(value)
                    except ValueError:
                        row[key] = value
            rows.append(row)
    return rows


def best_epoch(rows: Sequence[dict[str, Any]]) -> int | None:
    """The epoch of the kept checkpoint: the last row flagged ``best`` (else the lowest val loss)."""
    flagged = [r for r in rows if r.get("best")]
    if flagged:
        return int(flagged[-1]["epoch"])
    scored = [r for r in rows if r.get("val_loss") is not None]
    return int(min(scored, key=lambda r: r["val_loss"])["epoch"]) if scored else None


# --- a run ---------------------------------------------------------------------------------


def predict_run(
    run_dir: str | Path, *, data_dir: str | None = None, device: str = "auto", batch_size: int = EVAL_BATCH_SIZE
) -> tuple[Predictions, Any]:
    """A run's best checkpoint on its test set: (:class:`Predictions`, evaluate's ``RunTestLogits``)."""
    from cnnlab.evaluate import run_test_logits

    r = run_test_logits(run_dir, data_dir=data_dir, device=device, batch_size=batch_size)
    return Predictions.from_logits(r.logits, r.test.labels, r.test.images, r.info.classes), r


@dataclass
class AnalysisResult:
    """Everything :func:`analyze_run` computed, and where it wrote it."""

    run_path: Path
    out_dir: Path
    predictions: Predictions
    report: Any  # cnnlab.evaluate.TestReport (sklearn's numbers)
    reliability: ReliabilityBins
    confused: list[ConfusedPair]
    top_loss_indices: np.ndarray
    misclassified: dict[int, np.ndarray]
    summary: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def ece(self) -> float:
        return self.reliability.ece

    def text(self, max_pairs: int = 10) -> str:
        """A short human summary: headline numbers and the most-confused table."""
        s = self.summary
        lines = [
            f"test accuracy {s['accuracy']:.2%}  loss {s['loss']:.4f}  errors {s['errors']}/{s['num_images']}  "
            f"ECE ({s['ece_bins']} bins) {s['ece']:.4f}",
            "",
            format_confused(self.confused[:max_pairs]),
            "",
            f"wrote {len(self.files)} files to {self.out_dir}  (open {self.files.get('html', self.out_dir)})",
        ]
        return "\n".join(lines)


def format_confused(pairs: Sequence[ConfusedPair]) -> str:
    if not pairs:
        return "most confused: none (no errors)"
    w = max(4, *(len(p.true) for p in pairs))
    lines = ["most confused (true -> predicted, count):"]
    lines += [f"  {p.true:>{w}} -> {p.pred:<{w}} {p.count:>6}" for p in pairs]
    return "\n".join(lines)


def analyze_run(
    run_dir: str | Path,
    *,
    classes: Sequence[str | int] | None = None,
    per_class: int = 10,
    top_k: int = 24,
    n_bins: int = ECE_BINS,
    data_dir: str | None = None,
    device: str = "auto",
    batch_size: int = EVAL_BATCH_SIZE,
    html: bool = True,
    log: Callable[[str], None] | None = None,
) -> AnalysisResult:
    """Score a run's best checkpoint on the test set and write the full error analysis to RUN/analysis/.

    ``classes`` picks the rows of the misclassified gallery (names or indices);
    by default the three classes with the most errors.
    """
    from cnnlab import plots
    from cnnlab.evaluate import score
    from cnnlab.files import save_figure, write_csv, write_json

    if per_class < 1 or top_k < 1:
        raise ConfigError(f"--per-class and --top-k must be >= 1, got {per_class} and {top_k}")
    say = log or (lambda _msg: None)
    pred, r = predict_run(run_dir, data_dir=data_dir, device=device, batch_size=batch_size)
    run_path = Path(r.run_path)
    out = run_path / "analysis"
    names = pred.classes
    k = len(names)
    report = score(r.logits, r.test.labels, names)
    preds, conf, correct = pred.preds, pred.confidence, pred.correct

    show = resolve_classes(classes, names) if classes else classes_with_most_errors(pred.labels, preds, k)
    chosen = select_misclassified(pred.labels, preds, show, per_class)
    bins = reliability_bins(conf, correct, n_bins)
    confused = most_confused(report.confusion, names)
    worst = top_losses(pred.losses, min(top_k, len(pred)))
    rates = per_class_rates(report.confusion)
    files: dict[str, Path] = {}

    def figure(name: str, fig: Any) -> None:
        path = out / f"{name}.png"
        save_figure(fig, path)
        files[name] = path

    say(f"analysing {len(pred)} test images of {run_path} ...")
    write_csv(out / "predictions.csv", ["index", "label", "pred", "confidence", "loss", "correct"], [
        [i, names[t], names[p], f"{c:.6f}", f"{l:.6f}", int(ok)]
        for i, (t, p, c, l, ok) in enumerate(zip(pred.labels, preds, conf, pred.losses, correct))
    ])
    files["predictions_csv"] = out / "predictions.csv"
    write_csv(out / "most_confused.csv", ["true", "pred", "count"], [[p.true, p.pred, p.count] for p in confused])
    files["most_confused_csv"] = out / "most_confused.csv"
    write_csv(out / "top_losses.csv", ["rank", "index", "label", "pred", "confidence", "prob_of_label", "loss"], [
        [rank + 1, int(i), names[pred.labels[i]], names[preds[i]], f"{conf[i]:.6f}",
         f"{pred.probs[i, pred.labels[i]]:.6f}", f"{pred.losses[i]:.6f}"]
        for rank, i in enumerate(worst)
    ])
    files["top_losses_csv"] = out / "top_losses.csv"
    write_csv(out / "per_class.csv", ["class", "support", "correct", "accuracy", "precision"], [
        [names[i], int(rates["support"][i]), int(rates["correct"][i]), f"{rates['recall'][i]:.6f}",
         f"{rates['precision'][i]:.6f}"]
        for i in range(k)
    ])
    files["per_class_csv"] = out / "per_class.csv"
    write_csv(out / "reliability.csv", ["bin_low", "bin_high", "count", "accuracy", "mean_confidence"], bins.rows())
    files["reliability_csv"] = out / "reliability.csv"

    figure("confusion_matrix", plots.confusion_matrix_figure(report.confusion, names))
    figure("misclassified", plots.misclassified_figure(pred.images, pred.labels, pred.probs, names, show=show, per_class=per_class))
    figure("top_losses", plots.top_losses_figure(pred.images, pred.labels, pred.probs, pred.losses, names, k=top_k))
    figure("per_class", plots.per_class_figure(report.confusion, names))
    figure("reliability", plots.reliability_figure(conf, correct, n_bins=n_bins))
    figure("confidence", plots.confidence_histogram_figure(conf, correct))
    metrics_path = run_path / "metrics.csv"
    history = read_metrics(metrics_path) if metrics_path.is_file() else []
    if history:
        figure("training_curves", plots.training_curves_figure(history))

    summary = {
        "run": str(run_path),
        "checkpoint": "best.pt",
        "epoch": r.payload.get("epoch"),
        "accuracy": float(correct.mean()) if len(pred) else math.nan,  # float64: 0.9885, not 0.98849999
        "loss": report.loss,
        "num_images": len(pred),
        "errors": int((~correct).sum()),
        "ece": bins.ece,
        "ece_bins": n_bins,
        "mean_confidence": float(conf.mean()) if len(pred) else math.nan,
        "mean_confidence_correct": float(conf[correct].mean()) if correct.any() else None,
        "mean_confidence_wrong": float(conf[~correct].mean()) if (~correct).any() else None,
        "gallery_classes": [names[i] for i in show],
        "per_class_shown": per_class,
        "most_confused": [{"true": p.true, "pred": p.pred, "count": p.count} for p in confused[:20]],
        "top_losses": [int(i) for i in worst],
        "test_set": test_set_fingerprint(r.info.name, r.test.labels, r.test.images),
        "best_epoch": best_epoch(history) if history else None,
    }
    result = AnalysisResult(run_path, out, pred, report, bins, confused, worst, chosen, summary, files)
    if html:
        from cnnlab.report_html import write_html_report

        files["html"] = write_html_report(result)
    summary["files"] = {name: path.name for name, path in files.items()}
    write_json(out / "summary.json", summary)
    files["summary"] = out / "summary.json"
    return result


# --- two runs ------------------------------------------------------------------------------


@dataclass
class Comparison:
    """Two runs on the same test set: accuracies, their difference, McNemar, disagreements."""

    run_a: Path
    run_b: Path
    accuracy_a: float
    accuracy_b: float
    mcnemar: McNemarResult
    disagreements: np.ndarray  # test indices where the predicted classes differ
    test_set: dict[str, Any]
    out_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def difference(self) -> float:
        """accuracy(B) - accuracy(A)."""
        return self.accuracy_b - self.accuracy_a

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_a": str(self.run_a), "run_b": str(self.run_b),
            "accuracy_a": self.accuracy_a, "accuracy_b": self.accuracy_b, "difference_b_minus_a": self.difference,
            "mcnemar": self.mcnemar.to_dict(), "num_disagreements": int(len(self.disagreements)),
            "disagreements": [int(i) for i in self.disagreements], "test_set": self.test_set,
        }

    def text(self) -> str:
        m, n = self.mcnemar, self.test_set["num_images"]
        if self.difference == 0:
            verdict = "the two runs have the same test accuracy"
        else:
            better = "B" if self.difference > 0 else "A"
            sig = "significant" if m.p_value < 0.05 else "not significant"
            verdict = f"{better} is better by {abs(self.difference):.2%} ({sig} at the 5% level)"
        lines = [
            f"A {self.run_a}: test accuracy {self.accuracy_a:.2%}",
            f"B {self.run_b}: test accuracy {self.accuracy_b:.2%}",
            f"difference B - A: {self.difference:+.2%} ({n} test images, {self.test_set['dataset']})",
            f"McNemar exact test: A right/B wrong {m.only_a_right}, A wrong/B right {m.only_b_right}, "
            f"p = {m.p_value:.4g}",
            f"the runs disagree on {len(self.disagreements)} images; {verdict}",
        ]
        if self.files:
            lines.append(f"wrote {', '.join(str(p) for p in self.files.values())}")
        return "\n".join(lines)


def check_same_test_set(a: dict[str, Any], b: dict[str, Any], name_a: str, name_b: str) -> None:
    """Refuse to compare runs scored on different test sets, naming what differs."""
    for key, what in (("dataset", "dataset"), ("num_images", "number of test images"),
                      ("labels_sha256", "test labels"), ("images_sha256", "test images")):
        if a.get(key) != b.get(key):
            detail = f" ({a[key]} vs {b[key]})" if key in ("dataset", "num_images") else ""
            raise IncomparableRunsError(
                f"cannot compare {name_a} and {name_b}: they were scored on different test sets "
                f"(the {what} differ{detail}); McNemar's test needs the same images in both runs"
            )


def compare_runs(
    run_a: str | Path,
    run_b: str | Path,
    *,
    out: str | Path | None = None,
    max_images: int = 40,
    data_dir: str | None = None,
    device: str = "auto",
    batch_size: int = EVAL_BATCH_SIZE,
) -> Comparison:
    """Compare two runs' best checkpoints on their (identical) test set.

    Writes ``compare.json`` and ``disagreements.png`` (up to ``max_images`` images
    where the predictions differ) to ``out``, by default ``A/analysis/compare-<B's name>``.
    """
    from cnnlab import plots
    from cnnlab.files import save_figure, write_json

    pa, ra = predict_run(run_a, data_dir=data_dir, device=device, batch_size=batch_size)
    pb, rb = predict_run(run_b, data_dir=data_dir, device=device, batch_size=batch_size)
    fa = test_set_fingerprint(ra.info.name, ra.test.labels, ra.test.images)
    fb = test_set_fingerprint(rb.info.name, rb.test.labels, rb.test.images)
    check_same_test_set(fa, fb, str(ra.run_path), str(rb.run_path))
    if pa.classes != pb.classes:
        raise IncomparableRunsError(f"cannot compare {ra.run_path} and {rb.run_path}: their class lists differ")
    disagree = np.flatnonzero(pa.preds != pb.preds)
    cmp = Comparison(
        run_a=Path(ra.run_path), run_b=Path(rb.run_path),
        accuracy_a=float(pa.correct.mean()), accuracy_b=float(pb.correct.mean()),
        mcnemar=mcnemar_exact(pa.correct, pb.correct), disagreements=disagree, test_set=fa,
    )
    out_dir = Path(out) if out is not None else Path(ra.run_path) / "analysis" / f"compare-{Path(rb.run_path).resolve().name}"
    cmp.out_dir = out_dir
    shown = disagree[: max(0, max_images)]
    fig = plots.disagreement_figure(pa.images, pa.labels, pa.probs, pb.probs, pa.classes, shown,
                                 total=len(disagree))
    save_figure(fig, out_dir / "disagreements.png")
    cmp.files["disagreements"] = out_dir / "disagreements.png"
    write_json(out_dir / "compare.json", cmp.to_dict())
    cmp.files["json"] = out_dir / "compare.json"
    return cmp


# --- data ----------------------------------------------------------------------------------


def sample_images(
    dataset: str = "mnist", *, data_dir: str | None = None, n: int = 10, seed: int = 0, split: str = "train",
    download: bool = True,
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """``n`` random labelled images of a dataset split: (images, labels, classes, indices)."""
    from cnnlab.data import load_dataset

    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    pool, test, info = load_dataset(dataset, data_dir, download=download)
    data = pool if split == "train" else test
    n = min(n, len(data))
    # A private generator: the same seed always shows the same images.
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    return data.images[idx].numpy(), data.labels[idx].numpy(), list(info.classes), idx.numpy()


def show_data(
    dataset: str = "mnist", *, out: str | Path, data_dir: str | None = None, n: int = 10, seed: int = 0,
    split: str = "train", download: bool = True,
) -> Path:
    """Save a grid of ``n`` random labelled images (the lesson's first figure) to ``out``."""
    from cnnlab import plots
    from cnnlab.files import save_figure

    images, labels, classes, idx = sample_images(dataset, data_dir=data_dir, n=n, seed=seed, split=split, download=download)
    fig = plots.samples_figure(images, labels, classes, title=f"{dataset} {split}: {len(idx)} random images (seed {seed})")
    save_figure(fig, out)
    return Path(out)
