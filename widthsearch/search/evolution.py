"""Evolutionary search over channel configs under a cost constraint.

Two variants share one loop.  ``variant="bcnet"`` is the evolutionary searcher of
BCNet/BCNetV2 (Su et al., arXiv 2105.10533 and 2203.13714; code in github.com/xiusu/BCNetV2),
kept as published: a first population (an optional given initial population, e.g. BCNetV2's
prior-sampled one, filled up with random samples), then per generation ``mutations``
children from mutating a random parent among the ``top_k`` best configs seen so far and
``crossovers`` children from uniform crossover of two random ``top_k`` parents, filled up
with random samples when mutation/crossover cannot produce enough new candidates.  A
mutated gene is redrawn from a per-unit prior over the unit's choices (uniform unless
given), as BCNetV2 mutates from its learned prior.

``variant="screened"`` (the default) changes three things, each against a way the
published loop was measured to miss the best config on Channel-Bench-Macro
(docs/methods/search.md):

* a mutation changes at least one gene, to a choice other than the current one (BCNetV2's
  redraw leaves a 7-gene parent unchanged 58 % of the time, and those tries are lost);
* later generations are never filled up with random samples (on Channel-Bench-Macro a
  quarter to a half of BCNetV2's evaluations after the first generation went to random
  configs, which rarely beat the parents);
* ``screen`` times as many children are proposed as are evaluated, and those that an
  additive model of the score, fitted to every config scored so far
  (:mod:`~widthsearch.search.surrogate`), predicts best are evaluated; with smaller
  generations (10 + 10 children) and more parents (top 20) this refits the model and
  reselects parents every 20 evaluations.

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
from widthsearch.search.state import (
    SearchResult,
    SearchRuntime,
    new_state,
    restore_state,
    rng_state,
    search_runtime,
)
from widthsearch.search.surrogate import best_predicted, fit_additive

VARIANTS = ("screened", "bcnet")

# Per-variant defaults of the options that differ (an option left at None takes its variant's).
#   bcnet: BCNetV2's searcher (top-k 10, 25 mutations + 25 crossovers); screening off.
#   screened: generation size, top-k and screen factor chosen on Channel-Bench-Macro seeds
#     100-149 and checked on 150-249 (docs/methods/search.md).
# Shared: population 50, p_mut 0.1 and 20 generations (BCNetV2's values; 20 generations are
# 1000 evaluations for bcnet, 50 + 19 * 20 = 430 for screened).
VARIANT_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "bcnet": {"top_k": 10, "mutations": 25, "crossovers": 25, "screen": 1},
    "screened": {"top_k": 20, "mutations": 10, "crossovers": 10, "screen": 20},
}
DEFAULT_VARIANT = "screened"
_TRIES_PER_CHILD = 10  # mutation/crossover draws allowed per wanted child (BCNetV2 code: unbounded)
# where an evaluated config came from (counted in the state's "origins" and the result's extra):
# the given initial population, a random sample, a mutation or a crossover
ORIGINS = ("initial", "random", "mutation", "crossover")


def evolution_search(
    space: Any,
    evaluate: Evaluator,
    constraint: Constraint,
    *,
    variant: str = DEFAULT_VARIANT,
    population: int = 50,
    top_k: Optional[int] = None,
    mutations: Optional[int] = None,
    crossovers: Optional[int] = None,
    mutation_prob: float = 0.1,
    screen: Optional[int] = None,
    iterations: Optional[int] = 20,
    max_evals: Optional[int] = None,
    prior: Optional[Mapping[str, Sequence[float]]] = None,
    initial_population: Optional[Sequence[Mapping[str, int]]] = None,
    seed: int = 0,
    max_tries: int = 10000,
    state: Optional[Mapping[str, Any]] = None,
    on_step: Optional[Callable[[Dict[str, Any]], None]] = None,
) -> SearchResult:
    """Run (or resume) the evolutionary search; returns the best config found.

    ``evaluate``: config -> score (higher is better).  ``constraint``: a
    :class:`~widthsearch.search.constraints.Constraint`.  ``variant``: ``"screened"`` (default)
    or ``"bcnet"`` (BCNetV2's loop as published); options left at None take the variant's
    value from :data:`VARIANT_DEFAULTS`.  ``iterations``: number of generations, the first
    included (None = until ``max_evals``).  ``max_evals``: most distinct configs scored (None = no
    limit).  ``screen``: children proposed per child evaluated (1 = no screening).  ``prior``:
    unit name -> probabilities over that unit's choices, used for random samples and
    mutations.  ``max_tries``: random draws allowed when looking for one new feasible
    random candidate; if the first generation finds none, ``UserError``.
    """
    g: Genome = genome(space)
    if state is None:
        params = resolve_params(
            variant, population=population, top_k=top_k, mutations=mutations, crossovers=crossovers,
            mutation_prob=mutation_prob, screen=screen, iterations=iterations, max_evals=max_evals,
            seed=seed, max_tries=max_tries,
        )
        params.update(budget=float(constraint.budget), lower=float(constraint.lower))
        init = [list(g.channels(g.genes(c))) for c in (initial_population or [])]
        st = new_state("evolution", g, params, prior, initial_population=init, generation=0, pending=[],
                       origins=dict.fromkeys(ORIGINS, 0))
    else:
        st = restore_state(state, "evolution", "evolution-search", g, constraint)
        params = st["params"]
        # states saved before variants existed come from BCNetV2's loop
        params.setdefault("variant", "bcnet")
        params.setdefault("screen", 1)
        st.setdefault("origins", dict.fromkeys(ORIGINS, 0))  # then they count from the resume on

    runtime = search_runtime(g, st, constraint)
    while not st["done"]:
        if not st["pending"] and not _start_generation(st, g, params, runtime, constraint):
            break
        # score the pending candidates one at a time (state saved after each)
        channels = st["pending"][0]
        score = float(evaluate(g.config(g.genes_from_channels(channels))))
        st["history"].append([channels, score])
        st["pending"] = st["pending"][1:]
        if on_step is not None:
            on_step(copy.deepcopy(st))

    return _result(st, g)


_SHARED_DEFAULTS: Dict[str, Any] = {"population": 50, "mutation_prob": 0.1, "iterations": 20, "max_evals": None,
                                    "seed": 0, "max_tries": 10000}


def _start_generation(st: Dict[str, Any], g: Genome, params: Dict[str, Any], runtime: SearchRuntime,
                      constraint: Constraint) -> bool:
    """Queue the next generation's candidates in ``st["pending"]``; False (and the state marked
    done) when a stop condition holds or no new candidate can be found."""
    probs, feasible, rng, seen = runtime
    max_ev = params["max_evals"]
    if params["iterations"] is not None and st["generation"] >= params["iterations"]:
        _stop(st, "iterations")
        return False
    if max_ev is not None and len(st["history"]) >= max_ev:
        _stop(st, "max_evals")
        return False
    cands, origin = _next_generation(st, g, params, probs, feasible, rng, seen, constraint)
    if max_ev is not None:
        # keep the first candidates: screened children come best-predicted first
        room = max(0, max_ev - len(st["history"]))
        seen.difference_update(cands[room:])
        cands = cands[:room]
    for c in cands:
        st["origins"][origin[c]] += 1
    st["generation"] += 1
    st["rng"] = rng_state(rng)
    if not cands:
        _stop(st, "exhausted")
        return False
    st["pending"] = [g.channels(c) for c in cands]
    return True


def resolve_params(variant: str = DEFAULT_VARIANT, **given: Any) -> Dict[str, Any]:
    """The effective, checked parameters of a search: ``given`` over the defaults, where
    ``top_k``, ``mutations``, ``crossovers`` and ``screen`` left at None take the variant's
    (:data:`VARIANT_DEFAULTS`); ``iterations=None`` means no generation limit."""
    if variant not in VARIANT_DEFAULTS:
        raise UserError(f"unknown evolution variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
    p: Dict[str, Any] = {"variant": variant, **_SHARED_DEFAULTS, **given}
    for k, v in VARIANT_DEFAULTS[variant].items():
        if p.get(k) is None:
            p[k] = v
    for k in ("population", "top_k", "mutations", "crossovers", "screen", "seed", "max_tries"):
        p[k] = int(p[k])
    p["mutation_prob"] = float(p["mutation_prob"])
    for k in ("iterations", "max_evals"):
        p[k] = None if p[k] is None else int(p[k])
    _check_params(p)
    return p


def planned_evaluations(**options: Any) -> Optional[int]:
    """How many configs a search with these options scores at most (None = no bound known),
    e.g. for a progress bar: ``max_evals`` or all generations in full, whichever is smaller."""
    p = resolve_params(options.pop("variant", DEFAULT_VARIANT), **options)
    full = None
    if p["iterations"] is not None:
        full = p["population"] + (p["iterations"] - 1) * _children(p)
    if p["max_evals"] is None:
        return full
    return p["max_evals"] if full is None else min(full, p["max_evals"])


def _children(p: Mapping[str, Any]) -> int:
    """Configs evaluated per generation after the first."""
    if p["variant"] == "bcnet":  # filled up to the population with random samples
        return max(p["population"], p["mutations"] + p["crossovers"])
    return p["mutations"] + p["crossovers"]


def _check_params(p: Dict[str, Any]) -> None:
    if p["population"] < 1:
        raise UserError("population must be at least 1")
    if p["top_k"] < 1:
        raise UserError("top_k must be at least 1")
    if p["mutations"] < 0 or p["crossovers"] < 0:
        raise UserError("mutations and crossovers must be non-negative")
    if p["variant"] == "screened" and p["mutations"] + p["crossovers"] < 1:
        raise UserError("the screened variant needs at least one mutation or crossover per generation")
    if not 0.0 <= p["mutation_prob"] <= 1.0:
        raise UserError("mutation probability must lie in [0, 1]")
    if p["screen"] < 1:
        raise UserError("screen must be at least 1 (1 = every proposed child is evaluated)")
    if p["variant"] == "bcnet" and p["screen"] != 1:
        raise UserError("the bcnet variant evaluates every child it proposes: screen must be 1")
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
) -> Tuple[List[Tuple[int, ...]], Dict[Tuple[int, ...], str]]:
    """Candidates of the next generation (all unique, unseen and feasible), added to ``seen``,
    and where each came from (config -> one of :data:`ORIGINS`)."""
    origin: Dict[Tuple[int, ...], str] = {}
    if st["generation"] == 0:
        out = _first_generation(st, g, params, probs, feasible, rng, seen, constraint, origin)
    elif params["variant"] == "bcnet":
        out = _bcnet_children(st, g, params, probs, feasible, rng, seen, origin)
    else:
        out = _screened_children(st, g, params, probs, feasible, rng, seen, origin)
    seen.update(out)
    return out, origin


def _first_generation(st, g, params, probs, feasible, rng, seen, constraint, taken) -> List[Tuple[int, ...]]:
    """The given initial population (infeasible and repeated entries dropped), filled up to
    ``population`` with random samples from the prior."""
    out: List[Tuple[int, ...]] = []
    for ch in st["initial_population"]:
        if len(out) >= params["population"]:
            break
        _take(g.genes_from_channels(ch), out, taken, seen, feasible, "initial")
    tries = _fill_random(params["population"], out, taken, seen, feasible, rng, g, probs, params["max_tries"])
    if not out and not st["history"]:
        raise empty_feasible_error(constraint, tries)
    return out


def _bcnet_children(st, g, params, probs, feasible, rng, seen, taken) -> List[Tuple[int, ...]]:
    """BCNetV2's generation: mutations and crossovers of the top-k, filled up with random samples."""
    parents = _top_k(st, g, params["top_k"])
    out: List[Tuple[int, ...]] = []
    pm = params["mutation_prob"]
    # mutation: each gene redrawn from the prior with probability pm (possibly to its own value)
    want = params["mutations"]
    tries = 0
    while len(out) < want and tries < _TRIES_PER_CHILD * max(1, want):
        tries += 1
        parent = parents[rng.randrange(len(parents))]
        child = tuple(
            draw_gene(rng, len(g.choices[i]), None if probs is None else probs[i]) if rng.random() < pm else x
            for i, x in enumerate(parent)
        )
        _take(child, out, taken, seen, feasible, "mutation")
    _crossovers(parents, params["crossovers"], params["crossovers"], out, taken, seen, feasible, rng)
    fill_to = max(params["population"], params["mutations"] + params["crossovers"])
    _fill_random(fill_to, out, taken, seen, feasible, rng, g, probs, params["max_tries"])
    return out


