"""Configs as the searches see them: genomes, config keys, and a memoising evaluator.

A *config* is a plain ``dict[str, int]`` (unit name -> number of channels).  A *space* is
anything with ``.units``, a sequence of objects that have ``.name`` and ``.choices`` (an
ascending tuple of ints whose last element is the maximum).  The core's ``ChannelSpace``
satisfies this; so does a tiny hand-made fake, which is what the tests use.

Nothing in :mod:`widthsearch.search` depends on PyTorch, so the same search code runs on a
real supernet (the evaluator measures accuracy of a sub-network) and on a lookup table such
as Channel-Bench-Macro (the evaluator reads the trained accuracy).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

from widthsearch.errors import ConfigError, UserError

Config = Dict[str, int]
Evaluator = Callable[[Mapping[str, int]], float]
"""A callable config -> score; higher is better (accuracy, negative loss, ...)."""


class Genome:
    """The unit names and choices of a space, and conversions between configs and genes.

    A *gene* is the index of a unit's width in its ``choices``; a genome is the tuple of
    genes in unit order.  Search algorithms work on genomes (cheap to hash, mutate and
    store) and hand configs to the evaluator and the cost functions.
    """

    def __init__(self, space: Any):
        units = getattr(space, "units", None)
        if units is None:
            raise TypeError("a search space needs a .units attribute")
        names: List[str] = []
        choices: List[Tuple[int, ...]] = []
        for unit in units:
            ch = tuple(int(c) for c in unit.choices)
            if not ch:
                raise ConfigError(f"unit {unit.name!r} has no width choices")
            if any(b <= a for a, b in zip(ch, ch[1:])):
                raise ConfigError(f"unit {unit.name!r}: choices must be strictly ascending, got {ch}")
            names.append(str(unit.name))
            choices.append(ch)
        if not names:
            raise ConfigError("the search space has no units")
        if len(set(names)) != len(names):
            raise ConfigError("the search space has duplicate unit names")
        self.names: Tuple[str, ...] = tuple(names)
        self.choices: Tuple[Tuple[int, ...], ...] = tuple(choices)
        self._index = [{c: i for i, c in enumerate(ch)} for ch in choices]

    def __len__(self) -> int:
        return len(self.names)

    @property
    def size(self) -> int:
        return math.prod(len(c) for c in self.choices)

    def max_genes(self) -> Tuple[int, ...]:
        return tuple(len(c) - 1 for c in self.choices)

    def min_genes(self) -> Tuple[int, ...]:
        return tuple(0 for _ in self.choices)

    def config(self, genes: Sequence[int]) -> Config:
        return {n: ch[g] for n, ch, g in zip(self.names, self.choices, genes)}

    def channels(self, genes: Sequence[int]) -> List[int]:
        return [ch[g] for ch, g in zip(self.choices, genes)]

    def genes(self, config: Mapping[str, int]) -> Tuple[int, ...]:
        """Genes of a config; raises ``ConfigError`` (one line) if it does not fit the space."""
        if not isinstance(config, Mapping):
            raise ConfigError(f"a config must be a mapping unit name -> channels, got {type(config).__name__}")
        unknown = [k for k in config if k not in self.names]
        if unknown:
            raise ConfigError(f"config has unknown unit(s): {', '.join(map(str, unknown[:5]))}")
        out = []
        for name, index in zip(self.names, self._index):
            if name not in config:
                raise ConfigError(f"config lacks unit {name!r}")
            value = config[name]
            try:
                out.append(index[int(value)])
            except (KeyError, TypeError, ValueError):
                raise ConfigError(
                    f"unit {name!r}: {value!r} channels is not one of its choices {sorted(index)}"
                ) from None
        return tuple(out)

    def genes_from_channels(self, channels: Sequence[int]) -> Tuple[int, ...]:
        if len(channels) != len(self.names):
            raise ConfigError(f"expected {len(self.names)} widths, got {len(channels)}")
        return self.genes(dict(zip(self.names, channels)))

    def check_state_units(self, state: Mapping[str, Any]) -> None:
        """A saved state must come from a space with the same units and choices."""
        units = state.get("units")
        if units is None:
            raise UserError("saved search state has no 'units' entry")
        names = [u[0] for u in units]
        choices = [tuple(u[1]) for u in units]
        if tuple(names) != self.names or tuple(choices) != self.choices:
            raise UserError("saved search state belongs to a different channel space (units or choices differ)")

    def state_units(self) -> List[list]:
        return [[n, list(c)] for n, c in zip(self.names, self.choices)]


def genome(space: Any) -> Genome:
    return space if isinstance(space, Genome) else Genome(space)


def config_key(config: Mapping[str, int]) -> Tuple[Tuple[str, int], ...]:
    """Hashable, order-independent key of a config."""
    return tuple(sorted((str(k), int(v)) for k, v in config.items()))


class CountingEvaluator:
    """Wraps an evaluator: memoises scores and counts the distinct configs scored.

    ``evaluations`` is the number of distinct configs the wrapped function was called on;
    ``calls`` counts every call, memo hits included.  ``history`` lists ``(config, score)``
    in the order configs were first scored.
    """

    def __init__(self, fn: Evaluator):
        self.fn = fn
        self._memo: Dict[Tuple[Tuple[str, int], ...], float] = {}
        self.history: List[Tuple[Config, float]] = []
        self.calls = 0

    def __call__(self, config: Mapping[str, int]) -> float:
        self.calls += 1
        key = config_key(config)
        if key in self._memo:
            return self._memo[key]
        score = float(self.fn(dict(config)))
        self._memo[key] = score
        self.history.append((dict(config), score))
        return score

    @property
    def evaluations(self) -> int:
        return len(self._memo)

    def __contains__(self, config: Mapping[str, int]) -> bool:
        return config_key(config) in self._memo


def score_order(score: float) -> float:
    """Scores compared by the searches: NaN counts as the worst possible score."""
    return -math.inf if score != score else score
