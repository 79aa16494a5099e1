"""The two Channel-Bench-Macro (CBM) networks for CIFAR-10 (3x32x32, 10 classes).

CBM (Su et al., "Searching for Network Width with Bilaterally Coupled Network", BCNetV2,
arXiv:2203.13714) tabulates the CIFAR-10 accuracy of every width configuration of two small
networks. Each has 7 searchable widths with 4 choices (d/4 of the maximum, d = 1..4); a table
key is a 7-digit string such as ``"2344241"``. :func:`cbm_widths` turns a key into widths and
``CBMMobileNet(widths=...)`` / ``CBMResNet(widths=...)`` build that entry. FLOPs (MACs of conv and
linear layers at 1x3x32x32) and parameter counts of the built networks equal the table's
``flops`` and ``params`` for every entry.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import UserError
from ._layers import ConvBNAct, init_weights, scale_plain

__all__ = [
    "CBM_MAX_WIDTHS",
    "CBMMobileNet",
    "CBMResNet",
    "cbm_widths",
    "cbm_key",
]

#: The maximum of each of the 7 searchable widths, in table-key order.
CBM_MAX_WIDTHS: dict[str, tuple[int, ...]] = {
    "mobilenet": (128, 768, 768, 768, 256, 1536, 1024),
    "resnet": (256, 256, 256, 512, 512, 512, 512),
}


def _space_name(space: str) -> str:
    name = space[4:] if space.startswith("cbm_") else space
    if name not in CBM_MAX_WIDTHS:
        raise UserError(f"unknown Channel-Bench-Macro space {space!r}; known: mobilenet, resnet")
    return name


def cbm_widths(space: str, key: str) -> tuple[int, ...]:
    """Widths of a CBM table key: digit ``d`` at position ``i`` is ``d/4 * max_width[i]``.

    ``space`` is ``"mobilenet"``/``"resnet"`` (or ``"cbm_mobilenet"``/``"cbm_resnet"``).
    """
    maxima = CBM_MAX_WIDTHS[_space_name(space)]
    if len(key) != len(maxima) or any(ch not in "1234" for ch in key):
        raise UserError(f"bad Channel-Bench-Macro key {key!r}: expected 7 digits from 1 to 4")
    return tuple(int(ch) * m // 4 for ch, m in zip(key, maxima))


def cbm_key(space: str, widths: Sequence[int]) -> str:
    """Inverse of :func:`cbm_widths`; raises ``UserError`` if a width is not on the 1/4 grid."""
    maxima = CBM_MAX_WIDTHS[_space_name(space)]
    widths = _check_widths(widths)
    digits = []
    for w, m in zip(widths, maxima):
        if (4 * w) % m != 0 or not 1 <= 4 * w // m <= 4:
            raise UserError(f"width {w} is not a CBM choice for max width {m} (need {m // 4}, {m // 2}, ...)")
        digits.append(str(4 * w // m))
    return "".join(digits)


def _check_widths(widths: Sequence[int]) -> tuple[int, ...]:
    try:
        values = tuple(int(w) for w in widths)
    except (TypeError, ValueError):
        raise UserError(f"widths must be 7 positive integers, got {widths!r}") from None
    if len(values) != 7 or any(v <= 0 for v in values) or any(v != w for v, w in zip(values, widths)):
        raise UserError(f"widths must be 7 positive integers, got {list(widths)!r}")
    return values


def _resolve_widths(space: str, widths: Sequence[int] | None, width_mult: float) -> tuple[int, ...]:
    if widths is None:
        return tuple(scale_plain(m, width_mult) for m in CBM_MAX_WIDTHS[space])
    if width_mult != 1.0:
        raise UserError("give either widths or width_mult for a Channel-Bench-Macro model, not both")
    return _check_widths(widths)


class CBMInvertedResidual(nn.Module):
    """CBM "MB" block: 1x1 expand + BN + ReLU (``expand``), depthwise 3x3 + BN + ReLU (``dw``,
    carries the stride), 1x1 project + BN (``project``); residual add when ``residual``."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int, stride: int, residual: bool) -> None:
        super().__init__()
        if residual and (stride != 1 or in_channels != out_channels):
            raise ValueError("a residual MB block needs stride 1 and in == out")
        self.residual = residual
        self.expand = ConvBNAct(in_channels, hidden, 1)
        self.dw = ConvBNAct(hidden, hidden, 3, stride=stride, groups=hidden)
        self.project = ConvBNAct(hidden, out_channels, 1, activation=None)

    def forward(self, x: Tensor) -> Tensor:
        out = self.project(self.dw(self.expand(x)))
        if self.residual:
            out = out + x
        return out


