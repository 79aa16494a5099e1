"""Network Adjustment (Chen et al., CVPR 2020, arXiv 2004.02767): widen what pays, narrow what does not.

Each round trains the network at its current widths, measures every unit's *FLOPs utilisation
ratio* (FUR: how much the held-out loss rises when a unit loses channels, per FLOP removed) and
moves channels from the least to the most useful units, then rescales all widths by one factor so
the FLOPs stay those of the original network. The pieces here are pure functions over the core
(cost model, channel masks); :func:`run_rounds` strings them together with checkpoints.

Departures from the official code (danczs/NetworkAdjustment), each for a reason given in
docs/methods/netadjust.md: drop rates are clamped (the official rate can exceed 1); the FUR is
measured on held-out training images *without* augmentation; FLOPs derivatives come from the exact
cost model rather than a symbolic chain formula; residual blocks are untied through the core's
zero-padded sums (``residual="pad"``).
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from widthsearch.data import mix_seed
from widthsearch.errors import UserError
from widthsearch.space import ChannelSpace, Supernet

#: the official CIFAR schedule: k layers move per round (k0 decaying by k_decay per round), the
#: i-th ranked layer moves a_i = max(a_lr - i * a_decay, 0) of its *original* width
DEFAULTS = {"p0": 0.05, "max_rate": 0.9, "passes": 5, "k0": 6, "k_decay": 0.5, "a_lr": 0.15, "a_decay": 0.01,
            "floor": 4, "tolerance": 0.01}


def utilisation_weights(space: ChannelSpace, config: Mapping[str, int]) -> dict[str, float]:
    """``D_u = c_u * dFLOPs/dc_u``: the FLOPs that hang on unit u's channels at ``config``."""
    gradient = space.flops_gradient(config)
    return {name: config[name] * g for name, g in gradient.items()}


def drop_rates(weights: Mapping[str, float], p0: float, max_rate: float = DEFAULTS["max_rate"]) -> dict[str, float]:
    """``p_u = p0 * mean(D) / D_u``: every unit drops the same expected FLOPs, clamped to ``max_rate``.

    The official code does not clamp: a unit with few dependent FLOPs gets ``p >= 1`` there, and
    the dropout scale ``1/(1-p)`` turns negative. A unit with no FLOPs at all is never dropped.
    """
    if not 0 < p0 < 1:
        raise UserError(f"--p0 must be in (0, 1), got {p0}")
    if not 0 < max_rate < 1:
        raise UserError(f"the drop-rate clamp must be in (0, 1), got {max_rate}")
    positive = [d for d in weights.values() if d > 0]
    if not positive:
        raise UserError("no unit carries any FLOPs: nothing to adjust")
    mean = sum(weights.values()) / len(weights)
    return {name: min(max_rate, p0 * mean / d) if d > 0 else 0.0 for name, d in weights.items()}


def channel_dropout(rate: float, generator: torch.Generator) -> Callable[[int, int, torch.device], Tensor]:
    """A mask drawer for :meth:`Supernet.masked`: SpatialDropout -- whole channels per sample,
    kept with probability ``1 - rate`` and rescaled by ``1 / (1 - rate)``."""

    def draw(batch: int, width: int, device: torch.device) -> Tensor:
        keep = torch.rand(batch, width, generator=generator) >= rate
        return (keep.float() / (1.0 - rate)).to(device)

    return draw


