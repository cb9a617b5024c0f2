"""Figures as pure functions: data in, ``matplotlib.figure.Figure`` out.

Figures are built with the object API on the Agg canvas, never through
``pyplot``, so they work headless and leave no global figure state behind. Each is an
:class:`InlineFigure`, which a Jupyter notebook displays as a PNG.
Save them with :func:`cnnlab.core.files.save_figure` (atomic).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

if TYPE_CHECKING:  # matplotlib (~0.5 s) is imported when a figure is drawn, not when a run is scored
    from matplotlib.figure import Figure

from cnnlab.analysis.metrics import (
    best_epoch,
    classes_with_most_errors,
    per_class_rates,
    reliability_bins,
    resolve_classes,
    select_misclassified,
    top_losses,
)
from cnnlab.core.files import figure_bytes
from cnnlab.core.i18n import _, format_float

_INLINE: list[type] = []


def _inline_figure_class() -> type:
    """:class:`InlineFigure`, defined on first use so that importing this module does not import matplotlib."""
    if not _INLINE:
        from matplotlib.figure import Figure

        class InlineFigure(Figure):
            """A ``Figure`` that shows itself in Jupyter: IPython asks objects for ``_repr_png_``.

            Without it a notebook that never imported pyplot prints ``<Figure size 1050x530 with 4 Axes>``
            instead of the picture; nothing global (no pyplot, no backend, no IPython formatter) is
            registered to make it work. With pyplot's inline backend active, IPython's own formatter
            for figures wins and draws it once, the same way.
            """

            def _repr_png_(self) -> bytes:
                return figure_bytes(self, dpi="figure")  # the figure's own resolution, as pyplot shows it

            def __repr__(self) -> str:
                w, h = self.get_size_inches() * self.dpi
                return f"<InlineFigure {w:.0f}x{h:.0f} with {len(self.axes)} Axes>"

        InlineFigure.__module__, InlineFigure.__qualname__ = __name__, "InlineFigure"  # picklable by name
        _INLINE.append(InlineFigure)
    return _INLINE[0]


def __getattr__(name: str) -> type:
    # `figures.InlineFigure` (matplotlib, ~0.35 s) is made when first asked for (PEP 562).
    if name == "InlineFigure":
        return _inline_figure_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def warm_up() -> None:
    """Import matplotlib's Agg canvas and load its font list: what the first figure of a process waits for.

    ``cnnlab train`` runs this in a background thread while the network trains. The training
    thread spends its time in PyTorch kernels that release the GIL, and on a CPU run with fewer
    threads than cores a core is idle, so the run's report figure, drawn after training, no longer
    pays for matplotlib's start. Importing is all it does: it draws and changes nothing.
    """
    from matplotlib import font_manager
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401  (imported for its side: loaded)

    font_manager.findfont(font_manager.FontProperties())


def new_figure(width: float, height: float) -> Any:  # an InlineFigure (made on first use)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = _inline_figure_class()(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def confusion_matrix_figure(cm: np.ndarray, classes: Sequence[str], title: str | None = None) -> Figure:
    """Counts (left) and row-normalised rates (right); readable from 10 to 100 classes.

    ``title`` defaults to "Test confusion matrix" in the language in force.

    Cell numbers are drawn only while they fit (up to 20 classes); beyond that
    the colour carries the value and tick labels are thinned.
    """
    cm = np.asarray(cm)
    k = len(classes)
    side = min(max(4.5, 0.45 * k), 14)
    fig = new_figure(2 * side + 1.5, side + 0.8)
    axes = fig.subplots(1, 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = cm / cm.sum(axis=1, keepdims=True)
    rates = np.nan_to_num(rates)
    step = max(1, k // 25)
    title = _("Test confusion matrix") if title is None else title
    halves = ((axes[0], cm, _("{title}: counts"), "d"), (axes[1], rates, _("{title}: row-normalised (recall)"), ".2f"))
    for ax, values, heading, fmt in halves:
        im = ax.imshow(values, cmap="Blues", interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(heading.format(title=title))
        ax.set_xlabel(_("predicted"))
        ax.set_ylabel(_("true"))
        ticks = np.arange(0, k, step)
        ax.set_xticks(ticks, [classes[i] for i in ticks], rotation=90 if k > 10 else 0, fontsize=8 if k > 20 else 10)
        ax.set_yticks(ticks, [classes[i] for i in ticks], fontsize=8 if k > 20 else 10)
        if k <= 20:
            threshold = values.max() / 2 if values.max() > 0 else 0.5
            for i in range(k):
                for j in range(k):
                    v = values[i, j]
                    if fmt == "d" or v >= 0.005:
                        ax.text(j, i, format(v, fmt) if fmt == "d" else format_float(v, 2), ha="center", va="center", fontsize=7,
                                color="white" if v > threshold else "black")
    fig.tight_layout()
    return fig


# --- error analysis figures (cnnlab.analysis builds them all for `cnnlab analyze`) -----------

RIGHT, WRONG = "#1a7f37", "#c62828"


def _draw_image(ax, img: np.ndarray) -> None:
    """One (C, H, W) uint8 image, grey for one channel, without ticks."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    elif img.ndim == 3:
        ax.imshow(np.transpose(img[:3], (1, 2, 0)), interpolation="nearest")
    else:
        ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def overlay_attribution(ax: Any, a: np.ndarray, alpha: float = 0.85) -> None:
    """Draw a signed (H, W) attribution over an image already on ``ax``: red for the class, blue against."""
    a = np.asarray(a, dtype=float)
    vmax = float(np.abs(a).max()) or 1.0
    # Opacity follows the strength, so the image shows through where the attribution is weak.
    ax.imshow(a, cmap="RdBu_r", vmin=-vmax, vmax=vmax, alpha=np.clip(np.abs(a) / vmax * 2.5, 0, 1) * alpha,
              interpolation="nearest")


