"""One self-contained HTML page for a run's error analysis (``RUN/analysis/index.html``).

Every figure is embedded as a base64 PNG and the style sheet is inline, so the
file can be mailed, attached to an issue or opened offline: it loads nothing
from anywhere. All text taken from the run (config values, class names) is
HTML-escaped. The page speaks the language in force (``cnnlab.core.i18n``); the run's own names
(config keys, class names, metrics.csv columns) are data and stay as they are.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from pathlib import Path
from typing import Any, Sequence

from cnnlab.core.files import write_text
from cnnlab.core.i18n import N_, _, format_float, format_percent, language

# (file key in AnalysisResult.files, heading, what the reader should look for); translated when drawn.
FIGURES: list[tuple[str, str, str]] = [
    ("training_curves", N_("Training curves"), N_("Loss and accuracy per epoch, train against validation; "
     "the dashed line is the epoch whose checkpoint was kept (lowest validation loss).")),
    ("confusion_matrix", N_("Confusion matrix"), N_("Rows are true classes, columns predictions; counts on the "
     "left, row-normalised rates (recall) on the right.")),
    ("per_class", N_("Per-class accuracy"), N_("Accuracy (= recall) and precision of each class on the test set.")),
    ("misclassified", N_("Misclassified test images"), N_("For each chosen class, wrong test images in test order, "
     "titled with the predicted class and its probability.")),
    ("top_losses", N_("Top losses"), N_("The test images the model is most confidently wrong about (highest loss): "
     "the best candidates for mislabelled data.")),
    ("top_losses_heatmap", N_("Top losses: where the model looked"), N_("The same images with their attribution "
     "(Integrated Gradients) for the predicted class overlaid: red pixels pushed towards it, blue against.")),
    ("embedding", N_("The test set as the model sees it"), N_("The penultimate layer's features in 2-D (t-SNE, or "
     "UMAP where installed): colour is the true class, ringed points are misclassified, a few images sit at their "
     "points. Classes the model separates form islands; errors sit between them.")),
    ("reliability", N_("Calibration: reliability diagram"), N_("Per confidence bin, how often the prediction was "
     "right; a calibrated model's bars touch the diagonal.")),
    ("confidence", N_("Calibration: confidence of correct and wrong predictions"), N_("Wrong predictions should be "
     "less confident than correct ones.")),
]

# metrics.csv's columns as the page heads them. TRANSLATORS: these msgids are the file's column names.
METRIC_COLUMNS = (N_("epoch"), N_("train_loss"), N_("train_acc"), N_("val_loss"), N_("val_acc"), N_("lr"), N_("best"),
                  N_("epoch_time_s"), N_("eval_time_s"))

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
    if isinstance(v, bool):
        return _("yes") if v else _("no")
    if isinstance(v, float):
        return format_float(v, digits)
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
        (_("test accuracy"), format_percent(s["accuracy"])),
        (_("test loss"), format_float(s["loss"])),
        (_("errors"), f"{s['errors']} / {s['num_images']}"),
        (_("ECE ({bins} bins)").format(bins=s["ece_bins"]), format_float(s["ece"])),
        (_("best epoch"), _fmt(s.get("best_epoch") or s.get("epoch"))),
        (_("model"), _fmt(config.get("config", {}).get("model", {}).get("name", "?"))),
        (_("dataset"), _("{dataset} ({n} classes)").format(dataset=s["test_set"]["dataset"], n=len(names))),
    ]
    figures = [(key, _(heading), _(note)) for key, heading, note in FIGURES]
    # Words first, then the page: a message inside an f-string would escape extraction.
    w = {
        "title": _("cnnlab analysis: {run}").format(run=run.name),
        "h1": _("Error analysis: {run}").format(run=run.name),
        "scored": _("best.pt (epoch {epoch}) on the test set").format(epoch=s.get("epoch")),
        "written": _("written {when}").format(when=_dt.datetime.now().strftime("%Y-%m-%d %H:%M")),
        "tables": _("tables"), "config": _("config"),
        "confused_h2": _("Most confused pairs and top losses"), "confused_note": _("true → predicted, by count"),
        "no_errors": _("no errors"), "losses_note": _("highest test losses (index = position in the test set)"),
        "report_h2": _("Classification report"), "metrics_h2": _("Training metrics (metrics.csv)"),
        "config_h2": _("Run config and provenance"),
    }
    w = {k: _esc(v) for k, v in w.items()}
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="{_esc(language())}"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{w['title']}</title><style>{CSS}</style></head><body>",
        f"<header><h1>{w['h1']}</h1><p>{_esc(run)} &middot; {w['scored']} &middot; {w['written']}</p><nav>"
        + "".join(f'<a href="#{k}">{_esc(h)}</a>' for k, h, _note in figures if k in images)
        + f'<a href="#tables">{w["tables"]}</a><a href="#config">{w["config"]}</a></nav></header><main>',
        '<div class="cards" id="summary">'
        + "".join(f'<div class="card"><div class="v">{_esc(v)}</div><div class="k">{_esc(k)}</div></div>' for k, v in cards)
        + "</div>",
    ]
    for key, heading, note in figures:
        if key in images:
            parts.append(f'<section id="{key}"><h2>{_esc(heading)}</h2><p class="note">{_esc(note)}</p>'
                         f"{_img(images[key], heading, key)}</section>")

    p = result.predictions
    confused_rows = [[c.true, c.pred, c.count] for c in result.confused[:20]]
    loss_rows = [
        [int(i), names[p.labels[i]], names[p.preds[i]], format_float(p.confidence[i]), format_float(p.losses[i], 3)]
        for i in result.top_loss_indices
    ]
    true, predicted = _("true"), _("predicted")
    parts.append(
        f'<section id="tables"><h2>{w["confused_h2"]}</h2><div class="two"><div>'
        f'<p class="note">{w["confused_note"]}</p>'
        + (_table([true, predicted, _("count")], confused_rows, left=2) if confused_rows
           else f"<p>{w['no_errors']}</p>")
        + f'</div><div><p class="note">{w["losses_note"]}</p>'
        + _table([_("index"), true, predicted, _("confidence"), _("loss")], loss_rows)
        + "</div></div></section>"
    )
    parts.append(f'<section id="report"><h2>{w["report_h2"]}</h2>'
                 f"<pre>{_esc(result.report.table())}</pre></section>")

    if history:
        rows = list(history)
        cols = [c for c in (rows[0].keys() if rows else []) if any(r.get(c) is not None for r in rows)]
        parts.append(f'<section id="metrics"><h2>{w["metrics_h2"]}</h2>'
                     + _table([_(c) if c in METRIC_COLUMNS else c for c in cols],
                              [[_fmt(r.get(c)) for c in cols] for r in rows]) + "</section>")
    fp = s["test_set"]
    test_set = _("Test set: {dataset}, {n} images, labels sha256 {sha}").format(
        dataset=fp["dataset"], n=fp["num_images"], sha=fp["labels_sha256"][:16])
    parts.append(
        f'<section id="config"><h2>{w["config_h2"]}</h2>'
        f"<pre>{_esc(json.dumps(config, indent=2))}</pre>"
        f'<p class="note">{_esc(test_set)}&hellip;</p></section>'
    )
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def write_html_report(result: Any, path: str | Path | None = None, *, images: dict[str, bytes],
                      config: dict | None = None, history: Sequence[dict] | None = None) -> Path:
    """Write :func:`build_html` to ``path`` (default ``RUN/analysis/index.html``)."""
    target = Path(path) if path is not None else result.out_dir / "index.html"
    write_text(target, build_html(result, images=images, config=config, history=history))
    return target
