"""cnnlab in the learner's language: complete catalogs, no English in a Spanish figure, Spanish numbers,
and a language setting that never leaks between threads or calls."""
from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.analysis.interpret import Interpretation
from cnnlab.core import i18n
from cnnlab.core.i18n import _, format_float, format_int, format_percent, language, use_language
from conftest import synthetic_digits

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    """scripts/i18n.py, the one script that extracts, updates, compiles and checks the catalogs."""
    spec = importlib.util.spec_from_file_location("cnnlab_i18n_tool", ROOT / "scripts" / "i18n.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture(scope="module")
def tool():
    return _tool()


@pytest.fixture(scope="module")
def template(tool):
    return tool.extract()


# --- the catalogs ------------------------------------------------------------------------------


def test_every_message_in_the_code_has_a_spanish_translation(tool, template):
    """Extraction runs here, over the code as it is now: a new `_()` without a translation fails."""
    assert len(template) > 50
    assert tool.problems(template) == []


def test_a_new_untranslated_message_fails_the_check(tool, template):
    from babel.messages.catalog import Catalog

    grown = Catalog(domain="cnnlab")
    for m in template:
        if m.id:
            grown.add(m.id, None, m.locations, context=m.context)
    grown.add("a message nobody has translated yet", None, [("src/cnnlab/x.py", None)])
    found = tool.problems(grown)
    assert any("a message nobody has translated yet" in line and "no entry" in line for line in found), found


def test_the_draw_page_strings_are_extracted(template):
    """The JavaScript's t("...") and the HTML's data-i18n texts are catalog messages too."""
    html = (ROOT / "src/cnnlab/web/index.html").read_text()
    ids = {m.id for m in template if isinstance(m.id, str)}
    called = []
    for script in (ROOT / "src/cnnlab/web").glob("*.js"):
        code = re.sub(r"(^|\s)//.*", "", script.read_text())  # comments may show t("...") as an example
        called += re.findall(r'\bt\("([^"\\]*)"', code)
    assert len(called) >= 5
    for text in called:  # a literal may be the start of a concatenation: t("A " + "b")
        assert any(i.startswith(text) for i in ids), text
    if "data-i18n" in html:
        assert any(loc[0].endswith("index.html") for m in template for loc in m.locations)


def test_no_function_hides_the_translation_function():
    """`_` as a throwaway name inside a module that translates would make `_()` fail in that function."""
    offenders = []
    for path in (ROOT / "src" / "cnnlab").rglob("*.py"):
        tree = ast.parse(path.read_text())
        imports_underscore = any(
            isinstance(node, ast.ImportFrom) and node.module == "cnnlab.core.i18n"
            and any(a.name == "_" for a in node.names)
            for node in ast.walk(tree)
        )
        if not imports_underscore:
            continue
        for func in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))):
            for node in ast.walk(func):
                if isinstance(node, ast.Name) and node.id == "_" and isinstance(node.ctx, ast.Store):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
                if isinstance(node, ast.arg) and node.arg == "_":
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == [], "rename the throwaway `_` (e.g. `_unused`) at " + ", ".join(offenders)


def test_no_message_is_marked_inside_an_f_string():
    """Babel reads an f-string as one token on Python < 3.12: a `_("...")` inside one is never extracted."""
    offenders = []
    for path in (ROOT / "src" / "cnnlab").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.JoinedStr):
                for call in ast.walk(node):
                    if (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                            and call.func.id in ("_", "N_", "ngettext", "pgettext")):
                        offenders.append(f"{path.relative_to(ROOT)}:{call.lineno}")
    assert offenders == [], "move these messages out of their f-strings: " + ", ".join(offenders)


# --- no English left in a Spanish figure ---------------------------------------------------------


def _english_patterns(template) -> list[tuple[str, re.Pattern]]:
    """Each English message whose Spanish differs, as a pattern (placeholders match anything)."""
    out = []
    with use_language("es"):
        for m in template:
            ids = [m.id] if isinstance(m.id, str) else list(m.id or [])
            for msgid in ids:
                if not msgid or _(msgid) == msgid:
                    continue
                parts = re.split(r"\{[^{}]*\}", msgid)
                if len(re.findall(r"[A-Za-z]", "".join(parts))) < 3:
                    continue  # "{seconds}s" would match any text ending in s
                out.append((msgid, re.compile(".+?".join(re.escape(p) for p in parts), re.S)))
    return out