def gallery_figure(
    rows: Sequence[Sequence[tuple]],
    *,
    ncols: int,
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    cell: tuple[float, float] = (1.25, 1.5),
    empty_text: str | None = None,
) -> Figure:
    """A grid of images: ``rows`` of (image, caption, caption colour[, attribution overlay]); empty rows say
    ``empty_text``."""
    empty_text = _("none") if empty_text is None else empty_text
    nrows = max(1, len(rows))
    ncols = max(1, ncols)
    fig = new_figure(cell[0] * ncols + (0.6 if row_labels else 0), cell[1] * nrows + (0.5 if title else 0))
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    for r in range(nrows):
        items = list(rows[r]) if r < len(rows) else []
        for c in range(ncols):
            ax = axes[r, c]
            if c < len(items):
                img, caption, color = items[c][:3]
                _draw_image(ax, img)
                if len(items[c]) > 3 and items[c][3] is not None:
                    overlay_attribution(ax, items[c][3])
                ax.set_title(caption, fontsize=8, color=color)
            else:
                ax.axis("off")
        if not items:
            axes[r, 0].text(0, 0.5, empty_text, fontsize=9, va="center", transform=axes[r, 0].transAxes)
        if row_labels is not None and r < len(row_labels):
            # The label goes on the first axes; turned-off axes hide their ylabel, so use text.
            axes[r, 0].text(-0.15, 0.5, row_labels[r], fontsize=10, fontweight="bold", rotation=90,
                            ha="right", va="center", transform=axes[r, 0].transAxes)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def misclassified_figure(
    images: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    *,
    show: Sequence[str | int] | None = None,
    per_class: int = 10,
) -> Figure:
    """The lesson's gallery in one call: a row per class in ``show``, up to ``per_class`` wrong test images.

    Each image is titled "pred (prob)": the predicted class and its probability.
    ``show`` takes class names or indices (``["8", "4", "9"]`` is the lesson's
    3x10 figure); by default the three classes with the most errors. Images are
    taken in test-set order, so the figure is stable.
    """

    labels, probs = np.asarray(labels), np.asarray(probs)
    preds = probs.argmax(axis=1)
    rows_k = resolve_classes(show, classes) if show else classes_with_most_errors(labels, preds, len(classes))
    chosen = select_misclassified(labels, preds, rows_k, per_class)
    rows = [[(images[i], f"{classes[preds[i]]} ({format_float(probs[i, preds[i]], 2)})", WRONG) for i in chosen[k]]
            for k in rows_k]
    return gallery_figure(
        rows, ncols=per_class, row_labels=[_("true {label}").format(label=classes[k]) for k in rows_k],
        title=_("Misclassified test images: predicted class (probability)"), empty_text=_("no errors"),
    )


