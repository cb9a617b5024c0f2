"""Turn any image a user has into exactly the tensor a trained model expects.

Two steps, both usable on their own:

* :func:`decode_image` reads bytes, a path or a PIL image, recognises the format by
  content (never by extension), refuses decompression bombs, and returns a loaded
  8-bit ``L`` or ``RGB`` image: 16-bit and float pixels are scaled down, palettes
  expanded, EXIF rotation applied, transparency composited onto a background.
* :func:`preprocess` applies the preprocessing stored with the model
  (``payload["data"]["preprocess"]``) and returns the (C, H, W) float32 tensor
  the network sees.

Styles of ``spec``:

``{"style": "mnist", "scale": 255.0}``
    How MNIST itself was built: grayscale; dark-on-light images are inverted
    (MNIST is light ink on black); the background level is subtracted and the
    ink stretched to full contrast; crop to the ink's bounding box; scale to
    fit a 20x20 box keeping the aspect ratio; paste into 28x28 so that the
    centre of mass lands on the centre (pixel 14, as in MNIST; integer shift).
    A digit already in MNIST form (a PNG of an MNIST test image) passes
    through unchanged, bit for bit.
``{"style": "resize", "size": S, "channels": C, "mean": [...], "std": [...], "ink": ...}``
    Other datasets (see :mod:`cnnlab.data.sets`): resize to S x S as their
    training images were, invert when ``ink`` says the training images had the
    other polarity, divide by ``scale`` (default 255), normalise per channel.

Both accept optional ``image_size`` (``size``) and ``channels`` (filled in from the
checkpoint by :func:`cnnlab.service.predictor.stored_spec`) and ``mean``/``std``.

Also here, so that every front door shares them: :func:`find_images` (image files in folders,
recognised by the same formats :func:`decode_image` reads), :func:`pixels_to_uint8` (the one
policy for pixels given as arrays: 0..255 integers or 0..1 floats, anything else refused) and
:data:`MAX_PIXELS` (the one pixel limit; the server uses it too).
"""
from __future__ import annotations

import io
import math
import os
import stat
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnlab.core.errors import CnnlabError, ImageError, first_line
from cnnlab.core.i18n import _

#: Formats recognised by content. Deliberately a closed list: PIL's other plugins
#: include ones that shell out (EPS via Ghostscript) or are rarely fuzzed.
FORMATS = ("PNG", "JPEG", "BMP", "DIB", "GIF", "TIFF", "WEBP", "PPM")
#: File-name endings that mark a file as meant to be an image (used only to decide whether
#: a non-image found inside a folder is an error or quietly skipped; decoding never looks at it).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".gif", ".tif", ".tiff",
                            ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".mpo"})
#: Largest image accepted, in pixels (width x height): 40 megapixels, a large phone photo.
#: Anything bigger is refused before its pixels are decoded, so a small file that
#: expands to gigabytes (a decompression bomb) costs nothing.
MAX_PIXELS = 40_000_000
#: Largest input file read, in bytes.
MAX_FILE_BYTES = 100 * 1024 * 1024

STYLES = ("mnist", "resize")
_OPEN_LOCK = threading.Lock()
MNIST_BOX = 20      # digits are scaled to fit 20x20 ...
MNIST_SIZE = 28     # ... and centred by mass in 28x28
#: Estimated stroke width (px, at the 20x20 scale) below which downscaled strokes are
#: thickened; MNIST's own strokes measure 1.5-2.8 px (10th-90th percentile, median 2.0).
MIN_STROKE = 1.5
TARGET_STROKE = 2.0
#: Fraction of the ink/background contrast below which a pixel counts as background.
NOISE_FLOOR = 0.1
#: Fraction of the ink mass, at each side, that may fall outside the bounding box (stray specks).
BBOX_TRIM = 0.002


# --- decoding ------------------------------------------------------------------------------


