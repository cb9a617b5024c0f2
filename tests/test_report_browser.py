"""The analysis report (RUN/analysis/index.html) renders in a real browser: headless Chromium.

See tests/browser.py for how Chromium is found (and when the test skips). Set
``$CNNLAB_SCREENSHOT_DIR`` to keep the screenshot.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from browser import headless_chromium
from conftest import train_tiny_run


@pytest.fixture(scope="module")
def report(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cnnlab.analysis.report import interpret_run

    run = train_tiny_run(tiny_mnist, tmp_path_factory.mktemp("report-browser") / "run")
    return interpret_run(run).save(per_class=5, top_k=8).files["html"]


@pytest.fixture
def browser():
    yield from headless_chromium("1280,2000")


def test_html_report_renders_with_all_images_in_headless_chromium(report: Path, browser, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(report.resolve().as_uri())
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return Array.from(document.images).every(i => i.complete)"))
    assert "Error analysis" in browser.title or "analysis" in browser.title
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.id, i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width])")
    ids = {i[0] for i in images}
    assert {"fig-confusion_matrix", "fig-misclassified", "fig-top_losses", "fig-per_class", "fig-reliability",
            "fig-confidence", "fig-training_curves"} <= ids, ids
    for img_id, w, h, shown in images:
        assert w > 0 and h > 0, f"{img_id} did not load"
        assert shown > 100, f"{img_id} is not displayed"
    text = browser.find_element("tag name", "body").text
    assert "test accuracy" in text.lower() and "Most confused pairs" in text and "precision" in text
    assert "optim" in text  # the run's config is on the page

    # The screenshot shows the page: not one flat colour.
    shot = Path(os.environ.get("CNNLAB_SCREENSHOT_DIR") or tmp_path) / "analysis_report.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(shot))
    with Image.open(shot) as im:
        rgb = np.asarray(im.convert("RGB"))
    assert rgb.shape[0] > 500 and rgb.shape[1] > 500
    assert rgb.std() > 20
    # The embedded figures are scrolled into view and decoded, too.
    browser.execute_script("document.getElementById('misclassified').scrollIntoView()")
    assert browser.execute_script(
        "const i = document.getElementById('fig-misclassified'); return i.complete && i.naturalWidth > 0")
