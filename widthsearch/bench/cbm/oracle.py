"""The oracle bench: one CBM space's table as evaluator of search algorithms and as the truth
that a proxy's scores are correlated with.

With the table's ``mean`` as the evaluator (the *oracle*) a search algorithm is scored by the
rank of what it finds among the archs that fit the budget; :func:`run_benchmark` runs every
algorithm on every space and budget.
"""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from widthsearch.bench.cbm.stats import (
    correlations,
    expected_best_of_n,
    paired_bootstrap_kendall,
    rank_desc,
    topk_overlap,
)
from widthsearch.bench.cbm.table import (
    DEFAULT_BUDGETS,
    DIGITS,
    KEY_LENGTH,
    SPACES,
    cbm_channel_space,
    is_key,
    load_table,
    space_name,
)
from widthsearch.errors import UserError
from widthsearch.search.constraints import Constraint, parse_budget
from widthsearch.search.genome import Config, CountingEvaluator, Genome

if TYPE_CHECKING:
    from widthsearch.bench.cbm.prior import RecordsPrior

__all__ = ["CBM_LOWER", "EVOLUTION_CBM", "NOISE_STREAM", "REPORT_ALGOS", "TOP_RANK", "CBMBench", "run_benchmark"]


# Constraint window used by evolution and random search on CBM: FLOPs in [0.8*T, T], the
# window BCNetV2 imposes on its candidates.  On the oracle it lowered evolution's mean rank
# among feasible from 3.97 to 1.85 (see docs/methods/search.md); the ranks reported are
# still among *all* archs with FLOPs <= T.
CBM_LOWER = 0.8
# Evolution options on CBM beyond the library defaults: the evaluation budget (``max_evals``)
# is the only stop.  A generation limit would stop the screened variant, whose generations
# shrink once its parents' neighbourhood is used up, before its budget is spent; BCNetV2's
# loop spends 300 evaluations in 6 of its 20 generations, so it is unaffected.
EVOLUTION_CBM: Dict[str, Any] = {"iterations": None}
# A noisy oracle's noise stream, kept apart from the search's own RNG seeded by the same seed.
NOISE_STREAM = 0x6E6F697365
# The goal rank of the oracle benchmarks (worst case <= 5): searches report when they first
# scored an arch this good.
TOP_RANK = 5


def _nan_none(x: float) -> Optional[float]:
    """JSON has no NaN: an undefined statistic (a constant score vector) is ``None``."""
    return None if not math.isfinite(float(x)) else float(x)


def _pct(frac: float) -> str:
    return f"{round(float(frac) * 100):d}%"


