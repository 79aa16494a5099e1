"""One optimisation step: a weighted sum of losses over sub-networks, and the plain supervised step.

A step of slimmable training is described by a list of :class:`SubnetLoss` terms
``(subnet, weight, kind[, kd_weight])``; :func:`subnet_step` runs them in order on one batch and
accumulates ``sum_i weight_i * loss_i`` into ``.grad``. Loss kinds:

``"ce"``   cross-entropy against the labels (optionally label-smoothed);
``"kd"``   soft cross-entropy against the detached softmax (T=1) of the *first* term's
           sub-network on this batch (inplace distillation: the first term is the teacher, so it
           should be the largest sub-network and cannot be ``"kd"`` itself);
``"mix"``  ``kd_weight * KD + (1 - kd_weight) * CE`` (SP-Net's sub-network loss).
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from widthsearch.errors import UserError
from widthsearch.training.losses import label_loss, soft_cross_entropy, teacher_probs

__all__ = ["LOSS_KINDS", "SubnetLoss", "subnet_step", "plain_step", "zero_grads"]

LOSS_KINDS = ("ce", "kd", "mix")


class SubnetLoss(NamedTuple):
    """One term of a step: train ``subnet`` with ``weight * loss`` of ``kind`` (see the module doc).

    ``kd_weight`` is the KD share of a ``"mix"`` term (ignored otherwise). A plain
    ``(subnet, weight, kind)`` tuple is a term too.
    """

    subnet: Mapping[str, int]
    weight: float = 1.0
    kind: str = "ce"
    kd_weight: float = 0.0


def check_terms(terms: Sequence[SubnetLoss]) -> list[SubnetLoss]:
    """The terms as :class:`SubnetLoss`; a one-line error for an unknown kind or a teacherless KD."""
    terms = [SubnetLoss(*t) for t in terms]
    if not terms:
        raise UserError("a training step needs at least one sub-network")
    for term in terms:
        if term.kind not in LOSS_KINDS:
            raise UserError(f"unknown loss kind {term.kind!r}; choose from {', '.join(LOSS_KINDS)}")
        if term.kind == "mix" and not 0.0 <= term.kd_weight <= 1.0:
            raise UserError(f"the KD weight of a mixed loss must be in [0, 1], got {term.kd_weight}")
    if terms[0].kind == "kd":
        raise UserError("the first sub-network of a step is the distillation teacher; it cannot learn by KD")
    return terms


def _term_loss(term: SubnetLoss, logits: Tensor, y: Tensor, teacher: Tensor | None, label_smoothing: float) -> Tensor:
    if term.kind == "ce":
        return label_loss(logits, y, label_smoothing)
    kd = soft_cross_entropy(logits, teacher)
    if term.kind == "kd":
        return kd
    alpha = float(term.kd_weight)
    return alpha * kd + (1.0 - alpha) * label_loss(logits, y, label_smoothing)


def subnet_step(
    net,
    x: Tensor,
    y: Tensor,
    terms: Sequence[SubnetLoss],
    *,
    label_smoothing: float = 0.0,
) -> dict:
    """Forward and backward every term of ``terms`` on the batch ``(x, y)``.

    Gradients of ``sum_i weight_i * loss_i`` accumulate in ``.grad``: one ``backward`` per term,
    so only one graph is alive at a time; the caller zeroes them before and steps the optimizer
    after. The first term's detached softmax is the target of every ``"kd"``/``"mix"`` term.
    Returns ``{"losses": [unweighted loss per term], "correct": correct predictions of the first}``.
    """
    terms = check_terms(terms)
    needs_teacher = any(t.kind != "ce" for t in terms[1:])
    model = net.model
    found: list[Tensor] = []  # read once at the end (see _read_once)
    teacher: Tensor | None = None
    for i, term in enumerate(terms):
        net.set_config(term.subnet)
        logits = model(x)
        if i == 0:
            correct = (logits.detach().argmax(dim=1) == y).sum()
            if needs_teacher:
                teacher = teacher_probs(logits)
        loss = _term_loss(term, logits, y, teacher, label_smoothing)
        # a weight of 1 leaves the graph untouched: the AutoSlim step stays bit-identical
        (loss if term.weight == 1.0 else loss * float(term.weight)).backward()
        found.append(loss.detach())
    return _read_once(found, correct)


def plain_step(model: nn.Module, x: Tensor, y: Tensor, *, label_smoothing: float = 0.0) -> dict:
    """Forward/backward of an ordinary network on the labels (gradients accumulate)."""
    logits = model(x)
    loss = label_loss(logits, y, label_smoothing)
    loss.backward()
    return _read_once([loss.detach()], (logits.detach().argmax(dim=1) == y).sum())


def _read_once(losses: Sequence[Tensor], correct: Tensor) -> dict:
    """``{"losses": [float], "correct": int}`` in one device-to-host transfer: reading each value as
    it comes would make the host wait for the GPU after every term instead of queueing the next
    term's kernels (float32 -> float64 is exact, so the numbers are those ``float()`` gives)."""
    *values, count = torch.stack([t.double() for t in [*losses, correct]]).tolist()
    return {"losses": values, "correct": int(count)}


def zero_grads(params: Sequence[torch.nn.Parameter]) -> None:
    """Set every gradient to zeros (materialised, so all ranks and all steps see the same layout)."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        else:
            p.grad.zero_()
