"""Compatibility module: everything that used to live here, re-exported.

The shared pieces of the searches now live in focused modules:
:mod:`~widthsearch.search.genome` (configs, genomes, the memoising evaluator),
:mod:`~widthsearch.search.constraints` (constraints, cost functions, budgets),
:mod:`~widthsearch.search.prior` (sampling from a per-unit prior) and
:mod:`~widthsearch.search.state` (resumable state, results).  Code written against
``widthsearch.search.base`` keeps working.
"""
from widthsearch.search.constraints import (
    Constraint,
    CostFn,
    FeasibilityCache,
    check_state_constraint,
    cost_fns,
    empty_feasible_error,
    parse_budget,
)
from widthsearch.search.genome import Config, CountingEvaluator, Evaluator, Genome, config_key, genome, score_order
from widthsearch.search.prior import draw_gene, draw_genome, normalise_prior
from widthsearch.search.state import (
    STATE_VERSION,
    SearchResult,
    SearchRuntime,
    best_of,
    new_state,
    restore_state,
    rng_from_state,
    rng_state,
    search_runtime,
)

__all__ = [
    "STATE_VERSION",
    "Config",
    "Constraint",
    "CostFn",
    "CountingEvaluator",
    "Evaluator",
    "FeasibilityCache",
    "Genome",
    "SearchResult",
    "SearchRuntime",
    "best_of",
    "check_state_constraint",
    "config_key",
    "cost_fns",
    "draw_gene",
    "draw_genome",
    "empty_feasible_error",
    "genome",
    "new_state",
    "normalise_prior",
    "parse_budget",
    "restore_state",
    "rng_from_state",
    "rng_state",
    "score_order",
    "search_runtime",
]
