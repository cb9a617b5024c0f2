"""LeNet-5, exactly as the lesson builds it.

Two conv/ReLU/max-pool stages extract features, three linear layers classify:

    input 1x28x28
    conv 1->6, 5x5, padding 2   -> 6x28x28   (padding keeps MNIST's 28x28, as LeCun's 32x32 input did)
    ReLU, max-pool 2            -> 6x14x14
    conv 6->16, 5x5             -> 16x10x10
    ReLU, max-pool 2            -> 16x5x5
    flatten                     -> 400
    linear 400->120, ReLU, linear 120->84, ReLU, linear 84->10

61,706 parameters. The class keeps the lesson's name and attribute names so
``print(model)`` shows the same module tree as the lesson.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from cnnlab.core.i18n import _
from cnnlab.models.registry import register_model


class Lenet5(nn.Module):
    # forward() is classifier(flatten(features(x))): lets evaluation use cnnlab.accel.fastpath.
    inference_parts = ("features", "classifier")

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        # For other image sizes the flattened width follows the same arithmetic:
        # padding 2 keeps the size, each 5x5 conv without padding removes 4, each pool halves.
        side = ((image_size // 2) - 4) // 2
        if side < 1:
            raise ValueError(_("LeNet-5 needs images of at least 12x12 pixels, got {size}").format(size=image_size))
        self.classifier = nn.Sequential(
            nn.Linear(16 * side * side, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.features(x)
        z = torch.flatten(z, 1)
        return self.classifier(z)


@register_model("lenet5", "LeNet-5 as in the lesson: ReLU, max pooling, 61,706 parameters on MNIST")
def lenet5(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> nn.Module:
    return Lenet5(in_channels, num_classes, image_size)


class Lenet5Classic(nn.Module):
    """LeNet-5 in the style of LeCun et al. (1998): tanh units and average ("subsampling") pooling.

    Same layer sizes as :class:`Lenet5` (so the two are directly comparable); what
    differs is the nonlinearity and the pooling, which is how the network was
    built before ReLU and max pooling became the default.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2),
            nn.Tanh(),
            nn.AvgPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.Tanh(),
            nn.AvgPool2d(2),
        )
        side = ((image_size // 2) - 4) // 2
        if side < 1:
            raise ValueError(_("LeNet-5 needs images of at least 12x12 pixels, got {size}").format(size=image_size))
        self.classifier = nn.Sequential(
            nn.Linear(16 * side * side, 120),
            nn.Tanh(),
            nn.Linear(120, 84),
            nn.Tanh(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


@register_model("lenet5-classic", "LeNet-5 as LeCun 1998 built it: tanh, average pooling, 61,706 parameters on MNIST")
def lenet5_classic(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> nn.Module:
    return Lenet5Classic(in_channels, num_classes, image_size)