class CBMMobileNet(nn.Module):
    """The MobileNet-like CBM network (BCNetV2, arXiv:2203.13714).

    With ``widths = (w0, ..., w6)`` (key order; default = maxima 128,768,768,768,256,1536,1024):

    * ``stem``: 3x3 stride-2 conv 3->w0 + BN + ReLU, 32x32 -> 16x16
    * ``blocks.0``: MB w0 -> w1 -> w0, residual; ``blocks.1``: MB w0 -> w2 -> w0, residual
    * ``blocks.2``: MB w0 -> w3 -> w4, depthwise stride 2 (16x16 -> 8x8), no residual
    * ``blocks.3``: MB w4 -> w5 -> w4, residual
    * ``head``: 1x1 conv w4 -> w6 + BN + ReLU; global average pooling; ``classifier`` =
      ``Linear(w6, num_classes)`` with bias

    Each MB block is expand 1x1 / depthwise 3x3 / project 1x1, BN after each conv, ReLU after the
    first two; convs have no bias. ``widths`` builds any table entry directly (see
    :func:`cbm_widths`); otherwise ``width_mult`` scales the maxima by plain rounding.
    """

    def __init__(
        self, num_classes: int = 10, width_mult: float = 1.0, widths: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        w = _resolve_widths("mobilenet", widths, width_mult)
        self.widths = w
        self.stem = ConvBNAct(3, w[0], 3, stride=2)
        self.blocks = nn.Sequential(
            CBMInvertedResidual(w[0], w[1], w[0], 1, residual=True),
            CBMInvertedResidual(w[0], w[2], w[0], 1, residual=True),
            CBMInvertedResidual(w[0], w[3], w[4], 2, residual=False),
            CBMInvertedResidual(w[4], w[5], w[4], 1, residual=True),
        )
        self.head = ConvBNAct(w[4], w[6], 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(w[6], num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.blocks(x)
        x = self.head(x)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


class CBMBasicBlock(nn.Module):
    """CBM "RS" block: 3x3 conv + BN + ReLU (``conv1``/``bn1``; carries the stride), 3x3 conv + BN
    (``conv2``/``bn2``), then ``relu(x + out)`` when ``residual`` else ``relu(out)`` (no shortcut
    conv at all)."""

    def __init__(self, in_channels: int, mid: int, out_channels: int, stride: int, residual: bool) -> None:
        super().__init__()
        if residual and (stride != 1 or in_channels != out_channels):
            raise ValueError("a residual RS block needs stride 1 and in == out")
        self.residual = residual
        self.conv1 = nn.Conv2d(in_channels, mid, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(mid, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + x
        return self.relu(out)


class CBMResNet(nn.Module):
    """The ResNet-like CBM network (BCNetV2, arXiv:2203.13714).

    With ``widths = (w0, ..., w6)`` (key order; default = maxima 256,256,256,512,512,512,512):

    * ``stem``: 3x3 stride-2 conv 3->w0 + BN + ReLU, 32x32 -> 16x16
    * ``blocks.0``: w0 -> w1 -> w0, residual; ``blocks.1``: w0 -> w2 -> w0, residual
    * ``blocks.2``: w0 -> w3 -> w4, first conv stride 2 (16x16 -> 8x8), **no shortcut**
    * ``blocks.3``: w4 -> w5 -> w4, residual; ``blocks.4``: w4 -> w6 -> w4, residual
    * global average pooling; ``fc`` = ``Linear(w4, num_classes)`` with bias

    Convs have no bias; BN after every conv. ``widths`` builds any table entry directly (see
    :func:`cbm_widths`); otherwise ``width_mult`` scales the maxima by plain rounding.
    """

    def __init__(
        self, num_classes: int = 10, width_mult: float = 1.0, widths: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        w = _resolve_widths("resnet", widths, width_mult)
        self.widths = w
        self.stem = ConvBNAct(3, w[0], 3, stride=2)
        self.blocks = nn.Sequential(
            CBMBasicBlock(w[0], w[1], w[0], 1, residual=True),
            CBMBasicBlock(w[0], w[2], w[0], 1, residual=True),
            CBMBasicBlock(w[0], w[3], w[4], 2, residual=False),
            CBMBasicBlock(w[4], w[5], w[4], 1, residual=True),
            CBMBasicBlock(w[4], w[6], w[4], 1, residual=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w[4], num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.blocks(x)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)
