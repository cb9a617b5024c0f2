"""Error analysis: what a trained model gets wrong, how sure it is, and whether another model is better.

Every function here is usable on its own, from plain arrays (``labels``,
``probs``, ``confusion``), and returns data; ``interpret_run(run).save()`` and
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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from cnnlab.analysis import figures as plots
from cnnlab.analysis.explain import Explanation, explain
from cnnlab.analysis.figures import confusion_matrix_figure
from cnnlab.analysis.interpret import Interpretation
from cnnlab.analysis.metrics import (
    ECE_BINS,
    McNemarResult,
    Predictions,
    TestReport,
    mcnemar_exact,
    score,
    test_set_fingerprint,
)
from cnnlab.core.config import EVAL_BATCH_SIZE, check_positive, is_custom
from cnnlab.core.errors import CnnlabError, ConfigError, DataError, RunDirError
from cnnlab.core.files import save_figure, write_csv, write_json, write_text
from cnnlab.core.i18n import _, format_percent
from cnnlab.core.runs import RunDir, checkpoint_id, open_run, read_config, read_metrics, reading
from cnnlab.core.runtime import resolve_device
from cnnlab.data.registry import load_dataset
from cnnlab.data.tensors import DataBundle, ImageSet, to_float
from cnnlab.engine.checkpoint import load_checkpoint, model_from_checkpoint
from cnnlab.inference import predict_logits


class IncomparableRunsError(CnnlabError):
    """Two runs that were not scored on the same test set (or the same classes)."""


# --- a run ---------------------------------------------------------------------------------


def predict_run(
    run_dir: str | Path, *, data_dir: str | None = None, device: str = "auto", batch_size: int = EVAL_BATCH_SIZE
) -> tuple[Predictions, Any]:
    """A run's best checkpoint on its test set: (:class:`Predictions`, evaluate's ``RunTestLogits``)."""

    r = run_test_logits(run_dir, data_dir=data_dir, device=device, batch_size=batch_size)
    return Predictions.from_logits(r.logits, r.test.labels, r.test.images, r.info.classes), r


def interpret_run(
    run_dir: str | Path,
    *,
    model: torch.nn.Module | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    batch_size: int = EVAL_BATCH_SIZE,
) -> Interpretation:
    """A run's best checkpoint on its test set, as an :class:`Interpretation` (nothing written).

    ``model``: an instance to load ``best.pt`` into; needed for a run of the user's own class.
    """
    with reading(run_dir):  # best.pt and metrics.csv of one moment, never of a run being trained
        r = run_test_logits(run_dir, model=model, data_dir=data_dir, device=device, batch_size=batch_size)
        metrics_path = RunDir(Path(r.run_path)).metrics
        history = read_metrics(metrics_path) if metrics_path.is_file() else []
    return Interpretation(r.logits, r.test.labels, r.test.images, r.info.classes, history=history,
                          run_path=r.run_path, epoch=r.payload.get("epoch"), dataset=r.info.name, model=r.model,
                          checkpoint_id=r.checkpoint_id)


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

    def __repr__(self) -> str:
        return (f"Comparison(a={self.accuracy_a:.4f}, b={self.accuracy_b:.4f}, p={self.mcnemar.p_value:.4g}, "
                f"disagreements={len(self.disagreements)})")

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

    def text(self, *, files: bool = True) -> str:
        """The verdict in a few lines (and, with ``files``, what was written: :meth:`wrote`)."""
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
            f"{format_p(m.p_value)}",
            f"the runs disagree on {len(self.disagreements)} images; {verdict}",
        ]
        if self.files and files:
            lines.append(self.wrote())
        return "\n".join(lines)

    def wrote(self) -> str:
        return f"wrote {', '.join(str(p) for p in self.files.values())}" if self.files else ""


def format_p(p: float) -> str:
    """``p = 0.0123``; below what a float64 resolves reliably, ``p < 1e-300`` (never ``p = 0``)."""
    return "p < 1e-300" if p < 1e-300 else f"p = {p:.4g}"


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
    with reading(run_a, run_b):  # neither run is being trained while both are scored and written about
        return _compare_runs(run_a, run_b, out=out, max_images=max_images, data_dir=data_dir, device=device,
                             batch_size=batch_size)


def _compare_runs(run_a: str | Path, run_b: str | Path, *, out: str | Path | None, max_images: int,
                  data_dir: str | None, device: str, batch_size: int) -> Comparison:
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
    out_dir = Path(out) if out is not None else RunDir(Path(ra.run_path)).analysis / f"compare-{Path(rb.run_path).resolve().name}"
    cmp.out_dir = out_dir
    shown = disagree[: max(0, max_images)]
    fig = plots.disagreement_figure(pa.images, pa.labels, pa.probs, pb.probs, pa.classes, shown,
                                 total=len(disagree))
    save_figure(fig, out_dir / "disagreements.png")
    cmp.files["disagreements"] = out_dir / "disagreements.png"
    write_json(out_dir / "compare.json", cmp.to_dict())
    cmp.files["json"] = out_dir / "compare.json"
    return cmp


@dataclass
class PairwiseComparison:
    """Three or more runs on one test set: each run's accuracy, and McNemar's test for every pair.

    ``pairs``: one :class:`Comparison` per pair (A listed before B, in the order the runs were
    given), with ``p_holm``: the p-values adjusted for the number of pairs (Holm-Bonferroni), since
    with many pairs one of them is "significant" at 5% by chance alone.
    """

    runs: list[Path]
    accuracies: list[float]
    pairs: list[Comparison]
    p_holm: list[float]
    test_set: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"PairwiseComparison({len(self.runs)} runs, {len(self.pairs)} pairs)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": [{"run": str(r), "accuracy": a} for r, a in zip(self.runs, self.accuracies)],
            "pairs": [{**{k: v for k, v in c.to_dict().items() if k not in ("disagreements", "test_set")},
                       "p_holm": p} for c, p in zip(self.pairs, self.p_holm)],
            "test_set": self.test_set,
        }

    def text(self, *, files: bool = True) -> str:
        letters = [_letter(i) for i in range(len(self.runs))]
        lines = [_("{n} runs on {images} test images ({dataset}):").format(
            n=len(self.runs), images=self.test_set["num_images"], dataset=self.test_set["dataset"])]
        width = max(len(str(r)) for r in self.runs)
        accuracy_word = _("test accuracy")  # outside the f-string, where Babel's extractor sees it
        for letter, run, acc in zip(letters, self.runs, self.accuracies):
            lines.append(f"  {letter}  {str(run):<{width}}  {accuracy_word} {format_percent(acc)}")
        index = {r: i for i, r in enumerate(self.runs)}
        head = [_("pair"), _("B - A"), _("A only right"), _("B only right"), _("disagree"), _("p"), _("p (Holm)")]
        rows = [head]
        for c, p_holm in zip(self.pairs, self.p_holm):
            a, b = letters[index[c.run_a]], letters[index[c.run_b]]
            rows.append([f"{a}-{b}", f"{c.difference:+.2%}", str(c.mcnemar.only_a_right), str(c.mcnemar.only_b_right),
                         str(len(c.disagreements)), _p_cell(c.mcnemar.p_value), _p_cell(p_holm)])
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines.append("")
        lines += ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
                  for row in rows]
        if files and self.files:
            lines.append(self.wrote())
        return "\n".join(lines)

    def wrote(self) -> str:
        return f"wrote {', '.join(str(p) for p in self.files.values())}" if self.files else ""


def _letter(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else f"R{i + 1}"


def _p_cell(p: float) -> str:
    return "< 1e-300" if p < 1e-300 else f"{p:.4g}"


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given (each at most 1)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def compare_many(
    runs: Sequence[str | Path],
    *,
    out: str | Path | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    batch_size: int = EVAL_BATCH_SIZE,
) -> PairwiseComparison:
    """Compare every pair of ``runs`` (two or more) on their shared test set; each run is scored once.

    Writes ``compare.json`` (all pairs) to ``out`` when given; nothing otherwise.
    """
    if len(runs) < 2:
        raise ConfigError(_("compare needs at least two runs, got {n}").format(n=len(runs)))
    with reading(*runs):  # no run is being trained while it is scored
        scored = [predict_run(r, data_dir=data_dir, device=device, batch_size=batch_size) for r in runs]
    prints = [test_set_fingerprint(r.info.name, r.test.labels, r.test.images) for _p, r in scored]
    for (p, r), fp in zip(scored[1:], prints[1:]):
        check_same_test_set(prints[0], fp, str(scored[0][1].run_path), str(r.run_path))
        if p.classes != scored[0][0].classes:
            raise IncomparableRunsError(f"cannot compare {scored[0][1].run_path} and {r.run_path}: "
                                        "their class lists differ")
    pairs = []
    for i in range(len(scored)):
        for j in range(i + 1, len(scored)):
            (pa, ra), (pb, rb) = scored[i], scored[j]
            pairs.append(Comparison(
                run_a=Path(ra.run_path), run_b=Path(rb.run_path),
                accuracy_a=float(pa.correct.mean()), accuracy_b=float(pb.correct.mean()),
                mcnemar=mcnemar_exact(pa.correct, pb.correct), disagreements=np.flatnonzero(pa.preds != pb.preds),
                test_set=prints[0]))
    result = PairwiseComparison([Path(r.run_path) for _p, r in scored], [float(p.correct.mean()) for p, _r in scored],
                                pairs, holm([c.mcnemar.p_value for c in pairs]), prints[0])
    if out is not None:
        write_json(Path(out) / "compare.json", result.to_dict())
        result.files["json"] = Path(out) / "compare.json"
    return result


# --- data ----------------------------------------------------------------------------------


def sample_images(
    dataset: str = "mnist", *, data_dir: str | None = None, n: int = 10, seed: int = 0, split: str = "train",
    download: bool = True,
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """``n`` random labelled images of a dataset split: (images, labels, classes, indices)."""

    check_positive(n=n)
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

    fig = samples_figure(dataset, data_dir=data_dir, n=n, seed=seed, split=split, download=download)
    save_figure(fig, out)
    return Path(out)


def samples_figure(
    dataset: str = "mnist", *, data_dir: str | None = None, n: int = 10, seed: int = 0, split: str = "train",
    download: bool = True, ncols: int = 10,
) -> Any:
    """The grid :func:`show_data` saves, as an ``InlineFigure`` (``cnnlab.show_batch`` in a notebook)."""
    images, labels, classes, idx = sample_images(dataset, data_dir=data_dir, n=n, seed=seed, split=split, download=download)
    title = (_("{dataset} training set: {n} random images (seed {seed})") if split == "train"
             else _("{dataset} test set: {n} random images (seed {seed})"))
    return plots.samples_figure(images, labels, classes, ncols=ncols,
                                title=title.format(dataset=dataset, n=len(idx), seed=seed))


def write_report(run_path: Path, report: TestReport, *, extra: dict[str, Any] | None = None) -> None:
    """report.txt, report.json, confusion_matrix.csv and confusion_matrix.png in a run directory."""

    run = RunDir(Path(run_path))
    write_text(run.report_txt, str(report))  # the headline numbers, then sklearn's report
    write_json(run.report_json, {**report.to_dict(), **(extra or {})})
    write_csv(
        run.confusion_csv,
        ["true\\pred", *report.classes],
        [[name, *map(int, row)] for name, row in zip(report.classes, report.confusion)],
    )
    save_figure(confusion_matrix_figure(report.confusion, report.classes), run.confusion_png)


@dataclass
class RunTestLogits:
    """A run's best checkpoint applied to its dataset's test set (nothing written)."""

    run_path: Path
    payload: dict[str, Any]  # the loaded best.pt (epoch, metrics, data info)
    test: ImageSet  # the test set on the CPU, in file order
    info: Any  # cnnlab.data.tensors.DatasetInfo
    logits: torch.Tensor  # (N, classes), CPU float
    model: torch.nn.Module | None = None  # best.pt's weights (for attributions and the embedding)
    checkpoint_id: tuple | None = None  # best.pt's identity when it was loaded (core.runs.checkpoint_id)


def load_best_and_test_set(run_dir: str | Path, *, data_dir: str | None = None) -> tuple:
    """A run's (path, config, ``best.pt`` payload, test set, dataset info); clear errors when missing."""

    run = open_run(run_dir)
    cfg = read_config(run)
    if not run.best.is_file():
        raise RunDirError(f"{run.path} has no best.pt yet; train it first")
    payload = load_checkpoint(run.best)
    if is_custom(cfg.data.dataset):
        raise RunDirError(
            f"{run.path} was trained on data given from Python ({cfg.data.dataset}), which a run does not keep; "
            "interpret it from Python: cnnlab.interpret(run) on the object cnnlab.train returned"
        )
    try:  # reading only: never download, never create a folder
        _pool, test, info = load_dataset(cfg.data.dataset, data_dir or cfg.data.data_dir, download=False,
                                     image_size=cfg.data.image_size)
    except DataError as exc:
        raise DataError(f"{exc} (reading a run never downloads: give the folder that holds {cfg.data.dataset}, or "
                        "download the dataset first)", option="data_dir") from None
    return run.path, cfg, payload, test, info


