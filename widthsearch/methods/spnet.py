"""SP-Net (Kuratsu & Nakamura, arXiv 2212.03415): slimmable networks whose sub-networks come from
multi-base pruning.

Instead of uniform widths, sub-network k of a slimmable net takes its per-unit channel *counts*
from pruning base network k (trained at its own width multiplier, with an L1 penalty on the BN
scales) to a FLOPs target; the weights of the largest base are sorted per unit by importance so
every sub-network is a prefix of one set of weights (*slimmable channel sorting*); residual
streams are untied and matched by zero padding. The K sub-networks are then fine-tuned jointly.

This module holds the pieces over the shared core: per-unit importance, pruning to a FLOPs
target with a global threshold, and channel sorting. Departures from the official code
(hideakikuratsu/SP-Net) are in docs/methods/spnet.md.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import Tensor, nn

from widthsearch.errors import UserError
from widthsearch.space import ChannelSpace, Subnet, Supernet


def _bn_gamma(net: Supernet, unit: str) -> Tensor | None:
    """Sum of |gamma| over the unit's own batch norms (a tied stream has several)."""
    length = net.space.unit(unit).max
    total = None
    for name, dim, span in net.members(unit):
        module = net.model.get_submodule(name)
        if dim == 0 and isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine and len(span) == length:
            gamma = module.weight.detach().abs()[span.start:span.stop].double()
            total = gamma if total is None else total + gamma
    return total


def _filter_norm(net: Supernet, unit: str) -> Tensor:
    """L1 norm of each output filter of the unit's producers (a unit without batch norm)."""
    length = net.space.unit(unit).max
    total = torch.zeros(length, dtype=torch.float64)
    for name, dim, span in net.members(unit):
        module = net.model.get_submodule(name)
        if dim == 0 and isinstance(module, (nn.Conv2d, nn.Linear)) and len(span) == length:
            total += module.weight.detach().abs()[span.start:span.stop].flatten(1).sum(1).double()
    return total


def _bn_gamma_or_magnitude(net: Supernet, unit: str) -> Tensor:
    gamma = _bn_gamma(net, unit)
    return gamma if gamma is not None else _filter_norm(net, unit)


#: per-unit channel importance protocols: ``(net, unit) -> tensor of the unit's physical width``
IMPORTANCE: dict[str, Callable[[Supernet, str], Tensor]] = {
    "bn_gamma": _bn_gamma_or_magnitude,  # SP-Net's |gamma|; units without BN fall back to filter norms
    "magnitude": _filter_norm,
}


def unit_importance(net: Supernet, kind: str = "bn_gamma") -> dict[str, Tensor]:
    """Importance of every channel of every unit (higher = keep)."""
    try:
        measure = IMPORTANCE[kind]
    except KeyError:
        raise UserError(f"unknown importance {kind!r}; choose from {', '.join(IMPORTANCE)}") from None
    return {u.name: measure(net, u.name) for u in net.space.units}


def prune_to_flops(
    space: ChannelSpace,
    importance: Mapping[str, Tensor],
    target_flops: float,
    *,
    floor: float = 0.1,
    iterations: int = 100,
) -> dict[str, int]:
    """Per-unit channel counts from one global importance threshold, bisected so that the pruned
    network is the largest within ``target_flops``. Each unit keeps at least ``floor`` of its
    channels (at least one): a global threshold compares layers with different scales, and the
    floor stops a layer from vanishing (the official code's 10 %)."""
    floors = {u.name: max(1, round(floor * u.max)) for u in space.units}

    def counts(threshold: float) -> dict[str, int]:
        return {u.name: max(floors[u.name], int((importance[u.name] > threshold).sum())) for u in space.units}

    if space.cost(counts(float("inf"))).flops > target_flops:
        raise UserError(f"even the floors ({100 * floor:g}% of every unit) exceed {target_flops:.0f} FLOPs")
    everything = max(float(v.max()) for v in importance.values())
    low, high = -1.0, everything  # counts(low) keeps all channels; counts(high) only the floors
    if space.cost(counts(low)).flops <= target_flops:
        return counts(low)
    for _ in range(iterations):
        mid = (low + high) / 2
        if space.cost(counts(mid)).flops <= target_flops:
            high = mid
        else:
            low = mid
    return counts(high)


@torch.no_grad()
def sort_channels(net: Supernet, importance: Mapping[str, Tensor]) -> dict[str, tuple[int, ...]]:
    """Slimmable channel sorting: permute every unit's weights by descending importance, so a
    prefix keeps the most important channels. Returns the rankings that units joined by zero
    padding keep instead (their channels are added position by position, so they cannot be
    sorted independently; as in SP-Net's zero-padding match they keep masks in the original
    order: each unit's own top-importance channels, and the sum runs their union)."""
    joined = {m for members in net.space.analysis.joins.values() for m in members}
    rankings: dict[str, tuple[int, ...]] = {}
    for unit in net.space.units:
        order = torch.argsort(importance[unit.name], descending=True, stable=True)
        if net.space.root_of(unit.name) in joined:
            rankings[unit.name] = tuple(int(i) for i in order)
        else:
            net.permute(unit.name, order)
    return rankings


def sorted_subnet(counts: Mapping[str, int], rankings: Mapping[str, tuple[int, ...]]) -> Subnet:
    """The sub-network of ``counts`` on sorted weights: prefixes, rankings for joined units."""
    return Subnet(counts, dict(rankings))
