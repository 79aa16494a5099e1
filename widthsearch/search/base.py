"""Pieces shared by every search algorithm: configs, evaluators, constraints, budgets.

A *config* is a plain ``dict[str, int]`` (unit name -> number of channels).  A *space* is
anything with ``.units``, a sequence of objects that have ``.name`` and ``.choices`` (an
ascending tuple of ints whose last element is the maximum).  The core's ``ChannelSpace``
satisfies this; so does a tiny hand-made fake, which is what the tests use.

Nothing here depends on PyTorch, so the same search code runs on a real supernet (the
evaluator measures accuracy of a sub-network) and on a lookup table such as
Channel-Bench-Macro (the evaluator reads the trained accuracy).
"""
from __future__ import annotations

import copy
import math
import random
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

from widthsearch.errors import ConfigError, UserError

Config = Dict[str, int]
CostFn = Callable[[Mapping[str, int]], float]
Evaluator = Callable[[Mapping[str, int]], float]
"""A callable config -> score; higher is better (accuracy, negative loss, ...)."""

STATE_VERSION = 1


# --------------------------------------------------------------------------------------
# the space as the search sees it
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# evaluators
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# constraints and budgets
# --------------------------------------------------------------------------------------
@dataclass
class Constraint:
    """``lower*budget <= cost(config) <= budget``.

    ``cost`` maps a config to a number (FLOPs, params, latency, ...).  ``lower`` is a
    fraction of the budget (0 = no lower bound); a lower bound keeps a search away from
    configs that waste much of the budget.
    """

    cost: CostFn
    budget: float
    lower: float = 0.0

    def __post_init__(self) -> None:
        if not (self.budget > 0 and math.isfinite(self.budget)):
            raise UserError(f"budget must be a positive number, got {self.budget!r}")
        if not (0.0 <= self.lower <= 1.0):
            raise UserError(f"lower bound must be a fraction of the budget in [0, 1], got {self.lower!r}")

    def value(self, config: Mapping[str, int]) -> float:
        return float(self.cost(config))

    def feasible(self, config: Mapping[str, int]) -> bool:
        c = self.value(config)
        return self.lower * self.budget <= c <= self.budget

    def describe(self) -> str:
        if self.lower > 0:
            return f"{self.lower * self.budget:.6g} <= cost <= {self.budget:.6g}"
        return f"cost <= {self.budget:.6g}"


def cost_fns(space: Any, metrics: Sequence[str] = ("flops",)) -> Dict[str, CostFn]:
    """Cost functions ``{metric: config -> number}`` from a space's ``cost(config)`` (the
    core's ``Cost`` has ``flops`` and ``params``); the last config's cost is cached so that
    asking for several metrics of one config computes it once."""
    last: List[Any] = [None, None]

    def cost_of(config: Mapping[str, int]) -> Any:
        key = config_key(config)
        if last[0] != key:
            last[0], last[1] = key, space.cost(dict(config))
        return last[1]

    def make(metric: str) -> CostFn:
        def fn(config: Mapping[str, int]) -> float:
            return float(getattr(cost_of(config), metric))

        fn.__name__ = f"cost_{metric}"
        return fn

    return {m: make(m) for m in metrics}


_SUFFIX = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_BUDGET_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtT%]?)\s*$")


def parse_budget(text: Any, max_cost: Optional[float] = None) -> float:
    """Parse a budget: ``"100M"``, ``"1.5G"``, ``"300000"``, ``"0.5"`` or ``"50%"``.

    A plain number in (0, 1] (or a percentage) is a fraction of ``max_cost`` (the cost of
    the largest config); anything larger is an absolute cost.  K/M/G/T are powers of 1000.
    Raises ``UserError`` on a malformed or non-positive budget, or a fraction without
    ``max_cost``.
    """
    if isinstance(text, bool):
        raise UserError(f"invalid budget {text!r}")
    if isinstance(text, (int, float)):
        value, suffix = float(text), ""
    else:
        m = _BUDGET_RE.match(str(text))
        if not m:
            raise UserError(
                f"invalid budget {text!r}: use an absolute cost like 300000, 100M or 1.5G, "
                "or a fraction of the maximum cost like 0.5 or 50%"
            )
        value, suffix = float(m.group(1)), m.group(2).upper()
    if not (value > 0 and math.isfinite(value)):
        raise UserError(f"budget must be positive, got {text!r}")
    if suffix == "%" or (suffix == "" and value <= 1.0):
        frac = value / 100.0 if suffix == "%" else value
        if frac > 1.0:
            raise UserError(f"budget {text!r} is more than 100% of the maximum cost")
        if max_cost is None:
            raise UserError(f"budget {text!r} is a fraction, but the maximum cost is unknown; give an absolute value")
        return frac * float(max_cost)
    return value * _SUFFIX[suffix]


# --------------------------------------------------------------------------------------
# random sampling helpers (shared by evolution and random search)
# --------------------------------------------------------------------------------------
def normalise_prior(g: Genome, prior: Optional[Mapping[str, Sequence[float]]]) -> Optional[List[List[float]]]:
    """Per-unit probabilities over choices, as cumulative weights; None = uniform everywhere."""
    if not prior:
        return None
    unknown = [k for k in prior if k not in g.names]
    if unknown:
        raise UserError(f"prior names unknown unit(s): {', '.join(unknown[:5])}")
    out: List[List[float]] = []
    for name, ch in zip(g.names, g.choices):
        if name not in prior:
            out.append([1.0 / len(ch)] * len(ch))
            continue
        p = [float(x) for x in prior[name]]
        if len(p) != len(ch):
            raise UserError(f"prior for unit {name!r} has {len(p)} probabilities for {len(ch)} choices")
        if any(not math.isfinite(x) or x < 0 for x in p) or sum(p) <= 0:
            raise UserError(f"prior for unit {name!r} must be non-negative with a positive sum")
        s = sum(p)
        out.append([x / s for x in p])
    return out


