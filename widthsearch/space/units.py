"""Plain data of the channel space: units, their width choices, and costs."""
from __future__ import annotations

from dataclasses import dataclass

from widthsearch.errors import UserError
from widthsearch.formatting import format_count, parse_count, parse_shape  # noqa: F401 (moved; old import path kept)


@dataclass(frozen=True)
class Unit:
    """A set of channels that must change width together.

    ``name`` is the qualified name of the unit's first producer layer (conv/linear), which stays
    stable as long as the model's module names do. ``members`` are every layer whose weights are
    sliced when this unit's width changes (producers, consumers, batch norms, depthwise convs).
    """

    name: str
    max: int
    choices: tuple[int, ...]
    members: tuple[str, ...]

    @property
    def min(self) -> int:
        return self.choices[0]


@dataclass(frozen=True)
class Cost:
    """Resource cost of one network: FLOPs are multiply-accumulates of conv and linear layers."""

    flops: int
    params: int

    def as_dict(self) -> dict[str, int]:
        return {"flops": self.flops, "params": self.params}


def make_choices(
    max_channels: int,
    groups: int | None = None,
    divisor: int | None = None,
    round_to: int | None = None,
) -> tuple[int, ...]:
    """Allowed widths of a unit with ``max_channels`` channels.

    * ``groups=G``: G evenly spaced widths ``round(max*i/G)`` for i = 1..G (AutoSlim's groups);
      with ``round_to=r`` each is rounded to the nearest multiple of r (at least r).
    * ``divisor=d``: every multiple of d up to max, plus max itself.
    * neither: every width from 1 to max.
    """
    if max_channels < 1:
        raise UserError(f"a unit needs at least one channel, got {max_channels}")
    if groups is not None and divisor is not None:
        raise UserError("give either groups or divisor, not both")
    if groups is not None:
        if groups < 1:
            raise UserError(f"groups must be a positive integer, got {groups}")
        widths = [max(1, round(max_channels * i / groups)) for i in range(1, groups)]
        if round_to:  # the full width itself is never rounded
            widths = [min(max_channels, max(round_to, round_to * round(w / round_to))) for w in widths]
        widths.append(max_channels)
        return tuple(sorted(set(widths)))
    step = divisor or round_to or 1
    if step < 1:
        raise UserError(f"divisor must be a positive integer, got {step}")
    widths = list(range(step, max_channels + 1, step))
    widths.append(max_channels)
    return tuple(sorted(set(widths)))