def run_test_logits(
    run_dir: str | Path, *, data_dir: str | None = None, device: str = "auto", batch_size: int = EVAL_BATCH_SIZE,
    model: torch.nn.Module | None = None,
) -> RunTestLogits:
    """Load a run's ``best.pt`` and its dataset's test set, and return the test logits.

    ``model``: an instance to load the weights into (a run of the user's own class needs one).
    """

    loaded = checkpoint_id(RunDir(Path(run_dir)).best)  # callers hold reading(run_dir): it cannot change meanwhile
    run_path, cfg, payload, test, info = load_best_and_test_set(run_dir, data_dir=data_dir)
    dev = resolve_device(device)
    model = model_from_checkpoint(payload, expect_dataset=cfg.data.dataset, model=model).to(dev)
    logits = predict_logits(model, test.to(dev), batch_size=batch_size)
    return RunTestLogits(run_path, payload, test, info, logits, model, loaded)


def evaluate_run(
    run_dir: str | Path, *, data_dir: str | None = None, device: str = "auto", batch_size: int = EVAL_BATCH_SIZE,
    model: torch.nn.Module | None = None,
) -> TestReport:
    """Load a run's ``best.pt``, score it on its dataset's test set, and rewrite the report files."""
    with reading(run_dir):  # the report is about the best.pt beside it: no training writes a newer one meanwhile
        r = run_test_logits(run_dir, data_dir=data_dir, device=device, batch_size=batch_size, model=model)
        return score_and_report(r.run_path, r.payload, r.logits, r.test, r.info)


