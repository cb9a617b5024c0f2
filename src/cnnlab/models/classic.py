"""torchvision's classic ImageNet networks, adapted to small images and any channel count.

``alexnet``, ``vgg11``, ``googlenet`` and ``resnet18`` are torchvision's own
modules (so ``--pretrained`` loads torchvision's ImageNet weights through its
weights API), with three adaptations that keep every pretrained weight's shape:

* **small inputs** (< 96 px): the stem convolution keeps its kernel but uses
  stride 1 (and AlexNet padding 5 so 28 px stay 28 px); ResNet's and GoogLeNet's
  stem max-pool is dropped. Any later pooling layer that would shrink the
  feature map below 1x1 becomes an identity, so every size from 8 px up works.
* **any channel count**: the first convolution takes ``in_channels``; with
  pretrained weights its RGB kernels are summed (1 channel: a grey image gives
  exactly the response of the same image in RGB) or spread evenly over C channels.
* **the head**: global average pooling and one linear layer for ``num_classes``
  (AlexNet's and VGG's 4096-wide fully connected layers, 90% of their
  parameters, are built for 224 px ImageNet and are replaced).

Inputs are normalised inside the network with ImageNet's mean and standard
deviation, so a checkpoint is self-contained and pretrained and scratch models
see the same input (cnnlab's batches are ``pixels / 255``).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn

from cnnlab.core.errors import CnnlabError, first_line
from cnnlab.core.i18n import _
from cnnlab.models.registry import register_model
from cnnlab.models.shapes import ShapeError, conv_output_size, pool_output_size

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SMALL_INPUT = 96  # below this many pixels a side, the ImageNet stem's downsampling is removed


class PretrainedWeightsError(CnnlabError):
    """torchvision's pretrained weights could not be obtained."""


class InputNorm(nn.Module):
    """``(x - mean) / std`` with ImageNet statistics (averaged for channel counts other than 3)."""

    def __init__(self, channels: int):
        super().__init__()
        mean = torch.tensor(IMAGENET_MEAN) if channels == 3 else torch.full((channels,), sum(IMAGENET_MEAN) / 3)
        std = torch.tensor(IMAGENET_STD) if channels == 3 else torch.full((channels,), sum(IMAGENET_STD) / 3)
        # Not persistent: they are constants of the architecture, not learned state.
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"channels={self.mean.shape[1]}"


class ClassicNet(nn.Module):
    """``InputNorm`` followed by an adapted torchvision network (``self.net``)."""

    def __init__(self, net: nn.Module, in_channels: int):
        super().__init__()
        self.norm = InputNorm(in_channels)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))


# --- pretrained weights --------------------------------------------------------------------


def load_weights(arch: str) -> Any:
    """torchvision's DEFAULT ImageNet weights enum for ``arch``, with its state dict fetched.

    torchvision keeps downloaded files in ``$TORCH_HOME/hub/checkpoints`` and
    never downloads a file that is already there, which is how they can be
    provided offline.
    """
    from torchvision.models import get_model_weights

    weights = get_model_weights(arch).DEFAULT
    try:
        weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # URLError, HTTPError, OSError, hash mismatch: all mean "no weights"
        name = weights.url.rsplit("/", 1)[-1]
        folder = torch.hub.get_dir() + "/checkpoints"
        reason = first_line(exc)
        raise PretrainedWeightsError(
            _("could not get the ImageNet weights for {arch} ({weights}) from {url}: {reason}. Without internet, copy "
              "{name} into {folder}/ (or set $TORCH_HOME), or train without pretrained weights").format(
                arch=arch, weights=weights, url=weights.url, reason=reason, name=name, folder=folder),
            option="model.pretrained",
        ) from None
    return weights


# --- adaptation ----------------------------------------------------------------------------


def adapt_in_channels(conv: nn.Conv2d, channels: int, pretrained: bool) -> nn.Conv2d:
    """A copy of ``conv`` taking ``channels`` inputs; pretrained RGB kernels are summed and spread."""
    if conv.in_channels == channels:
        return conv
    new = nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, bias=conv.bias is not None)
    if pretrained:
        with torch.no_grad():
            # A C-channel image whose channels are all equal to g gives sum_rgb(W) * g, as RGB (g, g, g) does.
            new.weight.copy_(conv.weight.sum(1, keepdim=True).repeat(1, channels, 1, 1) / channels)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    return new


def fit_pools(size: int, path: list[tuple[nn.Module, str]]) -> int:
    """Walk the size-changing layers in forward order; pools that would not fit become identities.

    ``path`` lists ``(parent, attribute)`` of every layer that changes the
    spatial size (the others preserve it). Returns the final feature-map side.
    """
    for parent, attr in path:
        layer = getattr(parent, attr)
        if isinstance(layer, nn.Conv2d):
            size = conv_output_size(size, layer.kernel_size[0], layer.stride[0], layer.padding[0], layer.dilation[0])
        elif isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
            k, s, p = (v if isinstance(v, int) else v[0] for v in (layer.kernel_size, layer.stride, layer.padding))
            d = getattr(layer, "dilation", 1)
            try:
                out = pool_output_size(size, k, s, p, d if isinstance(d, int) else d[0], layer.ceil_mode)
            except ShapeError:
                out = 0
            if out < 1 or size < 2:
                setattr(parent, attr, nn.Identity())
            else:
                size = out
    return size