def top_losses_figure(
    images: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    losses: np.ndarray,
    classes: Sequence[str],
    *,
    k: int = 24,
    ncols: int = 8,
    heatmaps: Sequence[np.ndarray] | None = None,
) -> Figure:
    """The ``k`` test images with the highest loss: "true -> pred (prob)" and the loss; likely mislabelled.

    ``heatmaps``: an (H, W) attribution for each shown image (in top-loss order), drawn over it.
    """

    labels, probs = np.asarray(labels), np.asarray(probs)
    preds = probs.argmax(axis=1)
    idx = top_losses(losses, min(k, len(labels)))
    loss_line = _("loss {loss}  #{index}")
    items = [
        (images[i], f"{classes[labels[i]]} \u2192 {classes[preds[i]]} ({format_float(probs[i, preds[i]], 2)})\n"
                    + loss_line.format(loss=format_float(losses[i], 2), index=i),
         WRONG if preds[i] != labels[i] else RIGHT, None if heatmaps is None else heatmaps[n])
        for n, i in enumerate(idx)
    ]
    rows = [items[s : s + ncols] for s in range(0, len(items), ncols)] or [[]]
    title = _("Top losses: true \u2192 predicted (probability), loss, test index")
    if heatmaps is not None:
        title += "\n" + _("red: pixels for the predicted class, blue: against")
    return gallery_figure(rows, ncols=ncols, title=title, cell=(1.35, 1.7))


def embedding_figure(
    points: np.ndarray,
    labels: np.ndarray,
    preds: np.ndarray,
    classes: Sequence[str],
    images: np.ndarray,
    *,
    thumbnails: int = 12,
    method: str = "t-SNE",
) -> Figure:
    """A 2-D map of the images' features: one colour per true class, misclassified images ringed in
    black, class names at each class's centre and ``thumbnails`` images placed at their points."""
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    points, labels, preds = np.asarray(points, float), np.asarray(labels), np.asarray(preds)
    k = len(classes)
    fig = new_figure(8.5, 7.5)
    ax = fig.subplots()
    cmap = "tab10" if k <= 10 else "tab20"
    ax.scatter(points[:, 0], points[:, 1], c=labels, cmap=cmap, vmin=-0.5, vmax=(9.5 if k <= 10 else 19.5), s=6,
               alpha=0.7, linewidths=0)
    wrong = preds != labels
    ax.scatter(points[wrong, 0], points[wrong, 1], facecolors="none", edgecolors="black", s=28, linewidths=0.8,
               label=_("misclassified ({n})").format(n=int(wrong.sum())))
    for c in range(k):
        mine = points[labels == c]
        if len(mine) and k <= 20:
            cx, cy = np.median(mine, axis=0)
            ax.text(cx, cy, classes[c], fontsize=13, fontweight="bold", ha="center", va="center",
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.7, "lw": 0})
    if thumbnails and len(points):
        # A fixed sample (seed 0), so the same run draws the same figure.
        rng = np.random.default_rng(0)
        chosen = sorted(set(rng.choice(len(points), size=min(thumbnails, len(points)), replace=False).tolist()))
        for i in chosen:
            img = np.asarray(images[i])
            pic = img[0] if img.shape[0] == 1 else np.transpose(img[:3], (1, 2, 0))
            box = OffsetImage(pic, zoom=0.9, cmap="gray" if img.shape[0] == 1 else None)
            ax.add_artist(AnnotationBbox(box, points[i], frameon=True, pad=0.1,
                                         bboxprops={"edgecolor": WRONG if wrong[i] else "gray", "lw": 1}))
    ax.set_xticks([])
    ax.set_yticks([])
    if wrong.any():
        ax.legend(loc="lower right", fontsize=8)
    ax.set_title(_("The penultimate layer's features of {n} test images, in 2-D ({method}): colour is the true "
                   "class").format(n=len(points), method=method), fontsize=10)
    fig.tight_layout()
    return fig


def samples_figure(
    images: np.ndarray, labels: np.ndarray, classes: Sequence[str], *, ncols: int = 10, title: str | None = None
) -> Figure:
    """Labelled images in a grid (``cnnlab show-data``; the lesson's first figure)."""
    items = [(img, classes[int(y)], "black") for img, y in zip(images, labels)]
    ncols = max(1, min(ncols, len(items)))
    rows = [items[s : s + ncols] for s in range(0, len(items), ncols)]
    return gallery_figure(rows, ncols=ncols, title=title, cell=(1.1, 1.3))


