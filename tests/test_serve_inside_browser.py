"""End to end: headless Chromium draws on the `cnnlab serve` page and looks inside the network.

The layer panel (inside.js, from POST /api/explain) shows one map per channel of every conv and pool
layer, changes when the drawing does, opens a map's kernel arithmetic on a click, and the attribution
overlay toggles. See tests/browser.py for how Chromium is found (and when the test skips).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from browser import headless_chromium

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

ROWS = ("return [...document.querySelectorAll('#layers .layer')]"
        ".map(r => [r.dataset.name, r.dataset.kind, r.querySelectorAll('canvas.map').length])")
SIGNATURE = ("return [...document.querySelectorAll('#layers canvas.map')].map(c => c.toDataURL()).join('|')")
OPAQUE = ("const c = arguments[0]; const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
          "let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n;")


@pytest.fixture
def browser():
    yield from headless_chromium("1100,1400")


def _explains(driver) -> int:
    return int(driver.find_element("tag name", "body").get_attribute("data-explains") or 0)


def _wait_for_explain(driver, count: int, timeout: float = 60) -> None:
    """Until ``count`` answers were drawn and no newer one arrives for a moment: the page asks again at
    each drawing pause, so a panel read while a later answer lands would be re-rendered under the test."""
    import time

    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: _explains(d) >= count or d.find_element("id", "inside-status").text)
    assert not driver.find_element("id", "inside-status").text
    seen = _explains(driver)
    for _ in range(40):
        time.sleep(0.5)
        now = _explains(driver)
        if now == seen:
            return
        seen = now


def _stroke(driver, canvas, points: list[tuple[int, int]]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    actions = ActionChains(driver).move_to_element_with_offset(canvas, *points[0]).click_and_hold()
    for x, y in points[1:]:
        actions.move_to_element_with_offset(canvas, x, y)
    actions.release().perform()


def test_layer_panel_shows_every_channel_updates_and_explains(browser, tiny_trained_run: Path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    from cnnlab.apps.serve import BackgroundServer, create_app

    with BackgroundServer(create_app(tiny_trained_run)) as server:
        browser.get(server.url + "/")
        WebDriverWait(browser, 30).until(lambda d: "loading" not in d.find_element("id", "model-info").text)
        assert not browser.find_element("id", "inside").is_displayed()  # nothing drawn yet
        canvas = browser.find_element("id", "pad")
        _stroke(browser, canvas, [(-60, -80), (0, -80), (60, -80), (40, -30), (20, 20), (0, 70), (-10, 100)])
        _wait_for_explain(browser, 1)
        assert browser.find_element("id", "inside").is_displayed()

        # One map per channel of each conv and pool layer, in forward order.
        found = browser.execute_script(ROWS)  # read in one go: the panel is re-rendered as a whole
        assert found == [["features.0", "conv", 6], ["features.2", "pool", 6], ["features.3", "conv", 16],
                         ["features.5", "pool", 16]]

        # Drawing more changes the maps.
        before, done = browser.execute_script(SIGNATURE), _explains(browser)
        _stroke(browser, canvas, [(-90, 0), (-45, 10), (0, 20), (45, 30), (90, 40)])
        _wait_for_explain(browser, done + 1)
        WebDriverWait(browser, 30).until(lambda d: d.execute_script(SIGNATURE) != before)

        # The attribution overlay toggles, and paints something.
        overlay = browser.find_element("id", "attr-overlay")
        assert not overlay.is_displayed()
        browser.find_element("id", "attr-toggle").click()
        assert overlay.is_displayed() and browser.execute_script(OPAQUE, overlay) > 0
        assert "red" in browser.find_element("id", "attr-caption").text
        browser.find_element("id", "attr-toggle").click()
        assert not overlay.is_displayed()

        # Clicking a map of the second conv shows its kernel: one table per input channel, and the sum adds up.
        conv2 = browser.find_elements("css selector", "#layers .layer")[2]
        conv2.find_elements("css selector", "canvas.map")[3].click()
        kernel = browser.find_element("id", "kernel")
        assert len(kernel.find_elements("css selector", "table.arith")) == 6
        assert len(kernel.find_elements("css selector", "table.arith tr")) == 6 * 5
        head, total = kernel.find_element("css selector", "p").text, kernel.find_element("css selector", ".sum").text
        assert head.startswith("features.3, channel 3")
        assert re.search(r"= (-?[\d.]+)$", head).group(1) == re.search(r"= (-?[\d.]+)$", total).group(1)
        # A pooling map explains itself in words.
        browser.find_elements("css selector", "#layers .layer")[1].find_elements("css selector", "canvas.map")[0].click()
        assert "pooling" in browser.find_element("id", "kernel").text

        browser.find_element("id", "clear").click()
        assert not browser.find_element("id", "inside").is_displayed()