def _build(arch: str, builder: Callable[..., nn.Module], pretrained: bool, **kwargs: Any) -> nn.Module:
    if pretrained:
        return builder(weights=load_weights(arch), **kwargs)
    if arch not in ("alexnet", "vgg11"):
        return builder(weights=None, **kwargs)
    # AlexNet's and VGG's ImageNet classifiers (58M / 120M weights) are replaced anyway: build the
    # network on the meta device so they are never allocated, then initialise the features as
    # torchvision does (PyTorch's defaults for AlexNet, Kaiming normal for VGG).
    with torch.device("meta"):
        m = builder(weights=None, **kwargs)
    m.classifier = nn.Identity()
    m.to_empty(device="cpu")
    for layer in m.features:
        if isinstance(layer, nn.Conv2d):
            if arch == "vgg11":
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(layer.bias)
            else:
                layer.reset_parameters()
    return m


def _alexnet(in_channels: int, num_classes: int, image_size: int, pretrained: bool) -> nn.Module:
    from torchvision.models import alexnet

    m = _build("alexnet", alexnet, pretrained)
    f = m.features
    if image_size < SMALL_INPUT:
        f[0].stride, f[0].padding = (1, 1), (5, 5)
    f[0] = adapt_in_channels(f[0], in_channels, pretrained)
    fit_pools(image_size, [(f, str(i)) for i, layer in enumerate(f) if isinstance(layer, (nn.Conv2d, nn.MaxPool2d))])
    m.avgpool = nn.AdaptiveAvgPool2d(1)
    m.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(256, num_classes))
    return m


def _vgg11(in_channels: int, num_classes: int, image_size: int, pretrained: bool) -> nn.Module:
    from torchvision.models import vgg11

    m = _build("vgg11", vgg11, pretrained)
    f = m.features
    f[0] = adapt_in_channels(f[0], in_channels, pretrained)
    fit_pools(image_size, [(f, str(i)) for i, layer in enumerate(f) if isinstance(layer, (nn.Conv2d, nn.MaxPool2d))])
    m.avgpool = nn.AdaptiveAvgPool2d(1)
    m.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(512, num_classes))
    return m


def _googlenet(in_channels: int, num_classes: int, image_size: int, pretrained: bool) -> nn.Module:
    from torchvision.models import googlenet

    # transform_input=False: InputNorm already normalises. No auxiliary heads: they only matter for
    # 224 px ImageNet training and would leave parameters without gradients in eval-style losses.
    kwargs: dict[str, Any] = {"aux_logits": False, "transform_input": False}
    if not pretrained:
        kwargs["init_weights"] = True
    m = _build("googlenet", googlenet, pretrained, **kwargs)
    if image_size < SMALL_INPUT:
        m.conv1.conv.stride = (1, 1)
        m.maxpool1 = nn.Identity()
    m.conv1.conv = adapt_in_channels(m.conv1.conv, in_channels, pretrained)
    path = [(m.conv1, "conv"), (m, "maxpool1"), (m, "maxpool2"), (m, "maxpool3"), (m, "maxpool4")]
    fit_pools(image_size, [(p, a) for p, a in path if isinstance(getattr(p, a), (nn.Conv2d, nn.MaxPool2d))])
    m.fc = nn.Linear(m.fc.in_features, num_classes)
    return m


def _resnet18(in_channels: int, num_classes: int, image_size: int, pretrained: bool) -> nn.Module:
    from torchvision.models import resnet18

    m = _build("resnet18", resnet18, pretrained)
    if image_size < SMALL_INPUT:
        m.conv1.stride = (1, 1)
        m.maxpool = nn.Identity()
    m.conv1 = adapt_in_channels(m.conv1, in_channels, pretrained)
    m.fc = nn.Linear(m.fc.in_features, num_classes)
    return m


def _register(name: str, make: Callable[..., nn.Module], description: str) -> None:
    @register_model(name, description)
    def build(in_channels: int = 3, num_classes: int = 10, image_size: int = 32, pretrained: bool = False) -> nn.Module:
        if image_size < 8:
            raise ValueError(_("{name} needs images of at least 8x8 pixels, got {size}").format(name=name, size=image_size))
        return ClassicNet(make(in_channels, num_classes, image_size, pretrained), in_channels)


_register("alexnet", _alexnet, "torchvision AlexNet (2012), small-input stem, GAP head; pretrained: ImageNet")
_register("vgg11", _vgg11, "torchvision VGG-11 (2014), GAP head; pretrained: ImageNet")
_register("googlenet", _googlenet, "torchvision GoogLeNet / Inception v1 (2014), small-input stem; pretrained: ImageNet")
_register("resnet18", _resnet18, "torchvision ResNet-18 (2015), small-input stem; pretrained: ImageNet")
