"""One self-contained HTML page for a run's error analysis (``RUN/analysis/index.html``).

Every figure is embedded as a base64 PNG and the style sheet is inline, so the
file can be mailed, attached to an issue or opened offline: it loads nothing
from anywhere. All text taken from the run (config values, class names) is
HTML-escaped.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from pathlib import Path
from typing import Any, Sequence

from cnnlab.core.files import write_text

# (file key in AnalysisResult.files, heading, what the reader should look for)
FIGURES: list[tuple[str, str, str]] = [
    ("training_curves", "Training curves", "Loss and accuracy per epoch, train against validation; "
     "the dashed line is the epoch whose checkpoint was kept (lowest validation loss)."),
    ("confusion_matrix", "Confusion matrix", "Rows are true classes, columns predictions; counts on the left, "
     "row-normalised rates (recall) on the right."),
    ("per_class", "Per-class accuracy", "Accuracy (= recall) and precision of each class on the test set."),
    ("misclassified", "Misclassified test images", "For each chosen class, wrong test images in test order, "
     "titled with the predicted class and its probability."),
    ("top_losses", "Top losses", "The test images the model is most confidently wrong about (highest loss): "
     "the best candidates for mislabelled data."),
    ("top_losses_heatmap", "Top losses: where the model looked", "The same images with their attribution "
     "(Integrated Gradients) for the predicted class overlaid: red pixels pushed towards it, blue against."),
    ("embedding", "The test set as the model sees it", "The penultimate layer's features in 2-D (t-SNE, or UMAP "
     "where installed): colour is the true class, ringed points are misclassified, a few images sit at their "
     "points. Classes the model separates form islands; errors sit between them."),
    ("reliability", "Calibration: reliability diagram", "Per confidence bin, how often the prediction was right; "
     "a calibrated model's bars touch the diagonal."),
    ("confidence", "Calibration: confidence of correct and wrong predictions", "Wrong predictions should be "
     "less confident than correct ones."),
]

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1d2330;
       background: #f6f7f9; }
header { background: #1d2330; color: white; padding: 18px 32px; }
header h1 { margin: 0 0 4px 0; font-size: 22px; }
header p { margin: 0; color: #c9d1e0; font-size: 13px; }
main { max-width: 1280px; margin: 0 auto; padding: 16px 32px 48px; }
section { background: white; border-radius: 8px; padding: 16px 20px; margin: 16px 0;
          box-shadow: 0 1px 3px rgba(0,0,0,.08); }
h2 { font-size: 18px; margin: 0 0 6px 0; }
p.note { color: #5a6375; margin: 0 0 10px 0; font-size: 14px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: white; border-radius: 8px; padding: 12px 18px; min-width: 130px;
        box-shadow: 0 1px 3px rgba(0,0,0,.08); }
.card .v { font-size: 22px; font-weight: 600; }
.card .k { font-size: 12px; color: #5a6375; text-transform: uppercase; letter-spacing: .04em; }
img.fig { max-width: 100%; height: auto; display: block; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 3px 10px; border-bottom: 1px solid #e3e6eb; text-align: right; }
th { background: #f0f2f5; }
td.l, th.l { text-align: left; }
pre { background: #f6f7f9; padding: 10px; overflow-x: auto; font-size: 12px; }
nav a { color: #9fc2ff; margin-right: 12px; font-size: 13px; }
.two { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 0) -> str:
    """An HTML table; the first ``left`` columns are left-aligned (names), the rest numbers."""
    def cls(i: int) -> str:
        return ' class="l"' if i < left else ""

    head = "".join(f"<th{cls(i)}>{_esc(h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{_esc(v)}</td>" for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(png: bytes, alt: str, key: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="fig" id="fig-{_esc(key)}" alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def build_html(result: Any, *, images: dict[str, bytes], config: dict | None = None,
               history: Sequence[dict] | None = None) -> str:
    """The page as a string, from what the caller computed: nothing is read or written here.

    ``images``: the PNG bytes of each figure by its key in ``result.files``; ``config``: the run's
    config.json contents; ``history``: its metrics rows.
    """
    s = result.summary
    run = result.run_path
    names = result.predictions.classes
    config = config or {}
    cards = [
        ("test accuracy", f"{s['accuracy']:.2%}"),
        ("test loss", f"{s['loss']:.4f}"),
        ("errors", f"{s['errors']} / {s['num_images']}"),
        (f"ECE ({s['ece_bins']} bins)", f"{s['ece']:.4f}"),
        ("best epoch", _fmt(s.get("best_epoch") or s.get("epoch"))),
        ("model", _fmt(config.get("config", {}).get("model", {}).get("name", "?"))),
        ("dataset", f"{s['test_set']['dataset']} ({len(names)} classes)"),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>cnnlab analysis: {_esc(run.name)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>Error analysis: {_esc(run.name)}</h1>"
        f"<p>{_esc(run)} &middot; best.pt (epoch {_esc(s.get('epoch'))}) on the test set &middot; written "
        f"{_esc(_dt.datetime.now().strftime('%Y-%m-%d %H:%M'))}</p><nav>"
        + "".join(f'<a href="#{k}">{_esc(h)}</a>' for k, h, _ in FIGURES if k in images)
        + '<a href="#tables">tables</a><a href="#config">config</a></nav></header><main>',
        '<div class="cards" id="summary">'
        + "".join(f'<div class="card"><div class="v">{_esc(v)}</div><div class="k">{_esc(k)}</div></div>' for k, v in cards)
        + "</div>",
    ]
    for key, heading, note in FIGURES:
        if key in images:
            parts.append(f'<section id="{key}"><h2>{_esc(heading)}</h2><p class="note">{_esc(note)}</p>'
                         f"{_img(images[key], heading, key)}</section>")

    p = result.predictions
    confused_rows = [[c.true, c.pred, c.count] for c in result.confused[:20]]
    loss_rows = [
        [int(i), names[p.labels[i]], names[p.preds[i]], f"{p.confidence[i]:.4f}", f"{p.losses[i]:.3f}"]
        for i in result.top_loss_indices
    ]
    parts.append(
        '<section id="tables"><h2>Most confused pairs and top losses</h2><div class="two"><div>'
        "<p class=\"note\">true &rarr; predicted, by count</p>"
        + (_table(["true", "predicted", "count"], confused_rows, left=2) if confused_rows else "<p>no errors</p>")
        + '</div><div><p class="note">highest test losses (index = position in the test set)</p>'
        + _table(["index", "true", "predicted", "confidence", "loss"], loss_rows)
        + "</div></div></section>"
    )
    parts.append(f'<section id="report"><h2>Classification report</h2><pre>{_esc(result.report.text)}</pre></section>')

    if history:
        rows = list(history)
        cols = [c for c in (rows[0].keys() if rows else []) if any(r.get(c) is not None for r in rows)]
        parts.append('<section id="metrics"><h2>Training metrics (metrics.csv)</h2>'
                     + _table(cols, [[_fmt(r.get(c)) for c in cols] for r in rows]) + "</section>")
    fp = s["test_set"]
    parts.append(
        '<section id="config"><h2>Run config and provenance</h2>'
        f"<pre>{_esc(json.dumps(config, indent=2))}</pre>"
        f'<p class="note">Test set: {_esc(fp["dataset"])}, {fp["num_images"]} images, labels sha256 '
        f'{_esc(fp["labels_sha256"][:16])}&hellip;</p></section>'
    )
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def write_html_report(result: Any, path: str | Path | None = None, *, images: dict[str, bytes],
                      config: dict | None = None, history: Sequence[dict] | None = None) -> Path:
    """Write :func:`build_html` to ``path`` (default ``RUN/analysis/index.html``)."""
    target = Path(path) if path is not None else result.out_dir / "index.html"
    write_text(target, build_html(result, images=images, config=config, history=history))
    return target
