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
from widthsearch.training.records import LossRecords
from widthsearch.training.steps import SubnetLoss

__all__ = ["Strategy", "SandwichStrategy", "BilateralStrategy", "UniformStrategy", "STRATEGIES", "get_strategy",
           "sandwich_configs", "complement", "check_num_samples"]


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


def complement(space: Any, config: Mapping[str, int]) -> dict[str, int]:
    """The complementary widths ``C - c`` (C = physical width), snapped to the nearest choice.

    A unit at its top choice stays there when ``C - c`` falls below its choices (plain BCNet:
    the full width pairs with itself, as in mmrazor's ``BCNetPruner``); BCNetV2's enlarged units
    (choices m..B of B+m bins) map c to m + B - c exactly. The official sampler's ``B - c - 1``
    is off by one and is not copied.
    """
    result = {}
    for unit in space.units:
        c = config[unit.name]
        want = unit.max - c
        if want < unit.min and c == unit.top:
            result[unit.name] = c
            continue
        result[unit.name] = min(unit.choices, key=lambda w: (abs(w - want), -w))
    return result


class BilateralStrategy(Strategy):
    """BCNet's bilaterally coupled training (Su et al., CVPR 2021, arXiv 2105.10533).

    Every step draws a width per unit and trains it twice, left-aligned and right-aligned, each
    with half the label loss, before one optimizer step. With ``complementary`` the next step
    trains the complement ``C - c`` (:func:`complement`), so over a pair every channel is trained
    equally often. ``full_every=K`` trains the full network (plain CE) every K-th step instead
    (BCNet v1). The mean of the two sides' losses and the widths go into :class:`LossRecords`
    (BCNetV2's prior). The pending complement and the records are checkpointed.
    """

    name = "bcnet"

    def __init__(self, full_every: int = 0, complementary: bool = True, records: int = 100) -> None:
        if full_every < 0:
            raise UserError(f"--full-every must be 0 (off) or a positive step count, got {full_every}")
        self.full_every, self.complementary = full_every, complementary
        self.records = LossRecords(records)
        self.steps = 0
        self.pending: dict[str, int] | None = None

    def plan(self, space: Any, rng: random.Random) -> list[SubnetLoss]:
        self.steps += 1
        if self.full_every and self.steps % self.full_every == 0:
            return [SubnetLoss(Subnet(space.max_config()), 1.0, "ce")]
        if self.pending is not None:
            config, self.pending = self.pending, None
        else:
            config = space.random_config(rng)
            self.pending = complement(space, config) if self.complementary else None
        return [SubnetLoss(Subnet(config, "left"), 0.5, "ce"), SubnetLoss(Subnet(config, "right"), 0.5, "ce")]

    def observe(self, terms: Sequence[SubnetLoss], losses: Sequence[float]) -> None:
        if len(terms) == 2:  # a bilateral pair (not a full-network step)
            self.records.push((losses[0] + losses[1]) / 2, terms[0].subnet.widths)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "pending": self.pending, "records": self.records.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.pending = None if state["pending"] is None else {k: int(v) for k, v in state["pending"].items()}
        self.records.load_state_dict(state["records"])


class UniformStrategy(Strategy):
    """The unilateral ablation of BCNet: ``n`` independent random configs, left-aligned, each with
    ``1/n`` of the label loss, no distillation (``--num-samples 2`` matches BCNet's passes)."""

    name = "uniform"

    def __init__(self, num_samples: int = 2) -> None:
        self.num_samples = num_samples

    def plan(self, space: Any, rng: random.Random) -> list[SubnetLoss]:
        weight = 1.0 / self.num_samples
        return [SubnetLoss(Subnet(space.random_config(rng)), weight, "ce") for _ in range(self.num_samples)]


#: name -> factory taking ``num_samples`` (configs per step) and, as keywords, the strategy options the run
#: sets (e.g. ``full_every``)
STRATEGIES: dict[str, Callable[..., Strategy]] = {
    # US-Nets training as used by AutoSlim: sandwich rule + inplace distillation
    "autoslim": lambda n, **_: SandwichStrategy(num_samples=n, distill=True, name="autoslim"),
    # ablation: the same configs, every one trained on the labels
    "sandwich": lambda n, **_: SandwichStrategy(num_samples=n, distill=False, name="sandwich"),
    # BCNet: left + right at 1/2 CE each, complementary widths next step, loss records
    "bcnet": lambda n, full_every=0, **_: BilateralStrategy(full_every=full_every),
    # BCNet's unilateral ablation: n random left-aligned configs at 1/n CE each
    "uniform": lambda n, **_: UniformStrategy(num_samples=n),
}


#: the fewest configs per step that keep a strategy what it is, and why (strategies not listed: 1)
MIN_SAMPLES: dict[str, tuple[int, str]] = {
    # the sandwich rule trains the max and the min config every step; one sample would train the max alone
    "autoslim": (2, "the sandwich rule trains the max and the min config every step"),
    "sandwich": (2, "the sandwich rule trains the max and the min config every step"),
}
#: strategies whose configs per step are fixed by the method (``--num-samples`` does not apply)
FIXED_SAMPLES: dict[str, str] = {"bcnet": "every step trains one width left- and right-aligned"}


def check_num_samples(name: str, num_samples: int, given: bool = True) -> None:
    """One-line error for a ``--num-samples`` that strategy ``name`` cannot use (``given``: set by
    the user, not a default, so that a strategy which ignores it may refuse it)."""
    if given and name in FIXED_SAMPLES:
        raise UserError(f"--num-samples does not apply to --strategy {name}: {FIXED_SAMPLES[name]}")
    low, why = MIN_SAMPLES.get(name, (1, ""))
    if not isinstance(num_samples, int) or num_samples < low:
        raise UserError(f"--num-samples must be at least {low} for --strategy {name}"
                        f"{': ' + why if why else ''}, got {num_samples!r}")


def get_strategy(name: str, num_samples: int = 4, **options: Any) -> Strategy:
    """The strategy registered as ``name``; ``options`` (e.g. ``full_every``) go to its factory."""
    try:
        factory = STRATEGIES[name]
    except KeyError:
        raise UserError(f"unknown strategy {name!r}; choose from {', '.join(sorted(STRATEGIES))}") from None
    check_num_samples(name, num_samples, given=False)
    # only options that are set reach the factory, so a factory of ``num_samples`` alone still fits
    return factory(num_samples, **{k: v for k, v in options.items() if v})
