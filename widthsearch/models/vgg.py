"""VGG-16 with BatchNorm for CIFAR-sized inputs (3x32x32)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._layers import ConvBNAct, init_weights, scale_plain

__all__ = ["CifarVGG"]

# "M" is a 2x2 max-pool.
VGG16_CONFIG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)


class CifarVGG(nn.Module):
    """VGG-16 (Simonyan & Zisserman, ICLR 2015, arXiv:1409.1556) with BN, CIFAR variant.

    13 conv3x3 + BN + ReLU layers in the configuration 64,64,M,128,128,M,256x3,M,512x3,M,
    512x3,M (``features.<i>``; a conv layer's conv is ``features.<i>.0``, the max-pools are
    ``features.<i>`` too), then global average pooling to 1x1 and ``Linear(512, num_classes)``
    (``classifier``). This is the common network-slimming / pruning CIFAR VGG-16.

    ``width_mult`` scales the conv widths by plain rounding, ``max(1, round(c * width_mult))``.
    """

    def __init__(self, num_classes: int = 10, width_mult: float = 1.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for item in VGG16_CONFIG:
            if item == "M":
                layers.append(nn.MaxPool2d(2, stride=2))
            else:
                out_ch = scale_plain(int(item), width_mult)
                layers.append(ConvBNAct(in_ch, out_ch, 3))
                in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_ch, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)