def lr_find_figure(
    lrs: Sequence[float], losses: Sequence[float], smoothed: Sequence[float],
    suggestions: dict[str, float | None] | None = None, method: str = "steep",
) -> Figure:
    """The learning-rate range test: loss per step against the rate (log scale), raw and smoothed.

    The suggested rates are marked on the smoothed curve; ``method`` is the one drawn boldest.
    """
    fig = new_figure(7.0, 4.2)
    ax = fig.subplots()
    lr, raw, smooth = (np.asarray(v, dtype=float) for v in (lrs, losses, smoothed))
    ax.plot(lr, raw, color="#9dbbd8", lw=0.8, label=_("loss per step"))
    ax.plot(lr, smooth, color="#3b75af", lw=2, label=_("smoothed loss"))
    names = {"steep": _("steepest descent"), "minimum": _("minimum / 10")}
    colors = {"steep": WRONG, "minimum": "#f0a04b"}
    for name, value in (suggestions or {}).items():
        if value is None or not len(lr):
            continue
        y = float(np.interp(np.log10(value), np.log10(lr), np.where(np.isfinite(smooth), smooth, np.nan)))
        ax.plot([value], [y], marker="o", ms=9 if name == method else 6, color=colors.get(name, "black"), zorder=5,
                label=f"{names.get(name, name)}: {value:.1e}")
    ax.set_xscale("log")
    finite = smooth[np.isfinite(smooth)]
    if len(finite):
        # Past the valley the loss runs away: a y range from the lowest loss to a little above the
        # first keeps the valley readable.
        low = min(float(finite.min()), float(np.nanmin(np.where(np.isfinite(raw), raw, np.inf))))
        ax.set_ylim(max(0.0, low * 0.9), float(finite[0]) * 1.25)
    ax.set_xlabel(_("learning rate (log scale)"))
    ax.set_ylabel(_("training loss (per image)"))
    ax.set_title(_("Learning-rate range test"))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def disagreement_figure(
    images: np.ndarray,
    labels: np.ndarray,
    probs_a: np.ndarray,
    probs_b: np.ndarray,
    classes: Sequence[str],
    indices: Sequence[int],
    *,
    ncols: int = 8,
    total: int | None = None,
) -> Figure:
    """Test images where runs A and B predict different classes: true label, A's and B's "pred (prob)".

    ``total`` is the number of disagreements when ``indices`` shows only some of them.
    """
    pa, pb = np.asarray(probs_a).argmax(axis=1), np.asarray(probs_b).argmax(axis=1)
    items = []
    for i in indices:
        caption = (_("true {label}").format(label=classes[labels[i]]) + f"  #{i}\n"
                   f"A {classes[pa[i]]} ({format_float(probs_a[i, pa[i]], 2)})"
                   f"  B {classes[pb[i]]} ({format_float(probs_b[i, pb[i]], 2)})")
        # Colour says who was right: green A, blue B, red neither.
        color = RIGHT if pa[i] == labels[i] else ("#1f5fbf" if pb[i] == labels[i] else WRONG)
        items.append((images[i], caption, color))
    rows = [items[s : s + ncols] for s in range(0, len(items), ncols)] or [[]]
    return gallery_figure(
        rows, ncols=ncols, cell=(1.6, 1.8), empty_text=_("the two runs agree on every test image"),
        title=_("Where A and B disagree ({shown} of {total} shown; green: A right, blue: B right, red: both wrong)")
        .format(shown=len(items), total=len(items) if total is None else total),
    )


def per_class_figure(confusion: np.ndarray, classes: Sequence[str]) -> Figure:
    """Per-class accuracy (= recall) and precision bars, with the overall accuracy as a line."""

    cm = np.asarray(confusion)
    rates = per_class_rates(cm)
    k = len(classes)
    fig = new_figure(min(max(6.0, 0.32 * k + 2), 30.0), 4.2)
    ax = fig.subplots()
    x = np.arange(k)
    ax.bar(x - 0.2, rates["recall"], 0.4, label=_("accuracy (recall)"), color="#3b75af")
    ax.bar(x + 0.2, rates["precision"], 0.4, label=_("precision"), color="#f0a04b")
    total = cm.sum()
    if total:
        ax.axhline(np.trace(cm) / total, color="black", lw=0.8, ls="--", label=_("overall accuracy"))
    low = float(min(rates["recall"].min(), rates["precision"].min())) if k else 0.0
    # Zoom in on the top of the scale: at 99% accuracy, bars from 0 would all look the same.
    ax.set_ylim(max(0.0, low - 0.05 * max(1.0 - low, 0.2)) if low > 0.5 else 0.0, 1.0)
    step = max(1, k // 40)
    ax.set_xticks(x[::step], [classes[i] for i in x[::step]], rotation=90 if k > 20 else 0, fontsize=8 if k > 20 else 10)
    if k <= 20:
        for i, v in enumerate(rates["recall"]):
            # Inside the bar's top: above it the label would collide with the title at 1.0.
            ax.text(i - 0.2, v, f"{format_float(v, 3)} ", ha="center", va="top", fontsize=6, rotation=90, color="white")
    ax.set_xlabel(_("class"))
    ax.set_ylabel(_("rate on the test set"))
    ax.set_title(_("Per-class accuracy (recall) and precision"))
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14 if k <= 20 else -0.22), ncol=3, frameon=False)
    fig.tight_layout()
    return fig


