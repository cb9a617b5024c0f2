"""The photo-like digits shipped with the lessons, and the step-by-step preparation shown on them.

Section 2.2 of the lessons shows cnnlab's own MNIST preparation one step at a time
(``cnnlab.data.images.mnist_steps``) on the photos in docs/lesson/images; what it shows must be
what ``cnnlab predict`` feeds the network, and the photos must be the ones their script makes.
"""
from __future__ import annotations

import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.data.images import MNIST_STEPS, decode_image, mnist_steps, preprocess

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "lesson" / "images"
PHOTOS = sorted(p for p in IMAGES.glob("digit_*") if p.suffix in (".jpg", ".png"))


def test_the_lessons_list_exactly_the_shipped_photos():
    names = {p.name for p in PHOTOS}
    assert len(names) == 12
    for nb in [*ROOT.glob("docs/lesson/en/*.py"), *ROOT.glob("docs/lesson/es/*.py")]:
        listed = nb.read_text(encoding="utf-8").split("DIGITS = [", 1)[1].split("]", 1)[0]
        assert {n.strip().strip('"') for n in listed.replace("\n", " ").split(",") if n.strip()} == names, nb


def test_make_digits_reproduces_the_shipped_photos(tmp_path):
    """The script is the source of the photos: run from a copy, it draws the same pictures.

    (Compared as pixels, not bytes: another libjpeg may encode the same pixels a little differently.)
    """
    shutil.copy(IMAGES / "make_digits.py", tmp_path / "make_digits.py")
    runpy.run_path(str(tmp_path / "make_digits.py"), run_name="__main__")
    made = sorted(p.name for p in tmp_path.glob("digit_*"))
    assert made == [p.name for p in PHOTOS]
    for photo in PHOTOS:
        a = np.asarray(Image.open(photo).convert("RGBA"), dtype=np.int16)
        b = np.asarray(Image.open(tmp_path / photo.name).convert("RGBA"), dtype=np.int16)
        assert a.shape == b.shape and np.abs(a - b).mean() < 1.0, photo.name


@pytest.mark.parametrize("photo", PHOTOS, ids=lambda p: p.name)
def test_mnist_steps_end_in_what_the_network_sees(photo):
    steps = mnist_steps(photo)
    keys = list(steps)
    assert keys == [k if k != "inverted" or "chalk" not in photo.name else "not_inverted" for k in MNIST_STEPS]
    want = preprocess(decode_image(photo), {"style": "mnist"})[0].numpy()
    assert np.array_equal(steps["centred"] / 255, want)
    h, w = steps["fitted"].shape
    assert max(h, w) == 20
    assert steps["stretched"][steps["stretched"] > 0].size > 0 and steps["stretched"].min() == 0


def test_a_transparent_png_is_ink_over_white_not_black():
    decoded = mnist_steps(IMAGES / "digit_7_transparent.png")["decoded"]
    assert np.median(decoded) == 255  # the transparent background became white paper
    assert decoded.min() < 50         # and the black ink is still there