def draw_gene(rng: random.Random, n_choices: int, probs: Optional[List[float]]) -> int:
    if probs is None:
        return rng.randrange(n_choices)
    r = rng.random()
    acc = 0.0
    for i, p in enumerate(probs):
        acc += p
        if r < acc:
            return i
    # rounding: return the last choice with non-zero probability
    return max(i for i, p in enumerate(probs) if p > 0)


def draw_genome(rng: random.Random, g: Genome, prior: Optional[List[List[float]]]) -> Tuple[int, ...]:
    return tuple(
        draw_gene(rng, len(ch), None if prior is None else prior[i]) for i, ch in enumerate(g.choices)
    )


def rng_state(rng: random.Random) -> list:
    """JSON-serialisable state of a ``random.Random``."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def rng_from_state(state: Sequence[Any]) -> random.Random:
    rng = random.Random()
    version, internal, gauss = state
    rng.setstate((int(version), tuple(int(x) for x in internal), gauss))
    return rng


class FeasibilityCache:
    """Memoised ``constraint.feasible`` on genomes (cost functions may be slow)."""

    def __init__(self, g: Genome, constraint: Constraint):
        self.g = g
        self.constraint = constraint
        self._memo: Dict[Tuple[int, ...], bool] = {}

    def __call__(self, genes: Tuple[int, ...]) -> bool:
        hit = self._memo.get(genes)
        if hit is None:
            hit = self._memo[genes] = bool(self.constraint.feasible(self.g.config(genes)))
        return hit


def check_state_constraint(params: Mapping[str, Any], constraint: Constraint) -> None:
    """A resumed search must use the constraint it was started with."""
    if not (
        math.isclose(float(params["budget"]), float(constraint.budget), rel_tol=1e-12)
        and math.isclose(float(params["lower"]), float(constraint.lower), rel_tol=1e-12, abs_tol=1e-15)
    ):
        raise UserError(
            f"saved state was made with budget {params['budget']:.6g} (lower {params['lower']}), "
            f"not {constraint.budget:.6g} (lower {constraint.lower})"
        )


def restore_state(state: Mapping[str, Any], algorithm: str, what: str, g: "Genome",
                  constraint: Constraint) -> Dict[str, Any]:
    """A private copy of a saved ``algorithm`` state, checked against the space and the constraint."""
    st = copy.deepcopy(dict(state))
    if st.get("algorithm") != algorithm:
        raise UserError(f"saved state is not a{'n' if what[0] in 'aeiou' else ''} {what} state")
    g.check_state_units(st)
    check_state_constraint(st["params"], constraint)
    return st


def new_state(algorithm: str, g: "Genome", params: Dict[str, Any],
              prior: Optional[Mapping[str, Sequence[float]]], **extra: Any) -> Dict[str, Any]:
    """The JSON-serialisable starting state of a sampling search (evolution, random).

    ``params`` must hold ``seed``; ``extra`` adds algorithm-specific fields."""
    return {
        "algorithm": algorithm,
        "version": STATE_VERSION,
        "units": g.state_units(),
        "params": params,
        "prior": None if not prior else {k: list(map(float, v)) for k, v in prior.items()},
        **extra,
        "rng": rng_state(random.Random(int(params["seed"]))),
        "history": [],
        "done": False,
        "stop_reason": None,
    }


class SearchRuntime(NamedTuple):
    """What a sampling search rebuilds from its state each time it starts or resumes."""

    probs: Optional[List[List[float]]]
    feasible: FeasibilityCache
    rng: random.Random
    seen: Set[Tuple[int, ...]]


def search_runtime(g: "Genome", st: Mapping[str, Any], constraint: Constraint) -> SearchRuntime:
    """Prior, memoised feasibility, the random stream and every genome already scored or queued."""
    seen = {g.genes_from_channels(ch) for ch, _ in st["history"]}
    seen.update(g.genes_from_channels(ch) for ch in st.get("pending", []))
    return SearchRuntime(normalise_prior(g, st["prior"]), FeasibilityCache(g, constraint),
                         rng_from_state(st["rng"]), seen)


def empty_feasible_error(constraint: Constraint, tries: int) -> UserError:
    return UserError(
        f"no config satisfying {constraint.describe()} was found in {tries} random draws; "
        "the feasible set seems empty (raise the budget or lower the lower bound)"
    )


@dataclass
class SearchResult:
    """Outcome of a population search (evolution or random search)."""

    best_config: Config
    best_score: float
    evaluations: int
    history: List[Tuple[Config, float]]
    state: Dict[str, Any]
    stop_reason: str
    extra: Dict[str, Any] = field(default_factory=dict)

    def top(self, k: int = 10) -> List[Tuple[Config, float]]:
        order = sorted(range(len(self.history)), key=lambda i: (-score_order(self.history[i][1]), i))
        return [self.history[i] for i in order[:k]]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "best_config": self.best_config,
            "best_score": self.best_score,
            "evaluations": self.evaluations,
            "stop_reason": self.stop_reason,
            **self.extra,
        }


def best_of(history: Iterable[Tuple[Any, float]]) -> Tuple[int, float]:
    """Index and score of the best entry (first on ties)."""
    best_i, best_s = -1, -math.inf
    for i, (_, s) in enumerate(history):
        if best_i < 0 or score_order(s) > best_s:
            best_i, best_s = i, score_order(s)
    return best_i, best_s
