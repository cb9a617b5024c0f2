"""The analysis report (RUN/analysis/index.html) renders in a real browser: headless Chromium.

Uses Debian's ``chromium`` and ``chromium-driver`` through Selenium. Without them
the test skips with the reason, unless ``$CNNLAB_REQUIRE_BROWSER`` is set (CI sets
it once it has installed them), where it fails instead. Set
``$CNNLAB_SCREENSHOT_DIR`` to keep the screenshot.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _missing(reason: str) -> None:
    if os.environ.get("CNNLAB_REQUIRE_BROWSER"):
        pytest.fail(f"browser test required ($CNNLAB_REQUIRE_BROWSER) but {reason}")
    pytest.skip(reason)


def _find_browser() -> tuple[str, str]:
    try:
        import selenium  # noqa: F401
    except ImportError:
        _missing("selenium is not installed (pip install -e '.[dev]')")
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver") if os.path.exists(p)), None)
    if browser is None or driver is None:
        _missing("Debian's chromium and chromium-driver are not installed "
                 "(apt-get install -y --no-install-recommends chromium chromium-driver)")
    return browser, driver


@pytest.fixture(scope="module")
def report(tiny_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cnnlab.analysis import analyze_run
    from cnnlab.config import Config
    from cnnlab.train import train

    cfg = Config().override("data", data_dir=str(tiny_mnist), val_size=100, download=False)
    cfg = cfg.override("train", epochs=2, progress=False, threads=1)
    run = tmp_path_factory.mktemp("report-browser") / "run"
    train(cfg, run, log=lambda line: None)
    return analyze_run(run, per_class=5, top_k=8).files["html"]


@pytest.fixture
def browser():
    chromium, chromedriver = _find_browser()
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="cnnlab-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1280,2000"):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    except WebDriverException as exc:
        shutil.rmtree(profile, ignore_errors=True)
        _missing(f"chromium did not start: {str(exc).strip().splitlines()[0]}")
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


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
