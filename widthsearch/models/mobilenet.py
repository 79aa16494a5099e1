"""MobileNetV1 and MobileNetV2 for ImageNet-sized inputs (3x224x224, 1000 classes by default)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._layers import ConvBNAct, init_weights, make_divisible

__all__ = ["MobileNetV1", "MobileNetV2", "InvertedResidual", "DepthwiseSeparable"]


class DepthwiseSeparable(nn.Module):
    """MobileNetV1 block: depthwise 3x3 (``dw``) then pointwise 1x1 (``pw``), each with BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.dw = ConvBNAct(in_channels, in_channels, 3, stride=stride, groups=in_channels)
        self.pw = ConvBNAct(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pw(self.dw(x))


class MobileNetV1(nn.Module):
    """MobileNetV1 (Howard et al., 2017, arXiv:1704.04861), the standard ImageNet network.

    A 3x3 stride-2 stem with 32 channels, 13 depthwise-separable blocks (64 ... 1024
    channels), global average pooling and ``Linear(1024, num_classes)`` with bias. Every conv
    has no bias and is followed by BatchNorm and ReLU. At width 1.0 and 1x3x224x224 it has
    568,740,352 MACs (conv + linear) and 4,231,976 parameters.

    ``width_mult`` scales every channel count with :func:`make_divisible` (nearest multiple of
    8, never more than 10 % below the exact value), as in the reference implementations.

    Module names: ``stem.0`` (conv), ``blocks.<i>.dw.0``, ``blocks.<i>.pw.0``, ``classifier``.
    """

    # (output channels, stride) of the 13 depthwise-separable blocks
    CONFIG: tuple[tuple[int, int], ...] = (
        (64, 1),
        (128, 2),
        (128, 1),
        (256, 2),
        (256, 1),
        (512, 2),
        (512, 1),
        (512, 1),
        (512, 1),
        (512, 1),
        (512, 1),
        (1024, 2),
        (1024, 1),
    )

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0) -> None:
        super().__init__()
        in_ch = make_divisible(32 * width_mult)
        self.stem = ConvBNAct(3, in_ch, 3, stride=2)
        blocks = []
        for out, stride in self.CONFIG:
            out_ch = make_divisible(out * width_mult)
            blocks.append(DepthwiseSeparable(in_ch, out_ch, stride))
            in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_ch, num_classes)
        init_weights(self, linear="normal")

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.blocks(x)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (``expand``, absent when the ratio is 1), depthwise 3x3
    (``dw``), linear 1x1 projection (``project``); residual add when stride 1 and in == out."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.use_residual = stride == 1 and in_channels == out_channels
        self.has_expand = expand_ratio != 1
        if self.has_expand:
            self.expand = ConvBNAct(in_channels, hidden, 1, activation=nn.ReLU6)
        self.dw = ConvBNAct(hidden, hidden, 3, stride=stride, groups=hidden, activation=nn.ReLU6)
        self.project = ConvBNAct(hidden, out_channels, 1, activation=None)

    def forward(self, x: Tensor) -> Tensor:
        out = self.expand(x) if self.has_expand else x
        out = self.dw(out)
        out = self.project(out)
        if self.use_residual:
            out = out + x
        return out


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al., CVPR 2018, arXiv:1801.04381), torchvision's layout.

    Stem 3x3 stride-2 conv (32), 17 inverted-residual blocks with ReLU6, a 1x1 conv to 1280,
    global average pooling, ``Dropout(dropout)`` (default 0.2) and ``Linear(1280, num_classes)``.
    At width 1.0 and 1x3x224x224: 300,774,272 MACs and 3,504,872 parameters.

    ``width_mult`` scales the stem and block outputs with :func:`make_divisible` (multiple of
    8); the last conv is ``make_divisible(1280 * max(1, width_mult))``, i.e. it only grows.

    Module names: ``stem.0``, ``blocks.<i>.expand.0`` / ``.dw.0`` / ``.project.0``, ``head.0``,
    ``classifier``.
    """

    # (expansion t, output channels c, repeats n, first stride s)
    CONFIG: tuple[tuple[int, int, int, int], ...] = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        in_ch = make_divisible(32 * width_mult)
        last_ch = make_divisible(1280 * max(1.0, width_mult))
        self.stem = ConvBNAct(3, in_ch, 3, stride=2, activation=nn.ReLU6)
        blocks = []
        for t, c, n, s in self.CONFIG:
            out_ch = make_divisible(c * width_mult)
            for i in range(n):
                blocks.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t))
                in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBNAct(in_ch, last_ch, 1, activation=nn.ReLU6)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(last_ch, num_classes)
        init_weights(self, linear="normal")

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.blocks(x)
        x = self.head(x)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        x = self.dropout(x)
        return self.classifier(x)