def reliability_figure(confidences: np.ndarray, correct: np.ndarray, *, n_bins: int = 15) -> Figure:
    """Reliability diagram: accuracy against confidence per bin, the gap to the diagonal, and bin sizes."""

    b = reliability_bins(confidences, correct, n_bins)
    centers = (b.edges[:-1] + b.edges[1:]) / 2
    width = 1.0 / n_bins
    fig = new_figure(5.5, 6.0)
    ax, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    has = b.counts > 0
    acc, conf = np.nan_to_num(b.accuracy), np.nan_to_num(b.confidence)
    ax.bar(centers[has], acc[has], width, color="#3b75af", edgecolor="white", label=_("accuracy"))
    ax.bar(centers[has], np.abs(conf - acc)[has], width, bottom=np.minimum(acc, conf)[has], color=WRONG, alpha=0.35,
           edgecolor=WRONG, label=_("gap to confidence"))
    ax.plot([0, 1], [0, 1], ls="--", color="gray", lw=1, label=_("perfect calibration"))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel(_("accuracy"))
    ax.set_title(_("Reliability diagram (ECE {ece}, {bins} bins)").format(ece=format_float(b.ece, 4), bins=n_bins))
    ax.legend(fontsize=8, loc="upper left")
    ax2.bar(centers, np.maximum(b.counts, 0), width, color="gray", edgecolor="white")
    if b.counts.max(initial=0) > 0:
        ax2.set_yscale("log")
    ax2.set_xlabel(_("confidence (probability of the predicted class)"))
    ax2.set_ylabel(_("images"))
    fig.tight_layout()
    return fig


