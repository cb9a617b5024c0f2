"""Preprocessing on constructed images: MNIST's construction, every image mode, every bad input."""
from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from cnnlab.core.errors import ImageError
from cnnlab.data.images import MAX_PIXELS, decode_image, is_mnist_form, preprocess, tensor_to_image, to_standard_mode

SPEC = {"style": "mnist", "scale": 255.0}


def draw_seven(size=(150, 200), at=(10, 10), scale=1.0, ink=0, paper=255, width=8, mode="L") -> Image.Image:
    """A '7' (two strokes) drawn at an arbitrary place of a larger canvas."""
    img = Image.new(mode, size, paper)
    x, y = at
    pts = [(x, y), (x + 60 * scale, y), (x + 25 * scale, y + 90 * scale)]
    ImageDraw.Draw(img).line(pts, fill=ink, width=width)
    return img


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def centre_of_mass(x: torch.Tensor) -> tuple[float, float]:
    a = x[0].double()
    rows, cols = torch.arange(a.shape[0], dtype=torch.double), torch.arange(a.shape[1], dtype=torch.double)
    total = a.sum()
    return float((a.sum(1) * rows).sum() / total), float((a.sum(0) * cols).sum() / total)


def bbox(x: torch.Tensor) -> tuple[int, int, int, int]:
    ys, xs = torch.nonzero(x[0] > 0, as_tuple=True)
    return int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())


# --- MNIST construction --------------------------------------------------------------------


@pytest.mark.parametrize("at", [(5, 5), (80, 100), (40, 20)])
def test_off_centre_digit_ends_up_centred_and_fitted_to_20x20(at):
    x = preprocess(draw_seven(at=at), SPEC)
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    cy, cx = centre_of_mass(x)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
    top, bottom, left, right = bbox(x)
    assert max(bottom - top + 1, right - left + 1) == 20      # the longer side fills the 20x20 box
    assert float(x.max()) == pytest.approx(1.0) and float(x.min()) == 0.0
    # Where the digit was on the canvas makes no difference.
    assert torch.allclose(x, preprocess(draw_seven(at=(5, 5)), SPEC), atol=1e-6)


def test_dark_on_light_is_detected_and_inverted():
    dark_on_light = preprocess(draw_seven(ink=0, paper=255), SPEC)
    light_on_dark = preprocess(draw_seven(ink=255, paper=0), SPEC)
    assert torch.allclose(dark_on_light, light_on_dark, atol=1e-6)
    # MNIST polarity: background 0 (all four corners), ink bright.
    assert float(dark_on_light[0, [0, 0, -1, -1], [0, -1, 0, -1]].abs().max()) == 0.0


def test_aspect_ratio_is_kept():
    img = Image.new("L", (100, 200), 255)
    ImageDraw.Draw(img).rectangle([40, 20, 59, 179], fill=0)  # a 20 x 160 bar: a "1"
    x = preprocess(img, SPEC)
    top, bottom, left, right = bbox(x)
    assert bottom - top + 1 == 20
    assert 2 <= right - left + 1 <= 4                        # 20 * 20/160 = 2.5 px (+ antialiasing)


def test_grey_paper_and_pencil_become_full_contrast_and_noise_is_ignored():
    rng = np.random.default_rng(0)
    clean = preprocess(draw_seven(), SPEC)
    photo = np.asarray(draw_seven(ink=90, paper=200), dtype=np.float32) + rng.normal(0, 4, (200, 150))
    x = preprocess(Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)), SPEC)
    cy, cx = centre_of_mass(x)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
    assert float(x.max()) == pytest.approx(1.0)
    assert float(x[0, :3].abs().max()) == 0.0                 # no noise left in the empty rows
    corr = np.corrcoef(x.flatten().numpy(), clean.flatten().numpy())[0, 1]
    assert corr > 0.95


