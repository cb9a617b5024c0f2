"""Batched data augmentation on the training device.

Augmentation here works on a whole batch tensor at once, where the batch
already lives (CPU or GPU), instead of on one PIL image at a time as
torchvision's per-sample transforms do:

* ``shift``: random translation by up to ``pixels`` in each direction (digits);
* ``affine``: random rotation, scale and translation, one bilinear resample (digits);
* ``crop``: zero-pad by ``pad`` and crop back at a random place (SVHN: no flips, digits have a handedness);
* ``crop-flip``: the same plus a horizontal flip with probability ``flip`` (CIFAR).

Randomness is a function of ``(seed, iteration)`` only: the same run draws the
same augmentations, and a resumed run continues exactly, with no generator
state to save. The lesson's recipe uses none (``augment = "none"``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from cnnlab.core.errors import ConfigError
from cnnlab.core.i18n import _

# Each preset's parameters and their defaults; "NAME:key=value,..." overrides them.
PRESETS: dict[str, dict[str, float]] = {
    "none": {},
    "shift": {"pixels": 2},
    "affine": {"degrees": 10.0, "translate": 0.1, "scale": 0.1},
    "crop": {"pad": 4},
    "crop-flip": {"pad": 4, "flip": 0.5},
}

# The preset `augment = "auto"` picks for each dataset.
DATASET_PRESETS: dict[str, str] = {
    "mnist": "affine",
    "fashion-mnist": "crop-flip",  # clothes are left/right symmetric; small crops like CIFAR's
    "kmnist": "affine",
    "emnist": "affine",
    "digits": "shift",
    "cifar10": "crop-flip",
    "cifar100": "crop-flip",
    "svhn": "crop",
}
FOLDER_PRESET = "crop-flip"


@dataclass(frozen=True)
class AugmentSpec:
    name: str
    params: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v:g}" for k, v in self.params.items())


def parse_spec(text: str, dataset: str | None = None) -> AugmentSpec:
    """``"none"``, ``"auto"``, ``"crop-flip"`` or ``"affine:degrees=15,translate=0.05"``.

    ``auto`` (and ``auto:...`` overrides) resolve to ``dataset``'s preset.
    """
    name, _colon, rest = text.strip().partition(":")
    name = name.strip().lower()
    if name == "auto":
        if dataset is None:
            raise ConfigError(_("augment 'auto' needs a dataset to choose its preset"))
        name = preset_for(dataset)
    if name not in PRESETS:
        raise ConfigError(_("unknown augmentation {name!r}; available: {names}").format(
            name=name, names=", ".join(["auto", *PRESETS])))
    params = dict(PRESETS[name])
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in params:
            known = ", ".join(PRESETS[name]) or "none"
            raise ConfigError(_("augmentation {name!r} has no setting {item!r}; its settings: {known} (as key=value)")
                              .format(name=name, item=item, known=known))
        try:
            params[key] = float(value)
        except ValueError:
            raise ConfigError(_("augmentation setting {key} must be a number, got {value!r}").format(
                key=key, value=value)) from None
        if params[key] < 0:
            raise ConfigError(_("augmentation setting {key} must be >= 0, got {value}").format(key=key, value=value))
    if name == "crop-flip" and params["flip"] > 1:
        raise ConfigError(_("crop-flip's flip is a probability (0..1), got {flip}").format(flip=f"{params['flip']:g}"))
    return AugmentSpec(name, params)


def preset_for(dataset: str) -> str:
    """The augmentation preset of a dataset name (``folder:...`` sets use crop-flip)."""
    if dataset.startswith("folder:"):
        return FOLDER_PRESET
    return DATASET_PRESETS.get(dataset, "none")


class Augmenter:
    """Apply an :class:`AugmentSpec` to batches; ``augmenter(x, key)`` with an integer key."""

    def __init__(self, spec: AugmentSpec, seed: int = 0) -> None:
        self.spec = spec
        self.seed = seed

    @property
    def active(self) -> bool:
        return self.spec.name != "none"

    def generator(self, key: int, device: torch.device) -> torch.Generator:
        g = torch.Generator(device=device)
        g.manual_seed((self.seed * 1_000_003 + key * 7919 + 12345) % (2**63 - 1))
        return g

    def __call__(self, x: torch.Tensor, key: int) -> torch.Tensor:
        """An augmented copy of the (N, C, H, W) batch ``x``: same shape, dtype and memory format."""
        if not self.active or x.numel() == 0:
            return x
        g = self.generator(key, x.device)
        p = self.spec.params
        fmt = torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() else torch.contiguous_format
        if self.spec.name == "shift":
            pixels = int(round(p["pixels"]))
            out = random_crop(x, pixels, g)
        elif self.spec.name == "crop":
            out = random_crop(x, int(round(p["pad"])), g)
        elif self.spec.name == "crop-flip":
            out = random_flip(random_crop(x, int(round(p["pad"])), g), p["flip"], g)
        elif self.spec.name == "affine":
            out = random_affine(x, p["degrees"], p["translate"], p["scale"], g)
        else:  # parse_spec guarantees a known name
            raise AssertionError(self.spec.name)
        return out.contiguous(memory_format=fmt)


def build_augmenter(text: str, dataset: str, seed: int) -> Augmenter:
    return Augmenter(parse_spec(text, dataset), seed)


def _rand(n: int, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device)


def random_crop(x: torch.Tensor, pad: int, g: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``pad`` on every side, then crop the original size at a random offset per image.

    This is a random translation by up to ``pad`` pixels with zeros shifted in.
    """
    if pad <= 0:
        return x
    n, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=g, device=x.device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=g, device=x.device)
    # One gather over each padded image, flattened: a crop is the same H x W pattern of flat
    # positions moved by oy * Wp + ox. The same values as indexing with four broadcast index
    # tensors, in a quarter of its time (benchmarks/tried_round3.py), which matters once the
    # training step itself is a few milliseconds.
    wp = w + 2 * pad
    base = (torch.arange(h, device=x.device)[:, None] * wp + torch.arange(w, device=x.device)).view(1, -1)
    index = (base + (oy * wp + ox)[:, None]).unsqueeze(1).expand(n, c, h * w)
    return torch.gather(xp.reshape(n, c, -1), 2, index).view(n, c, h, w)


