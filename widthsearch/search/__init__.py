"""Search algorithms over channel configs: greedy slimming, evolution, random search.

All of them take a space (anything with ``.units`` whose items have ``.name`` and
``.choices``), an evaluator (config -> score, higher is better) and a cost constraint, and
all are resumable from a JSON-serialisable state.
"""
from widthsearch.search.constraints import Constraint, cost_fns, parse_budget
from widthsearch.search.evolution import evolution_search
from widthsearch.search.genome import Config, CountingEvaluator, Evaluator, Genome
from widthsearch.search.greedy import GreedyResult, greedy_slim
from widthsearch.search.random_search import random_search
from widthsearch.search.state import SearchResult

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
