"""A trained model's test-set predictions, computed once, read in memory, written only when asked.

In the spirit of fastai's ``ClassificationInterpretation``::

    interp = run.interpret()                      # or cnnlab.interpret(run) / cnnlab.interpret("runs/x")
    print(interp.report)                          # sklearn's classification report, 3 digits
    interp.confusion_matrix()                     # (K, K) counts, rows = true class
    interp.most_confused(5)                       # [("4", "9", 12), ...]
    interp.plot_misclassified(classes=[8, 4, 9])  # the lesson's gallery; shows inline in Jupyter
    interp.save("runs/x/analysis")                # the files `cnnlab analyze` writes

Every ``plot_*`` returns a :class:`~cnnlab.analysis.figures.InlineFigure`: a matplotlib ``Figure``
that a notebook shows as a picture without pyplot, and that ``fig.savefig(path)`` saves.
Nothing is written to disk until :meth:`Interpretation.save`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from cnnlab.analysis import figures as plots
from cnnlab.analysis.explain import METHODS, attribute, penultimate_features
from cnnlab.analysis.html import write_html_report
from cnnlab.analysis.metrics import (
    ECE_BINS,
    ConfusedPair,
    Predictions,
    ReliabilityBins,
    TestReport,
    best_epoch,
    classes_with_most_errors,
    most_confused,
    per_class_rates,
    reliability_bins,
    resolve_classes,
    score,
    select_misclassified,
    test_set_fingerprint,
    top_losses,
)
from cnnlab.core.config import check_positive
from cnnlab.core.errors import ConfigError, RunDirError
from cnnlab.core.files import save_figure, write_csv, write_json
from cnnlab.core.i18n import _, check_language, format_float, format_percent, use_language
from cnnlab.core.runs import RunDir, checkpoint_id, reading
from cnnlab.data.tensors import to_float

EMBEDDING_IMAGES = 1000  # t-SNE's time grows faster than the points; a sample shows the same clusters


@dataclass
class AnalysisResult:
    """What :meth:`Interpretation.save` (``cnnlab analyze``) computed, and where it wrote it."""

    run_path: Path
    out_dir: Path
    predictions: Predictions
    report: TestReport
    reliability: ReliabilityBins
    confused: list[ConfusedPair]
    top_loss_indices: np.ndarray
    misclassified: dict[int, np.ndarray]
    summary: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    lang: str | None = None  # the language its text speaks (None: the one in force when it is read)

    @property
    def ece(self) -> float:
        return self.reliability.ece

    def __repr__(self) -> str:
        return f"AnalysisResult({str(self.out_dir)!r}, files={len(self.files)}, accuracy={self.summary['accuracy']:.4f})"

    def text(self, max_pairs: int = 10, *, files: bool = True, lang: str | None = None) -> str:
        """A short human summary: headline numbers and the most-confused table (and, with ``files``,
        where the files went: :meth:`wrote`), in ``lang`` (else this result's language, else the one in force)."""
        s = self.summary
        with use_language(lang or self.lang):
            lines = [
                _("test accuracy {accuracy}  loss {loss}  errors {errors}/{images}  ECE ({bins} bins) {ece}").format(
                    accuracy=format_percent(s["accuracy"]), loss=format_float(s["loss"]), errors=s["errors"],
                    images=s["num_images"], bins=s["ece_bins"], ece=format_float(s["ece"])),
                "",
                format_confused(self.confused[:max_pairs]),
            ]
            return "\n".join(lines + (["", self.wrote()] if files else []))

    def wrote(self, *, lang: str | None = None) -> str:
        """One line: how many files were written where (the CLI prints it on stderr)."""
        with use_language(lang or self.lang):
            return _("wrote {n} files to {folder}  (open {page})").format(
                n=len(self.files), folder=self.out_dir, page=self.files.get("html", self.out_dir))


def format_confused(pairs: Sequence[ConfusedPair]) -> str:
    """The most-confused table, in the language in force (class names are data: kept as they are)."""
    if not pairs:
        return _("most confused: none (no errors)")
    w = max(4, *(len(p.true) for p in pairs))
    lines = [_("most confused (true -> predicted, count):")]
    lines += [f"  {p.true:>{w}} -> {p.pred:<{w}} {p.count:>6}" for p in pairs]
    return "\n".join(lines)


class Interpretation:
    """One model's predictions on a test set, and everything to read them.

    Build it with ``run.interpret()``, ``cnnlab.interpret(run_or_path)`` or
    :meth:`from_logits`. Attributes: ``predictions`` (images, labels, probabilities, losses per
    test image), ``report`` (:class:`~cnnlab.analysis.metrics.TestReport`: ``print`` it for
    sklearn's classification report), ``history`` (the run's metrics per epoch, when known).

    ``lang`` (``"es"``, ``"en"``; None: ``CNNLAB_LANG`` or the locale) is the language of its figures,
    text and HTML page; each ``plot_*`` and :meth:`save` also take ``lang=`` for one call.
    """

    def __init__(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        images: torch.Tensor | np.ndarray,
        classes: Sequence[str],
        *,
        history: Sequence[dict] | None = None,
        run_path: str | Path | None = None,
        epoch: int | None = None,
        dataset: str = "test set",
        model: torch.nn.Module | None = None,
        checkpoint_id: tuple | None = None,
        lang: str | None = None,
    ) -> None:
        logits = torch.as_tensor(logits).float().cpu()
        labels = torch.as_tensor(labels).long().cpu()
        self.predictions = Predictions.from_logits(logits, labels, images, classes)
        self.report: TestReport = score(logits, labels, list(classes))
        self.history = [dict(r) for r in (history or [])]
        self.run_path = Path(run_path) if run_path is not None else None
        self.epoch = epoch
        self.dataset = dataset
        self.model = model  # for attributions and the embedding; None when only logits were given
        self._features: torch.Tensor | None = None
        self._embedding: dict[tuple, np.ndarray] = {}
        self.checkpoint_id = checkpoint_id  # best.pt's identity when it was scored (a run's interpretation)
        # An unknown language fails here, not at the first figure.
        self.lang = check_language(lang) if lang is not None else None

    def _speak(self, lang: str | None):  # noqa: ANN202 - a context manager
        """The language of one call: its own ``lang``, else this interpretation's, else the one in force."""
        return use_language(lang or self.lang)

    def __repr__(self) -> str:
        where = f"{str(self.run_path)!r}, " if self.run_path is not None else ""
        return (f"Interpretation({where}images={len(self.predictions)}, accuracy={self.accuracy:.4f}, "
                f"errors={self.errors})")

    # --- numbers -----------------------------------------------------------------------------

    @property
    def classes(self) -> list[str]:
        return self.predictions.classes

    @property
    def accuracy(self) -> float:
        return self.report.accuracy

    @property
    def errors(self) -> int:
        return int((~self.predictions.correct).sum())

    @property
    def ece(self) -> float:
        """Expected calibration error (15 bins)."""
        p = self.predictions
        return reliability_bins(p.confidence, p.correct, ECE_BINS).ece

    def confusion_matrix(self) -> np.ndarray:
        """Counts, shape (classes, classes): rows are true classes, columns predictions (sklearn's layout)."""
        return self.report.confusion.copy()

    def most_confused(self, k: int | None = None, min_count: int = 1) -> list[tuple[str, str, int]]:
        """The ``k`` most frequent mistakes as (true class, predicted class, count), most frequent first."""
        return [(p.true, p.pred, p.count) for p in most_confused(self.report.confusion, self.classes, top=k,
                                                                  min_count=min_count)]

    def top_losses(self, k: int = 9) -> np.ndarray:
        """Test-set indices of the ``k`` images with the highest loss, highest first."""
        return top_losses(self.predictions.losses, min(k, len(self.predictions)))

    # --- figures (each an InlineFigure: shown in Jupyter, saved with savefig) ------------------

    def plot_confusion_matrix(self, *, lang: str | None = None) -> plots.InlineFigure:
        """Counts and row-normalised rates."""
        with self._speak(lang):
            return plots.confusion_matrix_figure(self.report.confusion, self.classes)

    def plot_misclassified(self, classes: Sequence[str | int] | None = None, per_class: int = 10, *,
                           lang: str | None = None) -> plots.InlineFigure:
        """A row of up to ``per_class`` wrong test images for each of ``classes`` (names or indices),
        titled "predicted (probability)"; by default the three classes with the most errors."""
        check_positive(per_class=per_class)
        p = self.predictions
        with self._speak(lang):
            return plots.misclassified_figure(p.images, p.labels, p.probs, self.classes, show=classes,
                                              per_class=per_class)

    def plot_top_losses(self, k: int = 9, ncols: int | None = None, *, heatmap: bool = False,
                        method: str = METHODS[0], lang: str | None = None) -> plots.InlineFigure:
        """The ``k`` test images with the highest loss: the surest mistakes, often mislabelled images.

        ``heatmap=True`` overlays each image's attribution for the class the model predicted (red:
        pixels that pushed towards it, blue: against); ``method`` as in :func:`cnnlab.explain`.
        """
        check_positive(k=k)
        p = self.predictions
        ncols = ncols or (max(1, math.ceil(math.sqrt(k))) if k <= 16 else 8)
        heatmaps = None
        if heatmap:
            idx = self.top_losses(k)
            heatmaps = list(self.attributions(idx, method=method).numpy())
        with self._speak(lang):
            return plots.top_losses_figure(p.images, p.labels, p.probs, p.losses, self.classes, k=k, ncols=ncols,
                                           heatmaps=heatmaps)

    # --- inside the model (needs the model: runs and cnnlab.interpret give it) -----------------

    def _require_model(self) -> torch.nn.Module:
        if self.model is None:
            raise ConfigError(_("this interpretation holds no model; make it with cnnlab.interpret(run) or "
                                "Interpretation(..., model=model) to see attributions and the embedding"))
        return self.model

    def _inputs(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        return to_float(torch.as_tensor(self.predictions.images[np.asarray(indices, dtype=np.int64)]))

    def attributions(self, indices: Sequence[int] | np.ndarray, *, target: str = "pred",
                     method: str = METHODS[0]) -> torch.Tensor:
        """(n, H, W) attributions of test images ``indices`` for their predicted class (``target="pred"``)
        or their true class (``"label"``)."""
        model = self._require_model()
        if target not in ("pred", "label"):
            raise ConfigError(_("target must be 'pred' or 'label', got {target!r}").format(target=target))
        idx = np.asarray(indices, dtype=np.int64)
        if not len(idx):
            return torch.empty(0, *self.predictions.images.shape[2:])
        chosen = (self.predictions.preds if target == "pred" else self.predictions.labels)[idx]
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            return attribute(model, self._inputs(idx).to(device), torch.as_tensor(chosen).to(device),
                             method=method).cpu()
        finally:
            model.train(was_training)

    def features(self) -> torch.Tensor:
        """The penultimate layer's features (the last Linear layer's input) of every test image, (N, F)."""
        if self._features is None:
            model = self._require_model()
            self._features = penultimate_features(model, self._inputs(np.arange(len(self.predictions))))
        return self._features

    def embedding(self, method: str = "auto", max_images: int = EMBEDDING_IMAGES) -> tuple[np.ndarray, np.ndarray, str]:
        """(indices, (n, 2) points, method used): the features of up to ``max_images`` test images in 2-D.

        ``method``: "umap" (needs umap-learn), "tsne" (scikit-learn) or "auto" (UMAP where installed,
        else t-SNE). The sample keeps every misclassified image (up to half of it) and fills the rest
        at random (seed 0), so the same run draws the same map.
        """
        check_positive(max_images=max_images)
        if method not in ("auto", "umap", "tsne"):
            raise ConfigError(_("embedding method must be auto, umap or tsne, got {method!r}").format(method=method))
        key = (method, max_images)
        if key not in self._embedding:
            n = len(self.predictions)
            rng = np.random.default_rng(0)
            wrong = np.flatnonzero(~self.predictions.correct)[: max_images // 2]
            right = np.flatnonzero(self.predictions.correct)
            fill = rng.choice(right, size=min(len(right), max_images - len(wrong)), replace=False)
            idx = np.sort(np.concatenate([wrong, fill])) if n > max_images else np.arange(n)
            feats = self.features()[idx].numpy().astype(np.float64)
            points, used = _reduce_2d(feats, method)
            self._embedding[key] = (idx, points, used)
        return self._embedding[key]

    def plot_embedding(self, method: str = "auto", max_images: int = EMBEDDING_IMAGES,
                       thumbnails: int = 12, *, lang: str | None = None) -> plots.InlineFigure:
        """The test set's penultimate features in 2-D (t-SNE, or UMAP where installed): colour is the true
        class, misclassified images are ringed, a few images are placed at their points."""
        idx, points, used = self.embedding(method, max_images)
        p = self.predictions
        with self._speak(lang):
            return plots.embedding_figure(points, p.labels[idx], p.preds[idx], self.classes, p.images[idx],
                                          thumbnails=thumbnails, method=used)

    def plot_calibration(self, n_bins: int = ECE_BINS, *, lang: str | None = None) -> plots.InlineFigure:
        """Reliability diagram: accuracy against confidence per bin (a calibrated model follows the diagonal)."""
        check_positive(n_bins=n_bins)
        with self._speak(lang):
            return plots.reliability_figure(self.predictions.confidence, self.predictions.correct, n_bins=n_bins)

    def plot_confidence(self, *, lang: str | None = None) -> plots.InlineFigure:
        """Histograms of the confidence of correct and of wrong predictions."""
        with self._speak(lang):
            return plots.confidence_histogram_figure(self.predictions.confidence, self.predictions.correct)

    def plot_per_class(self, *, lang: str | None = None) -> plots.InlineFigure:
        """Per-class accuracy (recall) and precision."""
        with self._speak(lang):
            return plots.per_class_figure(self.report.confusion, self.classes)

    def plot_curves(self, *, lang: str | None = None) -> plots.InlineFigure:
        """Loss and accuracy per epoch, train against validation, the kept (best) epoch marked."""
        with self._speak(lang):
            if not self.history:
                raise ConfigError(_("no training history to plot: this interpretation was not made from a run"))
            return plots.training_curves_figure(self.history)

    def most_confused_text(self, k: int | None = 10, *, lang: str | None = None) -> str:
        """The ``k`` most frequent mistakes as a small table to print, in the language asked for."""
        with self._speak(lang):
            return format_confused(most_confused(self.report.confusion, self.classes, top=k))

    # --- files -----------------------------------------------------------------------------------

    def save(
        self,
        folder: str | Path | None = None,
        *,
        classes: Sequence[str | int] | None = None,
        per_class: int = 10,
        top_k: int = 24,
        n_bins: int = ECE_BINS,
        html: bool = True,
        log: Callable[[str], None] | None = None,
        inside: bool = True,
        lang: str | None = None,
    ) -> AnalysisResult:
        """Write the analysis files (what ``cnnlab analyze`` writes) to ``folder`` (default ``RUN/analysis``).

        predictions.csv, most_confused.csv, top_losses.csv/.png, per_class.csv/.png, reliability.csv/.png,
        confusion_matrix.png, misclassified.png, confidence.png, training_curves.png (when the history is
        known), summary.json and a self-contained index.html. When the model is known and ``inside``:
        top_losses_heatmap.png (attributions over the top losses) and embedding.png (t-SNE/UMAP). Figures,
        log lines and the page speak ``lang``.
        """
        with self._speak(lang) as spoken:
            return self._save_checked(folder, classes=classes, per_class=per_class, top_k=top_k, n_bins=n_bins,
                                      html=html, log=log, inside=inside, lang=spoken)

    def _save_checked(self, folder: str | Path | None, *, classes: Sequence[str | int] | None, per_class: int,
                      top_k: int, n_bins: int, html: bool, log: Callable[[str], None] | None, inside: bool,
                      lang: str) -> AnalysisResult:
        check_positive(per_class=per_class, top_k=top_k, n_bins=n_bins)
        if self.run_path is None or self.checkpoint_id is None:
            return self._save(folder, classes, per_class, top_k, n_bins, html, log, inside, lang)
        # A run's analysis is written under its lock, and only while best.pt is still the file scored:
        # a training that wrote a newer best.pt since would make these files describe a stale model.
        with reading(self.run_path):
            best = RunDir(self.run_path).best
            if checkpoint_id(best) != self.checkpoint_id:
                raise RunDirError(_("{path} changed after it was scored (a training run wrote it since); "
                                    "interpret the run again").format(path=best))
            return self._save(folder, classes, per_class, top_k, n_bins, html, log, inside, lang)

    def _save(self, folder: str | Path | None, classes: Sequence[str | int] | None, per_class: int, top_k: int,
              n_bins: int, html: bool, log: Callable[[str], None] | None, inside: bool = True,
              lang: str | None = None) -> AnalysisResult:
        if folder is None:
            if self.run_path is None:
                raise ConfigError(_("give a folder to save into: this interpretation was not made from a run directory"))
            folder = RunDir(self.run_path).analysis
        out = Path(folder)
        pred = self.predictions
        names = pred.classes
        k = len(names)
        report = self.report
        preds, conf, correct = pred.preds, pred.confidence, pred.correct
        show = resolve_classes(classes, names) if classes else classes_with_most_errors(pred.labels, preds, k)
        chosen = select_misclassified(pred.labels, preds, show, per_class)
        bins = reliability_bins(conf, correct, n_bins)
        confused = most_confused(report.confusion, names)
        worst = top_losses(pred.losses, min(top_k, len(pred)))
        rates = per_class_rates(report.confusion)
        files: dict[str, Path] = {}
        pngs: dict[str, bytes] = {}  # rendered once: written to disk and embedded in the HTML page

        def figure(name: str, fig: Any) -> None:
            path = out / f"{name}.png"
            pngs[name] = save_figure(fig, path)
            files[name] = path

        if log:
            log(_("analysing {n} test images of {run} ...").format(n=len(pred), run=self.run_path or out))
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
        figure("misclassified", plots.misclassified_figure(pred.images, pred.labels, pred.probs, names, show=show,
                                                           per_class=per_class))
        figure("top_losses", plots.top_losses_figure(pred.images, pred.labels, pred.probs, pred.losses, names, k=top_k))
        figure("per_class", plots.per_class_figure(report.confusion, names))
        figure("reliability", plots.reliability_figure(conf, correct, n_bins=n_bins))
        figure("confidence", plots.confidence_histogram_figure(conf, correct))
        if self.history:
            figure("training_curves", plots.training_curves_figure(self.history))
        if self.model is not None and inside and len(pred):
            # Inside the model: where it looked on its worst images, and how it arranges the test set.
            heat = list(self.attributions(worst).numpy())
            figure("top_losses_heatmap", plots.top_losses_figure(pred.images, pred.labels, pred.probs, pred.losses,
                                                                 names, k=top_k, heatmaps=heat))
            if len(pred) >= 5:
                figure("embedding", self.plot_embedding())

        summary = {
            "run": str(self.run_path) if self.run_path is not None else None,
            "checkpoint": RunDir.BEST,
            "epoch": self.epoch,
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
            "test_set": test_set_fingerprint(self.dataset, pred.labels, pred.images),
            "best_epoch": best_epoch(self.history) if self.history else None,
        }
        result = AnalysisResult(self.run_path or out, out, pred, report, bins, confused, worst, chosen, summary, files,
                                lang=lang)
        if html:
            config = RunDir(self.run_path).config_json() if self.run_path is not None else {}
            files["html"] = write_html_report(result, images=pngs, config=config, history=self.history)
        summary["files"] = {name: path.name for name, path in files.items()}
        write_json(out / "summary.json", summary)
        files["summary"] = out / "summary.json"
        return result


def _reduce_2d(features: np.ndarray, method: str) -> tuple[np.ndarray, str]:
    """(n, 2) points and the method's display name; UMAP when asked or (for "auto") when installed."""
    if len(features) < 5:
        raise ConfigError(_("an embedding needs at least 5 test images, got {n}").format(n=len(features)))
    if method in ("auto", "umap"):
        try:
            import umap  # optional: umap-learn
        except ImportError:
            if method == "umap":
                raise ConfigError(_("method='umap' needs umap-learn: pip install umap-learn")) from None
        else:
            return umap.UMAP(n_components=2, random_state=0).fit_transform(features), "UMAP"
    from sklearn.manifold import TSNE

    perplexity = float(min(30, max(2, (len(features) - 1) // 3)))
    points = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=0).fit_transform(features)
    return points, "t-SNE"