class CBMBench:
    """One CBM space: its table, the key <-> config mapping, the oracle and the scorers.

    ``channel_space`` defaults to the core's analysis of the zoo net; any object with
    ``.units`` (7 units of 4 ascending choices) works, which is how tests run without it.
    """

    def __init__(self, space: str, tables: Optional[Any] = None, channel_space: Any = None):
        self.name = space_name(space)
        self.table = load_table(self.name, tables)
        self.space = channel_space if channel_space is not None else cbm_channel_space(self.name)
        units = list(self.space.units)
        if len(units) != KEY_LENGTH or any(len(tuple(u.choices)) != len(DIGITS) for u in units):
            shape = [len(tuple(u.choices)) for u in units]
            raise UserError(
                f"the channel space of the {self.name} net has {len(units)} units with {shape} choices; "
                f"Channel-Bench-Macro needs {KEY_LENGTH} units of {len(DIGITS)} choices"
            )
        self.genome = Genome(self.space)
        self._digit = [{c: DIGITS[i] for i, c in enumerate(ch)} for ch in self.genome.choices]

    # ---- key <-> config ------------------------------------------------------------
    def key_to_config(self, key: str) -> Config:
        if not is_key(key):
            raise UserError(f"{key!r} is not a Channel-Bench-Macro key (7 digits 1-4)")
        return {n: ch[int(d) - 1] for n, ch, d in zip(self.genome.names, self.genome.choices, key)}

    def config_to_key(self, config: Mapping[str, int]) -> str:
        try:
            return "".join(m[config[n]] for n, m in zip(self.genome.names, self._digit))
        except (KeyError, TypeError):
            self.genome.genes(config)  # raises ConfigError naming the problem
            raise

    # ---- table lookups on configs --------------------------------------------------
    def accuracy(self, config: Mapping[str, int]) -> float:
        return float(self.table.mean[self.table.index[self.config_to_key(config)]])

    def flops(self, config: Mapping[str, int]) -> int:
        return int(self.table.flops[self.table.index[self.config_to_key(config)]])

    def params(self, config: Mapping[str, int]) -> int:
        return int(self.table.params[self.table.index[self.config_to_key(config)]])

    def oracle(self) -> Callable[[Mapping[str, int]], float]:
        """Evaluator config -> table ``mean`` (3-run mean CIFAR-10 top-1, %)."""
        return self.accuracy

    # ---- cost check ----------------------------------------------------------------
    def verify_costs(self, keys: Optional[Iterable[str]] = None) -> Dict[str, Any]:
        """Check ``space.cost(config)`` (flops and params) against the table for every key."""
        if not hasattr(self.space, "cost"):
            raise UserError("this channel space has no cost model to verify")
        t0 = time.perf_counter()
        checked = 0
        flops_bad = params_bad = bad = 0
        examples: List[Dict[str, Any]] = []
        for key in self.table.keys if keys is None else keys:
            i = self.table.row(key)
            cost = self.space.cost(self.key_to_config(key))
            f_ok = int(cost.flops) == int(self.table.flops[i])
            p_ok = int(cost.params) == int(self.table.params[i])
            checked += 1
            flops_bad += not f_ok
            params_bad += not p_ok
            bad += not (f_ok and p_ok)
            if (not f_ok or not p_ok) and len(examples) < 5:
                examples.append(
                    {
                        "key": key,
                        "flops": int(cost.flops),
                        "table_flops": int(self.table.flops[i]),
                        "params": int(cost.params),
                        "table_params": int(self.table.params[i]),
                    }
                )
        return {
            "space": self.name,
            "checked": checked,
            "mismatches": bad,
            "flops_mismatches": flops_bad,
            "params_mismatches": params_bad,
            "examples": examples,
            "seconds": round(time.perf_counter() - t0, 3),
        }

    # ---- budgets and ranks ---------------------------------------------------------
    def budget_flops(self, budget: Any) -> float:
        """A FLOPs budget: a fraction of the max net's FLOPs (0.5, "50%") or absolute ("100M")."""
        return parse_budget(budget, self.table.max_flops)

    def feasible_mask(self, budget_flops: float) -> np.ndarray:
        return self.table.flops <= budget_flops

    def check_budget(self, budget_flops: float) -> int:
        """Number of feasible archs; ``UserError`` if there are none."""
        n = int(np.count_nonzero(self.feasible_mask(budget_flops)))
        if n == 0:
            lo = int(self.table.flops.min())
            raise UserError(
                f"budget {budget_flops / 1e6:.3f} MFLOPs is below the smallest {self.name} net "
                f"({lo / 1e6:.3f} MFLOPs, {lo / self.table.max_flops:.1%} of max); no architecture is feasible"
            )
        return n

    def rank_global(self, key: str) -> int:
        return rank_desc(self.table.mean, float(self.table.mean[self.table.row(key)]))

    def rank_feasible(self, key: str, budget_flops: float) -> int:
        """Rank by mean accuracy among archs with FLOPs <= budget (1 = best).  The key itself
        need not be feasible; its rank is then where it would sit among them."""
        mask = self.feasible_mask(budget_flops)
        return rank_desc(self.table.mean[mask], float(self.table.mean[self.table.row(key)]))

    def optimum(self, budget_flops: Optional[float] = None) -> Tuple[str, float]:
        """Best key by mean (first key on ties) among archs with FLOPs <= budget (all if None)."""
        mean = self.table.mean
        if budget_flops is not None:
            self.check_budget(budget_flops)
            mean = np.where(self.feasible_mask(budget_flops), mean, -np.inf)
        i = int(np.argmax(mean))
        return self.table.keys[i], float(self.table.mean[i])

    def random_best_of_n(self, n: int, budget_flops: Optional[float] = None) -> Dict[str, float]:
        """Expected true accuracy and rank among feasible of the best of ``n`` distinct uniform
        feasible archs (exact, sampling without replacement like the random search does)."""
        mask = np.ones(len(self.table.keys), bool) if budget_flops is None else self.feasible_mask(budget_flops)
        if not mask.any():
            raise UserError("no feasible architecture")
        return expected_best_of_n(self.table.mean[mask], n)

    # ---- searching with the oracle ----------------------------------------------------
    def search(
        self,
        algo: str,
        budget: Any = 0.5,
        *,
        max_evals: int = 300,
        seed: int = 0,
        lower: Optional[float] = None,
        noise_std: float = 0.0,
        prior: Optional["RecordsPrior"] = None,
        **kwargs: Any,
    ) -> Dict[str, Any]:
        """Run one search algorithm with the table's ``mean`` as evaluator and report how good
        its pick is (rank among feasible archs, global rank, evaluations used).

        ``noise_std`` > 0: the evaluator is the table's mean plus Gaussian noise of that std (in
        accuracy %), fixed per architecture and seeded by ``seed`` (:meth:`noisy_oracle`), like a
        supernet whose score of each arch is off by its own error; the pick is still ranked by the
        table's mean. ``prior`` (evolution only): BCNetV2's prior fitted to a supernet's loss
        records seeds the first population and the mutations (:class:`RecordsPrior`)."""
        from widthsearch.search.evolution import evolution_search
        from widthsearch.search.greedy import greedy_slim
        from widthsearch.search.random_search import random_search

        if prior is not None and algo != "evolution":
            raise UserError("a loss-records prior seeds evolution only: use it with algo evolution")
        b = self.budget_flops(budget)
        n_feasible = self.check_budget(b)
        evaluator = CountingEvaluator(self.noisy_oracle(noise_std, seed) if noise_std else self.oracle())
        seeded: Dict[str, Any] = {}
        t0 = time.perf_counter()
        if algo == "greedy":
            res = greedy_slim(self.genome, evaluator, {"flops": self.flops}, [("flops", b)], **kwargs)
            config = res.found[0]["config"]
        elif algo in ("evolution", "random"):
            lo = CBM_LOWER if lower is None else float(lower)
            constraint = Constraint(self.flops, b, lo)
            if algo == "evolution":
                opts = dict(EVOLUTION_CBM)
                opts.update(kwargs)
                if prior is not None:
                    # the first population comes from BCNetV2's window [0.8 T, T] even when the
                    # search's window is wider (as ``search --prior records`` does)
                    seeded = prior.seeding(b, seed, int(opts.get("population", 50)), max(lo, CBM_LOWER))
                    opts.update(seeded)
                res = evolution_search(self.genome, evaluator, constraint, max_evals=max_evals, seed=seed, **opts)
            else:
                res = random_search(self.genome, evaluator, constraint, max_evals=max_evals, seed=seed, **kwargs)
            config = res.best_config
        else:
            raise UserError(f"unknown search algorithm {algo!r}; choose greedy, evolution or random")
        seconds = time.perf_counter() - t0
        key = self.config_to_key(config)
        opt_key, opt_acc = self.optimum(b)
        return {
            "key": key,
            "mean_acc": float(self.table.mean[self.table.row(key)]),
            "rank_feasible": self.rank_feasible(key, b),
            "rank_global": self.rank_global(key),
            "evaluations": evaluator.evaluations,
            "optimum_key": opt_key,
            "optimum_acc": opt_acc,
            "feasible": n_feasible,
            "space": self.name,
            "algo": algo,
            "budget_flops": b,
            "budget_fraction": b / self.table.max_flops,
            "flops": self.flops(config),
            "params": self.params(config),
            "config": config,
            "seed": seed if algo != "greedy" else None,
            "variant": res.extra.get("variant") if algo == "evolution" else None,
            "origins": res.extra.get("origins") if algo == "evolution" else None,
            "seconds": seconds,
            **self._trajectory(evaluator.history, b),
            "noise_std": float(noise_std),
            "prior": None if prior is None else prior.describe(seeded),
        }

    def noisy_oracle(self, std: float, seed: int) -> Callable[[Mapping[str, int]], float]:
        """Evaluator config -> table ``mean`` + N(0, std²), the noise drawn once per architecture
        from ``seed`` (so a config scores the same however often and in whatever order it is
        asked; a different seed is a different noisy scorer)."""
        std = float(std)
        if not math.isfinite(std) or std < 0:
            raise UserError(f"the noise std must be a finite number >= 0, got {std}")
        noise = np.random.default_rng([NOISE_STREAM, int(seed) % 2**63]).normal(0.0, std, len(self.table.keys))
        scores = self.table.mean + noise

        def evaluate(config: Mapping[str, int]) -> float:
            return float(scores[self.table.index[self.config_to_key(config)]])

        return evaluate

    def _trajectory(self, history: Sequence[Tuple[Mapping[str, int], float]], budget_flops: float) -> Dict[str, Any]:
        """What the evaluated archs were worth by the table: the true rank among feasible of the
        best one scored (with a noisy evaluator the pick can be worse than it) and how many
        evaluations it took to first score an arch of true rank <= 5 (None: never)."""
        mask = self.feasible_mask(budget_flops)
        top = np.sort(self.table.mean[mask])[::-1]
        threshold = top[min(TOP_RANK, len(top)) - 1]  # rank <= 5 <=> mean >= the 5th best (ties share)
        means = [float(self.table.mean[self.table.index[self.config_to_key(c)]]) for c, _ in history]
        feasible = [self.flops(c) <= budget_flops for c, _ in history]
        first = next((i + 1 for i, (m, ok) in enumerate(zip(means, feasible)) if ok and m >= threshold), None)
        best = max((m for m, ok in zip(means, feasible) if ok), default=None)
        return {"rank_best_scored": None if best is None else rank_desc(self.table.mean[mask], best),
                f"evals_to_top{TOP_RANK}": first}

    # ---- scoring a proxy (supernet scores, FLOPs, ...) ------------------------------
    def flops_baseline(self, keys: Sequence[str]) -> Dict[str, Any]:
        """Kendall & co. of FLOPs alone on the same ``keys``: the bar a scorer of a sample must clear
        (the all-archs figure does not apply to a FLOPs-stratified sample)."""
        flops = {k: float(self.table.flops[self.table.index[k]]) for k in keys}
        found = self.score_correlation(flops, budgets=())
        return {k: found[k] for k in ("count", "kendall", "spearman", "pearson", "no1")}

    def compare_scores(
        self, a: Mapping[str, float], b: Optional[Mapping[str, float]] = None, n: int = 1000, seed: int = 0
    ) -> Dict[str, Any]:
        """Does scorer ``a`` rank like the table better than scorer ``b`` (FLOPs when ``b`` is None)?

        Both are compared on the archs they have in common, against the table's ``mean``:
        ``delta_kendall`` = τ(a) − τ(b), ``delta_ci95`` its 95 % paired-bootstrap interval over
        those archs (``n`` resamples, seeded), ``common`` their number, ``kendall_a``/``kendall_b``
        the two τ on them. ``UserError`` when they share fewer than 2 archs or ``n`` < 1."""
        if int(n) < 1:
            raise UserError(f"the number of bootstrap resamples must be at least 1, got {n}")
        for scores in (a, b or {}):
            bad = [k for k in scores if k not in self.table.index]
            if bad:
                raise UserError(f"scores name {len(bad)} unknown key(s), e.g. {bad[0]!r}; keys are 7 digits 1-4")
        if b is None:
            b = {k: float(self.table.flops[self.table.index[k]]) for k in a}
        common = [k for k in a if k in b]
        if not common:
            raise UserError("the two sets of scores have no architecture in common")
        if len(common) < 2:
            raise UserError(f"the two sets of scores have only one architecture ({common[0]}) in common; "
                            "comparing rankings needs at least 2")
        truth = {k: float(self.table.mean[self.table.index[k]]) for k in common}
        boot = paired_bootstrap_kendall(a, b, truth, n=int(n), seed=int(seed))
        ta, tb = (correlations([s[k] for k in common], [truth[k] for k in common])["kendall"] for s in (a, b))
        return {"delta_kendall": _nan_none(boot["delta_kendall"]),
                "delta_ci95": [_nan_none(x) for x in boot["delta_ci95"]],
                "common": boot["count"], "kendall_a": ta, "kendall_b": tb,
                "bootstrap": int(n), "bootstrap_seed": int(seed)}

    def score_correlation(
        self, scores: Mapping[str, float], budgets: Sequence[float] = DEFAULT_BUDGETS
    ) -> Dict[str, Any]:
        """Correlation of ``{key: score}`` with the table's mean accuracy, top-k overlaps and
        the scorer's pick under each FLOPs budget (fraction of max)."""
        keys = list(scores)
        bad = [k for k in keys if k not in self.table.index]
        if bad:
            raise UserError(f"scores name {len(bad)} unknown key(s), e.g. {bad[0]!r}; keys are 7 digits 1-4")
        if not keys:
            raise UserError("the scores are empty")
        rows = np.array([self.table.index[k] for k in keys])
        s = np.array([float(scores[k]) for k in keys])
        if not np.all(np.isfinite(s)):
            raise UserError("the scores contain NaN or infinite values")
        t = self.table.mean[rows]
        no1 = np.array(["1" not in k for k in keys])
        out: Dict[str, Any] = {"space": self.name}
        out.update(correlations(s, t))
        out["no1"] = correlations(s[no1], t[no1])
        n = len(keys)
        out["top10_overlap"] = topk_overlap(s, t, min(10, n))
        k1 = max(1, math.ceil(0.01 * n))
        out["top1pct_k"] = k1
        out["top1pct_overlap"] = topk_overlap(s, t, k1)
        picks: Dict[str, Any] = {}
        for frac in budgets:
            b = self.budget_flops(frac)
            n_feasible = self.check_budget(b)
            ok = self.table.flops[rows] <= b
            if not ok.any():
                picks[_pct(frac)] = None
                continue
            j = int(np.flatnonzero(ok)[np.argmax(s[ok])])
            key = keys[j]
            picks[_pct(frac)] = {
                "key": key,
                "score": float(s[j]),
                "mean_acc": float(t[j]),
                "rank_feasible": self.rank_feasible(key, b),
                "feasible": n_feasible,
                "optimum_acc": self.optimum(b)[1],
            }
        out["picks"] = picks
        out["per_unit"] = self.unit_agreement(keys, s, t)
        return out

    def unit_agreement(self, keys: Sequence[str], scores: np.ndarray, truth: np.ndarray) -> List[Dict[str, Any]]:
        """Per unit: Kendall tau of that unit's width digit with the scores and with the truth.

        Where the two differ, the proxy misjudges how much that unit's width matters (e.g. an
        undertrained supernet that overrates the last layers)."""
        rows = []
        for i, name in enumerate(self.genome.names):
            digits = np.array([int(k[i]) for k in keys], float)
            rows.append({"unit": name, "score_tau": correlations(digits, scores)["kendall"],
                         "truth_tau": correlations(digits, truth)["kendall"]})
        return rows


