"""SGD with Nesterov momentum and a per-iteration (warm-up +) cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["build_optimizer", "WarmupCosine", "param_groups"]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: conv/linear weights with ``weight_decay``; BN parameters and biases without.

    A parameter with at most one dimension is a BN scale/shift or a bias (the US-Nets recipe
    decays only conv and fully-connected weights).
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": float(weight_decay)}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float, momentum: float = 0.9, nesterov: bool = True
) -> torch.optim.SGD:
    return torch.optim.SGD(
        param_groups(model, weight_decay), lr=float(lr), momentum=float(momentum), nesterov=bool(nesterov) and momentum > 0
    )


class WarmupCosine:
    """Learning rate per iteration: linear warm-up over ``warmup_steps``, then cosine to ``final_lr``.

    ``step()`` is called after every optimizer step and sets the rate of the next one. The state
    is the step counter only, so checkpoints stay plain data.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, final_lr: float = 0.0):
        self.optimizer = optimizer
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = max(0, int(warmup_steps))
        self.final_lr = float(final_lr)
        self.base_lrs = [float(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups]
        for g, lr in zip(optimizer.param_groups, self.base_lrs):
            g["initial_lr"] = lr
        self.last_step = 0
        self._apply()

    def factor(self, step: int) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        return 0.5 * (1.0 + math.cos(math.pi * t))

    def lr_at(self, step: int, base_lr: float) -> float:
        return self.final_lr + (base_lr - self.final_lr) * self.factor(step)

    def _apply(self) -> None:
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = self.lr_at(self.last_step, base)

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {
            "last_step": self.last_step,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "final_lr": self.final_lr,
            "base_lrs": list(self.base_lrs),
        }

    def load_state_dict(self, state: dict) -> None:
        self.last_step = int(state["last_step"])
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        self.final_lr = float(state["final_lr"])
        self.warmup_steps = int(state["warmup_steps"])
        # total_steps keeps the value of the current run (a resumed run may train longer)
        self._apply()
