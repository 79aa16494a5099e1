"""Search algorithms on tiny hand-made spaces (no PyTorch, no tables)."""
import json
import math
from dataclasses import dataclass

import pytest

from widthsearch.errors import ConfigError, UserError
from widthsearch.search import (
    Constraint,
    CountingEvaluator,
    evolution_search,
    greedy_slim,
    parse_budget,
    random_search,
)
from widthsearch.search.base import Genome


@dataclass
class FakeUnit:
    name: str
    choices: tuple


class FakeSpace:
    def __init__(self, spec):
        self.units = [FakeUnit(n, tuple(c)) for n, c in spec]


def total(cfg):
    return float(sum(cfg.values()))


# ----------------------------------------------------------------------------- basics
def test_parse_budget():
    assert parse_budget("100M") == 100e6
    assert parse_budget("1.5G") == 1.5e9
    assert parse_budget("300000") == 300000
    assert parse_budget("2k") == 2000
    assert parse_budget("0.5", max_cost=200.0) == 100.0
    assert parse_budget("25%", max_cost=200.0) == 50.0
    assert parse_budget(0.25, max_cost=400) == 100.0
    for bad in ("", "abc", "-1", "0", "10X", "150%"):
        with pytest.raises(UserError):
            parse_budget(bad, max_cost=1.0)
    with pytest.raises(UserError):
        parse_budget("0.5")  # a fraction needs the max cost
    # fractions=False (latency in ms): a plain number is absolute however small, a percentage an error
    assert parse_budget("0.5", max_cost=2.75, fractions=False) == 0.5
    assert parse_budget("4", fractions=False) == 4.0
    with pytest.raises(UserError):
        parse_budget("50%", max_cost=2.75, fractions=False)


def test_constraint_and_counting_evaluator():
    c = Constraint(total, budget=10, lower=0.5)
    assert c.feasible({"a": 5}) and c.feasible({"a": 10}) and not c.feasible({"a": 4}) and not c.feasible({"a": 11})
    with pytest.raises(UserError):
        Constraint(total, budget=0)
    calls = []
    ev = CountingEvaluator(lambda cfg: calls.append(1) or cfg["a"] * 2.0)
    assert ev({"a": 1, "b": 2}) == 2.0
    assert ev({"b": 2, "a": 1}) == 2.0  # same config, other key order: memoised
    assert ev({"a": 2, "b": 2}) == 4.0
    assert ev.evaluations == 2 and ev.calls == 3 and len(calls) == 2


def test_genome_rejects_bad_configs():
    g = Genome(FakeSpace([("a", (1, 2)), ("b", (3, 4))]))
    assert g.genes({"a": 2, "b": 3}) == (1, 0)
    with pytest.raises(ConfigError):
        g.genes({"a": 2})
    with pytest.raises(ConfigError):
        g.genes({"a": 5, "b": 3})
    with pytest.raises(ConfigError):
        Genome(FakeSpace([("a", (2, 1))]))


# ----------------------------------------------------------------------------- greedy
GREEDY_SPACE = FakeSpace([("a", (1, 2, 3, 4)), ("b", (1, 2, 3, 4)), ("c", (2, 4))])
LOSS = {"a": 3.0, "b": 1.0, "c": 2.0}  # score lost per shrink step of each unit
MAXC = {"a": 4, "b": 4, "c": 4}


