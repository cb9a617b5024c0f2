"""End to end: headless Chromium draws a digit on the `cnnlab serve` page and reads the prediction.

See tests/browser.py for how Chromium is found (and when the test skips).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from browser import headless_chromium
from conftest import synthetic_digits

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

SCREENSHOT_ENV = "CNNLAB_SCREENSHOT_DIR"  # set it to keep the screenshot after the test


@pytest.fixture
def browser():
    yield from headless_chromium("900,640")


def _wait_for_prediction(driver, count: int, timeout: float = 60) -> str:
    """Wait until the page has shown at least ``count`` predictions; return the label."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(
        lambda d: int(d.find_element("tag name", "body").get_attribute("data-predictions") or 0) >= count
        or d.find_element("id", "status").text)
    status = driver.find_element("id", "status").text
    assert not status, f"the page shows an error: {status}"
    return driver.find_element("id", "label").text


def _stroke(actions, canvas, points: list[tuple[int, int]]) -> None:
    """Press at the first point (offsets from the canvas centre), move through the rest, release."""
    actions.move_to_element_with_offset(canvas, *points[0]).click_and_hold()
    for x, y in points[1:]:
        actions.move_to_element_with_offset(canvas, x, y)
    actions.release().perform()


def test_draw_a_digit_and_see_the_prediction(browser, tiny_trained_run: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.support.ui import WebDriverWait

    from cnnlab.apps.serve import BackgroundServer, create_app

    classes = [str(i) for i in range(10)]
    with BackgroundServer(create_app(tiny_trained_run)) as server:
        browser.get(server.url + "/")
        WebDriverWait(browser, 30).until(lambda d: "loading" not in d.find_element("id", "model-info").text)
        canvas = browser.find_element("id", "pad")

        # Mouse: a "7" (a bar, then a diagonal down), with the mouse held down all along.
        seven = [(-60, -80), (-20, -80), (20, -80), (60, -80), (40, -30), (20, 20), (0, 70), (-10, 100)]
        _stroke(ActionChains(browser), canvas, seven)
        label = _wait_for_prediction(browser, 1)
        assert label in classes
        bars = browser.find_elements("css selector", "#bars li")
        assert len(bars) == 3 and bars[0].text.startswith(label)
        seen = browser.find_element("id", "seen")
        assert seen.get_attribute("src").startswith("data:image/png;base64,")
        assert browser.execute_script("return arguments[0].naturalWidth", seen) == 28
        shot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path) / "serve-browser.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(shot))
        assert Image.open(shot).size[0] > 0

        # Clear empties the canvas and the result.
        browser.find_element("id", "clear").click()
        assert browser.find_element("id", "label").text == "–"
        assert browser.find_elements("css selector", "#bars li") == []
        ink = browser.execute_script(
            "const c = arguments[0]; const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i]; return s;", canvas)
        assert ink == 0

        # Live: with the button still held mid-stroke, the bars already update (debounced requests).
        done = int(browser.find_element("tag name", "body").get_attribute("data-predictions"))
        held = ActionChains(browser).move_to_element_with_offset(canvas, -40, -60).click_and_hold()
        for x, y in ((-20, -20), (0, 20), (10, 60)):
            held.move_to_element_with_offset(canvas, x, y)
        held.perform()
        assert _wait_for_prediction(browser, done + 1) in classes
        ActionChains(browser).move_to_element_with_offset(canvas, 20, 90).release().perform()
        browser.find_element("id", "clear").click()

        # Touch: a finger draws a "1" through pointer events (touch-action: none keeps the page still).
        done = int(browser.find_element("tag name", "body").get_attribute("data-predictions"))
        finger = PointerInput(interaction.POINTER_TOUCH, "finger")
        touch = ActionBuilder(browser, mouse=finger)
        touch.pointer_action.move_to(canvas, 0, -90).pointer_down()
        for y in range(-60, 100, 30):
            touch.pointer_action.move_to(canvas, 0, y)
        touch.pointer_action.pointer_up()
        touch.perform()
        assert _wait_for_prediction(browser, done + 1) in classes

        # Upload: an image file through the upload button (multipart/form-data).
        x, _ = synthetic_digits(1, seed=3)
        upload = tmp_path / "digit.png"
        Image.fromarray(x[0]).resize((112, 112)).save(upload)
        done = int(browser.find_element("tag name", "body").get_attribute("data-predictions"))
        browser.find_element("id", "upload").send_keys(str(upload))
        assert _wait_for_prediction(browser, done + 1) in classes
        assert browser.find_element("id", "upload-preview").is_displayed()

        # A file that is not an image: the page shows the server's error, and keeps working.
        junk = tmp_path / "notes.png"
        junk.write_bytes(b"not an image")
        browser.find_element("id", "upload").send_keys(str(junk))
        WebDriverWait(browser, 30).until(lambda d: d.find_element("id", "status").text)
        assert "not an image" in browser.find_element("id", "status").text
        browser.find_element("id", "clear").click()
        done = int(browser.find_element("tag name", "body").get_attribute("data-predictions"))
        _stroke(ActionChains(browser), canvas, seven)
        assert _wait_for_prediction(browser, done + 1) in classes
