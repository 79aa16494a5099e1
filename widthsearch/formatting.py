"""Human-readable numbers and shapes: FLOPs/params counts (300.77M) and input shapes (3x224x224).

Shared by the command line, reports and plots; ``widthsearch.space.units`` re-exports these
functions for code written before they moved here.
"""
from __future__ import annotations

from typing import Sequence

from widthsearch.errors import UserError

__all__ = ["format_count", "parse_count", "parse_shape"]


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