REPORT_ALGOS = ("greedy", "evolution", "random")


def run_benchmark(
    spaces: Sequence[str] = SPACES,
    tables: Optional[Any] = None,
    budgets: Sequence[float] = DEFAULT_BUDGETS,
    seeds: Sequence[int] = tuple(range(5)),
    max_evals: int = 300,
    algos: Sequence[str] = REPORT_ALGOS,
    benches: Optional[Mapping[str, "CBMBench"]] = None,
    lower: Optional[float] = None,
    variant: Optional[str] = None,
) -> List[Dict[str, Any]]:
    """Every algorithm on every space and budget (greedy once: it is deterministic); evolution
    runs ``variant`` (None: the library default).

    Returns one row per (space, budget, algorithm) with the per-seed runs and summaries."""
    rows: List[Dict[str, Any]] = []
    for space in spaces:
        bench = benches[space] if benches is not None else CBMBench(space, tables)
        for frac in budgets:
            b = bench.budget_flops(frac)
            opt_key, opt_acc = bench.optimum(b)
            for algo in algos:
                run_seeds = [None] if algo == "greedy" else list(seeds)
                extra = {"variant": variant} if algo == "evolution" and variant is not None else {}
                runs = [
                    bench.search(algo, frac, max_evals=max_evals, seed=0 if s is None else s, lower=lower, **extra)
                    for s in run_seeds
                ]
                ranks = np.array([r["rank_feasible"] for r in runs])
                evals = float(np.mean([r["evaluations"] for r in runs]))
                bo = bench.random_best_of_n(max(1, round(evals)), b)
                rows.append(
                    {
                        "space": bench.name,
                        "budget": float(frac),
                        "budget_flops": b,
                        "feasible": runs[0]["feasible"],
                        "optimum_key": opt_key,
                        "optimum_acc": opt_acc,
                        "algo": algo,
                        "seeds": [r["seed"] for r in runs],
                        "ranks": ranks.tolist(),
                        "keys": [r["key"] for r in runs],
                        "accs": [r["mean_acc"] for r in runs],
                        "flops": [r["flops"] for r in runs],
                        "rank_mean": float(ranks.mean()),
                        "rank_median": float(np.median(ranks)),
                        "rank_max": int(ranks.max()),
                        "acc_mean": float(np.mean([r["mean_acc"] for r in runs])),
                        "evaluations_mean": evals,
                        "seconds_mean": float(np.mean([r["seconds"] for r in runs])),
                        "random_best_of_n_rank": bo["rank"],
                        "random_best_of_n_acc": bo["acc"],
                    }
                )
    return rows
