"""Sparsity on batch-norm scales (network slimming, SP-Net's base training).

An L1 penalty ``lambda * sum |gamma|`` over every BN scale pushes unimportant channels' scales
towards zero, so that ``|gamma|`` ranks channels for pruning. Its subgradient is added to the
gradients directly (:func:`add_bn_l1`, after backward and before the optimizer step) rather than
to the loss: the losses in the logs stay the task losses, and the term is exact and cheap.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["bn_weights", "add_bn_l1", "init_bn_weights"]


def bn_weights(model: nn.Module) -> list[nn.Parameter]:
    """The trainable scales (``weight``) of every affine batch norm of ``model``."""
    return [m.weight for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine and m.weight.requires_grad]


@torch.no_grad()
def add_bn_l1(weights: Sequence[nn.Parameter], strength: float) -> None:
    """Add ``strength * sign(gamma)`` (the subgradient of ``strength * |gamma|``) to each gradient."""
    if not strength:
        return
    for gamma in weights:
        if gamma.grad is None:
            gamma.grad = torch.zeros_like(gamma)
        gamma.grad.add_(torch.sign(gamma), alpha=float(strength))


@torch.no_grad()
def init_bn_weights(model: nn.Module, value: float | None) -> None:
    """Set every BN scale to ``value`` (SP-Net starts them at 0.5); ``None`` leaves them as they are."""
    if value is None:
        return
    for gamma in bn_weights(model):
        gamma.fill_(float(value))
