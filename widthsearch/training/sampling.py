"""Which sub-networks one supernet training step visits (the *sandwich rule*).

US-Nets / AutoSlim (Yu & Huang, arXiv:1903.05134 and arXiv:1903.11728): each iteration trains
the largest configuration, the smallest one and ``n - 2`` random ones. AutoSlim draws the random
ones *non-uniformly*: every channel unit (a group of layers whose widths are tied) picks its own
width, independently and uniformly over its choices, so that the supernet is trained for the
per-layer configurations that the greedy search will later score.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from widthsearch.errors import UserError

__all__ = ["Strategy", "SandwichStrategy", "STRATEGIES", "get_strategy", "sandwich_configs"]


class _Space(Protocol):  # the part of ChannelSpace used here
    def max_config(self) -> dict[str, int]: ...
    def min_config(self) -> dict[str, int]: ...
    def random_config(self, rng: random.Random) -> dict[str, int]: ...


def sandwich_configs(space: _Space, rng: random.Random, num_samples: int = 4) -> list[dict[str, int]]:
    """``[max, min, random_1, ..., random_{n-2}]``; ``n = 1`` gives only the max config.

    The max config always comes first: it is the teacher of inplace distillation.
    """
    if num_samples < 1:
        raise UserError(f"--num-samples must be at least 1, got {num_samples}")
    configs = [space.max_config()]
    if num_samples >= 2:
        configs.append(space.min_config())
    configs.extend(space.random_config(rng) for _ in range(num_samples - 2))
    return configs


class Strategy(Protocol):
    """A supernet training strategy: which configs a step visits and how they learn."""

    name: str
    distill: bool  # configs after the first learn from the first one's soft predictions

    def configs(self, space: _Space, rng: random.Random) -> list[tuple[dict[str, int], str]]:
        """``(config, align)`` pairs for one step; the first is the teacher when ``distill``."""
        ...


@dataclass
class SandwichStrategy:
    """Sandwich rule with ``num_samples`` configs; inplace distillation when ``distill``."""

    num_samples: int = 4
    distill: bool = True
    align: str = "left"
    name: str = "autoslim"

    def configs(self, space: _Space, rng: random.Random) -> list[tuple[dict[str, int], str]]:
        return [(cfg, self.align) for cfg in sandwich_configs(space, rng, self.num_samples)]


STRATEGIES = {
    # US-Nets training as used by AutoSlim: sandwich rule + inplace distillation
    "autoslim": lambda n: SandwichStrategy(num_samples=n, distill=True, name="autoslim"),
    # ablation: the same configs, every one trained on the labels
    "sandwich": lambda n: SandwichStrategy(num_samples=n, distill=False, name="sandwich"),
}


def get_strategy(name: str, num_samples: int = 4) -> Strategy:
    try:
        factory = STRATEGIES[name]
    except KeyError:
        raise UserError(f"unknown strategy {name!r}; choose from {', '.join(sorted(STRATEGIES))}") from None
    if num_samples < 1:
        raise UserError(f"--num-samples must be at least 1, got {num_samples}")
    return factory(num_samples)