def decode_image(
    data: bytes | str | os.PathLike | Image.Image,
    *,
    name: str | None = None,
    max_pixels: int = MAX_PIXELS,
) -> Image.Image:
    """Read an image by content and return it loaded, as 8-bit ``L`` or ``RGB``.

    ``name`` is used in error messages (defaults to the path, or ``<bytes>``).
    Raises :class:`~cnnlab.core.errors.ImageError` naming the input and the reason for
    unreadable, empty, truncated, non-image and oversized inputs.
    """
    if isinstance(data, Image.Image):
        label = name or "<image>"
        _check_pixels(data.size, label, max_pixels)
        return to_standard_mode(_first_frame(data), label)

    if isinstance(data, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        raw = bytes(data)
    elif isinstance(data, (str, os.PathLike)):
        path = Path(data)
        label = name or str(path)
        raw = _read_file(path, label)
    else:
        raise ImageError(_("{value}: cannot read an image from a {kind}").format(
            value=name or "<input>", kind=type(data).__name__))

    if not raw:
        raise ImageError(_("{label}: the file is empty").format(label=label))
    if len(raw) > MAX_FILE_BYTES:
        raise ImageError(_("{label}: the file is {size:.0f} MiB, more than the {limit} MiB accepted").format(label=label, size=len(raw) / 2**20, limit=MAX_FILE_BYTES // 2**20))
    try:
        # PIL warns (and above twice its limit, raises) on decompression bombs while reading the
        # header; both are errors here. The warnings filter is process-global, so the header read
        # is serialised (it is cheap); the expensive decoding below runs in parallel.
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw), formats=FORMATS)
        _check_pixels(img.size, label, max_pixels)
        img.load()
        img = _first_frame(img)
    except ImageError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageError(_("{label}: refused as a possible decompression bomb ({exc})").format(
            label=label, exc=exc)) from None
    except UnidentifiedImageError:
        raise ImageError(_("{label}: not an image (or not one of the formats {value})").format(
            label=label, value=', '.join(_format_names()))) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, _struct_error()) as exc:
        # Truncated data, broken chunks, bad headers: PIL raises a mix of these.
        reason = first_line(exc)
        if "truncated" in reason.lower() or isinstance(exc, EOFError):
            reason = _("the image data is truncated ({reason})").format(reason=reason)
        raise ImageError(_("{label}: cannot decode the image: {reason}").format(label=label, reason=reason)) from None
    except MemoryError:
        raise ImageError(_("{label}: not enough memory to decode the image").format(label=label)) from None
    return to_standard_mode(img, label)


def image_header(raw: bytes) -> tuple[int, int, str] | None:
    """Width, height and mode read from the header alone (no pixels decoded), so a decompression
    bomb can be refused before it costs memory. ``None`` when none of :data:`FORMATS` recognises
    the bytes; ``(0, 0, "L")`` for a header too broken to read (:func:`decode_image` says why).
    PIL's ``DecompressionBombError`` (far over its own limit) is raised as it is.
    """
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw), formats=FORMATS) as probe:
                return probe.size[0], probe.size[1], probe.mode
    except Image.DecompressionBombError:
        raise
    except UnidentifiedImageError:
        return None
    except Exception:  # noqa: BLE001 - a broken header: decoding gives the reason
        return 0, 0, "L"


def _struct_error() -> type[Exception]:
    import struct

    return struct.error


def _format_names() -> list[str]:
    return ["PNG", "JPEG", "BMP", "GIF", "TIFF", "WebP", "PPM/PGM"]