def confidence_histogram_figure(confidences: np.ndarray, correct: np.ndarray, *, bins: int = 20) -> Figure:
    """Histograms of the confidence of correct and of wrong predictions (log counts)."""
    conf, ok = np.asarray(confidences, dtype=float), np.asarray(correct, dtype=bool)
    edges = np.linspace(0, 1, bins + 1)
    fig = new_figure(9.0, 3.6)
    axes = fig.subplots(1, 2, sharex=True)
    panels = ((axes[0], ok, _("correct: {n} images, mean confidence {mean}"), _("correct: no images"), RIGHT),
              (axes[1], ~ok, _("wrong: {n} images, mean confidence {mean}"), _("wrong: no images"), WRONG))
    for ax, mask, heading, empty, color in panels:
        values = conf[mask]
        ax.hist(values, bins=edges, color=color, alpha=0.8, edgecolor="white")
        if len(values):
            ax.set_yscale("log")
            ax.axvline(values.mean(), color="black", ls="--", lw=0.8)
            ax.set_title(heading.format(n=len(values), mean=format_float(values.mean(), 3)), fontsize=10)
        else:
            ax.set_title(empty, fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_xlabel(_("confidence"))
        ax.set_ylabel(_("images"))
    fig.tight_layout()
    return fig


def training_curves_figure(rows: Sequence[dict]) -> Figure:
    """Loss and accuracy per epoch from ``metrics.csv`` rows, train against validation, best epoch marked.

    ``rows`` are dicts as :func:`cnnlab.core.runs.read_metrics` returns them; a
    missing train column (``--no-train-eval``) is simply not drawn.
    """

    fig = new_figure(10.0, 3.8)
    axes = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in rows]
    best = best_epoch(rows)
    for ax, metric, label in ((axes[0], "loss", _("loss (mean cross-entropy)")), (axes[1], "acc", _("accuracy"))):
        for split, color, name in (("train", "#3b75af", _("train")), ("val", "#f0a04b", _("validation"))):
            pts = [(e, r.get(f"{split}_{metric}")) for e, r in zip(epochs, rows) if r.get(f"{split}_{metric}") is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=4, color=color, label=name)
        if best is not None:
            ax.axvline(best, color="gray", ls="--", lw=1, label=_("best epoch ({epoch})").format(epoch=best))
            row = next(r for r in rows if r["epoch"] == best)
            if row.get(f"val_{metric}") is not None:
                ax.plot([best], [row[f"val_{metric}"]], marker="*", ms=14, color="#c62828", zorder=5)
        ax.set_xlabel(_("epoch"))
        ax.set_ylabel(label)
        ax.set_xticks(epochs if len(epochs) <= 20 else epochs[:: max(1, len(epochs) // 10)])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title(_("Loss per epoch"))
    axes[1].set_title(_("Accuracy per epoch"))
    fig.tight_layout()
    return fig


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, max(1, math.ceil(math.sqrt(n * 1.5))))
    return math.ceil(n / cols), cols


def _norm(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def _tile_grid(images: Sequence[np.ndarray], tile: float, pad_w: float, pad_h: float, **imshow: object) -> Figure:
    """One image per tile in a near-square grid, each titled with its index; spare tiles left blank."""
    rows, cols = _grid(len(images))
    fig = new_figure(tile * cols + pad_w, tile * rows + pad_h)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i < len(images):
            ax.imshow(images[i], interpolation="nearest", **imshow)
            ax.set_title(str(i), fontsize=7)
    return fig


def filters_figure(weight: torch.Tensor, title: str | None = None) -> Figure:
    """One tile per output channel of a conv weight (out, in, kh, kw); ``title`` defaults to "first conv layer filters".

    3-input-channel kernels are drawn as RGB (each kernel scaled to its own
    range); otherwise each (output, input) kernel pair is a grey tile, with a
    shared colour scale so strengths compare (red positive, blue negative).
    """
    w = weight.detach().float().cpu().numpy()
    out_c, in_c = w.shape[:2]
    if in_c == 3:
        fig = _tile_grid([_norm(k.transpose(1, 2, 0)) for k in w], 1.1, 0.5, 0.6)
    else:
        shown_in = min(in_c, 8)
        rows, cols = out_c, shown_in
        if shown_in == 1:
            rows, cols = _grid(out_c)
        fig = new_figure(1.0 * cols + 1.2, 1.0 * rows + 0.6)
        axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
        vmax = float(np.abs(w).max()) or 1.0
        tiles = [(o, c) for o in range(out_c) for c in range(shown_in)]
        for ax, tile in zip(axes, tiles + [None] * (len(axes) - len(tiles))):
            ax.set_axis_off()
            if tile is not None:
                o, c = tile
                im = ax.imshow(w[o, c], cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
                ax.set_title(f"{o}" if shown_in == 1 else f"{o}/{c}", fontsize=7)
        fig.colorbar(im, ax=list(axes), fraction=0.03, pad=0.02)
    title = _("first conv layer filters") if title is None else title
    fig.suptitle(_("{title}: {filters} filters, {channels} input channel(s), {h}x{w}").format(
        title=title, filters=out_c, channels=in_c, h=w.shape[2], w=w.shape[3]))
    return fig


def feature_maps_figure(maps: torch.Tensor, title: str, max_maps: int = 32) -> Figure:
    """The (C, H, W) activations of one image after one layer, one tile per channel."""
    m = maps.detach().float().cpu().numpy()
    n = min(len(m), max_maps)
    fig = _tile_grid(m[:n], 1.2, 0.4, 0.7, cmap="viridis")
    if n < len(m):
        heading = _("{title}: first {shown} of {total} channels, {h}x{w}")
    else:
        heading = _("{title}: {total} channels, {h}x{w}")
    fig.suptitle(heading.format(title=title, shown=n, total=len(m), h=m.shape[1], w=m.shape[2]))
    return fig


def input_figure(image: torch.Tensor, caption: str) -> Figure:
    x = image.detach().float().cpu().numpy()
    fig = new_figure(3, 3.3)
    ax = fig.subplots()
    ax.set_axis_off()
    if x.shape[0] == 3:
        ax.imshow(_norm(x.transpose(1, 2, 0)), interpolation="nearest")
    else:
        ax.imshow(x[0], cmap="gray", interpolation="nearest")
    ax.set_title(caption, fontsize=9)
    return fig