def test_thin_strokes_on_a_large_canvas_are_thickened():
    thick = preprocess(draw_seven(size=(800, 800), at=(100, 100), scale=6, width=40), SPEC)
    thin = preprocess(draw_seven(size=(800, 800), at=(100, 100), scale=6, width=2), SPEC)
    # Without thickening a 2-px pen line would be ~0.07 px wide at 20x20: a faint smudge.
    assert float(thin.sum()) > 0.5 * float(thick.sum())
    assert float((thin > 0.5).sum()) >= 20


def test_an_mnist_form_digit_passes_through_unchanged_and_preprocessing_is_idempotent():
    x = preprocess(draw_seven(), SPEC)
    pixels = (x[0] * 255).round().to(torch.uint8).numpy()
    assert is_mnist_form(pixels.astype(np.float32))
    again = preprocess(Image.fromarray(pixels), SPEC)
    assert torch.equal(again, torch.from_numpy(pixels).float().div(255).unsqueeze(0))


def test_blank_image_is_an_error():
    with pytest.raises(ImageError, match="blank"):
        preprocess(Image.new("L", (50, 50), 255), SPEC)
    with pytest.raises(ImageError, match="blank"):
        preprocess(Image.new("L", (50, 50), 3), SPEC)


def test_mean_std_and_image_size_from_spec():
    spec = {"style": "mnist", "scale": 255.0, "mean": [0.1307], "std": [0.3081], "image_size": 28, "channels": 1}
    plain = preprocess(draw_seven(), SPEC)
    normed = preprocess(draw_seven(), spec)
    assert torch.allclose(normed, (plain - 0.1307) / 0.3081, atol=1e-6)


# --- generic resize path -------------------------------------------------------------------


def test_resize_style_squashes_like_the_training_images_and_normalises():
    spec = {"style": "resize", "size": 32, "channels": 3, "scale": 255.0, "mean": [0.5, 0.4, 0.3],
            "std": [0.2, 0.2, 0.25]}
    img = Image.new("RGB", (96, 64), (255, 128, 0))
    img.paste((0, 0, 255), (0, 0, 9, 64))  # a blue band: 3 of 32 columns after squashing (no crop)
    x = preprocess(img, spec)
    assert x.shape == (3, 32, 32)
    expected = (torch.tensor([255, 128, 0]) / 255.0 - torch.tensor([0.5, 0.4, 0.3])) / torch.tensor([0.2, 0.2, 0.25])
    assert torch.allclose(x[:, 16, 16], expected, atol=1e-5)
    blue = (torch.tensor([0, 0, 255]) / 255.0 - torch.tensor([0.5, 0.4, 0.3])) / torch.tensor([0.2, 0.2, 0.25])
    assert torch.allclose(x[:, 16, 0], blue, atol=1e-5)
    back = np.asarray(tensor_to_image(x, spec))
    assert back.shape == (32, 32, 3) and tuple(back[16, 16]) == (255, 128, 0)


def test_resize_style_inverts_to_the_training_polarity():
    light_on_dark = {"style": "resize", "size": 28, "channels": 1, "ink": "light-on-dark"}
    dark = preprocess(draw_seven(ink=0, paper=255), light_on_dark)
    light = preprocess(draw_seven(ink=255, paper=0), light_on_dark)
    assert torch.allclose(dark, light) and float(dark[0, 0, 0]) == 0.0 and float(dark.max()) > 0.5
    no_ink = preprocess(draw_seven(ink=0, paper=255), {"style": "resize", "size": 28, "channels": 1})
    assert float(no_ink[0, 0, 0]) == 1.0  # without "ink" the pixels are used as they are


def test_grayscale_resize_style_for_one_channel_models():
    spec = {"style": "resize", "image_size": 28, "channels": 1}
    x = preprocess(Image.new("RGB", (56, 56), (200, 200, 200)), spec)
    assert x.shape == (1, 28, 28) and torch.allclose(x, torch.full_like(x, 200 / 255), atol=1e-6)


@pytest.mark.parametrize("spec, message", [
    (None, "no preprocessing description"),
    ({}, "no preprocessing description"),
    ({"style": "zca-whiten"}, "unknown preprocessing style 'zca-whiten'"),
])
def test_missing_or_unknown_spec_is_a_clear_error(spec, message):
    with pytest.raises(ImageError, match=message):
        preprocess(draw_seven(), spec)


