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
    ``max`` is the unit's *physical* width (channels that exist in the weights); ``choices`` are the
    widths a sub-network may use, and need not reach ``max`` nor start at one bin (BCNetV2's
    enlarged supernet). ``default`` is the width of the model as the user built it (Network
    Adjustment grows layers beyond it); it is the top choice unless the space was widened.
    """

    name: str
    max: int
    choices: tuple[int, ...]
    members: tuple[str, ...]
    default: int | None = None
    #: how often the unit's channels appear in its first producer's output: a grouped conv with
    #: G groups repeats its output unit G times, so its width counts channels per group
    copies: int = 1

    def __post_init__(self) -> None:
        if self.default is None:
            object.__setattr__(self, "default", self.choices[-1])

    @property
    def min(self) -> int:
        """The smallest allowed width."""
        return self.choices[0]

    @property
    def top(self) -> int:
        """The largest allowed width (``max`` unless choices stop below the physical width)."""
        return self.choices[-1]


@dataclass(frozen=True)
class FixedUnit:
    """Channels that keep their width in every sub-network, and why (``reason``, in words)."""

    name: str
    channels: int
    reason: str
    members: tuple[str, ...] = ()


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
    bins: tuple[int, int] | None = None,
) -> tuple[int, ...]:
    """Allowed widths of a unit with ``max_channels`` physical channels.

    * ``groups=G``: G evenly spaced widths ``round(max*i/G)`` for i = 1..G (AutoSlim's groups);
      with ``round_to=r`` each is rounded to the nearest multiple of r (at least r).
      ``bins=(lo, hi)`` keeps only i = lo..hi (BCNetV2: a supernet of B+m bins whose sub-networks
      use m..B of them).
    * ``divisor=d``: every multiple of d up to max, plus max itself.
    * neither: every width from 1 to max.
    """
    if max_channels < 1:
        raise UserError(f"a unit needs at least one channel, got {max_channels}")
    if groups is not None and divisor is not None:
        raise UserError("give either groups or divisor, not both")
    if bins is not None and groups is None:
        raise UserError("bins select among groups: give groups too")
    if groups is not None:
        if groups < 1:
            raise UserError(f"groups must be a positive integer, got {groups}")
        lo, hi = bins if bins is not None else (1, groups)
        if not 1 <= lo <= hi <= groups:
            raise UserError(f"bins must satisfy 1 <= lo <= hi <= groups ({groups}), got {lo}..{hi}")

        def width(i: int) -> int:
            if i == groups:  # the full width itself is never rounded
                return max_channels
            w = max(1, round(max_channels * i / groups))
            if round_to:
                w = min(max_channels, max(round_to, round_to * round(w / round_to)))
            return w

        return tuple(sorted({width(i) for i in range(lo, hi + 1)}))
    step = divisor or round_to or 1
    if step < 1:
        raise UserError(f"divisor must be a positive integer, got {step}")
    widths = list(range(step, max_channels + 1, step))
    widths.append(max_channels)
    return tuple(sorted(set(widths)))
