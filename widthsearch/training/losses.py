"""Losses of slimmable-network training: hard-label CE for the largest width, soft CE for the rest.

Inplace distillation (Yu & Huang, "Universally Slimmable Networks and Improved Training
Techniques", ICCV 2019, arXiv:1903.05134): within one training step the largest sub-network is
trained on the labels and its *detached* predicted distribution is the target of every smaller
sub-network, with no temperature and no label term.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["label_loss", "soft_cross_entropy", "teacher_probs"]


def label_loss(logits: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy against integer labels, optionally label-smoothed (``eps`` spread uniformly)."""
    return F.cross_entropy(logits, target, label_smoothing=float(label_smoothing))


def teacher_probs(logits: Tensor) -> Tensor:
    """The distillation target: ``softmax(logits)`` with gradients cut (temperature 1)."""
    return F.softmax(logits.detach().float(), dim=1)


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """``mean_batch( -sum_k p_k * log_softmax(logits)_k )``; ``target_probs`` should be detached.

    Equals KL(p || q) + H(p); since H(p) does not depend on the student, the gradients are those
    of the KL divergence.
    """
    log_q = F.log_softmax(logits.float(), dim=1)
    return -(target_probs * log_q).sum(dim=1).mean()
