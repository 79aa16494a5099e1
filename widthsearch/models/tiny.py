"""A tiny residual CNN for 8x8 single-channel digits (the default demo model)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._layers import ConvBNAct, init_weights, scale_plain
from .resnet import BasicBlock

__all__ = ["TinyCNN"]


class TinyCNN(nn.Module):
    """Small CNN for 1x8x8 inputs (e.g. scikit-learn's digits), trains on a CPU in seconds.

    * ``conv1``: 3x3 conv 1->32 + BN + ReLU at 8x8 (conv is ``conv1.0``)
    * ``conv2``: 3x3 stride-2 conv 32->64 + BN + ReLU, 8x8 -> 4x4 (``conv2.0``)
    * ``block``: a basic residual block at 64 channels with an identity skip add
      (``block.conv1``, ``block.conv2``), so ``conv2`` and ``block.conv2`` share one width
    * global average pooling and ``fc`` = ``Linear(64, num_classes)``

    At width 1.0: 1,493,632 MACs and 93,546 parameters for 1x1x8x8.
    ``width_mult`` scales 32/64 by plain rounding, ``max(1, round(c * width_mult))``.
    """

    def __init__(self, num_classes: int = 10, width_mult: float = 1.0, in_channels: int = 1) -> None:
        super().__init__()
        c1 = scale_plain(32, width_mult)
        c2 = scale_plain(64, width_mult)
        self.conv1 = ConvBNAct(in_channels, c1, 3)
        self.conv2 = ConvBNAct(c1, c2, 3, stride=2)
        self.block = BasicBlock(c2, c2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c2, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.conv2(x)
        x = self.block(x)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)
