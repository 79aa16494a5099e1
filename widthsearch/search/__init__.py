"""Search algorithms over channel configs: greedy slimming, evolution, random search.

All of them take a space (anything with ``.units`` whose items have ``.name`` and
``.choices``), an evaluator (config -> score, higher is better) and a cost constraint, and
all are resumable from a JSON-serialisable state.
"""
from widthsearch.search.base import (
    Config,
    Constraint,
    CountingEvaluator,
    Evaluator,
    Genome,
    SearchResult,
    cost_fns,
    parse_budget,
)
from widthsearch.search.evolution import evolution_search
from widthsearch.search.greedy import GreedyResult, greedy_slim
from widthsearch.search.random_search import random_search

__all__ = [
    "Config",
    "Constraint",
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
]
