"""Small building blocks and width-scaling rules shared by the model zoo.

All layers are plain ``nn.Module`` objects (``nn.Conv2d``, ``nn.BatchNorm2d``, ``nn.Linear``,
activations, pooling) so that ``torch.fx.symbolic_trace`` sees them as leaf modules and the
channel-space core can swap them for dynamic subclasses in place. Activations are never
in-place: the dynamic layers may hand back views, and residual adds are written out-of-place.
"""

from __future__ import annotations

import math

from torch import nn

__all__ = [
    "ConvBNAct",
    "make_divisible",
    "scale_plain",
    "init_weights",
]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (the MobileNet/MNasNet rule).

    The result is at least ``min_value`` (default ``divisor``) and never more than 10 % below
    ``value``: if rounding down loses more than that, one more ``divisor`` is added.
    """
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


def scale_plain(channels: int, width_mult: float) -> int:
    """Scale a channel count by plain rounding: ``max(1, round(channels * width_mult))``.

    Used by the ResNets, VGG, ``tiny_cnn`` and the Channel-Bench-Macro networks.
    """
    return max(1, int(math.floor(channels * width_mult + 0.5)))


class ConvBNAct(nn.Sequential):
    """``Conv2d`` (no bias) -> ``BatchNorm2d`` -> optional activation, as children ``0``, ``1``, ``2``.

    ``activation`` is an ``nn.Module`` class (``nn.ReLU``, ``nn.ReLU6``) or ``None`` for a linear
    (projection) layer. Padding is ``kernel_size // 2`` so that stride 1 keeps the resolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        activation: type[nn.Module] | None = nn.ReLU,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=kernel_size // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
        ]
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)


def init_weights(model: nn.Module, linear: str = "default") -> None:
    """Standard initialisation, in place.

    * ``Conv2d``: Kaiming normal, ``mode="fan_out"``, ReLU gain; bias (if any) zero.
    * ``BatchNorm2d``: weight 1, bias 0.
    * ``Linear``: ``linear="default"`` keeps PyTorch's default init (ResNet, VGG style);
      ``linear="normal"`` uses ``N(0, 0.01)`` weights and zero bias (MobileNet/MNasNet style).
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and linear == "normal":
            nn.init.normal_(module.weight, 0.0, 0.01)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
