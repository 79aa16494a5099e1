"""ResNets: ImageNet ResNet-18/50 and the CIFAR ResNet-20/56 (He et al., CVPR 2016)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._layers import init_weights, scale_plain

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "CifarResNet"]


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Projection shortcut: 1x1 conv (no bias, given stride) + BN (option B)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs (``conv1``/``bn1``, ``conv2``/``bn2``) plus a skip connection.

    The skip is the identity when the shape is kept, otherwise ``shortcut`` (1x1 conv + BN,
    option B). Output: ``relu(bn2(conv2(...)) + skip)``, written out of place.
    """

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.has_shortcut = stride != 1 or in_channels != out_channels
        if self.has_shortcut:
            self.shortcut = _shortcut(in_channels, out_channels, stride)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = self.shortcut(x) if self.has_shortcut else x
        out = out + identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride, "ResNet v1.5"), 1x1 expand x4, plus a skip.

    Children ``conv1``/``bn1``, ``conv2``/``bn2``, ``conv3``/``bn3``, and ``shortcut``
    (1x1 conv + BN) when the shape changes.
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.has_shortcut = stride != 1 or in_channels != out_channels
        if self.has_shortcut:
            self.shortcut = _shortcut(in_channels, out_channels, stride)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = self.shortcut(x) if self.has_shortcut else x
        out = out + identity
        return self.relu(out)


class ResNet(nn.Module):
    """ImageNet ResNet (He et al., CVPR 2016, arXiv:1512.03385), torchvision's layout.

    Stem: 7x7 stride-2 conv (64) + BN + ReLU + 3x3 stride-2 max-pool (``stem.0`` ... ``stem.3``);
    four stages ``layer1`` ... ``layer4`` of :class:`BasicBlock` or :class:`Bottleneck` (base
    widths 64/128/256/512, strides 1/2/2/2); global average pooling; ``fc``. Stride sits on the
    3x3 conv of a bottleneck (v1.5). Shape-changing blocks use a 1x1 conv + BN shortcut.

    ``width_mult`` scales the stem and stage base widths by plain rounding,
    ``max(1, round(c * width_mult))``; the bottleneck output is 4x the scaled base width.

    At width 1.0 and 1x3x224x224: ResNet-18 has 1,814,073,344 MACs and 11,689,512 parameters;
    ResNet-50 has 4,089,184,256 MACs and 25,557,032 parameters.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        num_classes: int = 1000,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        stem_ch = scale_plain(64, width_mult)
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem_ch, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(stem_ch),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        in_ch = stem_ch
        for index, (base, n, stride) in enumerate(zip((64, 128, 256, 512), layers, (1, 2, 2, 2))):
            planes = scale_plain(base, width_mult)
            blocks = []
            for i in range(n):
                blocks.append(block(in_ch, planes, stride if i == 0 else 1))
                in_ch = planes * block.expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


class CifarResNet(nn.Module):
    """CIFAR ResNet-(6n+2) (He et al., CVPR 2016, Sec. 4.2): ResNet-20 (n=3), ResNet-56 (n=9).

    Stem 3x3 conv (16) + BN + ReLU (``stem.0``...), three stages ``layer1``...``layer3`` of n
    :class:`BasicBlock` each with widths 16/32/64 and strides 1/2/2, global average pooling and
    ``fc``. Unlike the paper's option A (zero-padded identity), the two shape-changing blocks use
    a **1x1 conv + BN projection shortcut (option B)**: the channel analyser needs parameterised
    shortcuts so that the widths of the stages can be searched independently. This adds a few
    thousand parameters over the paper's counts.

    ``width_mult`` scales the widths by plain rounding, ``max(1, round(c * width_mult))``.
    """

    def __init__(self, depth: int = 20, num_classes: int = 10, width_mult: float = 1.0) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        stem_ch = scale_plain(16, width_mult)
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem_ch),
            nn.ReLU(),
        )
        in_ch = stem_ch
        for index, (base, stride) in enumerate(zip((16, 32, 64), (1, 2, 2))):
            planes = scale_plain(base, width_mult)
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(in_ch, planes, stride if i == 0 else 1))
                in_ch = planes
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)