def test_tensor_to_image_shows_what_the_network_saw():
    x = preprocess(draw_seven(), SPEC)
    img = tensor_to_image(x, SPEC)
    assert img.mode == "L" and img.size == (28, 28)
    assert np.array_equal(np.asarray(img), (x[0] * 255).round().numpy().astype(np.uint8))


# --- every format and mode gives the same network input ------------------------------------


def _cases() -> dict[str, bytes]:
    base = draw_seven(size=(60, 80), at=(8, 5), scale=0.7, width=5)
    a16 = np.asarray(base).astype(np.uint16) * 257
    rgba_black = draw_seven(size=(60, 80), at=(8, 5), scale=0.7, width=5, mode="RGBA", ink=(0, 0, 0, 255),
                            paper=(0, 0, 0, 0))
    rgba_white = draw_seven(size=(60, 80), at=(8, 5), scale=0.7, width=5, mode="RGBA", ink=(255, 255, 255, 255),
                            paper=(255, 255, 255, 0))
    rgba_blue = draw_seven(size=(60, 80), at=(8, 5), scale=0.7, width=5, mode="RGBA", ink=(20, 20, 120, 255),
                           paper=(255, 0, 0, 0))
    return {
        "png-L": encode(base, "PNG"),
        "png-16bit": encode(Image.fromarray(a16), "PNG"),
        "png-1bit": encode(base.point(lambda v: 255 if v > 127 else 0).convert("1"), "PNG"),
        "png-palette": encode(base.convert("P"), "PNG"),
        "png-RGBA-black-ink-on-transparent": encode(rgba_black, "PNG"),
        "png-RGBA-white-ink-on-transparent": encode(rgba_white, "PNG"),
        "png-RGBA-coloured-ink-on-transparent-red": encode(rgba_blue, "PNG"),
        "png-LA": encode(rgba_black.convert("LA"), "PNG"),
        "png-palette-tRNS": encode(rgba_black.convert("P"), "PNG", transparency=0),
        "jpeg-RGB": encode(base.convert("RGB"), "JPEG", quality=95),
        "jpeg-CMYK": encode(base.convert("CMYK"), "JPEG", quality=95),
        "bmp": encode(base, "BMP"),
        "gif": encode(base.convert("P"), "GIF"),
        "gif-transparent": encode(rgba_black, "GIF"),
        "tiff-16bit": encode(Image.fromarray(a16), "TIFF"),
        "tiff-float": encode(Image.fromarray(np.asarray(base, dtype=np.float32) / 255), "TIFF"),
        "webp": encode(base.convert("RGB"), "WEBP", lossless=True),
        "ppm": encode(base, "PPM"),
    }


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
def test_every_format_and_mode_gives_the_same_input(name, tmp_path):
    reference = preprocess(decode_image(CASES["png-L"]), SPEC)
    # A misleading extension: recognition is by content.
    path = tmp_path / f"{name}.dat"
    path.write_bytes(CASES[name])
    img = decode_image(path)
    assert img.mode in ("L", "RGB") and img.size == (60, 80)
    x = preprocess(img, SPEC)
    atol = 0.02 if name.startswith("jpeg") else 1e-6  # JPEG is lossy
    assert float((x - reference).abs().max()) <= atol


def test_animated_gif_uses_the_first_frame():
    first = draw_seven(size=(60, 80), at=(8, 5), scale=0.7, width=5)
    second = Image.new("L", (60, 80), 255)
    ImageDraw.Draw(second).ellipse([10, 10, 50, 70], outline=0, width=5)
    data = encode(first.convert("P"), "GIF", save_all=True, append_images=[second.convert("P")])
    assert torch.allclose(preprocess(decode_image(data), SPEC), preprocess(first, SPEC), atol=1e-6)


