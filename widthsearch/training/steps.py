"""One optimisation step: the supernet sandwich step and the plain supervised step."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from widthsearch.training.losses import label_loss, soft_cross_entropy, teacher_probs

__all__ = ["sandwich_step", "plain_step"]


def sandwich_step(
    net,
    x: Tensor,
    y: Tensor,
    configs: Sequence[tuple[Mapping[str, int], str]],
    *,
    distill: bool = True,
    label_smoothing: float = 0.0,
) -> dict:
    """Forward and backward every ``(config, align)`` of ``configs`` on the batch ``(x, y)``.

    The first config (the max one under the sandwich rule) learns from the labels; with
    ``distill`` every later config learns from the first one's detached softmax (inplace
    distillation), otherwise from the labels too. Gradients accumulate in ``.grad`` (one
    ``backward`` per config, so only one graph is alive at a time); the caller zeroes them before
    and steps the optimizer after. Returns the per-config losses and the first config's number of
    correct predictions.
    """
    model = net.model
    losses: list[float] = []
    teacher: Tensor | None = None
    correct = 0
    for i, (config, align) in enumerate(configs):
        net.set_config(config, align=align)
        logits = model(x)
        if i == 0 or not distill:
            loss = label_loss(logits, y, label_smoothing)
            if i == 0:
                correct = int((logits.detach().argmax(dim=1) == y).sum())
                if distill:
                    teacher = teacher_probs(logits)
        else:
            loss = soft_cross_entropy(logits, teacher)
        loss.backward()
        losses.append(float(loss.detach()))
    return {"losses": losses, "correct": correct}


def plain_step(model: nn.Module, x: Tensor, y: Tensor, *, label_smoothing: float = 0.0) -> dict:
    """Forward/backward of an ordinary network on the labels (gradients accumulate)."""
    logits = model(x)
    loss = label_loss(logits, y, label_smoothing)
    loss.backward()
    return {"losses": [float(loss.detach())], "correct": int((logits.detach().argmax(dim=1) == y).sum())}


def zero_grads(params: Sequence[torch.nn.Parameter]) -> None:
    """Set every gradient to zeros (materialised, so all ranks and all steps see the same layout)."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        else:
            p.grad.zero_()
