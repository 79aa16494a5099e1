"""The resumable state of the sampling searches (evolution, random) and their result.

A state is a JSON-serialisable dict; the random stream is stored as ``random.Random``'s
state in lists, so a search resumed from a saved state draws exactly what it would have.
"""
from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

from widthsearch.errors import UserError
from widthsearch.search.constraints import Constraint, FeasibilityCache, check_state_constraint
from widthsearch.search.genome import Config, Genome, score_order
from widthsearch.search.prior import normalise_prior

STATE_VERSION = 1


def rng_state(rng: random.Random) -> list:
    """JSON-serialisable state of a ``random.Random``."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def rng_from_state(state: Sequence[Any]) -> random.Random:
    rng = random.Random()
    version, internal, gauss = state
    rng.setstate((int(version), tuple(int(x) for x in internal), gauss))
    return rng


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
