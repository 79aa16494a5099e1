"""Search algorithms over channel configs: greedy slimming, evolution, random search.

All of them take a space (anything with ``.units`` whose items have ``.name`` and
``.choices``), an evaluator (config -> score, higher is better) and a cost budget, and
all are resumable from a JSON-serialisable state.

``SEARCH_ALGORITHMS`` maps each algorithm's name (the CLI's ``--algo``) to its function;
:func:`search_algorithm` looks a name up with a one-line error for an unknown one.
"""
from typing import Callable, Dict

from widthsearch.errors import lookup
from widthsearch.search.constraints import Constraint, CostFn, cost_fns, parse_budget
from widthsearch.search.evolution import evolution_search
from widthsearch.search.genome import Config, CountingEvaluator, Evaluator, Genome
from widthsearch.search.greedy import GreedyResult, greedy_slim
from widthsearch.search.random_search import random_search
from widthsearch.search.state import SearchResult

SEARCH_ALGORITHMS: Dict[str, Callable[..., object]] = {
    "greedy": greedy_slim,
    "evolution": evolution_search,
    "random": random_search,
}


def search_algorithm(name: str) -> Callable[..., object]:
    """The search function registered as ``name``; ``UserError`` listing the choices otherwise."""
    return lookup(SEARCH_ALGORITHMS, name, "search algorithm")


__all__ = [
    "SEARCH_ALGORITHMS",
    "Config",
    "Constraint",
    "CostFn",
    "CountingEvaluator",
    "Evaluator",
    "Genome",
    "GreedyResult",
    "SearchResult",
    "cost_fns",
    "evolution_search",
    "greedy_slim",
    "parse_budget",
    "random_search",
    "search_algorithm",
]