def _texts(fig) -> list[str]:
    from matplotlib.text import Text

    found = []
    for artist in fig.findobj(Text):
        text = artist.get_text().strip()
        if text:
            found.append(text)
            found += [line.strip() for line in text.splitlines() if line.strip()]
    return found


def _english_left(figures: dict, template) -> dict[str, list[str]]:
    patterns = _english_patterns(template)
    left: dict[str, list[str]] = {}
    for name, fig in figures.items():
        for text in _texts(fig):
            hits = [msgid for msgid, pat in patterns if pat.fullmatch(text)]
            if hits:
                left.setdefault(name, []).append(f"{text!r} (English: {hits[0]!r})")
    return left


def _interpretation(n: int = 240, k: int = 10, lang: str | None = None) -> Interpretation:
    images, _labels = synthetic_digits(n, 0)
    labels = torch.arange(n) % k
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(n, k, generator=gen)
    logits[torch.arange(n), labels] += torch.where(torch.rand(n, generator=gen) < 0.8, 4.0, -2.0)
    history = [
        {"epoch": 1, "train_loss": 0.5, "train_acc": 0.8, "val_loss": 0.6, "val_acc": 0.78, "best": True},
        {"epoch": 2, "train_loss": 0.3, "train_acc": 0.9, "val_loss": 0.4, "val_acc": 0.86, "best": True},
    ]
    from cnnlab.models import create_model

    model = create_model("lenet5", in_channels=1, num_classes=k, image_size=28)  # for attributions, embedding
    return Interpretation(logits, labels, torch.as_tensor(images)[:, None], [str(i) for i in range(k)],
                          history=history, lang=lang, model=model)


def _plot_methods(interp: Interpretation) -> list[str]:
    names = sorted(n for n in dir(interp) if n.startswith("plot_"))
    assert len(names) >= 7, names
    return names


def test_no_english_left_in_any_spanish_interpretation_figure(template):
    interp = _interpretation()
    figures = {name: getattr(interp, name)(lang="es") for name in _plot_methods(interp)}
    figures["plot_top_losses(heatmap=True)"] = interp.plot_top_losses(heatmap=True, lang="es")
    assert _english_left(figures, template) == {}
    # The check can fail: the same figures in English are full of catalog messages.
    english = {name: getattr(interp, name)(lang="en") for name in ("plot_confusion_matrix", "plot_curves")}
    assert set(_english_left(english, template)) == {"plot_confusion_matrix", "plot_curves"}


def test_no_english_left_in_the_command_lines_figures(tiny_trained_run, tiny_mnist, tmp_path, monkeypatch, template):
    """What `cnnlab analyze`, `explain`, `compare`, `show-data` and `train`'s report draw, in Spanish."""
    from cnnlab.analysis import interpret, report

    figures: dict[str, object] = {}

    def keep(fig, path, *args, **kwargs):
        figures[Path(path).name + f"#{len(figures)}"] = fig
        return b""

    for module in (interpret, report):
        monkeypatch.setattr(module, "save_figure", keep)
    with use_language("es"):
        interp = report.interpret_run(tiny_trained_run, data_dir=str(tiny_mnist))
        result = interp.save(tmp_path / "analysis")
        report.visualize_run(tiny_trained_run, tmp_path / "explain", data_dir=str(tiny_mnist))
        report.compare_runs(tiny_trained_run, tiny_trained_run, out=tmp_path / "compare", data_dir=str(tiny_mnist))
        report.show_data("mnist", out=tmp_path / "samples.png", data_dir=str(tiny_mnist), download=False)
        report.write_report(tmp_path, interp.report)
    assert len(figures) >= 10, sorted(figures)
    assert _english_left(figures, template) == {}
    page = result.files["html"].read_text()
    assert '<html lang="es">' in page and "Análisis de errores" in page
    assert _english_in_page(page, template) == []


