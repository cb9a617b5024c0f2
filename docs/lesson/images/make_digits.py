"""Make the photo-like digits the lesson notebooks classify ("your own picture").

They stand in for a student's phone photo of a digit written on paper: pen strokes
drawn by hand-written paths (not a font, not MNIST), on an unevenly lit paper with
grain, a slight tilt and blur, saved as JPEG. Two are different on purpose:

* ``digit_7_transparent.png``: black ink on a transparent background (RGBA), the
  case where a naive ``convert("L")`` turns the whole picture black;
* ``digit_3_chalk.jpg``: light chalk on a dark board, which must *not* be inverted.

Run from anywhere; it rewrites the images beside this file (only those it writes), the
same pictures each time (seeded; byte for byte with the same Pillow)::

    python docs/lesson/images/make_digits.py
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent


def _circle(cx: float, cy: float, rx: float, ry: float, start: float = 0.0, turns: float = 1.0, n: int = 40):
    t = start + np.linspace(0, 2 * np.pi * turns, n)
    return list(zip(cx + rx * np.sin(t), cy - ry * np.cos(t)))


# Each digit: strokes, each a list of (x, y) points in a unit square (y downwards).
STROKES = {
    0: [_circle(0.5, 0.5, 0.24, 0.38, turns=1.05)],
    1: [[(0.36, 0.26), (0.55, 0.1), (0.53, 0.9)]],
    2: [[(0.26, 0.3), (0.34, 0.15), (0.52, 0.1), (0.7, 0.2), (0.7, 0.4), (0.45, 0.65), (0.25, 0.88), (0.8, 0.86)]],
    3: [[(0.27, 0.16), (0.5, 0.08), (0.7, 0.2), (0.66, 0.38), (0.42, 0.48)],
        [(0.42, 0.48), (0.68, 0.56), (0.74, 0.74), (0.58, 0.9), (0.26, 0.84)]],
    4: [[(0.58, 0.1), (0.22, 0.62), (0.82, 0.62)], [(0.64, 0.35), (0.62, 0.92)]],
    5: [[(0.74, 0.12), (0.34, 0.12), (0.29, 0.46), (0.54, 0.4), (0.72, 0.56), (0.72, 0.78), (0.52, 0.9), (0.26, 0.82)]],
    6: [[(0.66, 0.1), (0.42, 0.28), (0.3, 0.55), (0.33, 0.8), (0.52, 0.91), (0.7, 0.76), (0.64, 0.56), (0.45, 0.52), (0.31, 0.64)]],
    7: [[(0.22, 0.14), (0.78, 0.12), (0.44, 0.9)], [(0.38, 0.5), (0.7, 0.5)]],
    8: [_circle(0.5, 0.3, 0.17, 0.19, start=np.pi, turns=1.0),
        _circle(0.5, 0.69, 0.22, 0.21, start=0.0, turns=1.0)],
    9: [_circle(0.5, 0.32, 0.2, 0.2, start=np.pi / 2, turns=1.0), [(0.7, 0.32), (0.66, 0.6), (0.6, 0.9)]],
}


def _smooth(points: list[tuple[float, float]], per_segment: int = 12) -> list[tuple[float, float]]:
    """Catmull-Rom through the points: a pen line, not a polygon."""
    p = np.asarray(points, dtype=float)
    p = np.vstack([p[0], p, p[-1]])
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        for t in np.linspace(0, 1, per_segment, endpoint=False):
            t2, t3 = t * t, t * t * t
            out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                              + (-p0 + 3 * p1 - 3 * p2 + p3) * t3))
    out.append(p[-2])
    return [tuple(q) for q in out]


def ink_mask(digit: int, rng: np.random.Generator, size: int, width: float) -> Image.Image:
    """The digit's strokes as an 8-bit mask (255 = ink), jittered like a hand."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    scale, margin = size * 0.62, size * 0.19
    for stroke in STROKES[digit]:
        pts = np.asarray(stroke) + rng.normal(0, 0.012, (len(stroke), 2))
        xy = [(margin + x * scale, margin + y * scale) for x, y in _smooth(pts.tolist())]
        draw.line(xy, fill=255, width=int(width), joint="curve")
        r = width / 2
        for x, y in (xy[0], xy[-1]):  # round pen ends
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return mask.rotate(float(rng.uniform(-8, 8)), resample=Image.Resampling.BICUBIC)


def paper(rng: np.random.Generator, size: int, level: float, light: float) -> np.ndarray:
    """Unevenly lit paper with grain, as float 0..255."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * np.pi)
    gradient = (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)) * light
    return level + gradient + rng.normal(0, 4.0, (size, size))


def photo(digit: int, seed: int, *, chalk: bool = False) -> Image.Image:
    rng = np.random.default_rng(seed)
    size = int(rng.integers(220, 420))
    mask = np.asarray(ink_mask(digit, rng, size, width=size * rng.uniform(0.045, 0.08)), dtype=float) / 255
    if chalk:  # light chalk on a dark green-grey board
        base = paper(rng, size, level=60, light=15)
        ink = 215 + rng.normal(0, 12, (size, size))
    else:  # dark pen on white-ish paper
        # Light varies by 10-25 grey levels across the page. cnnlab's preparation takes one
        # background level from the border, so much stronger gradients (40-60 levels) can leave
        # no ink above its noise threshold: a real limit of the preparation, not shown here.
        base = paper(rng, size, level=rng.uniform(175, 225), light=rng.uniform(10, 25))
        ink = rng.uniform(25, 70) + rng.normal(0, 6, (size, size))
    grey = base * (1 - mask) + ink * mask
    tint = np.array([1.0, 0.97, 0.9]) if not chalk else np.array([0.9, 1.0, 0.95])  # warm light / green board
    rgb = np.clip(grey[..., None] * tint, 0, 255).astype(np.uint8)
    return Image.fromarray(rgb, "RGB").filter(ImageFilter.GaussianBlur(size / 300))


def transparent(digit: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    mask = ink_mask(digit, rng, 256, width=14)
    rgba = np.zeros((256, 256, 4), dtype=np.uint8)  # black ink; alpha carries the strokes
    rgba[..., 3] = np.asarray(mask)
    return Image.fromarray(rgba, "RGBA")


def save_jpeg(img: Image.Image, path: Path) -> None:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    path.write_bytes(buf.getvalue())


def main() -> None:
    for old in HERE.glob("digit_*"):  # only the files this script writes
        old.unlink()
    for digit in range(10):
        save_jpeg(photo(digit, seed=100 + digit), HERE / f"digit_{digit}.jpg")
    save_jpeg(photo(3, seed=7, chalk=True), HERE / "digit_3_chalk.jpg")
    transparent(7, seed=8).save(HERE / "digit_7_transparent.png", optimize=True)
    print(f"wrote {len(list(HERE.glob('digit_*')))} images to {HERE}")


if __name__ == "__main__":
    main()
