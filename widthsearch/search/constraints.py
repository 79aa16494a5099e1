"""Cost constraints and budgets: what a search must respect, and how a budget is written."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from widthsearch.errors import UserError
from widthsearch.search.genome import Genome, config_key

CostFn = Callable[[Mapping[str, int]], float]


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


def parse_budget(text: Any, max_cost: Optional[float] = None, *, fractions: bool = True) -> float:
    """Parse a budget: ``"100M"``, ``"1.5G"``, ``"300000"``, ``"0.5"`` or ``"50%"``.

    A plain number in (0, 1] (or a percentage) is a fraction of ``max_cost`` (the cost of
    the largest config); anything larger is an absolute cost.  K/M/G/T are powers of 1000.
    Raises ``UserError`` on a malformed or non-positive budget, or a fraction without
    ``max_cost``.

    ``fractions=False`` is for metrics whose natural values are small numbers (latency in
    milliseconds): there a plain number is always absolute, ``"0.5"`` means 0.5, and a
    percentage is refused rather than silently read as something else.
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
    if not fractions:
        if suffix == "%":
            raise UserError(f"budget {text!r}: give an absolute value here, not a percentage of the maximum")
        return value * _SUFFIX[suffix]
    if suffix == "%" or (suffix == "" and value <= 1.0):
        frac = value / 100.0 if suffix == "%" else value
        if frac > 1.0:
            raise UserError(f"budget {text!r} is more than 100% of the maximum cost")
        if max_cost is None:
            raise UserError(f"budget {text!r} is a fraction, but the maximum cost is unknown; give an absolute value")
        return frac * float(max_cost)
    return value * _SUFFIX[suffix]


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


def empty_feasible_error(constraint: Constraint, tries: int) -> UserError:
    return UserError(
        f"no config satisfying {constraint.describe()} was found in {tries} random draws; "
        "the feasible set seems empty (raise the budget or lower the lower bound)"
    )