def _read_file(path: Path, label: str) -> bytes:
    try:
        if path.is_dir():
            raise ImageError(_("{label}: is a folder, not an image file").format(label=label))
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            # A FIFO or a device (/dev/zero) would block or never end.
            raise ImageError(_("{label}: not a regular file").format(label=label))
        if st.st_size > MAX_FILE_BYTES:
            raise ImageError(_("{label}: the file is {size:.0f} MiB, more than the {limit} MiB accepted").format(label=label, size=st.st_size / 2**20, limit=MAX_FILE_BYTES // 2**20))
        with path.open("rb") as fh:
            return fh.read(MAX_FILE_BYTES + 1)  # a file growing while read is caught by the size check
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(_("{label}: no such file").format(label=label)) from None
    except PermissionError:
        raise ImageError(_("{label}: permission denied").format(label=label)) from None
    except OSError as exc:
        raise ImageError(_("{label}: cannot read the file ({value})").format(
            label=label, value=exc.strerror or exc)) from None


def _check_pixels(size: tuple[int, int], label: str, max_pixels: int) -> None:
    w, h = size
    if w < 1 or h < 1:
        raise ImageError(_("{label}: the image has no pixels ({w}x{h})").format(label=label, w=w, h=h))
    if w * h > max_pixels:
        raise ImageError(
            _("{label}: the image is {w}x{h} = {megapixels:.1f} megapixels, more than the {limit:.0f} "
              "accepted (possible decompression bomb); scale it down first").format(label=label, w=w, h=h, megapixels=w * h / 1e6, limit=max_pixels / 1e6)
        )


def _first_frame(img: Image.Image) -> Image.Image:
    # Animated GIF/WebP/PNG and multi-page TIFF: the first frame is the picture.
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    try:
        # Phone photos store their rotation in EXIF; apply it so the digit is upright. In place:
        # otherwise Pillow copies every picture that needs no turning (100 MB for 25 megapixels).
        ImageOps.exif_transpose(img, in_place=True)
    except Exception:  # a broken EXIF block must not lose the picture
        pass
    return img


def to_standard_mode(img: Image.Image, label: str = "<image>") -> Image.Image:
    """Any PIL mode -> 8-bit ``L`` or ``RGB``; transparency composited onto a background.

    * 16-bit (``I;16*``) and 32-bit (``I``) integer images are scaled from
      0..65535 to 0..255 (values that all fit 0..255 are taken as 8-bit);
      float (``F``) images in 0..1 are scaled by 255, otherwise treated like ``I``.
    * Palette, ``1``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` go through PIL's conversion.
    * Transparent pixels (an alpha channel, or a palette / ``tRNS`` transparent
      colour) are composited onto the colour that contrasts with the visible
      content: dark ink drawn on a transparent canvas lands on white, light ink on
      black, so the drawing stays visible whatever colour it was made in.
    """
    mode = img.mode
    if mode in ("L", "RGB") and "transparency" not in img.info:
        return img
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        return _deep_to_8bit(img, label)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if not has_alpha:
        return img.convert("RGB" if mode not in ("1", "L", "P") or _palette_is_colour(img) else "L")
    grey = mode in ("LA", "La") or (mode == "P" and not _palette_is_colour(img))
    return _composite_alpha(img if mode == "RGBA" else img.convert("RGBA"), grey, label)


#: Pixels per block when converting a large image: the float temporaries of one block stay around
#: 50 MB, so a 25-megapixel upload costs its decoded size plus that, not 15x its size (issue 16).
#: An image of at most this many pixels is one block, computed exactly as a whole.
BLOCK_PIXELS = 1 << 20


def _blocks(img: Image.Image) -> Iterator[tuple[int, np.ndarray]]:
    """(top row, pixels) of ``img`` in blocks of whole rows, each copied out on its own."""
    w, h = img.size
    rows = max(1, BLOCK_PIXELS // max(1, w))
    if rows >= h:
        yield 0, np.asarray(img)
        return
    for top in range(0, h, rows):
        yield top, np.asarray(img.crop((0, top, w, min(h, top + rows))))


def _paste_blocks(mode: str, size: tuple[int, int], blocks: Iterator[tuple[int, np.ndarray]]) -> Image.Image:
    out = None
    for top, block in blocks:
        piece = Image.fromarray(block)
        if top == 0 and block.shape[0] == size[1]:
            return piece  # one block: the image itself
        if out is None:
            out = Image.new(mode, size)
        out.paste(piece, (0, top))
    assert out is not None
    return out


def _deep_to_8bit(img: Image.Image, label: str) -> Image.Image:
    """16/32-bit integer or float pixels -> 8-bit ``L`` (see :func:`to_standard_mode`), block by block."""
    hi = 0.0
    for _box, block in _blocks(img):
        a = block.astype(np.float64)
        if not np.isfinite(a).all():
            raise ImageError(_("{label}: the image holds non-finite pixel values").format(label=label))
        hi = max(hi, float(a.max()) if a.size else 0.0)

    def scaled() -> Iterator[tuple[int, np.ndarray]]:
        for top, block in _blocks(img):
            a = block.astype(np.float64)
            if img.mode == "F" and hi <= 1.0:
                a = a * 255.0
            elif hi > 255.0:
                a = a * (255.0 / 65535.0)
            yield top, np.clip(np.rint(a), 0, 255).astype(np.uint8)

    return _paste_blocks("L", img.size, scaled())


def _composite_alpha(rgba_img: Image.Image, grey: bool, label: str) -> Image.Image:
    """Transparent pixels onto the background that contrasts with the visible content, block by block."""
    coeffs = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    ink = weights = 0.0
    for _box, block in _blocks(rgba_img):
        rgba = block.astype(np.float32)
        weight = rgba[..., 3] / 255.0
        luma = rgba[..., :3] @ coeffs
        # float32 sums per block; with one block (up to BLOCK_PIXELS) exactly the whole image's sums.
        ink += float((luma * weight).sum())
        weights += float(weight.sum())
    if weights == 0:
        raise ImageError(_("{label}: the image is fully transparent").format(label=label))
    visible_luma = float(np.float32(ink) / np.float32(weights))
    background = 255.0 if visible_luma < 127.5 else 0.0

    def composited() -> Iterator[tuple[int, np.ndarray]]:
        for top, block in _blocks(rgba_img):
            rgba = block.astype(np.float32)
            alpha = rgba[..., 3:] / 255.0
            out = rgba[..., :3] * alpha + background * (1.0 - alpha)
            out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
            yield top, (out[..., 0] if grey else out)

    return _paste_blocks("L" if grey else "RGB", rgba_img.size, composited())


def _palette_is_colour(img: Image.Image) -> bool:
    if img.mode != "P":
        return img.mode not in ("1", "L", "LA", "La", "I", "I;16", "F")
    pal = img.getpalette() or []
    rgb = np.asarray(pal[: len(pal) // 3 * 3], dtype=np.int16).reshape(-1, 3)
    return bool((rgb.max(axis=1) != rgb.min(axis=1)).any())


# --- preprocessing -------------------------------------------------------------------------


def check_spec(spec: Any) -> dict:
    """Validate a stored preprocessing spec; a clear error for missing or unknown ones."""
    if not isinstance(spec, dict) or not spec:
        raise ImageError(
            _("this model carries no preprocessing description (data.preprocess is missing), so cnnlab "
              "cannot know how its training images were prepared; retrain it with this cnnlab version")
        )
    style = spec.get("style")
    if style not in STYLES:
        raise ImageError(
            _("unknown preprocessing style {style!r} stored with the model; this cnnlab knows {styles} "
              "(upgrade cnnlab to use this model)").format(style=style, styles=', '.join(STYLES))
        )
    for key in ("mean", "std"):
        if key in spec and spec[key] is not None and not isinstance(spec[key], (list, tuple, float, int)):
            raise ImageError(_("preprocessing {key} must be a number or a list, got {value!r}").format(
                key=key, value=spec[key]))
    return spec


def preprocess(img: Image.Image, spec: dict) -> torch.Tensor:
    """The (C, H, W) float32 tensor the network sees for ``img``, per the model's ``spec``."""
    spec = check_spec(spec)
    img = to_standard_mode(img)
    if spec["style"] == "mnist":
        size = int(spec.get("image_size", MNIST_SIZE))
        pixels = mnist_pixels(np.asarray(img.convert("L") if img.mode != "L" else img), size)
        x = torch.from_numpy(pixels).unsqueeze(0)
        channels = int(spec.get("channels", 1))
        if channels != 1:
            x = x.expand(channels, -1, -1)
    else:
        x = resize_pixels(img, spec)
    x = x.to(torch.float32) / float(spec.get("scale", 255.0))
    return _normalise(x, spec).contiguous()


def _normalise(x: torch.Tensor, spec: dict) -> torch.Tensor:
    mean, std = spec.get("mean"), spec.get("std")
    if mean is None and std is None:
        return x
    c = x.shape[0]
    m = torch.as_tensor(mean if mean is not None else 0.0, dtype=torch.float32).reshape(-1, 1, 1)
    s = torch.as_tensor(std if std is not None else 1.0, dtype=torch.float32).reshape(-1, 1, 1)
    if m.numel() not in (1, c) or s.numel() not in (1, c):
        raise ImageError(_("preprocessing mean/std have {value}/{value2} values for {c} channels").format(
            value=m.numel(), value2=s.numel(), c=c))
    return (x - m) / s


def resize_pixels(img: Image.Image, spec: dict) -> torch.Tensor:
    """Generic path, as cnnlab.data.sets builds its training images, as uint8-valued (C, H, W).

    The image is squashed to ``size`` x ``size`` (bilinear, antialiased when shrinking),
    exactly like the training images of image-folder datasets. With ``"ink":
    "light-on-dark"`` (Fashion-MNIST, KMNIST, EMNIST, resized MNIST) an image whose
    border is light is inverted first, as the MNIST path does; ``"dark-on-light"`` the
    other way round.
    """
    size = int(spec.get("size", spec.get("image_size", 32)))
    channels = int(spec.get("channels", 3))
    img = img.convert("L" if channels == 1 else "RGB")
    ink = spec.get("ink")
    if ink in ("light-on-dark", "dark-on-light"):
        background = float(np.median(_border(np.asarray(img.convert("L"), dtype=np.float32))))
        if (background > 127.5) == (ink == "light-on-dark"):
            img = ImageOps.invert(img)
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    a = np.array(img, dtype=np.uint8)  # a writable copy: torch.from_numpy needs one
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    if channels == 3 and a.shape[0] == 1:
        a = np.repeat(a, 3, axis=0)
    return torch.from_numpy(np.ascontiguousarray(a)).to(torch.float32)


def mnist_pixels(
    gray: np.ndarray, size: int = MNIST_SIZE, *, passthrough: bool = True, steps: dict | None = None
) -> np.ndarray:
    """MNIST's construction on an 8-bit grayscale array -> float32 (size, size) in 0..255.

    ``passthrough=False`` rebuilds even digits that are already in MNIST form
    (the benchmark uses it to measure how faithful the reconstruction is).
    ``steps``, when given, receives a copy of the picture after each stage (see
    :func:`mnist_steps`), so a lesson can show them from this very code.
    """
    a = np.asarray(gray, dtype=np.float32)

    def record(key: str, value: np.ndarray) -> None:
        if steps is not None:
            steps[key] = np.array(value, dtype=np.float32)  # a copy: later steps work in place
    if a.ndim != 2:
        raise ImageError(_("expected a 2-D grayscale image, got shape {shape}").format(shape=a.shape))
    box = max(1, round(size * MNIST_BOX / MNIST_SIZE))
    if passthrough and is_mnist_form(a, size, box):
        # Already built the MNIST way (e.g. an MNIST test digit saved as PNG): re-cropping and
        # re-centring could only move it by rounding, so it is used exactly as it is.
        return a.copy()

    # 1. Polarity and background from the border: MNIST is light ink on a black background.
    border = _border(a)
    background = float(np.median(border))
    inverted = background > 127.5
    if inverted:
        a = 255.0 - a
        border = 255.0 - border
        background = 255.0 - background
    record("inverted" if inverted else "not_inverted", a)
    contrast = float(a.max()) - background
    if contrast < 16.0:
        raise ImageError(_("the image is blank: no ink stands out from the background"))
    # Paper grain, JPEG ringing and sensor noise must not widen the bounding box or pull the
    # centre of mass: ink is what stands out from the background by more than the border's
    # own noise (5 robust standard deviations) and more than NOISE_FLOOR of the contrast.
    mad = float(np.median(np.abs(border - background)))
    threshold = background + max(5.0 * 1.4826 * mad, NOISE_FLOOR * contrast)
    ink = a > threshold
    if not ink.any():
        raise ImageError(_("no ink stands out from the background noise (is this a digit?)"))

    # 2. Background to 0 and the ink stretched to full contrast (a pencil scan becomes MNIST-like).
    a = np.where(ink, (a - background) * (255.0 / contrast), 0.0).astype(np.float32)
    record("stretched", a)

    # 3. Crop to the ink's bounding box. Stray specks (dust, noise spikes) far from the digit carry
    # almost no ink mass: rows/columns holding the outermost BBOX_TRIM of the mass are left out.
    r0, r1 = _mass_span(a.sum(axis=1))
    c0, c1 = _mass_span(a.sum(axis=0))
    a, ink = a[r0 : r1 + 1, c0 : c1 + 1], ink[r0 : r1 + 1, c0 : c1 + 1]
    record("cropped", a)

    # 4. Fit the box, keeping the aspect ratio.
    h, w = a.shape
    s = box / max(h, w)
    if s != 1.0:
        if s < 1.0:
            a = _thicken(a, ink, s)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        a = _resize_float(a, nw, nh)
        top = float(a.max())
        if top <= 0:
            raise ImageError(_("the image is blank: the ink vanished when scaled to the digit box"))
        a = np.clip(a * (255.0 / top), 0.0, 255.0)
        h, w = a.shape
    record("fitted", a)

    # 5. Centre of mass to the centre (MNIST's digits sit at pixel 14.0 +- 0.5: an integer shift).
    total = float(a.sum())
    cy = float((a.sum(axis=1) * np.arange(h)).sum() / total)
    cx = float((a.sum(axis=0) * np.arange(w)).sum() / total)
    centre = size / 2.0
    top = min(max(math.floor(centre - cy + 0.5), 0), size - h)
    left = min(max(math.floor(centre - cx + 0.5), 0), size - w)
    out = np.zeros((size, size), dtype=np.float32)
    out[top : top + h, left : left + w] = a
    record("centred", out)
    return out


#: The stages :func:`mnist_steps` returns, in order (``not_inverted`` replaces ``inverted`` for
#: light ink on a dark background).
MNIST_STEPS = ("decoded", "inverted", "stretched", "cropped", "fitted", "centred")


def mnist_steps(image: bytes | str | os.PathLike | Image.Image, size: int = MNIST_SIZE) -> dict[str, np.ndarray]:
    """Every stage of the MNIST-style preparation of one picture, as float32 arrays in 0..255.

    The same code that :func:`preprocess` runs (``style="mnist"``), stage by stage:
    ``decoded`` (grey; transparency composited onto the background that contrasts with the
    ink), ``inverted`` or ``not_inverted`` (light ink on black, as MNIST), ``stretched``
    (background to 0, ink to full contrast), ``cropped`` (to the ink), ``fitted`` (into the
    20x20 box, aspect kept), ``centred`` (pasted into size x size with the centre of mass in
    the middle): what the network sees, times 255.
    """
    img = decode_image(image)
    grey = np.asarray(img.convert("L") if img.mode != "L" else img)
    steps: dict[str, np.ndarray] = {"decoded": np.asarray(grey, dtype=np.float32).copy()}
    mnist_pixels(grey, size, passthrough=False, steps=steps)
    return steps


def is_mnist_form(a: np.ndarray, size: int = MNIST_SIZE, box: int = MNIST_BOX) -> bool:
    """Whether ``a`` already is an MNIST-built digit: size x size, light ink on a black
    background, ink within the box, centre of mass within half a pixel of the centre."""
    # (A digit may touch the edge, as 1% of MNIST's do, so the border need only be mostly black.)
    if a.shape != (size, size) or float(a.max()) < 128.0:
        return False
    border = _border(a)
    if 2 * np.count_nonzero(border) >= border.size:  # the border's median is not 0
        return False
    rows, cols = np.flatnonzero(a.any(axis=1)), np.flatnonzero(a.any(axis=0))
    if max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 > box:
        return False
    total = float(a.sum())
    cy = float((a.sum(axis=1) * np.arange(size)).sum() / total)
    cx = float((a.sum(axis=0) * np.arange(size)).sum() / total)
    return abs(cy - size / 2.0) <= 0.5 and abs(cx - size / 2.0) <= 0.5


def _mass_span(profile: np.ndarray) -> tuple[int, int]:
    """First and last index of a mass profile once BBOX_TRIM of the mass is dropped at each end."""
    cum = np.cumsum(profile, dtype=np.float64)
    total = cum[-1]
    lo = int(np.searchsorted(cum, BBOX_TRIM * total, side="right"))
    hi = int(np.searchsorted(cum, (1.0 - BBOX_TRIM) * total, side="left"))
    lo = min(lo, int(np.flatnonzero(profile)[-1]))
    return lo, max(lo, min(hi, len(profile) - 1))


def _border(a: np.ndarray) -> np.ndarray:
    h, w = a.shape
    t = max(1, min(h, w) // 20)
    return np.concatenate([a[:t].ravel(), a[-t:].ravel(), a[:, :t].ravel(), a[:, -t:].ravel()])


def _thicken(a: np.ndarray, ink: np.ndarray, s: float) -> np.ndarray:
    """Widen strokes that would shrink below MNIST's stroke width when scaled by ``s``.

    A pen line drawn on a large canvas is a fraction of a pixel wide at 20x20 and
    would reach the network as a faint smudge. The stroke width is estimated as
    2 x ink area / ink edge length; thin strokes get a grey dilation (max filter).
    """
    edges = int((ink[1:, :] != ink[:-1, :]).sum() + (ink[:, 1:] != ink[:, :-1]).sum())
    edges += int(ink[0].sum() + ink[-1].sum() + ink[:, 0].sum() + ink[:, -1].sum())
    if edges == 0:
        return a
    width = 2.0 * float(ink.sum()) / edges
    if width * s >= MIN_STROKE:
        return a
    grow = int(round(TARGET_STROKE / s - width))
    if grow < 1:
        return a
    from scipy.ndimage import maximum_filter

    return maximum_filter(a, size=grow + 1, mode="constant", cval=0.0)


def _resize_float(a: np.ndarray, width: int, height: int) -> np.ndarray:
    # PIL's "F" mode resize is a proper antialiasing filter when shrinking (support scales with
    # the factor), so a 1000-px photo and a 28-px digit both end up correctly averaged.
    img = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))
    out = img.resize((width, height), Image.Resampling.LANCZOS)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, None)


def tensor_to_image(x: torch.Tensor, spec: dict | None = None) -> Image.Image:
    """A preprocessed (C, H, W) tensor back to an 8-bit image, for ``--save-preprocessed``.

    Mean/std normalisation and ``scale`` are undone, so the picture shows the
    pixels the network saw (on the 0..255 scale), not a rescaled visualisation.
    """
    spec = spec or {}
    x = x.detach().to("cpu", torch.float32)
    mean, std = spec.get("mean"), spec.get("std")
    if std is not None:
        x = x * torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
    if mean is not None:
        x = x + torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
    x = x * float(spec.get("scale", 255.0))
    a = x.clamp(0, 255).round().to(torch.uint8).numpy()
    if a.shape[0] == 1 or (spec.get("style") == "mnist"):
        return Image.fromarray(a[0])
    return Image.fromarray(np.ascontiguousarray(a.transpose(1, 2, 0)))


# --- pixels given as arrays ----------------------------------------------------------------


def pixels_to_uint8(
    a: np.ndarray | torch.Tensor, what: str = "<array>", *, error: type[CnnlabError] = ImageError
) -> np.ndarray:
    """Pixels as 8-bit values, under one policy for every array a user hands in.

    ``uint8`` is taken as it is; ``bool`` is 0/255; other integers must lie in 0..255; floats must
    lie in [0, 1] (what ``ToTensor()`` gives) and are scaled by 255 and rounded (in float32). Anything
    else (NaN, negative values, floats on the 0..255 scale, 16-bit counts) raises ``error`` naming
    ``what`` and the range found: silently rescaling or clipping would feed the network other
    pixels than the user meant.
    """
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * np.uint8(255)
    if np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32, copy=False)
        if a.size and not np.isfinite(a).all():
            raise error(_("{what}: the pixels hold NaN or infinite values").format(what=what))
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise error(_("{what}: float pixels must be in [0, 1] (what ToTensor() gives), got values in [{lo:.3g}, "
                          "{hi:.3g}]; leave out Normalize (normalise inside the model) or give uint8").format(what=what, lo=lo, hi=hi))
        return np.clip(np.rint(a * np.float32(255)), 0, 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo < 0 or hi > 255:
            raise error(_("{what}: integer pixels must be in 0..255, got values in [{lo}, {hi}]").format(
                what=what, lo=lo, hi=hi))
        return a.astype(np.uint8)
    raise error(_("{what}: unsupported pixel dtype {dtype}").format(what=what, dtype=a.dtype))


def array_to_image(a: np.ndarray | torch.Tensor, *, name: str | None = None) -> Image.Image:
    """One image's pixels as an array or tensor -> PIL image.

    Shapes (H, W), (H, W, C) or (C, H, W) with 1, 3 or 4 channels; values as
    :func:`pixels_to_uint8` accepts them.
    """
    label = name or "<array>"
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = a.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise ImageError(_("{label}: an image array must be (H, W), (H, W, C) or (C, H, W) with 1, 3 or 4 channels; "
                           "got shape {shape}").format(label=label, shape=a.shape))
    if a.size == 0:
        raise ImageError(_("{label}: the array is empty").format(label=label))
    return Image.fromarray(np.ascontiguousarray(pixels_to_uint8(a, label)))


# --- image files in folders ----------------------------------------------------------------


@dataclass
class FoundImages:
    files: list[str]
    skipped: list[str]  # non-image files met inside folders


def find_images(paths: Iterable[str | os.PathLike]) -> FoundImages:
    """Expand files and folders (recursively, sorted) into the list of image files to read.

    Files named explicitly are always tried (a missing one fails when decoded). Inside folders, hidden files are
    ignored, and a file that is not an image by content is skipped quietly
    unless its name says it should be one (``.png``, ``.jpg``, ...): then it
    is an error, like a broken image.
    """
    files: list[str] = []
    skipped: list[str] = []
    seen: set[str] = set()
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for sub in sorted(_walk(p)):
                s = str(sub)
                if s in seen:
                    continue
                seen.add(s)
                if sub.suffix.lower() in IMAGE_SUFFIXES or looks_like_image(sub):
                    files.append(s)
                else:
                    skipped.append(s)
        elif str(p) not in seen:
            # Named files are always tried, missing ones included: decoding reports the reason in
            # its place, so results keep the order the user gave.
            seen.add(str(p))
            files.append(str(p))
    return FoundImages(files, skipped)


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            if not f.startswith("."):
                yield Path(dirpath) / f


def looks_like_image(path: Path) -> bool:
    """Whether the file starts like one of :data:`FORMATS` (PIL's own signature checks, the ones
    :func:`decode_image` relies on), for files in folders whose names do not say "image"."""
    try:
        with path.open("rb") as fh:
            head = fh.read(16)  # what PIL's Image.open hands each format's check
    except OSError:
        return True  # let decoding report the real reason
    Image.init()
    return any((check := Image.OPEN.get(fmt, (None, None))[1]) is not None and check(head) for fmt in FORMATS)