def evaluate_checkpoint(
    run: RunDir, data: DataBundle, device: torch.device, *, batch_size: int = EVAL_BATCH_SIZE,
    model: torch.nn.Module | None = None,
) -> TestReport:
    """Score ``best.pt`` on the test set and write the report files.

    ``model``: the instance to load ``best.pt`` into (a run of the user's own class); it keeps the weights.
    """
    payload = load_checkpoint(run.best)
    model = model_from_checkpoint(payload, model=model).to(device)
    logits = predict_logits(model, data.test, batch_size=batch_size)
    return score_and_report(run.path, payload, logits, data.test, data.info)


def score_and_report(run_path: Path, payload: dict[str, Any], logits: torch.Tensor, test: ImageSet, info: Any) -> TestReport:
    """Score ``best.pt``'s test logits and write the run's report files, saying which checkpoint and epoch."""
    report = score(logits, test.labels, info.classes)
    write_report(run_path, report, extra={"checkpoint": RunDir.BEST, "epoch": payload["epoch"], "dataset": info.name})
    return report


def explain_test_image(run_dir: str | Path, *, index: int = 0, data_dir: str | None = None, device: str = "auto",
                       target: int | str | None = None, method: str = "integrated_gradients") -> tuple[Explanation, str]:
    """:func:`~cnnlab.analysis.explain.explain` a run's ``best.pt`` on test image ``index``; (explanation, caption)."""
    run_path, _cfg, payload, test, info = load_best_and_test_set(run_dir, data_dir=data_dir)
    if not 0 <= index < len(test):
        raise ConfigError(_("index must be between 0 and {last} for this test set, got {index}").format(
            last=len(test) - 1, index=index), option="index")
    model = model_from_checkpoint(payload, tta=False).to(resolve_device(device))  # the network's own layers
    ex = explain(model, to_float(test.images[index]), target=target, classes=info.classes, method=method)
    p = ex.prediction
    label = info.classes[int(test.labels[index])]
    return ex, _("test image {index}: label {label}, predicted {pred} ({prob})").format(
        index=index, label=label, pred=p.label, prob=f"{p.probability:.0%}")


def visualize_run(run_dir: str | Path, out_dir: str | Path | None = None, *, index: int = 0,
                  data_dir: str | None = None, max_maps: int = 32, device: str = "auto",
                  target: int | str | None = None, method: str = "integrated_gradients") -> list[Path]:
    """Write the explanation of test image ``index`` (:meth:`Explanation.save`) to ``RUN/visualize``; the paths."""
    ex, caption = explain_test_image(run_dir, index=index, data_dir=data_dir, device=device, target=target,
                                     method=method)
    out = Path(out_dir) if out_dir else RunDir(open_run(run_dir).path).visualize
    return ex.save(out, caption=caption, max_maps=max_maps)
