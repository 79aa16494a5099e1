"""Training strategies: which sub-networks one supernet training step visits and how each learns.

A strategy returns, for every step, a list of :class:`~widthsearch.training.steps.SubnetLoss`
terms ``(subnet, weight, kind)`` that :func:`~widthsearch.training.steps.subnet_step` trains.

US-Nets / AutoSlim (Yu & Huang, arXiv:1903.05134 and arXiv:1903.11728): each iteration trains
the largest configuration, the smallest one and ``n - 2`` random ones (the *sandwich rule*).
AutoSlim draws the random ones *non-uniformly*: every channel unit (a group of layers whose widths
are tied) picks its own width, independently and uniformly over its choices, so that the supernet
is trained for the per-layer configurations that the greedy search will later score.

Adding a strategy: subclass :class:`Strategy` (override :meth:`Strategy.plan`; a stateful one,
e.g. a sampler that remembers what it drew, also overrides :meth:`~Strategy.state_dict` and
:meth:`~Strategy.load_state_dict`, which the checkpoint saves and ``--resume`` restores, and
:meth:`~Strategy.observe`, which sees every step's losses) and register a factory taking
``num_samples`` in :data:`STRATEGIES`; ``widthsearch supernet --strategy`` offers every entry.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Mapping, Protocol, Sequence

from widthsearch.errors import UserError
from widthsearch.space.subnet import Subnet
from widthsearch.training.steps import SubnetLoss

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


class Strategy:
    """A supernet training strategy; the base class is stateless and ignores the losses."""

    name: str = "strategy"

    def plan(self, space: _Space, rng: random.Random) -> list[SubnetLoss]:
        """The terms of one step (the first is the distillation teacher of any ``"kd"`` term).

        ``rng`` is the epoch's generator (re-seeded per epoch, so resumed runs draw the same).
        """
        raise NotImplementedError

    def observe(self, terms: Sequence[SubnetLoss], losses: Sequence[float]) -> None:
        """Called after every step with its terms and their unweighted losses (on every rank)."""

    def state_dict(self) -> dict[str, Any]:
        """Plain data saved in the checkpoint after every epoch (``weights_only`` must load it)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` when a run is resumed."""


class SandwichStrategy(Strategy):
    """Sandwich rule with ``num_samples`` sub-networks; inplace distillation when ``distill``.

    With ``distill`` the max config learns from the labels and every other from its soft
    predictions (kinds ``ce, kd, kd, ...``); without, all learn from the labels. Weights are 1.
    """

    def __init__(self, num_samples: int = 4, distill: bool = True, align: str = "left", name: str = "autoslim"):
        self.num_samples, self.distill, self.align, self.name = num_samples, distill, align, name

    def plan(self, space: _Space, rng: random.Random) -> list[SubnetLoss]:
        configs = sandwich_configs(space, rng, self.num_samples)
        subnets = configs if self.align == "left" else [Subnet(c, self.align) for c in configs]
        later = "kd" if self.distill else "ce"
        return [SubnetLoss(s, 1.0, "ce" if i == 0 else later) for i, s in enumerate(subnets)]


#: name -> factory taking ``num_samples`` (configs per step)
STRATEGIES: dict[str, Callable[[int], Strategy]] = {
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
