"""Every analysis figure is written, is not blank, works for 10 to 100 classes and leaves no pyplot state."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.analysis import figures as plots
from cnnlab.analysis.metrics import confusion_matrix
from cnnlab.core.files import save_figure
from conftest import synthetic_digits


def _data(k: int = 10, n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    images, _ = synthetic_digits(n, seed)
    images = images[:, None]  # (N, 1, 28, 28)
    labels = np.arange(n) % k
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += np.where(rng.random(n) < 0.75, 5.0, -2.0)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    losses = -np.log(probs[np.arange(n), labels])
    return images.astype(np.uint8), labels, probs, losses, [f"c{i}" if k > 10 else str(i) for i in range(k)]


def _check_png(path: Path, min_colors: int = 20) -> tuple[int, int]:
    """The file is a real PNG with varied content (not one flat colour)."""
    assert path.is_file() and path.stat().st_size > 2000, path
    with Image.open(path) as im:
        assert im.format == "PNG"
        rgb = np.asarray(im.convert("RGB"))
    assert rgb.std() > 10, f"{path.name} looks blank"
    packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    colors = len(np.unique(packed))
    assert colors >= min_colors, f"{path.name} has only {colors} colours"
    return rgb.shape[1], rgb.shape[0]


def _figures(k: int) -> dict:
    """Figure builders (called lazily: rendering is the slow part)."""
    images, labels, probs, losses, classes = _data(k)
    preds = probs.argmax(1)
    cm = confusion_matrix(labels, preds, k)
    conf, correct = probs.max(1), preds == labels
    history = [
        {"epoch": 1.0, "train_loss": 0.5, "train_acc": 0.8, "val_loss": 0.6, "val_acc": 0.78, "best": True},
        {"epoch": 2.0, "train_loss": 0.3, "train_acc": 0.9, "val_loss": 0.4, "val_acc": 0.86, "best": True},
        {"epoch": 3.0, "train_loss": 0.2, "train_acc": 0.95, "val_loss": 0.45, "val_acc": 0.85, "best": False},
    ]
    other = np.roll(probs, 1, axis=1)
    disagree = np.flatnonzero(other.argmax(1) != preds)[:12]
    return {
        "confusion": lambda: plots.confusion_matrix_figure(cm, classes),
        "misclassified": lambda: plots.misclassified_figure(images, labels, probs, classes, show=classes[:3], per_class=10),
        "misclassified_default": lambda: plots.misclassified_figure(images, labels, probs, classes),
        "top_losses": lambda: plots.top_losses_figure(images, labels, probs, losses, classes, k=16),
        "per_class": lambda: plots.per_class_figure(cm, classes),
        "reliability": lambda: plots.reliability_figure(conf, correct),
        "confidence": lambda: plots.confidence_histogram_figure(conf, correct),
        "training_curves": lambda: plots.training_curves_figure(history),
        "samples": lambda: plots.samples_figure(images[:10], labels[:10], classes),
        "disagreements": lambda: plots.disagreement_figure(images, labels, probs, other, classes, disagree),
    }


# 100 classes: the figures whose layout depends on the number of classes.
@pytest.mark.parametrize("k, names", [(10, None), (100, ("confusion", "per_class", "misclassified_default"))])
def test_every_figure_is_written_and_not_blank(k, names, tmp_path):
    figures = _figures(k)
    assert len(figures) == 10
    for name, make in figures.items():
        if names is not None and name not in names:
            continue
        path = tmp_path / f"{name}.png"
        save_figure(make(), path)
        w, h = _check_png(path)
        # Readable but bounded, even with 100 classes.
        assert 200 < w < 6000 and 150 < h < 4000, (name, w, h)


def test_lesson_gallery_is_one_call_with_pred_prob_titles():
    images, labels, probs, _, classes = _data()
    fig = plots.misclassified_figure(images, labels, probs, classes, show=["8", "4", "9"], per_class=10)
    preds = probs.argmax(1)
    axes = fig.axes
    assert len(axes) == 30  # 3 rows x 10
    wrong8 = np.flatnonzero((labels == 8) & (preds != 8))[:10]
    titles = [ax.get_title() for ax in axes[:10] if ax.get_title()]
    assert titles == [f"{preds[i]} ({probs[i, preds[i]]:.2f})" for i in wrong8]
    # Stable: the same call draws the same titles.
    again = plots.misclassified_figure(images, labels, probs, classes, show=["8", "4", "9"], per_class=10)
    assert [a.get_title() for a in again.axes] == [a.get_title() for a in axes]


def test_empty_galleries_say_so(tmp_path):
    images, labels, _, _, classes = _data()
    perfect = np.eye(10)[labels] * 0.9 + 0.01
    fig = plots.misclassified_figure(images, labels, perfect, classes, show=["1"], per_class=5)
    assert any("no errors" in t.get_text() for ax in fig.axes for t in ax.texts)
    fig = plots.disagreement_figure(images, labels, perfect, perfect, classes, [])
    assert any("agree" in t.get_text() for ax in fig.axes for t in ax.texts)
    save_figure(fig, tmp_path / "empty.png")
    assert (tmp_path / "empty.png").stat().st_size > 0


def test_figures_need_no_pyplot_and_run_headless(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "from cnnlab.analysis import figures as plots, report as analysis\n"
        "from cnnlab.core.files import save_figure\n"
        "c = np.random.default_rng(0).uniform(0.3, 1, 100)\n"
        "save_figure(plots.reliability_figure(c, c > 0.5), sys.argv[1])\n"
        "print('pyplot' if 'matplotlib.pyplot' in sys.modules else 'clean')\n"
    )
    env = {"MPLBACKEND": "", "DISPLAY": "", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r.png")], capture_output=True, text=True,
                          timeout=120, env={**__import__("os").environ, **env})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "clean"
    _check_png(tmp_path / "r.png")


def test_no_global_figures_left_behind():
    plt = pytest.importorskip("matplotlib.pyplot")
    before = plt.get_fignums()
    for make in _figures(10).values():
        make()
    assert plt.get_fignums() == before
