"""The model zoo: ``build_model(name, num_classes=None, width_mult=1.0, **kwargs)``.

Every model is a plain ``nn.Module`` built from ``nn.Conv2d``/``nn.BatchNorm2d``/``nn.Linear``,
activations and pooling, with a forward that ``torch.fx.symbolic_trace`` can trace. See
``docs/models.md`` for the table of models with their MACs and parameter counts.

>>> model = build_model("cbm_resnet", widths=cbm_widths("resnet", "3244221"))
>>> model_info("cbm_resnet")["input_shape"]
(3, 32, 32)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import UserError
from ._layers import make_divisible, scale_plain
from .cbm import CBM_MAX_WIDTHS, CBMMobileNet, CBMResNet, cbm_key, cbm_widths
from .mnasnet import MNASNet
from .mobilenet import MobileNetV1, MobileNetV2
from .resnet import BasicBlock, Bottleneck, CifarResNet, ResNet
from .tiny import TinyCNN
from .vgg import CifarVGG

__all__ = [
    "MODEL_NAMES",
    "build_model",
    "model_info",
    "make_divisible",
    "scale_plain",
    "CBM_MAX_WIDTHS",
    "cbm_widths",
    "cbm_key",
    "MobileNetV1",
    "MobileNetV2",
    "MNASNet",
    "ResNet",
    "CifarResNet",
    "CifarVGG",
    "TinyCNN",
    "CBMMobileNet",
    "CBMResNet",
]

_IMAGENET = ((3, 224, 224), 1000, "imagenet")
_CIFAR = ((3, 32, 32), 10, "cifar10")


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., nn.Module]
    input_shape: tuple[int, int, int]
    num_classes: int
    dataset: str
    description: str
    paper: str
    extra_kwargs: tuple[str, ...] = ()


def _entry(builder, defaults, description, paper, extra=()) -> _Entry:
    shape, classes, dataset = defaults
    return _Entry(builder, shape, classes, dataset, description, paper, tuple(extra))


_REGISTRY: dict[str, _Entry] = {
    "tiny_cnn": _entry(
        TinyCNN,
        ((1, 8, 8), 10, "digits"),
        "tiny residual CNN for 8x8 grey digits (conv 32, conv 64 /2, residual block 64, FC)",
        "-",
        ("in_channels",),
    ),
    "mobilenet_v1": _entry(
        MobileNetV1, _IMAGENET, "MobileNetV1, ImageNet, BN + ReLU", "Howard et al. 2017, arXiv:1704.04861"
    ),
    "mobilenet_v2": _entry(
        MobileNetV2,
        _IMAGENET,
        "MobileNetV2, ImageNet, torchvision layout, ReLU6, dropout 0.2",
        "Sandler et al. 2018, arXiv:1801.04381",
        ("dropout",),
    ),
    "mnasnet": _entry(
        MNASNet,
        _IMAGENET,
        "MNASNet-B1 depth 1.0, ImageNet (torchvision mnasnet1_0 layout)",
        "Tan et al. 2019, arXiv:1807.11626",
        ("dropout",),
    ),
    "resnet18": _entry(
        lambda num_classes, width_mult: ResNet(BasicBlock, (2, 2, 2, 2), num_classes, width_mult),
        _IMAGENET,
        "ResNet-18, ImageNet",
        "He et al. 2016, arXiv:1512.03385",
    ),
    "resnet50": _entry(
        lambda num_classes, width_mult: ResNet(Bottleneck, (3, 4, 6, 3), num_classes, width_mult),
        _IMAGENET,
        "ResNet-50 (v1.5, stride on the 3x3), ImageNet",
        "He et al. 2016, arXiv:1512.03385",
    ),
    "resnet20": _entry(
        lambda num_classes, width_mult: CifarResNet(20, num_classes, width_mult),
        _CIFAR,
        "CIFAR ResNet-20 (16/32/64), 1x1 conv projection shortcuts (option B)",
        "He et al. 2016, arXiv:1512.03385",
    ),
    "resnet56": _entry(
        lambda num_classes, width_mult: CifarResNet(56, num_classes, width_mult),
        _CIFAR,
        "CIFAR ResNet-56 (16/32/64), 1x1 conv projection shortcuts (option B)",
        "He et al. 2016, arXiv:1512.03385",
    ),
    "vgg16": _entry(
        CifarVGG,
        _CIFAR,
        "CIFAR VGG-16 with BN, global pooling, Linear(512, classes)",
        "Simonyan & Zisserman 2015, arXiv:1409.1556",
    ),
    "cbm_mobilenet": _entry(
        CBMMobileNet,
        _CIFAR,
        "Channel-Bench-Macro MobileNet-like space, max widths 128,768,768,768,256,1536,1024",
        "Su et al. (BCNetV2) 2022, arXiv:2203.13714",
        ("widths",),
    ),
    "cbm_resnet": _entry(
        CBMResNet,
        _CIFAR,
        "Channel-Bench-Macro ResNet-like space, max widths 256,256,256,512,512,512,512",
        "Su et al. (BCNetV2) 2022, arXiv:2203.13714",
        ("widths",),
    ),
}

#: Names accepted by :func:`build_model`, in the order of ``docs/models.md``.
MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def _lookup(name: str) -> _Entry:
    entry = _REGISTRY.get(name) if isinstance(name, str) else None
    if entry is None:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    return entry


def model_info(name: str) -> dict[str, Any]:
    """Defaults of a zoo model: ``input_shape`` (C, H, W), ``num_classes``, ``dataset``,
    ``description``, ``paper`` and ``kwargs`` (extra keyword arguments ``build_model`` accepts).

    Raises ``UserError`` for an unknown name.
    """
    entry = _lookup(name)
    return {
        "name": name,
        "input_shape": entry.input_shape,
        "num_classes": entry.num_classes,
        "dataset": entry.dataset,
        "description": entry.description,
        "paper": entry.paper,
        "kwargs": entry.extra_kwargs,
    }


def build_model(name: str, num_classes: int | None = None, width_mult: float = 1.0, **kwargs: Any) -> nn.Module:
    """Build a freshly initialised zoo model.

    ``num_classes`` defaults to the model's dataset (see :func:`model_info`); ``width_mult``
    scales the channel counts (make-divisible-by-8 for the MobileNets/MNASNet, plain rounding
    for the rest). Extra keyword arguments: ``dropout`` (mobilenet_v2, mnasnet), ``widths``
    (cbm_mobilenet, cbm_resnet: the 7 searchable widths in table-key order), ``in_channels``
    (tiny_cnn). Raises ``UserError`` (one line) for an unknown name, a bad ``width_mult`` or
    ``num_classes``, or an unsupported keyword argument.
    """
    entry = _lookup(name)
    if num_classes is None:
        num_classes = entry.num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
    if (
        isinstance(width_mult, bool)
        or not isinstance(width_mult, (int, float))
        or not math.isfinite(width_mult)
        or width_mult <= 0
    ):
        raise UserError(f"width_mult must be a positive number, got {width_mult!r}")
    unknown = sorted(set(kwargs) - set(entry.extra_kwargs))
    if unknown:
        accepted = ", ".join(entry.extra_kwargs) or "none"
        raise UserError(f"model {name!r} does not take {', '.join(unknown)} (extra arguments accepted: {accepted})")
    return entry.builder(num_classes=num_classes, width_mult=float(width_mult), **kwargs)
