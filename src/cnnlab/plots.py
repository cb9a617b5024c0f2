"""Figures as pure functions: data in, ``matplotlib.figure.Figure`` out.

Figures are built with the object API on the Agg canvas, never through
``pyplot``, so they work headless and leave no global figure state behind.
Save them with :func:`cnnlab.files.save_figure` (atomic).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def confusion_matrix_figure(cm: np.ndarray, classes: Sequence[str], title: str = "Test confusion matrix") -> Figure:
    """Counts (left) and row-normalised rates (right); readable from 10 to 100 classes.

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
    for ax, values, name, fmt in ((axes[0], cm, "counts", "d"), (axes[1], rates, "row-normalised (recall)", ".2f")):
        im = ax.imshow(values, cmap="Blues", interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(f"{title}: {name}")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ticks = np.arange(0, k, step)
        ax.set_xticks(ticks, [classes[i] for i in ticks], rotation=90 if k > 10 else 0, fontsize=8 if k > 20 else 10)
        ax.set_yticks(ticks, [classes[i] for i in ticks], fontsize=8 if k > 20 else 10)
        if k <= 20:
            threshold = values.max() / 2 if values.max() > 0 else 0.5
            for i in range(k):
                for j in range(k):
                    v = values[i, j]
                    if fmt == "d" or v >= 0.005:
                        ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=7,
                                color="white" if v > threshold else "black")
    fig.tight_layout()
    return fig
