"""MNASNet-B1 (depth multiplier 1.0) for ImageNet-sized inputs."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._layers import ConvBNAct, init_weights, make_divisible

__all__ = ["MNASNet", "MBConv"]


class MBConv(nn.Module):
    """MNASNet inverted residual: 1x1 expand, kxk depthwise, linear 1x1 project (``expand``,
    ``dw``, ``project``); residual add when stride 1 and in == out. The expansion is always
    applied, also for ratio 3."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expand_ratio: int
    ) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand = ConvBNAct(in_channels, hidden, 1)
        self.dw = ConvBNAct(hidden, hidden, kernel_size, stride=stride, groups=hidden)
        self.project = ConvBNAct(hidden, out_channels, 1, activation=None)

    def forward(self, x: Tensor) -> Tensor:
        out = self.project(self.dw(self.expand(x)))
        if self.use_residual:
            out = out + x
        return out


class MNASNet(nn.Module):
    """MNASNet-B1 (Tan et al., CVPR 2019, arXiv:1807.11626), the structure of torchvision's
    ``mnasnet1_0``.

    Stem: 3x3 stride-2 conv (32) + BN + ReLU, depthwise 3x3 (32) + BN + ReLU, linear 1x1 to 16
    (``stem.0``, ``stem.1``, ``stem.2``). Then six stacks of :class:`MBConv` (``blocks.<i>``,
    16 blocks in all; out channels 24/40/80/96/192/320, kernels 3/5/5/3/5/3, expansions
    3/3/6/6/6/6, repeats 3/3/3/2/4/1), a 1x1 conv to 1280 (``head.0``), global average pooling,
    ``Dropout(dropout)`` (default 0.2) and ``Linear(1280, num_classes)`` (``classifier``).
    At width 1.0 and 1x3x224x224: 314,415,872 MACs and 4,383,312 parameters.

    ``width_mult`` (torchvision's ``alpha``) scales every channel count except the final 1280
    with :func:`make_divisible` (multiple of 8, at most 10 % below the exact value).
    """

    # (output channels, kernel, first stride, expansion, repeats)
    CONFIG: tuple[tuple[int, int, int, int, int], ...] = (
        (24, 3, 2, 3, 3),
        (40, 5, 2, 3, 3),
        (80, 5, 2, 6, 3),
        (96, 3, 1, 6, 2),
        (192, 5, 2, 6, 4),
        (320, 3, 1, 6, 1),
    )

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        c0 = make_divisible(32 * width_mult)
        c1 = make_divisible(16 * width_mult)
        self.stem = nn.Sequential(
            ConvBNAct(3, c0, 3, stride=2),
            ConvBNAct(c0, c0, 3, groups=c0),
            ConvBNAct(c0, c1, 1, activation=None),
        )
        blocks = []
        in_ch = c1
        for out, k, s, t, n in self.CONFIG:
            out_ch = make_divisible(out * width_mult)
            for i in range(n):
                blocks.append(MBConv(in_ch, out_ch, k, s if i == 0 else 1, t))
                in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBNAct(in_ch, 1280, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(1280, num_classes)
        init_weights(self, linear="normal")

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.blocks(x)
        x = self.head(x)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        x = self.dropout(x)
        return self.classifier(x)
