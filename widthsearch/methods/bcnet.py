"""BCNet / BCNetV2 (Su et al., CVPR 2021, arXiv 2105.10533; TPAMI 2022, arXiv 2203.13714).

A *bilaterally coupled* supernet trains every width twice per step: once with the left-aligned
channels and once with the right-aligned ones, so that every channel is trained as often as any
other (a left-aligned slimmable net trains its first channels far more than its last ones).
*Complementary sampling* follows a sampled width c with the width C - c at the next step; BCNetV2
also *enlarges* the supernet to (B+m)/B of the base and lets widths run from m to B bins, which
makes the pairs exactly fair. The search scores a width config as the mean of its left and right
sub-networks and seeds evolution with a *prior* fitted to the lowest training losses seen.

The training half (the ``bcnet`` strategy: bilateral pairs, the complement rule, loss records) is
in :mod:`widthsearch.training.sampling` and :mod:`widthsearch.training.records`, re-exported here;
this module adds the search half: the prior fit and the prior-seeded population. Departures from the official code
(xiusu/BCNetV2) are listed in docs/methods/bcnet.md.
"""
from __future__ import annotations

import random
from typing import Mapping, Sequence

import torch

from widthsearch.errors import UserError
from widthsearch.space import ChannelSpace
from widthsearch.training.records import LossRecords
from widthsearch.training.sampling import BilateralStrategy, complement

__all__ = ["BilateralStrategy", "LossRecords", "complement", "expected_losses", "fit_prior", "prior_population"]


def expected_losses(space: ChannelSpace, records: Sequence[tuple[float, Mapping[str, int]]],
                    unseen: float | None = None) -> dict[str, torch.Tensor]:
    """Per unit, the mean recorded loss at each choice; ``unseen`` (default: the worst recorded
    loss) for choices no record used, so the prior avoids what it knows nothing about."""
    if not records:
        raise UserError("no loss records: train the supernet with --strategy bcnet first")
    penalty = max(loss for loss, _ in records) if unseen is None else unseen
    table = {}
    for unit in space.units:
        sums = {c: [0.0, 0] for c in unit.choices}
        for loss, config in records:
            if config.get(unit.name) in sums:
                sums[config[unit.name]][0] += loss
                sums[config[unit.name]][1] += 1
        table[unit.name] = torch.tensor([s / n if n else penalty for s, n in sums.values()], dtype=torch.float64)
    return table


def fit_prior(
    space: ChannelSpace,
    records: Sequence[tuple[float, Mapping[str, int]]],
    target_flops: float,
    *,
    flops_ratio: float = 0.9,
    penalty: float = 1000.0,
    steps: int = 2000,
    lr: float = 0.01,
    seed: int = 0,
) -> dict[str, list[float]]:
    """BCNetV2's prior: per-unit softmax probabilities over the choices that minimise the expected
    recorded loss plus ``penalty * (1 - E[FLOPs] / (flops_ratio * target))^2``.

    E[FLOPs] is exact (:meth:`ChannelSpace.expected_flops`). Logits start random-normal (seeded)
    and follow plain gradient descent, as the official code. The official target is 0.4·T (its
    log line says 0.9); ``flops_ratio`` makes it a parameter, default 0.9.
    """
    if not 0 < flops_ratio <= 1:
        raise UserError(f"the prior's FLOPs ratio must be in (0, 1], got {flops_ratio}")
    losses = expected_losses(space, records)
    gen = torch.Generator().manual_seed(seed)
    logits = {u.name: torch.randn(len(u.choices), generator=gen, dtype=torch.float64).requires_grad_(True)
              for u in space.units}
    optimizer = torch.optim.SGD(list(logits.values()), lr=lr)
    goal = flops_ratio * float(target_flops)
    for _ in range(steps):
        optimizer.zero_grad()
        probs = {name: torch.softmax(z, 0) for name, z in logits.items()}
        expected_loss = torch.stack([(probs[n] * losses[n]).sum() for n in probs]).mean()
        flops_term = (1 - space.expected_flops(probs) / goal) ** 2
        (expected_loss + penalty * flops_term).backward()
        optimizer.step()
    with torch.no_grad():
        return {name: torch.softmax(z, 0).tolist() for name, z in logits.items()}


def prior_population(
    space: ChannelSpace,
    prior: Mapping[str, Sequence[float]],
    target_flops: float,
    size: int,
    rng: random.Random,
    *,
    lower: float = 0.8,
    max_tries: int = 200_000,
) -> list[dict[str, int]]:
    """``size`` unique configs drawn from the prior with FLOPs in ``[lower * T, T]``."""
    seen: set[tuple[int, ...]] = set()
    population = []
    for _ in range(max_tries):
        config = {u.name: rng.choices(u.choices, weights=prior[u.name])[0] for u in space.units}
        key = space.key(config)
        if key in seen:
            continue
        seen.add(key)
        if lower * target_flops <= space.cost(config).flops <= target_flops:
            population.append(config)
            if len(population) == size:
                return population
    raise UserError(f"the prior gave only {len(population)} of {size} unique configs within "
                    f"[{lower:g}T, T] in {max_tries} draws; train longer or loosen the target")
