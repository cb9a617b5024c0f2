"""The docs site builds and works in a browser: every page loads, no internal link is broken,
and the lesson pages show their figures.

The site is the one `python -m sphinx -W --keep-going -c docs . docs/_build/html` builds (README,
"Documentation"). With ``$CNNLAB_DOCS_SITE`` (CI builds the site first and sets it) the test opens
that folder; otherwise it builds the site itself into a temporary folder, warnings as errors, with
the lessons executed in quick mode (a few minutes). Opened in headless Chromium (tests/browser.py).
"""
from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from browser import headless_chromium
from conftest import real_mnist_dir

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ("docs/lesson/en/cnn_lesson.html", "docs/lesson/es/leccion_cnn.html")
BUILD = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-c", "docs", "."]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("CNNLAB_DOCS_SITE")
    if given:
        path = Path(given)
        assert (path / "index.html").is_file(), f"$CNNLAB_DOCS_SITE={given} holds no built site"
        return path
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_nb")
    if real_mnist_dir() is None:
        pytest.skip("real MNIST not found: the lessons cannot be executed")
    out = tmp_path_factory.mktemp("site") / "html"
    env = {**os.environ, "CNNLAB_LESSON_QUICK": "1", "CNNLAB_DATA_DIR": str(real_mnist_dir()),
           "CNNLAB_LESSON_RUNS": str(out.parent / "runs"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*BUILD, str(out), "-d", str(out.parent / "doctrees")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, f"the docs build failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return out


@pytest.fixture(scope="module")
def browser():
    yield from headless_chromium("1280,1600")


def pages(site: Path) -> list[Path]:
    skip = {"genindex.html", "search.html"}
    return sorted(p for p in site.rglob("*.html") if p.name not in skip and "_modules" not in p.parts)


def ids_in(page: Path) -> set[str]:
    return {html.unescape(m) for m in re.findall(r'\bid="([^"]+)"', page.read_text(encoding="utf-8"))}


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_every_page_loads_links_resolve_and_lessons_show_their_figures(site: Path, browser) -> None:
    found = pages(site)
    expected = {"docs/site/index.html", "README.html", "ARCHITECTURE.html", "docs/site/api.html",
                "docs/site/cli-reference.html", "docs/training.html", *LESSONS}
    assert expected <= {p.relative_to(site).as_posix() for p in found}
    broken: list[str] = []
    ids: dict[Path, set[str]] = {}
    for page in found:
        browser.get(page.as_uri())
        title = browser.title
        assert title and "404" not in title, f"{page}: no title"
        links = browser.execute_script("return Array.from(document.querySelectorAll('a[href]'), a => a.href)")
        for href in links:
            url = urlparse(href)
            if url.scheme != "file":
                continue
            target = Path(unquote(url.path))
            if not target.exists():
                broken.append(f"{page.relative_to(site)} -> {href}")
            elif url.fragment and target.suffix == ".html":
                if target not in ids:
                    ids[target] = ids_in(target)
                if unquote(url.fragment) not in ids[target]:
                    broken.append(f"{page.relative_to(site)} -> {href} (no such anchor)")
        unloaded = browser.execute_script(
            "return Array.from(document.images).filter(i => i.src.startsWith('file:'))"
            ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")  # remote badges: offline here
        assert not unloaded, f"{page.relative_to(site)}: images that did not load: {unloaded}"
    assert not broken, "broken internal links:\n" + "\n".join(broken[:30])

    for lesson in LESSONS:
        browser.get((site / lesson).as_uri())
        figures = browser.execute_script(
            "return Array.from(document.querySelectorAll('.cell_output img'))"
            ".filter(i => i.complete && i.naturalWidth > 100).length")
        assert figures >= 13, f"{lesson} shows {figures} figures; the executed lesson draws 13"
        folded = browser.execute_script("return Array.from(document.querySelectorAll('details')).filter(d => !d.open).length")
        assert folded >= 5, f"{lesson}: the exercises' solutions are not folded away ({folded} <details>)"
        errors = browser.execute_script("return document.querySelectorAll('.output.traceback, .output.stderr .ansi-red-fg').length")
        assert errors == 0, f"{lesson} shows an error output"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_api_and_cli_references_come_from_the_code(site: Path) -> None:
    """The API page documents the public names from their docstrings; the CLI page every click command."""
    from cnnlab.apps.cli import cli

    api = ids_in(site / "docs" / "site" / "api.html")
    for name in ("train", "load", "interpret", "Interpretation", "Predictor", "TrainResult", "summarize",
                 "Interpretation.plot_misclassified", "Predictor.predict"):
        assert f"cnnlab.{name}" in api, f"the API reference does not document cnnlab.{name}"
    commands = ids_in(site / "docs" / "site" / "cli-reference.html")
    missing = [c for c in cli.commands if f"cnnlab-{c}" not in commands]
    assert not missing, f"the CLI reference lacks: {missing}"