def _screened_children(st, g, params, probs, feasible, rng, seen, taken) -> List[Tuple[int, ...]]:
    """``screen`` proposals per child (mutations changing at least one gene, crossovers), of
    which the best-predicted ``mutations + crossovers`` are returned, best first; random
    samples only when mutation and crossover propose nothing new."""
    parents = _top_k(st, g, params["top_k"])
    pool: List[Tuple[int, ...]] = []
    want = params["screen"] * params["mutations"]
    tries = 0
    while len(pool) < want and tries < _TRIES_PER_CHILD * want:
        tries += 1
        parent = parents[rng.randrange(len(parents))]
        child = _mutate_some(parent, g, probs, params["mutation_prob"], rng)
        _take(child, pool, taken, seen, feasible, "mutation")
    n_cross = params["screen"] * params["crossovers"]
    _crossovers(parents, n_cross, n_cross, pool, taken, seen, feasible, rng)
    if not pool:  # the parents' neighbourhood is used up: look elsewhere rather than stop
        _fill_random(1, pool, taken, seen, feasible, rng, g, probs, params["max_tries"])
    model = None
    if len(pool) > params["mutations"] + params["crossovers"]:
        hist = st["history"]
        model = fit_additive([g.genes_from_channels(ch) for ch, _ in hist], [s for _, s in hist],
                             [len(c) for c in g.choices])
    return best_predicted(model, pool, params["mutations"] + params["crossovers"])


