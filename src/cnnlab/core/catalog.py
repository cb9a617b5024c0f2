"""The model and dataset catalog, declared without importing torch: model names, descriptions,
pretrained weights and each model's parameters and multiply-adds for MNIST's input; dataset names
and descriptions.

`cnnlab --help`, `cnnlab train --help` and shell completion list models and datasets from here, so
they answer without importing torch (``tests/test_startup.py``).

`cnnlab models` prints this table for its default input (1x28x28, 10 classes) without building
a single model, so it answers in the time Python starts (building the zoo needs torch, and
torchvision with torch._dynamo; benchmarks/README.md, "Start-up"). Any other input builds the models
(``cnnlab.models.summary.models_table``). ``tests/test_catalog.py`` builds every registered model
and checks that it matches this table exactly, so the two cannot drift apart: a new model fails
that test until its line is added here (the test prints the line).
"""
from __future__ import annotations

from dataclasses import dataclass

from cnnlab.core.i18n import N_, _, format_int

DEFAULT_INPUT = ((1, 28, 28), 10)  # (C, H, W), classes: the input the figures below are for


@dataclass(frozen=True)
class ModelInfo:
    name: str
    params: int  # for DEFAULT_INPUT
    macs: int  # multiply-adds of one image, for DEFAULT_INPUT
    pretrained: bool
    description: str


MODELS: tuple[ModelInfo, ...] = (
    ModelInfo("alexnet", 2_456_778, 134_962_688, True,
              N_("torchvision AlexNet (2012), small-input stem, GAP head; pretrained: ImageNet")),
    ModelInfo("googlenet", 5_603_882, 356_008_704, True,
              N_("torchvision GoogLeNet / Inception v1 (2014), small-input stem; pretrained: ImageNet")),
    ModelInfo("lenet5", 61_706, 416_520, False,
              N_("LeNet-5 as in the lesson: ReLU, max pooling, 61,706 parameters on MNIST")),
    ModelInfo("lenet5-classic", 61_706, 416_520, False,
              N_("LeNet-5 as LeCun 1998 built it: tanh, average pooling, 61,706 parameters on MNIST")),
    ModelInfo("resnet18", 11_175_370, 457_807_872, True,
              N_("torchvision ResNet-18 (2015), small-input stem; pretrained: ImageNet")),
    ModelInfo("smallcnn", 140_458, 21_903_104, False,
              N_("a small modern CNN: 3x3 conv-BN-ReLU blocks, global average pooling, 140k parameters")),
    ModelInfo("vgg11", 9_224_458, 94_828_544, True,
              N_("torchvision VGG-11 (2014), GAP head; pretrained: ImageNet")),
)


DATASETS: tuple[tuple[str, str], ...] = (
    ("mnist", N_("handwritten digits, 1x28x28, 10 classes, 60k/10k")),
    ("fashion-mnist", N_("Zalando clothing photos, 1x28x28, 10 classes, 60k/10k")),
    ("kmnist", N_("Kuzushiji (cursive Japanese) characters, 1x28x28, 10 classes, 60k/10k")),
    ("emnist", N_("EMNIST balanced: digits and letters, 1x28x28, 47 classes, 112.8k/18.8k")),
    ("cifar10", N_("small colour photos, 3x32x32, 10 classes, 50k/10k")),
    ("cifar100", N_("small colour photos, 3x32x32, 100 classes, 50k/10k")),
    ("svhn", N_("house numbers from Street View, 3x32x32, 10 classes, 73k/26k")),
    ("digits", N_("scikit-learn's bundled 8x8 digits (offline), resized to 1x28x28, 1,797 images")),
    ("folder:PATH", N_("your images: PATH/train/CLASS/*.png (optional val/, test/)")),
)


def model_names() -> list[str]:
    """The registered models' names, sorted (a test checks them against ``cnnlab.models.list_models``)."""
    return sorted(m.name for m in MODELS)


def format_models_table(input_shape: tuple[int, int, int], num_classes: int,
                        rows: list[tuple[str, str, str, str, str]]) -> str:
    """The `cnnlab models` table from rows of (name, params, MACs, pretrained, description) texts."""
    c, h, w = input_shape
    model, params, macs, pretrained, description = _("model"), _("params"), _("MACs"), _("pretrained"), _("description")
    nw = max(len(model), *(len(r[0]) for r in rows))
    pw = max(len(params), *(len(r[1]) for r in rows))
    mw = max(len(macs), *(len(r[2]) for r in rows))
    tw = max(10, len(pretrained))
    lines = [_("models for a {c}x{h}x{w} input, {classes} classes (MACs: multiply-adds per image)").format(
                 c=c, h=h, w=w, classes=num_classes),
             f"{model:<{nw}}  {params:>{pw}}  {macs:>{mw}}  {pretrained:<{tw}}  {description}"]
    lines += [f"{r[0]:<{nw}}  {r[1]:>{pw}}  {r[2]:>{mw}}  {r[3]:<{tw}}  {r[4]}" for r in rows]
    return "\n".join(lines)


def declared_models_table() -> str:
    """The models table for :data:`DEFAULT_INPUT`, from the declarations alone (no torch)."""
    rows = [(m.name, format_int(m.params), format_int(m.macs), _("yes") if m.pretrained else "", _(m.description))
            for m in sorted(MODELS, key=lambda m: m.name)]
    return format_models_table(*DEFAULT_INPUT, rows)