@torch.no_grad()
def _mean_loss(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> float:
    total = 0.0
    device = next(model.parameters()).device
    for start in range(0, len(y), batch_size):
        logits = model(x[start:start + batch_size].to(device)).float()
        total += float(nn.functional.cross_entropy(logits, y[start:start + batch_size].to(device), reduction="sum"))
    return total / len(y)


def fur_probe(
    net: Supernet,
    x: Tensor,
    y: Tensor,
    rates: Mapping[str, float],
    *,
    passes: int = DEFAULTS["passes"],
    seed: int = 0,
    batch_size: int = 500,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, list[float]]:
    """Per unit, the held-out loss increase when only that unit drops channels, for each pass.

    The network runs its active sub-network in eval mode (BN running statistics); ``x, y`` are
    held-out training images without augmentation. Each pass draws fresh masks from a generator
    seeded by ``(seed, pass, unit index)``, so the probe is reproducible. FUR is the mean over
    passes (see :func:`fur_of`); keeping the passes lets callers measure its stability.
    """
    if passes < 1:
        raise UserError(f"--passes must be at least 1, got {passes}")
    was_training = net.model.training
    net.model.eval()
    try:
        clean = _mean_loss(net.model, x, y, batch_size)
        names = [u.name for u in net.space.units if rates.get(u.name, 0.0) > 0]
        result: dict[str, list[float]] = {}
        for i, name in enumerate(names):
            increases = []
            for k in range(passes):
                generator = torch.Generator().manual_seed(mix_seed(seed, k, i))
                with net.masked({name: channel_dropout(rates[name], generator)}):
                    increases.append(_mean_loss(net.model, x, y, batch_size) - clean)
            result[name] = increases
            if progress is not None:
                progress(i + 1, len(names))
        return result
    finally:
        net.model.train(was_training)


def fur_of(increases: Mapping[str, Sequence[float]]) -> dict[str, float]:
    return {name: sum(v) / len(v) for name, v in increases.items()}


def moves_this_round(round_index: int, k0: int, k_decay: float) -> int:
    """How many units gain (and lose) channels in round ``round_index`` (0-based): ``round(k0 - k_decay*r)``, at least 1."""
    return max(1, math.floor(k0 - k_decay * round_index + 0.5))


def adjust_widths(
    config: Mapping[str, int],
    fur: Mapping[str, float],
    original: Mapping[str, int],
    maximum: Mapping[str, int],
    *,
    k: int,
    a_lr: float = DEFAULTS["a_lr"],
    a_decay: float = DEFAULTS["a_decay"],
    floor: int = DEFAULTS["floor"],
) -> dict[str, int]:
    """The top-``k`` units by FUR gain ``round(a_i * c0_u)`` channels, the bottom-``k`` lose as many.

    ``a_i = max(a_lr - i * a_decay, 0)`` for the i-th unit from either end; steps scale with the
    *original* widths ``c0`` as in the paper. Widths stay within ``[min(floor, c0_u), max_u]``.
    """
    ranked = sorted(fur, key=lambda name: (-fur[name], name))
    k = min(k, len(ranked) // 2)
    new = dict(config)
    for i in range(k):
        a = max(a_lr - i * a_decay, 0.0)
        grow, shrink = ranked[i], ranked[-1 - i]
        new[grow] = min(maximum[grow], new[grow] + round(a * original[grow]))
        new[shrink] = max(min(floor, original[shrink]), new[shrink] - round(a * original[shrink]))
    return new


def rescale_to_flops(
    space: ChannelSpace,
    config: Mapping[str, int],
    target_flops: float,
    *,
    tolerance: float = DEFAULTS["tolerance"],
    floor: int = DEFAULTS["floor"],
    iterations: int = 60,
) -> dict[str, int]:
    """Scale every width by one factor ``s`` (``c <- clamp(round(s*c))``) so FLOPs land within
    ``tolerance`` of ``target_flops``; bisection on ``s``. Raises when no factor gets there."""
    lows = {u.name: min(floor, config[u.name]) for u in space.units}

    def at(scale: float) -> dict[str, int]:
        return {u.name: max(lows[u.name], min(u.max, round(scale * config[u.name]))) for u in space.units}

    low, high = 0.0, 1.0
    while space.cost(at(high)).flops < target_flops:
        high *= 2
        if high > 1024:
            raise UserError(f"cannot reach {target_flops:.0f} FLOPs by scaling: the units hit their physical widths")
    best = at(high)
    for _ in range(iterations):
        mid = (low + high) / 2
        flops = space.cost(at(mid)).flops
        if abs(flops - target_flops) < abs(space.cost(best).flops - target_flops):
            best = at(mid)
        if flops < target_flops:
            low = mid
        else:
            high = mid
    error = abs(space.cost(best).flops - target_flops) / target_flops
    if error > tolerance:
        raise UserError(f"rescaling reached FLOPs only within {100 * error:.2f}% of the target "
                        f"(tolerance {100 * tolerance:g}%); use a finer space (--divisor 1)")
    return best
