"""A sub-network of a supernet as one value: per-unit widths plus per-unit channel selectors.

Which channels of a unit of width ``c`` run is the unit's *selector*:

``"left"``   the first ``c`` channels (a prefix; slimmable nets, AutoSlim) -- the default;
``"right"``  the last ``c`` channels (a suffix; BCNet's right-aligned sub-network);
a ranking    an explicit channel order (a permutation of the unit's physical channels); the
             ``c`` best-ranked channels run (SP-Net's sorted channels, importance pruning).

A :class:`Subnet` *is* a read-only mapping ``unit name -> width``, so every function that takes
a plain config dict (costs, search, YAML) also takes a Subnet; a plain dict means "all left".
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence, Union

from widthsearch.errors import ConfigError

Selector = Union[str, tuple[int, ...]]
ALIGNMENTS = ("left", "right")


def _clean_selector(unit: str, selector: Any) -> Selector:
    if isinstance(selector, str):
        if selector not in ALIGNMENTS:
            raise ConfigError(f"unit {unit!r}: selector must be 'left', 'right' or a channel ranking, got {selector!r}")
        return selector
    if hasattr(selector, "tolist"):  # a tensor or array of channel indices
        selector = selector.tolist()
    if isinstance(selector, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) for i in selector):
        order = tuple(int(i) for i in selector)
        if sorted(order) != list(range(len(order))):
            raise ConfigError(f"unit {unit!r}: a channel ranking must be a permutation of 0..{len(order) - 1}")
        return order
    raise ConfigError(f"unit {unit!r}: selector must be 'left', 'right' or a list of channel indices, got {selector!r}")


class Subnet(Mapping[str, int]):
    """Widths per unit and, per unit, which channels run (see the module docstring).

    ``Subnet(widths)`` keeps the first channels of every unit; ``Subnet(widths, "right")`` the
    last ones; ``Subnet(widths, {"unit": "right", "other": [3, 0, 2, 1]})`` chooses per unit (units
    not named keep ``"left"``). Subnets are immutable and hashable.
    """

    __slots__ = ("_widths", "_select")

    def __init__(self, widths: Mapping[str, int], select: str | Mapping[str, Any] | None = None) -> None:
        base = dict(widths.widths if isinstance(widths, Subnet) else widths)
        inherited = dict(widths._select) if isinstance(widths, Subnet) and select is None else {}
        if isinstance(select, str):
            select = {name: select for name in base}
        chosen = {**inherited, **{name: _clean_selector(name, s) for name, s in (select or {}).items()}}
        unknown = sorted(set(chosen) - set(base))
        if unknown:
            raise ConfigError(f"selector for unit {unknown[0]!r}, which has no width in this subnet")
        self._widths: dict[str, int] = base
        # "left" is the default and is not stored, so equal subnets have equal keys
        self._select: dict[str, Selector] = {n: s for n, s in chosen.items() if s != "left"}

    # ---- the mapping of widths ------------------------------------------------------------------
    def __getitem__(self, unit: str) -> int:
        return self._widths[unit]

    def __iter__(self) -> Iterator[str]:
        return iter(self._widths)

    def __len__(self) -> int:
        return len(self._widths)

    @property
    def widths(self) -> dict[str, int]:
        """A plain ``{unit: width}`` copy."""
        return dict(self._widths)

    # ---- selectors ----------------------------------------------------------------------------
    def selector(self, unit: str) -> Selector:
        return self._select.get(unit, "left")

    @property
    def selectors(self) -> dict[str, Selector]:
        """The non-default selectors: ``{unit: "right" | ranking}``."""
        return dict(self._select)

    @property
    def alignment(self) -> str | None:
        """``"left"`` or ``"right"`` when every unit uses that side, else None."""
        if not self._select:
            return "left"
        kinds = set(self._select.values())
        if kinds == {"right"} and len(self._select) == len(self._widths):
            return "right"
        return None

    # ---- derived subnets ------------------------------------------------------------------------
    def with_widths(self, widths: Mapping[str, int]) -> "Subnet":
        """The same selectors at other widths (units must be the same)."""
        merged = {**self._widths, **dict(widths)}
        if set(merged) != set(self._widths):
            return Subnet(merged, self._select)  # other units: through the constructor's checks
        return Subnet._from_clean(merged, self._select)

    @classmethod
    def _from_clean(cls, widths: dict[str, int], select: Mapping[str, Selector]) -> "Subnet":
        """A subnet whose selectors come from another subnet, so they are clean already: a channel
        ranking is not checked again (a supernet switching sub-networks every step validates each
        one, and re-checking every ranking was most of that)."""
        subnet = cls.__new__(cls)
        subnet._widths = dict(widths)
        subnet._select = {name: sel for name, sel in select.items() if sel != "left"}
        return subnet

    def aligned(self, side: str) -> "Subnet":
        """The same widths with every unit on ``side`` ("left" or "right")."""
        return Subnet(self._widths, side)

    # ---- equality and text ----------------------------------------------------------------------
    def key(self) -> tuple:
        return tuple(sorted(self._widths.items())), tuple(sorted(self._select.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Subnet):
            return self.key() == other.key()
        if isinstance(other, Mapping):  # a plain config is a left-aligned subnet
            return not self._select and self._widths == dict(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.key())

    def __repr__(self) -> str:
        sel = f", {self._select!r}" if self._select else ""
        return f"Subnet({self._widths!r}{sel})"

    def to_doc(self) -> dict[str, Any]:
        """Plain data: ``{"channels": {...}, "select": {...}}`` (``select`` only when not all left)."""
        doc: dict[str, Any] = {"channels": {n: int(w) for n, w in self._widths.items()}}
        if self._select:
            doc["select"] = {n: s if isinstance(s, str) else list(s) for n, s in self._select.items()}
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> "Subnet":
        return cls(doc["channels"], doc.get("select"))


def as_subnet(config: Mapping[str, int], align: str | None = None,
              orders: Mapping[str, Sequence[int]] | None = None) -> Subnet:
    """A Subnet from a plain config (+ an optional global side and per-unit rankings).

    A Subnet passes through unchanged unless ``align``/``orders`` are given.
    """
    if isinstance(config, Subnet) and align is None and not orders:
        return config
    select: dict[str, Any] = {}
    if align is not None:
        if align not in ALIGNMENTS:
            raise ConfigError(f"align must be one of {ALIGNMENTS}, got {align!r}")
        select = {name: align for name in config}
    elif isinstance(config, Subnet):
        select = config.selectors
    select.update(dict(orders or {}))
    return Subnet(config, select)
