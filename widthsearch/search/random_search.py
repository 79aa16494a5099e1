"""Random search: the baseline every width search should beat.

Draws configs (each unit independently from a per-unit prior over its choices, uniform
unless given), keeps only unique, unseen configs that meet the constraint, scores them
until ``max_evals`` distinct evaluations are spent, and returns the best.  Resumable like
the other searches: ``on_step(state)`` after every evaluation, ``state=`` to continue.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from widthsearch.errors import UserError
from widthsearch.search.constraints import Constraint, empty_feasible_error
from widthsearch.search.genome import Evaluator, Genome, genome, score_order
from widthsearch.search.prior import draw_genome
from widthsearch.search.state import SearchResult, new_state, restore_state, rng_state, search_runtime


def random_search(
    space: Any,
    evaluate: Evaluator,
    constraint: Constraint,
    *,
    max_evals: int = 100,
    seed: int = 0,
    prior: Optional[Mapping[str, Sequence[float]]] = None,
    max_tries: int = 10000,
    state: Optional[Mapping[str, Any]] = None,
    on_step: Optional[Callable[[Dict[str, Any]], None]] = None,
) -> SearchResult:
    """Best of up to ``max_evals`` unique feasible random configs.

    ``max_tries`` random draws are allowed per new candidate; if not even the first one is
    found, ``UserError`` (the feasible set seems empty); later, the search stops early
    (``stop_reason == "exhausted"``).
    """
    g: Genome = genome(space)
    if state is None:
        if int(max_evals) < 1:
            raise UserError("max_evals must be at least 1")
        if int(max_tries) < 1:
            raise UserError("max_tries must be at least 1")
        params = {
            "max_evals": int(max_evals),
            "seed": int(seed),
            "max_tries": int(max_tries),
            "budget": float(constraint.budget),
            "lower": float(constraint.lower),
        }
        st = new_state("random", g, params, prior)
    else:
        st = restore_state(state, "random", "random-search", g, constraint)
        params = st["params"]

    probs, feasible, rng, seen = search_runtime(g, st, constraint)

    while not st["done"]:
        if len(st["history"]) >= params["max_evals"]:
            st["done"], st["stop_reason"] = True, "max_evals"
            break
        cand = None
        for _ in range(params["max_tries"]):
            c = draw_genome(rng, g, probs)
            if c not in seen and feasible(c):
                cand = c
                break
        st["rng"] = rng_state(rng)
        if cand is None:
            if not st["history"]:
                raise empty_feasible_error(constraint, params["max_tries"])
            st["done"], st["stop_reason"] = True, "exhausted"
            break
        seen.add(cand)
        score = float(evaluate(g.config(cand)))
        st["history"].append([g.channels(cand), score])
        if on_step is not None:
            on_step(copy.deepcopy(st))

    hist = st["history"]
    order = sorted(range(len(hist)), key=lambda i: (-score_order(hist[i][1]), i))
    best = hist[order[0]]
    return SearchResult(
        best_config=g.config(g.genes_from_channels(best[0])),
        best_score=best[1],
        evaluations=len(hist),
        history=[(g.config(g.genes_from_channels(ch)), s) for ch, s in hist],
        state=st,
        stop_reason=st["stop_reason"],
    )