def random_flip(x: torch.Tensor, prob: float, g: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability ``prob``."""
    if prob <= 0:
        return x
    flip = _rand(len(x), g, x.device) < prob
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_affine(x: torch.Tensor, degrees: float, translate: float, scale: float, g: torch.Generator) -> torch.Tensor:
    """Rotate by U(-degrees, degrees), scale by U(1-scale, 1+scale), shift by U(-translate, translate) * size.

    One bilinear resample per batch (``affine_grid`` + ``grid_sample``), zeros
    outside the image. uint8 input is resampled in float and rounded back.
    """
    n = len(x)
    dev = x.device
    angle = (_rand(n, g, dev) * 2 - 1) * math.radians(degrees)
    s = 1 + (_rand(n, g, dev) * 2 - 1) * scale
    # affine_grid works in [-1, 1] coordinates: a shift of t * size pixels is 2 * t there.
    tx = (_rand(n, g, dev) * 2 - 1) * translate * 2
    ty = (_rand(n, g, dev) * 2 - 1) * translate * 2
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s  # the grid maps output -> input: inverse scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    src = x.float() if not x.is_floating_point() else x
    grid = F.affine_grid(theta.to(src.dtype), list(src.shape), align_corners=False)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if not x.is_floating_point():
        out = out.round_().clamp_(0, 255).to(x.dtype)
    return out


def describe(spec: AugmentSpec) -> dict[str, Any]:
    """JSON-friendly description (saved with runs)."""
    return {"name": spec.name, **spec.params}


def attach_augmentation(trainer: Any, augmenter: Augmenter) -> None:
    """Augment each training batch just before the training step sees it.

    The key is ignite's iteration counter, so augmentation is reproducible and
    continues exactly on resume. Evaluation batches are never augmented.
    """
    if not augmenter.active:
        return
    from ignite.engine import Events

    @trainer.on(Events.ITERATION_STARTED)
    def _augment(engine: Any) -> None:
        x, y = engine.state.batch
        engine.state.batch = (augmenter(x, engine.state.iteration), y)
