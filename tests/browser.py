"""Headless Chromium for the browser tests (the analysis report, the serve page).

Uses Debian's ``chromium`` and ``chromium-driver`` through Selenium. Without them
a test skips with the reason, unless ``$CNNLAB_REQUIRE_BROWSER`` is set (CI sets
it once it has installed them), where it fails instead.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Iterator

import pytest


def missing(reason: str) -> None:
    if os.environ.get("CNNLAB_REQUIRE_BROWSER"):
        pytest.fail(f"browser test required ($CNNLAB_REQUIRE_BROWSER) but {reason}")
    pytest.skip(reason)


def find_browser() -> tuple[str, str]:
    """Paths of chromium and chromedriver, or skip/fail with the install command."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing("selenium is not installed (pip install -e '.[dev]')")
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver") if os.path.exists(p)), None)
    if browser is None or driver is None:
        missing("Debian's chromium and chromium-driver are not installed "
                "(apt-get install -y --no-install-recommends chromium chromium-driver)")
    return browser, driver


def headless_chromium(window_size: str) -> Iterator[Any]:
    """Yield a Selenium driver for a fresh headless Chromium profile; clean up afterwards."""
    chromium, chromedriver = find_browser()
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="cnnlab-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # Without the background-networking flags Chromium keeps dialling out, which a closed network refuses.
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", f"--window-size={window_size}"):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    except WebDriverException as exc:
        shutil.rmtree(profile, ignore_errors=True)
        missing(f"chromium did not start: {str(exc).strip().splitlines()[0]}")
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