def test_exif_rotation_is_applied():
    upright = draw_seven(size=(60, 80), at=(8, 5), scale=0.7, width=5).convert("RGB")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera held sideways stores
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    assert decode_image(data).size == upright.size
    assert float((preprocess(decode_image(data), SPEC) - preprocess(upright, SPEC)).abs().max()) <= 0.02


def test_in_memory_pil_images_of_any_mode_are_standardised():
    base = draw_seven(size=(60, 80), at=(8, 5), scale=0.7, width=5)
    ref = preprocess(base, SPEC)
    for img in (base.convert("I"), base.convert("F"), base.convert("RGBA"), base.convert("P"), base.convert("LA")):
        assert torch.allclose(preprocess(decode_image(img), SPEC), ref, atol=1e-6), img.mode
        assert torch.allclose(preprocess(img, SPEC), ref, atol=1e-6), img.mode
    assert to_standard_mode(base) is base  # nothing to do: no copy


# --- bad inputs ----------------------------------------------------------------------------


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG claiming a huge size: a decompression bomb's header, cheap to make."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


GOOD_PNG = encode(draw_seven(), "PNG")
GOOD_JPEG = encode(draw_seven().convert("RGB"), "JPEG")


@pytest.mark.parametrize("data, reason", [
    (b"", "the file is empty"),
    (b"hello, I am a text file\n", "not an image"),
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not an image"),  # EPS is never opened (Ghostscript)
    (GOOD_PNG[: len(GOOD_PNG) // 2], "truncated"),
    (GOOD_JPEG[: len(GOOD_JPEG) // 2], "truncated"),
    (GOOD_PNG[:40], "not an image|truncated"),
    (_png_header_only(8000, 6000), "48.0 megapixels, more than the 40 accepted"),
    (_png_header_only(30000, 30000), "decompression bomb"),  # PIL's own limit, raised while opening
])
def test_bad_bytes_are_one_clear_error_naming_the_input(data, reason):
    with pytest.raises(ImageError, match=reason) as info:
        decode_image(data, name="upload.png")
    assert str(info.value).startswith("upload.png: ")
    assert "\n" not in str(info.value)


def test_pixel_limit_is_configurable_and_checked_before_decoding():
    assert MAX_PIXELS == 40_000_000
    with pytest.raises(ImageError, match="megapixels"):
        decode_image(GOOD_PNG, max_pixels=1000)


def test_bad_paths(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        decode_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="is a folder"):
        decode_image(tmp_path)
    with pytest.raises(ImageError, match="not a regular file"):
        decode_image("/dev/zero")
    link = tmp_path / "dangling.png"
    link.symlink_to(tmp_path / "gone.png")
    with pytest.raises(ImageError, match=f"{link}: no such file"):
        decode_image(link)


def test_fully_transparent_image_is_an_error():
    with pytest.raises(ImageError, match="fully transparent"):
        decode_image(encode(Image.new("RGBA", (20, 20), (0, 0, 0, 0)), "PNG"), name="clear.png")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file_is_an_error(tmp_path):
    path = tmp_path / "secret.png"
    path.write_bytes(GOOD_PNG)
    path.chmod(0)
    try:
        with pytest.raises(ImageError, match="secret.png: permission denied"):
            decode_image(path)
    finally:
        path.chmod(0o644)


def test_read_errors_are_reported_even_as_root(tmp_path, monkeypatch):
    import pathlib

    path = tmp_path / "locked.png"
    path.write_bytes(GOOD_PNG)
    real_open = pathlib.Path.open

    def refuse(self, *args, **kwargs):
        if self.name == "locked.png":
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", refuse)
    with pytest.raises(ImageError, match="locked.png: permission denied"):
        decode_image(path)


def test_pure_noise_is_a_clear_error_not_a_crash():
    import numpy as np
    from PIL import Image

    from cnnlab.core.errors import ImageError
    from cnnlab.data.images import preprocess

    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300), dtype=np.uint8))
    with pytest.raises(ImageError, match="no ink stands out"):
        preprocess(noise, {"style": "mnist", "scale": 255.0})
