"""Evolutionary search over channel configs under a cost constraint.

The loop follows the evolutionary searcher of BCNet/BCNetV2 (Su et al., arXiv 2105.10533
and 2203.13714; code in github.com/xiusu/BCNetV2): a first population (an optional given
initial population, e.g. BCNetV2's prior-sampled one, filled up with random samples), then
per generation ``mutations`` children from mutating a random parent among the ``top_k``
best configs seen so far and ``crossovers`` children from uniform crossover of two random
``top_k`` parents, filled up with random samples when mutation/crossover cannot produce
enough new candidates.  A mutated gene is redrawn from a per-unit prior over the unit's
choices (uniform unless given), as BCNetV2 mutates from its learned prior.

Every candidate is unique (never scored before) and feasible (``lower*T <= cost <= T``);
candidates are found by rejection sampling with a bounded number of tries.  The search
stops after ``iterations`` generations, after ``max_evals`` distinct evaluations, or when
no new feasible candidate can be found.

The state (RNG, history, candidates of the current generation still to score) is a
JSON-serialisable dict; ``on_step(state)`` is called after every evaluation and passing
a saved state back as ``state=`` continues to the identical result.
"""
from __future__ import annotations

import copy
import random
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from widthsearch.errors import UserError
from widthsearch.search.constraints import Constraint, FeasibilityCache, empty_feasible_error
from widthsearch.search.genome import Evaluator, Genome, genome, score_order
from widthsearch.search.prior import draw_gene, draw_genome
from widthsearch.search.state import SearchResult, new_state, restore_state, rng_state, search_runtime

# Defaults.  Structure and p_mut follow BCNetV2's searcher (population 50, top-k 10, 25
# mutations + 25 crossovers, p_mut 0.1, 20 generations); the evaluation budget and the
# population/top-k/p_mut values below were tuned on Channel-Bench-Macro with the oracle,
# see docs/methods/search.md.
DEFAULTS: Dict[str, Any] = {
    "population": 50,
    "top_k": 10,
    "mutations": 25,
    "crossovers": 25,
    "mutation_prob": 0.1,
    "iterations": 20,
    "max_evals": None,
    "max_tries": 10000,
}


def evolution_search(
    space: Any,
    evaluate: Evaluator,
    constraint: Constraint,
    *,
    population: int = DEFAULTS["population"],
    top_k: int = DEFAULTS["top_k"],
    mutations: int = DEFAULTS["mutations"],
    crossovers: int = DEFAULTS["crossovers"],
    mutation_prob: float = DEFAULTS["mutation_prob"],
    iterations: Optional[int] = DEFAULTS["iterations"],
    max_evals: Optional[int] = DEFAULTS["max_evals"],
    prior: Optional[Mapping[str, Sequence[float]]] = None,
    initial_population: Optional[Sequence[Mapping[str, int]]] = None,
    seed: int = 0,
    max_tries: int = DEFAULTS["max_tries"],
    state: Optional[Mapping[str, Any]] = None,
    on_step: Optional[Callable[[Dict[str, Any]], None]] = None,
) -> SearchResult:
    """Run (or resume) the evolutionary search; returns the best config found.

    ``evaluate``: config -> score (higher is better).  ``constraint``: a
    :class:`~widthsearch.search.constraints.Constraint`.  ``iterations``: number of generations,
    the first included (None = until ``max_evals``).  ``max_evals``: most distinct configs
    scored (None = no limit).  ``prior``: unit name -> probabilities over that unit's choices,
    used for random samples and mutations.  ``max_tries``: random draws allowed when looking
    for one new feasible candidate; if the first generation finds none, ``UserError``.
    """
    g: Genome = genome(space)
    if state is None:
        params = {
            "population": int(population),
            "top_k": int(top_k),
            "mutations": int(mutations),
            "crossovers": int(crossovers),
            "mutation_prob": float(mutation_prob),
            "iterations": None if iterations is None else int(iterations),
            "max_evals": None if max_evals is None else int(max_evals),
            "seed": int(seed),
            "max_tries": int(max_tries),
            "budget": float(constraint.budget),
            "lower": float(constraint.lower),
        }
        _check_params(params)
        init = [list(g.channels(g.genes(c))) for c in (initial_population or [])]
        st = new_state("evolution", g, params, prior, initial_population=init, generation=0, pending=[])
    else:
        st = restore_state(state, "evolution", "evolution-search", g, constraint)
        params = st["params"]

    probs, feasible, rng, seen = search_runtime(g, st, constraint)
    max_ev = params["max_evals"]

    while not st["done"]:
        if not st["pending"]:
            # stop conditions between generations
            if params["iterations"] is not None and st["generation"] >= params["iterations"]:
                _stop(st, "iterations")
                break
            if max_ev is not None and len(st["history"]) >= max_ev:
                _stop(st, "max_evals")
                break
            cands = _next_generation(st, g, params, probs, feasible, rng, seen, constraint)
            if max_ev is not None:
                cands = cands[: max(0, max_ev - len(st["history"]))]
            st["generation"] += 1
            st["rng"] = rng_state(rng)
            if not cands:
                _stop(st, "exhausted")
                break
            st["pending"] = [g.channels(c) for c in cands]
        # score the pending candidates one at a time (state saved after each)
        channels = st["pending"][0]
        score = float(evaluate(g.config(g.genes_from_channels(channels))))
        st["history"].append([channels, score])
        st["pending"] = st["pending"][1:]
        if on_step is not None:
            on_step(copy.deepcopy(st))

    return _result(st, g)