def _mutate_some(parent: Tuple[int, ...], g: Genome, probs: Optional[List[List[float]]], pm: float,
                 rng: random.Random) -> Tuple[int, ...]:
    """Each gene is picked with probability ``pm``, at least one is (uniformly among the genes
    that can change), and every picked gene moves to another choice drawn from the prior."""
    movable = [i for i, x in enumerate(parent) if _others(g, probs, i, x)]
    picked = [i for i in range(len(parent)) if rng.random() < pm and i in movable]
    if not picked and movable:
        picked = [movable[rng.randrange(len(movable))]]
    child = list(parent)
    for i in picked:
        others = _others(g, probs, i, parent[i])
        if probs is None:
            child[i] = others[rng.randrange(len(others))]
        else:
            weights = [probs[i][c] for c in others]
            child[i] = others[draw_gene(rng, len(others), [w / sum(weights) for w in weights])]
    return tuple(child)


def _others(g: Genome, probs: Optional[List[List[float]]], i: int, current: int) -> List[int]:
    """Choices of gene ``i`` other than ``current`` that the prior can draw."""
    return [c for c in range(len(g.choices[i])) if c != current and (probs is None or probs[i][c] > 0)]


def _crossovers(parents, want, budget, out, taken, seen, feasible, rng) -> None:
    """Up to ``want`` uniform crossovers of two random parents, in at most
    ``_TRIES_PER_CHILD * budget`` draws."""
    goal = len(out) + want
    tries = 0
    while len(out) < goal and tries < _TRIES_PER_CHILD * max(1, budget):
        tries += 1
        a = parents[rng.randrange(len(parents))]
        b = parents[rng.randrange(len(parents))]
        child = tuple(x if rng.random() < 0.5 else y for x, y in zip(a, b))
        _take(child, out, taken, seen, feasible, "crossover")


def _fill_random(fill_to, out, taken, seen, feasible, rng, g, probs, max_tries) -> int:
    """Random samples from the prior until ``out`` has ``fill_to``, each found in at most
    ``max_tries`` draws; returns the draws made."""
    tries = 0
    while len(out) < fill_to:
        for _ in range(max_tries):
            tries += 1
            if _take(draw_genome(rng, g, probs), out, taken, seen, feasible, "random"):
                break
        else:
            break
    return tries


def _take(c: Tuple[int, ...], out: List[Tuple[int, ...]], taken: Dict[Tuple[int, ...], str],
          seen: Set[Tuple[int, ...]], feasible: FeasibilityCache, origin: str) -> bool:
    """Append ``c`` to ``out`` (and record its origin in ``taken``) if it is new (not scored,
    queued, or already taken this generation) and feasible."""
    if c in seen or c in taken or not feasible(c):
        return False
    taken[c] = origin
    out.append(c)
    return True


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
        extra={"generations": st["generation"], "variant": st["params"]["variant"],
               "origins": dict(st["origins"])},
    )
