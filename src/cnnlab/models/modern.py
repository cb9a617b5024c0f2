"""A small modern CNN: conv-BatchNorm-ReLU blocks, global average pooling.

What changed since LeNet-5, in one small network: 3x3 convolutions stacked in
pairs (the receptive field of a 5x5 with fewer weights), batch normalisation
after every convolution (higher learning rates, less sensitivity to the
initialisation), ReLU, max pooling between stages, dropout before a single
linear classifier, and global average pooling so any image size works.

    stage 1: 32 ch, two 3x3 conv-BN-ReLU, max-pool 2
    stage 2: 64 ch, two 3x3 conv-BN-ReLU, max-pool 2
    stage 3: 128 ch, one 3x3 conv-BN-ReLU, global average pool
    dropout, linear 128 -> classes

About 140k parameters and 22M multiply-adds for a 28x28 image (53x LeNet-5's
compute). Its recipe is ``mnist-smallcnn`` (AdamW, one-cycle, light affine
augmentation, label smoothing); test accuracies measured on MNIST are in
benchmarks/README.md.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from cnnlab.core.i18n import _
from cnnlab.models.registry import register_model


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    # bias=False: BatchNorm's own shift makes a conv bias redundant.
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, width: int = 32,
                 dropout: float = 0.25):
        super().__init__()
        if image_size < 4:
            raise ValueError(_("the small CNN needs images of at least 4x4 pixels, got {size}").format(size=image_size))
        w = width
        self.features = nn.Sequential(
            conv_bn_relu(in_channels, w),
            conv_bn_relu(w, w),
            nn.MaxPool2d(2),
            conv_bn_relu(w, 2 * w),
            conv_bn_relu(2 * w, 2 * w),
            nn.MaxPool2d(2),
            conv_bn_relu(2 * w, 4 * w),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * w, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


@register_model("smallcnn", "a small modern CNN: 3x3 conv-BN-ReLU blocks, global average pooling, 140k parameters")
def smallcnn(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> nn.Module:
    return SmallCNN(in_channels, num_classes, image_size)
