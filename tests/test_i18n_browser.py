"""The draw-a-digit page in Spanish, in headless Chromium: static text and what the JavaScript writes.

See tests/browser.py for how Chromium is found (and when the test skips).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from browser import headless_chromium

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")


@pytest.fixture
def browser():
    yield from headless_chromium("900,640")


def test_the_page_speaks_spanish_under_lang_es(browser, tiny_trained_run: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    from cnnlab.apps.serve import BackgroundServer, create_app

    with BackgroundServer(create_app(tiny_trained_run)) as server:
        browser.get(server.url + "/?lang=es")
        info = browser.find_element("id", "model-info")
        WebDriverWait(browser, 30).until(lambda d: "cargando" not in info.text and info.text)
        assert browser.find_element("tag name", "html").get_attribute("lang") == "es"
        assert browser.title == "cnnlab — dibuja un dígito"
        assert browser.find_element("tag name", "h1").text == "Dibuja un dígito"
        assert browser.find_element("id", "clear").text == "Borrar"
        # Written by the JavaScript from /api/model: Spanish words and Spanish numbers.
        assert "entrenado con mnist" in info.text and "época 2" in info.text, info.text
        assert re.search(r"exactitud en test \d+,\d\d[\s\u00a0]%", info.text), info.text

        canvas = browser.find_element("id", "pad")
        actions = ActionChains(browser).move_to_element_with_offset(canvas, -60, -80).click_and_hold()
        for x, y in [(20, -80), (60, -80), (20, 20), (-10, 100)]:
            actions.move_to_element_with_offset(canvas, x, y)
        actions.release().perform()
        WebDriverWait(browser, 60).until(lambda d: d.find_element("id", "confidence").text
                                         or d.find_element("id", "status").text)
        assert not browser.find_element("id", "status").text
        assert re.fullmatch(r"seguro al \d+,\d[\s\u00a0]%", browser.find_element("id", "confidence").text)
        for bar in browser.find_elements("css selector", "#bars .pct"):
            assert re.fullmatch(r"\d+,\d[\s\u00a0]%", bar.text), bar.text

        # The same server answers English to a page that asks for it.
        browser.get(server.url + "/?lang=en")
        assert browser.find_element("tag name", "h1").text == "Draw a digit"