def greedy_score(cfg):
    steps = {"a": 4 - cfg["a"], "b": 4 - cfg["b"], "c": (4 - cfg["c"]) // 2}
    return -sum(LOSS[u] * s for u, s in steps.items())


def test_greedy_known_path():
    res = greedy_slim(GREEDY_SPACE, greedy_score, total, [9, 5])
    # b is cheapest to shrink until its minimum, then c, then a
    assert [t["unit"] for t in res.trajectory[1:]] == ["b", "b", "b", "c", "a", "a"]
    assert [t["channels"] for t in res.trajectory[1:]] == [3, 2, 1, 2, 3, 2]
    assert res.trajectory[0]["costs"] == {"cost": 12.0} and res.trajectory[0]["score"] is None
    f9, f5 = res.found
    assert (f9["target"], f9["step"], f9["config"]) == (9.0, 3, {"a": 4, "b": 1, "c": 4})
    assert (f5["target"], f5["step"], f5["config"]) == (5.0, 6, {"a": 2, "b": 1, "c": 2})
    assert f5["score"] == greedy_score(f5["config"])
    assert res.config_for("cost", 5) == {"a": 2, "b": 1, "c": 2}
    # every step tries each unit not at its minimum: 3+3+3+2+1+1 = 13 distinct configs
    ev = CountingEvaluator(greedy_score)
    res2 = greedy_slim(GREEDY_SPACE, ev, total, [5, 9])
    assert res2.evaluations == ev.evaluations == ev.calls == 13
    assert res2.found == res.found  # targets are sorted descending whatever the input order


def test_greedy_ties_take_first_unit_and_max_config_may_meet_target():
    res = greedy_slim(GREEDY_SPACE, lambda cfg: 0.0, total, [12, 11])
    assert res.found[0]["step"] == 0 and res.found[0]["config"] == MAXC
    assert res.trajectory[1]["unit"] == "a"


def test_greedy_several_metrics():
    costs = {"flops": total, "params": lambda cfg: float(cfg["a"] * 10)}
    res = greedy_slim(GREEDY_SPACE, greedy_score, costs, [("params", 30), ("flops", 9)])
    by = {f["metric"]: f for f in res.found}
    assert by["flops"]["step"] == 3
    assert by["params"]["step"] == 5 and by["params"]["config"]["a"] == 3
    assert by["params"]["costs"] == {"flops": 6.0, "params": 30.0}
    assert [f["metric"] for f in res.found] == ["params", "flops"]


def test_greedy_target_below_min_is_user_error():
    with pytest.raises(UserError, match="below the smallest"):
        greedy_slim(GREEDY_SPACE, greedy_score, total, [3.5])
    with pytest.raises(UserError):
        greedy_slim(GREEDY_SPACE, greedy_score, total, [("params", 10)])


def test_greedy_resume_equals_uninterrupted():
    full = greedy_slim(GREEDY_SPACE, greedy_score, total, [10, 6, 4])
    states = []
    greedy_slim(GREEDY_SPACE, greedy_score, total, [10, 6, 4], on_step=states.append)
    assert len(states) == len(full.trajectory) - 1
    for k in (0, 2, len(states) - 2):
        saved = json.loads(json.dumps(states[k]))  # survives a JSON file
        ev = CountingEvaluator(greedy_score)
        resumed = greedy_slim(GREEDY_SPACE, ev, total, [10, 6, 4], state=saved)
        assert resumed.found == full.found
        assert resumed.trajectory == full.trajectory
        assert resumed.evaluations == full.evaluations
        assert ev.evaluations == full.evaluations - saved["evaluations"]
    with pytest.raises(UserError):
        greedy_slim(FakeSpace([("a", (1, 2))]), greedy_score, total, [1], state=states[0])


# ----------------------------------------------------------------------------- evolution
EVO_SPACE = FakeSpace([(f"u{i}", (8, 16, 24, 32)) for i in range(5)])  # 1024 configs
WEIGHTS = [5.0, 1.0, 3.0, 2.0, 4.0]


def evo_score(cfg):
    # concave, different value per unit: a unique optimum under a sum budget
    return sum(w * math.sqrt(cfg[f"u{i}"]) for i, w in enumerate(WEIGHTS))


def brute_force_best(constraint):
    import itertools

    best = None
    for ch in itertools.product((8, 16, 24, 32), repeat=5):
        cfg = {f"u{i}": c for i, c in enumerate(ch)}
        if constraint.feasible(cfg) and (best is None or evo_score(cfg) > evo_score(best)):
            best = cfg
    return best


def check_history(res, constraint, max_evals):
    keys = [tuple(sorted(c.items())) for c, _ in res.history]
    assert len(keys) == len(set(keys)), "a config was evaluated twice"
    assert all(constraint.feasible(c) for c, _ in res.history)
    assert res.evaluations == len(res.history) <= max_evals


def test_evolution_constraint_uniqueness_budget_and_quality():
    con = Constraint(total, budget=100, lower=0.8)
    ev = CountingEvaluator(evo_score)
    res = evolution_search(EVO_SPACE, ev, con, population=20, top_k=5, mutations=10, crossovers=10,
                           iterations=None, max_evals=150, seed=1)
    check_history(res, con, 150)
    assert ev.calls == ev.evaluations == 150 and res.stop_reason == "max_evals"
    assert res.best_config == brute_force_best(con)
    assert res.best_score == max(s for _, s in res.history)


def test_evolution_deterministic_per_seed():
    con = Constraint(total, budget=90)
    kw = dict(population=10, top_k=4, mutations=5, crossovers=5, iterations=6)
    a = evolution_search(EVO_SPACE, evo_score, con, seed=3, **kw)
    b = evolution_search(EVO_SPACE, evo_score, con, seed=3, **kw)
    c = evolution_search(EVO_SPACE, evo_score, con, seed=4, **kw)
    assert a.history == b.history and a.state == b.state
    assert a.history != c.history
    assert a.stop_reason == "iterations" and a.extra["generations"] == 6


def test_evolution_resume_same_result():
    con = Constraint(total, budget=90, lower=0.5)
    kw = dict(population=12, top_k=4, mutations=6, crossovers=6, iterations=None, max_evals=70, seed=7)
    full = evolution_search(EVO_SPACE, evo_score, con, **kw)
    states = []
    evolution_search(EVO_SPACE, evo_score, con, on_step=states.append, **kw)
    assert len(states) == 70
    for k in (5, 11, 12, 40):  # mid-generation and at a generation boundary
        saved = json.loads(json.dumps(states[k]))
        res = evolution_search(EVO_SPACE, evo_score, con, state=saved)
        assert res.history == full.history
        assert res.best_config == full.best_config
    with pytest.raises(UserError):
        evolution_search(EVO_SPACE, evo_score, Constraint(total, budget=50), state=states[5])


def test_evolution_initial_population_and_prior():
    con = Constraint(total, budget=160)
    init = [{f"u{i}": 8 for i in range(5)}, {f"u{i}": 16 for i in range(5)}, {f"u{i}": 8 for i in range(5)}]
    prior = {"u0": [0, 0, 1, 0]}  # u0 is always drawn as 24 (random samples and mutations)
    res = evolution_search(EVO_SPACE, evo_score, con, population=10, top_k=3, mutations=5, crossovers=5,
                           iterations=3, prior=prior, initial_population=init, seed=0)
    configs = [c for c, _ in res.history]
    assert configs[0] == init[0] and configs[1] == init[1]  # the duplicate is dropped
    assert all(c["u0"] == 24 for c in configs[2:10])
    assert {c["u0"] for c in configs} <= {8, 16, 24}
    with pytest.raises(UserError):
        evolution_search(EVO_SPACE, evo_score, con, prior={"u0": [1, 2]})
    with pytest.raises(ConfigError):
        evolution_search(EVO_SPACE, evo_score, con, initial_population=[{"u0": 9}])


def test_evolution_empty_and_exhausted_feasible_sets():
    with pytest.raises(UserError, match="feasible set seems empty"):
        evolution_search(EVO_SPACE, evo_score, Constraint(total, budget=39), max_tries=200)
    # exactly 6 of the 1024 configs have a sum <= 48: all at 8 (40) or one unit at 16 (48)
    con = Constraint(total, budget=48)
    res = evolution_search(EVO_SPACE, evo_score, con, population=4, top_k=2, mutations=2, crossovers=2,
                           iterations=None, max_evals=100, max_tries=20000, seed=0)
    assert res.evaluations == 6 and res.stop_reason == "exhausted"


# ----------------------------------------------------------------------------- evolution variants
def test_evolution_variants_respect_budget_and_never_repeat_a_config():
    con = Constraint(total, budget=100, lower=0.8)
    for variant in ("screened", "bcnet"):
        for max_evals in (1, 37, 120):
            ev = CountingEvaluator(evo_score)
            res = evolution_search(EVO_SPACE, ev, con, variant=variant, iterations=None, max_evals=max_evals, seed=2)
            check_history(res, con, max_evals)
            assert ev.calls == ev.evaluations == max_evals and res.extra["variant"] == variant
            assert sum(res.extra["origins"].values()) == max_evals
            if variant == "screened" and max_evals > 50:  # random samples only in the first generation
                assert res.extra["origins"]["random"] == 50


def test_screened_generations_are_children_only_and_best_predicted_first():
    from widthsearch.search.surrogate import fit_additive

    con = Constraint(total, budget=100, lower=0.8)
    res = evolution_search(EVO_SPACE, evo_score, con, population=20, mutations=4, crossovers=4, iterations=3, seed=0)
    assert res.evaluations == 20 + 2 * 8 and res.stop_reason == "iterations"
    # the second generation: 8 children, in the order the model fitted to the first 20 rates them
    g = Genome(EVO_SPACE)
    genes = [g.genes(c) for c, _ in res.history]
    model = fit_additive(genes[:20], [s for _, s in res.history[:20]], [4] * 5)
    predicted = list(model.predict(genes[20:28]))
    assert predicted == sorted(predicted, reverse=True)
    # evo_score is additive over units, so the model's picks beat the first generation on average
    assert sum(s for _, s in res.history[20:28]) / 8 > sum(s for _, s in res.history[:20]) / 20
    # the BCNetV2 loop fills generations up to the population with random samples
    bc = evolution_search(EVO_SPACE, evo_score, con, variant="bcnet", population=20, mutations=4, crossovers=4,
                          iterations=3, seed=0)
    assert bc.evaluations == 3 * 20


def test_mutation_changes_at_least_one_gene_and_respects_the_prior():
    import random

    from widthsearch.search.evolution import _mutate_some
    from widthsearch.search.prior import normalise_prior

    g = Genome(EVO_SPACE)
    rng = random.Random(0)
    parent = (0, 1, 2, 3, 0)
    for pm in (0.0, 0.1, 1.0):
        children = [_mutate_some(parent, g, None, pm, rng) for _ in range(300)]
        assert all(c != parent for c in children)
        if pm == 1.0:  # every gene moves, to another choice
            assert all(all(a != b for a, b in zip(c, parent)) for c in children)
    probs = normalise_prior(g, {"u0": [1, 0, 0, 0], "u1": [0, 1, 0, 0]})  # u0 and u1 cannot move
    children = [_mutate_some(parent, g, probs, 0.1, rng) for _ in range(300)]
    assert all(c[1] == 1 and c[0] in (0,) for c in children) and all(c != parent for c in children)
    frozen = normalise_prior(g, {f"u{i}": [0, 0, 0, 1] for i in range(5)})
    assert _mutate_some((3, 3, 3, 3, 3), g, frozen, 0.5, rng) == (3, 3, 3, 3, 3)  # nothing can move


def test_screened_resume_same_result_and_old_states_resume_as_bcnet():
    con = Constraint(total, budget=90, lower=0.5)
    for variant in ("screened", "bcnet"):
        kw = dict(variant=variant, population=12, top_k=4, mutations=3, crossovers=3, iterations=None,
                  max_evals=60, seed=7)
        states = []
        full = evolution_search(EVO_SPACE, evo_score, con, on_step=states.append, **kw)
        assert len(states) == 60
        for k in (5, 11, 12, 17, 40):  # mid-generation and at generation boundaries
            res = evolution_search(EVO_SPACE, evo_score, con, state=json.loads(json.dumps(states[k])))
            assert res.history == full.history and res.state == full.state
    # a state saved before variants existed has neither 'variant' nor 'screen': it is BCNetV2's loop
    old = json.loads(json.dumps(states[20]))
    del old["params"]["variant"], old["params"]["screen"]
    res = evolution_search(EVO_SPACE, evo_score, con, state=old)
    assert res.history == full.history and res.extra["variant"] == "bcnet"


def test_evolution_variant_options_are_checked():
    con = Constraint(total, budget=100)
    for kw, match in (({"variant": "nsga"}, "unknown evolution variant 'nsga'"),
                      ({"variant": "bcnet", "screen": 5}, "screen must be 1"),
                      ({"screen": 0}, "screen must be at least 1"),
                      ({"mutations": 0, "crossovers": 0}, "at least one mutation or crossover")):
        with pytest.raises(UserError, match=match):
            evolution_search(EVO_SPACE, evo_score, con, **kw)


def test_planned_evaluations():
    from widthsearch.search.evolution import planned_evaluations

    assert planned_evaluations() == 50 + 19 * 20  # screened: 10 + 10 children per later generation
    assert planned_evaluations(variant="bcnet") == 20 * 50
    assert planned_evaluations(max_evals=300) == 300 and planned_evaluations(iterations=2, max_evals=300) == 70
    assert planned_evaluations(iterations=None, max_evals=300) == 300


def test_additive_surrogate_ranks_an_additive_score():
    from widthsearch.search.surrogate import best_predicted, fit_additive

    genomes = [(a, b, c) for a in range(4) for b in range(3) for c in range(2)]
    score = [2.0 * a - b + 0.5 * c for a, b, c in genomes]
    model = fit_additive(genomes, score, [4, 3, 2], ridge=1e-6)
    assert model.predict(genomes) == pytest.approx(score, abs=1e-4)
    assert fit_additive(genomes[:1], score[:1], [4, 3, 2]) is None  # nothing to learn from one score
    nan_too = fit_additive(genomes + [(0, 0, 0)], score + [float("nan")], [4, 3, 2], ridge=1e-6)
    assert nan_too.predict([(3, 0, 1)])[0] == pytest.approx(6.5, abs=1e-4)
    assert best_predicted(model, genomes, 2) == [(3, 0, 1), (3, 0, 0)]
    assert best_predicted(None, genomes, 2) == genomes[:2]


# ----------------------------------------------------------------------------- random search
def test_random_search_constraint_budget_determinism_resume():
    con = Constraint(total, budget=100, lower=0.6)
    ev = CountingEvaluator(evo_score)
    a = random_search(EVO_SPACE, ev, con, max_evals=40, seed=5)
    check_history(a, con, 40)
    assert ev.evaluations == ev.calls == 40 and a.stop_reason == "max_evals"
    b = random_search(EVO_SPACE, evo_score, con, max_evals=40, seed=5)
    assert a.history == b.history
    assert random_search(EVO_SPACE, evo_score, con, max_evals=40, seed=6).history != a.history
    states = []
    random_search(EVO_SPACE, evo_score, con, max_evals=40, seed=5, on_step=states.append)
    resumed = random_search(EVO_SPACE, evo_score, con, state=json.loads(json.dumps(states[17])))
    assert resumed.history == a.history and resumed.best_config == a.best_config
    with pytest.raises(UserError, match="feasible set seems empty"):
        random_search(EVO_SPACE, evo_score, Constraint(total, budget=30), max_tries=100)
    small = random_search(EVO_SPACE, evo_score, Constraint(total, budget=48), max_evals=50, max_tries=20000)
    assert small.evaluations == 6 and small.stop_reason == "exhausted"


def test_cost_fns_from_space_cost():
    from types import SimpleNamespace

    from widthsearch.search import cost_fns

    calls = []

    class Space(FakeSpace):
        def cost(self, cfg):
            calls.append(1)
            return SimpleNamespace(flops=sum(cfg.values()) * 10, params=cfg["a"])

    fns = cost_fns(Space([("a", (1, 2)), ("b", (3, 4))]), ("flops", "params"))
    assert fns["flops"]({"a": 2, "b": 3}) == 50.0 and fns["params"]({"a": 2, "b": 3}) == 2.0
    assert len(calls) == 1


def test_base_still_exports_what_moved_to_focused_modules():
    from widthsearch.search import base, constraints, genome, prior, state

    for module, names in [
        (genome, ["Genome", "CountingEvaluator", "config_key", "score_order"]),
        (constraints, ["Constraint", "cost_fns", "parse_budget", "FeasibilityCache"]),
        (prior, ["normalise_prior", "draw_gene", "draw_genome"]),
        (state, ["rng_state", "new_state", "restore_state", "search_runtime", "SearchResult", "best_of"]),
    ]:
        for name in names:
            assert getattr(base, name) is getattr(module, name), name


def test_algorithms_are_registered_by_name():
    from widthsearch.search import SEARCH_ALGORITHMS, search_algorithm

    assert SEARCH_ALGORITHMS == {"greedy": greedy_slim, "evolution": evolution_search, "random": random_search}
    assert search_algorithm("evolution") is evolution_search
    with pytest.raises(UserError) as err:
        search_algorithm("annealing")
    assert str(err.value) == "unknown search algorithm 'annealing'; choose one of: greedy, evolution, random"