def _english_in_page(page: str, template) -> list[str]:
    """Text nodes of an HTML page (outside <pre>, which holds the run's config) that are English messages."""
    from html.parser import HTMLParser

    class Texts(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.pre, self.found = 0, []

        def handle_starttag(self, tag, attrs):
            self.pre += tag == "pre"

        def handle_endtag(self, tag):
            self.pre -= tag == "pre"

        def handle_data(self, data):
            if not self.pre and data.strip():
                self.found.append(data.strip())

    parser = Texts()
    parser.feed(page)
    patterns = _english_patterns(template)
    return [text for text in parser.found if any(p.fullmatch(text) for _m, p in patterns)]


# --- numbers and tables --------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CNNLAB_LANG", "LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE")}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, **extra}


def test_layers_prints_spanish_numbers_under_a_spanish_locale():
    cmd = [sys.executable, "-m", "cnnlab", "layers", "lenet5"]
    es = subprocess.run(cmd, capture_output=True, text=True, env=_env(LANG="es_ES.UTF-8"), check=True).stdout
    assert "61.706" in es and "parámetros" in es and "61,706" not in es
    en = subprocess.run(cmd, capture_output=True, text=True, env=_env(LANG="C.UTF-8"), check=True).stdout
    assert "61,706" in en and "params" in en
    # CNNLAB_LANG wins over the locale.
    forced = subprocess.run(cmd, capture_output=True, text=True, env=_env(LANG="es_ES.UTF-8", CNNLAB_LANG="en"),
                            check=True).stdout
    assert forced == en


def test_spanish_number_formats():
    with use_language("es"):
        assert format_int(61706) == "61.706"
        assert format_int(1797) == "1.797"
        assert format_float(0.98765, 4) == "0,9877"
        assert format_percent(0.987) == "98,70\u00a0%"
    assert (format_int(61706), format_float(0.98765, 4), format_percent(0.987)) == ("61,706", "0.9877", "98.70%")


def test_english_output_is_byte_for_byte_what_it_was():
    from cnnlab.engine.train import format_epoch

    row = {"epoch": 3, "train_loss": 0.123456, "train_acc": 0.98765, "val_loss": 0.2, "val_acc": 0.95,
           "epoch_time_s": 12.34, "best": True}
    with use_language("en"):
        assert format_epoch(row, 10) == ("epoch  3/10  train loss 0.1235 acc 98.77%  val loss 0.2000 acc 95.00%  "
                                         "12.3s  * best")
        report = _interpretation().report
        assert str(report) == (f"test accuracy {report.accuracy:.4f}  loss {report.loss:.4f}  "
                               f"({report.num_images} images)\n\n{report.text}")
    with use_language("es"):
        line = format_epoch(row, 10)
    assert line == ("época  3/10  entrenamiento: pérdida 0,1235 exactitud 98,77\u00a0%  validación: pérdida 0,2000 "
                    "exactitud 95,00\u00a0%  12,3 s  * mejor")


def test_the_spanish_test_report_keeps_sklearns_text_and_prints_spanish():
    interp = _interpretation(lang="es")
    report = interp.report
    assert report.text.splitlines()[0].split() == ["precision", "recall", "f1-score", "support"]  # programs read it
    report.lang = "es"
    shown = str(report)
    assert shown.startswith("exactitud en test 0,")
    head = shown.splitlines()[2].split()
    assert head == ["precisión", "exhaustividad", "valor", "F1", "soporte"]
    assert "media ponderada" in shown and "0." not in shown.split("\n\n", 1)[1]
    assert "real -> predicha" in interp.most_confused_text(3)


# --- the setting: explicit, then CNNLAB_LANG, then the locale; never process-global --------------


def test_resolution_order(monkeypatch):
    for var in ("CNNLAB_LANG", "LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE"):
        monkeypatch.delenv(var, raising=False)
    assert language() == "en"
    monkeypatch.setenv("LANG", "es_ES.UTF-8")
    assert language() == "es"
    monkeypatch.setenv("CNNLAB_LANG", "en")
    assert language() == "en"
    with use_language("es"):
        assert language() == "es"
    assert language() == "en"
    monkeypatch.setenv("LANG", "fr_FR.UTF-8")
    monkeypatch.delenv("CNNLAB_LANG")
    assert language() == "en"  # a language cnnlab does not speak falls back to English
    with pytest.raises(i18n.ConfigError, match="unknown language 'xx'"):
        _interpretation(lang="xx")


def test_one_calls_language_does_not_leak_into_the_next_call():
    interp = _interpretation()
    before = language()
    es = interp.plot_confusion_matrix(lang="es")
    en = interp.plot_confusion_matrix(lang="en")
    titles = lambda fig: {ax.get_title() for ax in fig.axes}  # noqa: E731
    assert any("Matriz de confusión" in t for t in titles(es))
    assert any("Test confusion matrix" in t for t in titles(en))
    assert language() == before


def test_threads_keep_their_own_language():
    """Two notebook calls at once in two threads, one Spanish, one English: each keeps its own."""
    barrier = threading.Barrier(2)
    seen: dict[str, set] = {"es": set(), "en": set()}

    def work(lang: str) -> None:
        with use_language(lang):
            barrier.wait()
            for _i in range(200):
                seen[lang].add((_("Test confusion matrix"), format_int(61706)))
            barrier.wait()

    threads = [threading.Thread(target=work, args=(lang,)) for lang in ("es", "en")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"es": {("Matriz de confusión en test", "61.706")}, "en": {("Test confusion matrix", "61,706")}}
    assert threading.current_thread() is threading.main_thread() and i18n._current.get() is None


def test_the_notebook_api_speaks_the_language_it_is_given(tiny_mnist, tmp_path):
    """cnnlab.train(..., lang="es"): a Spanish log, report and interpretation; the next call is English."""
    import cnnlab

    lines: list[str] = []
    run = cnnlab.train("lenet5", "mnist", data_dir=tiny_mnist, run_dir=tmp_path / "es", download=False, epochs=1,
                       threads=1, val_size=100, log=lines.append, lang="es")
    assert any(re.match(r"época 1/1  .*validación: pérdida \d+,\d{4} exactitud \d+,\d\d\u00a0%", line)
               for line in lines), lines
    assert re.match(r"exactitud en test \d,\d{4}  pérdida \d+,\d{4}", str(run.test))
    interp = run.interpret()
    assert interp.lang == "es"
    assert {ax.get_title() for ax in interp.plot_curves().axes} == {"Pérdida por época", "Exactitud por época"}
    assert {ax.get_title() for ax in run.interpret(lang="en").plot_curves().axes} == {"Loss per epoch",
                                                                                       "Accuracy per epoch"}
    assert run.interpret() is interp  # asking for English once changed nothing for the next call
    assert str(cnnlab.summarize("lenet5", lang="es")).splitlines()[-2].split()[-2:] == ["61.706", "416.520"]
    assert language() == "en" and str(cnnlab.summarize("lenet5")).splitlines()[-2].split()[-2:] == ["61,706",
                                                                                                    "416,520"]


def test_the_draw_page_follows_lang_then_accept_language(tiny_trained_run, monkeypatch):
    pytest.importorskip("fastapi")
    monkeypatch.delenv("CNNLAB_LANG")  # the server chose nothing: the browser decides
    from fastapi.testclient import TestClient

    from cnnlab.apps.serve import create_app

    original = (ROOT / "src/cnnlab/web/index.html").read_text()
    client = TestClient(create_app(tiny_trained_run))
    es = client.get("/", headers={"Accept-Language": "es-ES,es;q=0.9,en;q=0.5"})
    assert es.headers["content-language"] == "es" and '<html lang="es">' in es.text
    assert "<h1 data-i18n>Dibuja un dígito</h1>" in es.text and '"{percent} sure": "seguro al {percent}"' in es.text
    assert _english_in_page(es.text, _tool().extract()) == []
    en = client.get("/?lang=en", headers={"Accept-Language": "es"}).text  # ?lang= beats the browser
    block = re.search(r'  <script id="cnnlab-catalog" type="application/json">\{\}</script>\n', en)
    assert block and en.replace(block.group(0), "") == original  # English: the page as it was, byte for byte
    assert client.get("/", headers={"Accept-Language": "fr-FR,fr;q=0.9"}).headers["content-language"] == "en"
    with use_language("es"):  # `cnnlab --lang es serve`: the server's choice beats the browser's
        forced = TestClient(create_app(tiny_trained_run))
    assert forced.get("/", headers={"Accept-Language": "en-US"}).headers["content-language"] == "es"


def test_the_servers_error_details_follow_the_requests_language(tiny_trained_run, monkeypatch):
    """/api/predict's JSON ``detail`` is written in the request's language (?lang=, then Accept-Language),
    from the endpoint (run in a worker thread) and from the limits' middleware alike; English is unchanged."""
    pytest.importorskip("fastapi")
    monkeypatch.delenv("CNNLAB_LANG")
    from fastapi.testclient import TestClient

    from cnnlab.apps.serve import create_app

    client = TestClient(create_app(tiny_trained_run, max_bytes=64))
    png = {"Content-Type": "image/png"}
    es = client.post("/api/predict", content=b"not a png", headers={**png, "Accept-Language": "es-ES,es;q=0.9"})
    assert es.status_code == 400 and es.json()["detail"] == "no es una imagen: ningún formato de imagen reconoce estos bytes"
    en = client.post("/api/predict?lang=en", content=b"not a png", headers={**png, "Accept-Language": "es"})
    assert en.json()["detail"] == "not an image: no image format recognises these bytes"
    big = client.post("/api/predict?lang=es", content=b"x" * 100, headers=png)
    assert big.status_code == 413 and big.json()["detail"].startswith("el cuerpo de la petición, 100 bytes, supera")
    assert client.post("/api/predict", content=b"x" * 100, headers=png).json()["detail"] == (
        "the request body 100 bytes is larger than this server's limit of 64 bytes")


def test_library_errors_and_front_door_hints_in_spanish(tmp_path):
    """Checkpoint, run-folder and output errors, and the hint the notebook API adds, follow the language."""
    from cnnlab.apps.api import python_hint
    from cnnlab.core.errors import CheckpointError, OutputExistsError
    from cnnlab.core.files import check_output_free
    from cnnlab.engine.checkpoint import load_checkpoint

    taken = tmp_path / "out.png"
    taken.write_bytes(b"mine")
    with use_language("es"), pytest.raises(CheckpointError, match="^el punto de control .* no existe$"):
        load_checkpoint(tmp_path / "missing.pt")
    with use_language("es"), pytest.raises(OutputExistsError) as es:
        check_output_free(taken, overwrite=False)
    assert str(es.value) == f"el fichero de salida {taken} ya existe"
    with use_language("es"):
        assert python_hint(es.value) == "pasa overwrite=True para reemplazarlo"
    with pytest.raises(OutputExistsError) as en:
        check_output_free(taken, overwrite=False)
    assert str(en.value) == f"output file {taken} already exists" and python_hint(en.value) == "pass overwrite=True to replace it"


def test_the_command_lines_lang_option(tiny_mnist, tmp_path):
    """`cnnlab --lang es ...`: Spanish for that command only; an unknown language is a usage error."""
    from click.testing import CliRunner

    from cnnlab.apps.cli import cli

    result = CliRunner().invoke(cli, ["--lang", "es", "layers", "lenet5"])
    assert result.exit_code == 0 and "61.706" in result.output, result.output
    assert language() == "en"  # the command's language ended with it
    assert "61,706" in CliRunner().invoke(cli, ["layers", "lenet5"]).output
    bad = CliRunner().invoke(cli, ["--lang", "xx", "layers", "lenet5"])
    assert bad.exit_code == 2 and "choose one of en, es" in bad.output
    trained = CliRunner().invoke(cli, ["--lang", "es", "train", "--data-dir", str(tiny_mnist), "--no-download",
                                       "--epochs", "1", "--val-size", "100", "--threads", "1",
                                       "--run-dir", str(tmp_path / "run")])
    assert trained.exit_code == 0, trained.output
    out = trained.output
    assert "época 1/1" in out and "conjunto de test:" in out and "exhaustividad" in out and "exactitud en test" in out


def test_errors_speak_the_commands_language():
    """A library error raised inside `cnnlab --lang es ...` is one Spanish line with the same exit code."""
    from click.testing import CliRunner

    from cnnlab.apps.cli import cli

    es = CliRunner().invoke(cli, ["--lang", "es", "layers", "lenet5", "--input", "1x28"])
    en = CliRunner().invoke(cli, ["layers", "lenet5", "--input", "1x28"])
    assert es.exit_code == en.exit_code != 0
    assert es.output.strip() == "error: la forma de la entrada debe ser como 1x28x28 (canales x alto x ancho); se dio '1x28'"
    assert en.output.strip() == "error: input shape must look like 1x28x28 (channels x height x width), got '1x28'"


def test_the_catalog_script_checks_from_the_command_line():
    """`python scripts/i18n.py --check` is what a contributor (and CI) runs: it passes on this tree."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "i18n.py"), "--check"], capture_output=True,
                          text=True, env=_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("catalogs up to date")
