"""A user's own CNN for widthsearch: any importable callable returning an ``nn.Module`` will do.

Use it from the command line (from the repository root) as ``--model examples/my_model.py:build``
or in Python as ``train_supernet({...}, out, model=build())``. It trains on the bundled 8x8 digits
in seconds on a CPU.

The network has what makes channel search interesting: a residual add (its two operands must
keep one width, or be zero-padded with ``--residual pad``) and a depthwise conv (its channels
follow its input's). ``build`` takes ``num_classes`` (widthsearch passes the data's) and
``width_mult`` (needed where the same network is built narrower or wider: the uniform-width
baselines of ``run``, SP-Net's bases, Network Adjustment's widened space); ``width`` is an
argument of our own, set with ``--model-arg width=24``.
"""
from __future__ import annotations

import torch
from torch import nn


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class MyNet(nn.Module):
    """stem 3x3 -> inverted residual (1x1 expand, 3x3 depthwise, 1x1 project) + skip -> 3x3 /2 -> pool -> fc."""

    def __init__(self, width: int = 16, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = conv_bn(in_channels, width, 3)
        self.expand = conv_bn(width, 4 * width, 1)
        self.depthwise = conv_bn(4 * width, 4 * width, 3, groups=4 * width)
        self.project = nn.Sequential(nn.Conv2d(4 * width, width, 1, bias=False), nn.BatchNorm2d(width))
        self.down = conv_bn(width, 2 * width, 3, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.project(self.depthwise(self.expand(x)))  # residual add: stem and project are tied
        x = self.down(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def build(num_classes: int = 10, width_mult: float = 1.0, width: int = 16) -> MyNet:
    """The factory widthsearch calls: ``MyNet`` with ``width x width_mult`` base channels."""
    return MyNet(max(1, round(width * width_mult)), num_classes)