def _check_params(p: Dict[str, Any]) -> None:
    if p["population"] < 1:
        raise UserError("population must be at least 1")
    if p["top_k"] < 1:
        raise UserError("top_k must be at least 1")
    if p["mutations"] < 0 or p["crossovers"] < 0:
        raise UserError("mutations and crossovers must be non-negative")
    if not 0.0 <= p["mutation_prob"] <= 1.0:
        raise UserError("mutation probability must lie in [0, 1]")
    if p["iterations"] is not None and p["iterations"] < 1:
        raise UserError("iterations must be at least 1")
    if p["max_evals"] is not None and p["max_evals"] < 1:
        raise UserError("max_evals must be at least 1")
    if p["iterations"] is None and p["max_evals"] is None:
        raise UserError("give iterations or max_evals (or both), otherwise the search never stops")
    if p["max_tries"] < 1:
        raise UserError("max_tries must be at least 1")


def _stop(st: Dict[str, Any], reason: str) -> None:
    st["done"] = True
    st["stop_reason"] = reason


def _top_k(st: Dict[str, Any], g: Genome, k: int) -> List[Tuple[int, ...]]:
    hist = st["history"]
    order = sorted(range(len(hist)), key=lambda i: (-score_order(hist[i][1]), i))
    return [g.genes_from_channels(hist[i][0]) for i in order[:k]]


def _next_generation(
    st: Dict[str, Any],
    g: Genome,
    params: Dict[str, Any],
    probs: Optional[List[List[float]]],
    feasible: FeasibilityCache,
    rng: random.Random,
    seen: Set[Tuple[int, ...]],
    constraint: Constraint,
) -> List[Tuple[int, ...]]:
    """Candidates of the next generation (all unique, unseen and feasible)."""
    out: List[Tuple[int, ...]] = []

    def take(c: Tuple[int, ...]) -> bool:
        if c in seen or not feasible(c):
            return False
        seen.add(c)
        out.append(c)
        return True

    n_pop = params["population"]
    first = st["generation"] == 0
    if first:
        for ch in st["initial_population"]:
            if len(out) >= n_pop:
                break
            take(g.genes_from_channels(ch))
    else:
        parents = _top_k(st, g, params["top_k"])
        pm = params["mutation_prob"]
        # mutation: each gene redrawn from the prior with probability pm
        want = len(out) + params["mutations"]
        tries = 0
        while len(out) < want and tries < 10 * max(1, params["mutations"]):
            tries += 1
            parent = parents[rng.randrange(len(parents))]
            child = tuple(
                draw_gene(rng, len(g.choices[i]), None if probs is None else probs[i]) if rng.random() < pm else x
                for i, x in enumerate(parent)
            )
            take(child)
        # uniform crossover of two random parents
        want = len(out) + params["crossovers"]
        tries = 0
        while len(out) < want and tries < 10 * max(1, params["crossovers"]):
            tries += 1
            a = parents[rng.randrange(len(parents))]
            b = parents[rng.randrange(len(parents))]
            child = tuple(x if rng.random() < 0.5 else y for x, y in zip(a, b))
            take(child)
    # fill up with random samples from the prior
    fill_to = n_pop if first else max(n_pop, params["mutations"] + params["crossovers"])
    tries = 0
    while len(out) < fill_to:
        found = False
        for _ in range(params["max_tries"]):
            tries += 1
            if take(draw_genome(rng, g, probs)):
                found = True
                break
        if not found:
            if first and not out and not st["history"]:
                raise empty_feasible_error(constraint, tries)
            break
    return out


def _result(st: Dict[str, Any], g: Genome) -> SearchResult:
    hist = st["history"]
    if not hist:
        raise UserError("the search scored no config")
    order = sorted(range(len(hist)), key=lambda i: (-score_order(hist[i][1]), i))
    best = hist[order[0]]
    history = [(g.config(g.genes_from_channels(ch)), s) for ch, s in hist]
    return SearchResult(
        best_config=g.config(g.genes_from_channels(best[0])),
        best_score=best[1],
        evaluations=len(hist),
        history=history,
        state=st,
        stop_reason=st["stop_reason"],
        extra={"generations": st["generation"]},
    )
