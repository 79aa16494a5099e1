"""Plain data of the channel space: units, their width choices, and costs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from widthsearch.errors import UserError


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


def format_count(value: float) -> str:
    """Human form of a FLOPs/params count: 300.77M, 4.09G, 12.3K."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{suffix}"
    return f"{value:g}"


def parse_count(text: str) -> float:
    """Inverse of :func:`format_count`: '300M' -> 3e8, '1.5G' -> 1.5e9, '4' -> 4."""
    text = text.strip()
    scales = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    try:
        if text and text[-1].upper() in scales:
            return float(text[:-1]) * scales[text[-1].upper()]
        return float(text)
    except ValueError:
        raise UserError(f"cannot read {text!r} as a number (examples: 300M, 1.5G, 4.2)") from None


def parse_shape(text: str | Sequence[int]) -> tuple[int, ...]:
    """Parse an input shape 'CxHxW' (or a sequence) into a tuple of positive ints."""
    if not isinstance(text, str):
        dims = tuple(int(d) for d in text)
    else:
        try:
            dims = tuple(int(part) for part in text.lower().replace("*", "x").split("x"))
        except ValueError:
            raise UserError(f"bad input shape {text!r}: expected CxHxW, e.g. 3x224x224") from None
    if not dims or any(d < 1 for d in dims):
        raise UserError(f"bad input shape {text!r}: expected positive sizes like 3x224x224")
    return dims
