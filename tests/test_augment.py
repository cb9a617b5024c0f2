"""Batched augmentation: shapes, dtypes, memory format, seeding, presets and overrides."""
from __future__ import annotations

import pytest
import torch

from cnnlab.data.augment import PRESETS, Augmenter, build_augmenter, parse_spec, preset_for, random_crop
from cnnlab.core.errors import ConfigError


@pytest.mark.parametrize("spec", ["shift", "affine", "crop", "crop-flip", "auto"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_shapes_dtypes_and_seeding(spec, dtype):
    x = torch.rand(16, 3, 32, 32)
    if dtype == torch.uint8:
        x = (x * 255).to(torch.uint8)
    aug = build_augmenter(spec, "cifar10", seed=7)
    a, b, c = aug(x, 1), aug(x, 1), aug(x, 2)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)  # same seed and iteration: the same augmentation
    assert not torch.equal(a, c)  # another iteration: another draw
    assert not torch.equal(a, x)
    assert not torch.equal(a, build_augmenter(spec, "cifar10", seed=8)(x, 1))


def test_channels_last_batches_stay_channels_last():
    x = torch.rand(8, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    for spec in ("affine", "crop-flip"):
        assert build_augmenter(spec, "cifar10", 0)(x, 3).is_contiguous(memory_format=torch.channels_last)


def test_crop_is_a_translation_with_zeros_shifted_in():
    x = torch.arange(1, 26, dtype=torch.float32).view(1, 1, 5, 5).repeat(64, 1, 1, 1)
    out = random_crop(x, 1, torch.Generator().manual_seed(0))
    for img in out[:, 0]:
        nz = img.nonzero()
        dy, dx = int(nz[:, 0].min()), int(nz[:, 1].min())
        # Every output is the input moved by at most one pixel; what moved out is gone, zeros came in.
        assert dy <= 1 and dx <= 1
        assert set(img[img > 0].tolist()) <= set(range(1, 26))


def test_identity_settings_change_nothing():
    x = torch.rand(4, 1, 28, 28)
    assert torch.allclose(build_augmenter("affine:degrees=0,translate=0,scale=0", "mnist", 0)(x, 1), x, atol=1e-5)
    assert torch.equal(build_augmenter("crop-flip:pad=0,flip=0", "cifar10", 0)(x, 1), x)
    assert torch.equal(build_augmenter("none", "mnist", 0)(x, 1), x)


def test_flip_one_mirrors_every_image():
    x = torch.rand(4, 3, 8, 8)
    assert torch.equal(build_augmenter("crop-flip:pad=0,flip=1", "cifar10", 0)(x, 5), x.flip(3))


def test_presets_and_overrides():
    assert preset_for("mnist") == "affine" and preset_for("cifar10") == "crop-flip"
    assert preset_for("svhn") == "crop"  # digits must not be mirrored
    assert preset_for("folder:/x") == "crop-flip"
    assert parse_spec("auto", "svhn").name == "crop"
    spec = parse_spec("auto:pad=2", "cifar100")
    assert spec.name == "crop-flip" and spec.params == {"pad": 2.0, "flip": 0.5}
    assert str(parse_spec("affine:degrees=15")) == "affine:degrees=15,translate=0.1,scale=0.1"
    assert set(PRESETS) >= {"none", "shift", "affine", "crop", "crop-flip"}


@pytest.mark.parametrize("text, message", [
    ("blur", "unknown augmentation 'blur'"),
    ("affine:rotate=5", "has no setting 'rotate=5'; its settings: degrees, translate, scale"),
    ("crop:pad=x", "must be a number"),
    ("crop-flip:flip=2", "probability"),
    ("shift:pixels=-1", ">= 0"),
])
def test_bad_specs_are_clear(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_spec(text, "mnist")


def test_augmenter_inactive_for_none():
    assert not Augmenter(parse_spec("none")).active


@pytest.mark.parametrize("pad, shape", [(1, (37, 1, 28, 28)), (4, (5, 3, 32, 32))])
def test_crop_takes_each_images_own_window(pad, shape):
    # The reference: per image, slice the padded image at the offsets drawn, in the order drawn.
    x = torch.rand(*shape)
    g = torch.Generator().manual_seed(7)
    n, _, h, w = shape
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    expected = torch.stack([xp[i, :, oy[i]:oy[i] + h, ox[i]:ox[i] + w] for i in range(n)])
    assert torch.equal(random_crop(x, pad, torch.Generator().manual_seed(7)), expected)
    cl = x.contiguous(memory_format=torch.channels_last)  # the training batches' layout
    assert torch.equal(random_crop(cl, pad, torch.Generator().manual_seed(7)), expected)
