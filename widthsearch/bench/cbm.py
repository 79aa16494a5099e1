"""Channel-Bench-Macro (CBM): a lookup-table benchmark for width search.

CBM (Su et al., BCNetV2, arXiv 2203.13714; tables at github.com/xiusu/Channel-Bench-Macro)
trained every one of the 4^7 = 16,384 width configurations of two CIFAR-10 macro spaces
(MobileNet-like and ResNet-like, 7 searchable widths with 4 choices each) three times.  A
table key is 7 digits 1-4, one per searchable width in network order, digit d meaning
d/4 of that width's maximum.  Each entry has ``acc`` (3 runs), ``mean``, ``std``,
``flops`` (multiply-accumulates of conv+linear at 32x32) and ``params``.

Keys map to configs through the units the core finds on the zoo nets
(``ChannelSpace.from_model(build_model("cbm_mobilenet"), x, groups=4)``): unit i (in graph
order) is key position i and digit d is ``unit.choices[d-1]``.  :meth:`CBMBench.verify_costs`
checks that the core's cost model reproduces the table's FLOPs and params for all 16,384
configs, which also checks the mapping.

With the table's ``mean`` as the evaluator (the *oracle*) a search algorithm can be scored
by the rank of what it finds; a supernet (or any proxy) can be scored by the correlation of
its scores with ``mean``.
"""
from __future__ import annotations

import csv
import functools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

import widthsearch
from widthsearch.errors import UserError
from widthsearch.search.constraints import Constraint, parse_budget
from widthsearch.search.genome import Config, CountingEvaluator, Genome

SPACES = ("mobilenet", "resnet")
TABLE_FILES = {"mobilenet": "Results_MobileNet.json", "resnet": "Results_ResNet.json"}
MODEL_NAMES = {"mobilenet": "cbm_mobilenet", "resnet": "cbm_resnet"}
KEY_LENGTH = 7
DIGITS = "1234"
N_ARCHS = len(DIGITS) ** KEY_LENGTH
SOURCE_URL = "github.com/xiusu/Channel-Bench-Macro"
DEFAULT_BUDGETS = (0.25, 0.5, 0.75)


def default_tables_dir() -> Path:
    """``<repo>/../shared/channel_bench_macro``: where the project keeps the public tables."""
    return Path(widthsearch.__file__).resolve().parents[2] / "shared" / "channel_bench_macro"


def _space_name(space: str) -> str:
    name = str(space).lower()
    if name.startswith("cbm_"):
        name = name[4:]
    if name not in SPACES:
        raise UserError(f"unknown Channel-Bench-Macro space {space!r}; choose one of: {', '.join(SPACES)}")
    return name


def table_path(space: str, tables: Optional[Any] = None) -> Path:
    """Path of a space's table; ``UserError`` saying where to get it when it is missing."""
    name = _space_name(space)
    directory = Path(tables) if tables is not None else default_tables_dir()
    path = directory / TABLE_FILES[name]
    if not path.is_file():
        where = f"directory {directory}" if directory.is_dir() else f"{directory} (no such directory)"
        raise UserError(
            f"Channel-Bench-Macro table {TABLE_FILES[name]} not found in {where}; the public tables "
            f"come from {SOURCE_URL} -- download them and pass --tables DIR"
        )
    return path


def is_key(key: Any) -> bool:
    return isinstance(key, str) and len(key) == KEY_LENGTH and all(c in DIGITS for c in key)


@dataclass(frozen=True)
class CBMTable:
    """A parsed table: arrays aligned with ``keys`` (sorted), plus ``index`` key -> row."""

    space: str
    path: str
    keys: Tuple[str, ...]
    index: Mapping[str, int]
    mean: np.ndarray
    std: np.ndarray
    flops: np.ndarray
    params: np.ndarray
    acc: np.ndarray  # (N, runs)

    @property
    def max_key(self) -> str:
        return DIGITS[-1] * KEY_LENGTH

    @property
    def max_flops(self) -> int:
        return int(self.flops[self.index[self.max_key]])

    @property
    def max_params(self) -> int:
        return int(self.params[self.index[self.max_key]])

    def row(self, key: str) -> int:
        try:
            return self.index[key]
        except KeyError:
            raise UserError(f"{key!r} is not a Channel-Bench-Macro key (7 digits 1-4)") from None

    def entry(self, key: str) -> Dict[str, Any]:
        i = self.row(key)
        return {
            "key": key,
            "mean": float(self.mean[i]),
            "std": float(self.std[i]),
            "acc": [float(a) for a in self.acc[i]],
            "flops": int(self.flops[i]),
            "params": int(self.params[i]),
        }


@functools.lru_cache(maxsize=8)
def _load_table_cached(path: str, mtime_ns: int, size: int, space: str) -> CBMTable:
    try:
        with open(path, "r", encoding="utf-8") as fh:
            raw = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read Channel-Bench-Macro table {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a JSON object key -> entry")
    keys = tuple(sorted(raw))
    bad = [k for k in keys if not is_key(k)]
    if bad:
        raise UserError(f"{path}: {bad[0]!r} is not a 7-digit key of digits 1-4")
    if len(keys) != N_ARCHS:
        raise UserError(f"{path}: expected {N_ARCHS} architectures, found {len(keys)}")
    try:
        mean = np.array([float(raw[k]["mean"]) for k in keys])
        std = np.array([float(raw[k].get("std", float("nan"))) for k in keys])
        flops = np.array([int(raw[k]["flops"]) for k in keys], dtype=np.int64)
        params = np.array([int(raw[k]["params"]) for k in keys], dtype=np.int64)
        runs = max(len(raw[k].get("acc", [])) for k in keys)
        acc = np.full((len(keys), runs), np.nan)
        for i, k in enumerate(keys):
            a = raw[k].get("acc", [])
            acc[i, : len(a)] = a
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: malformed entry ({exc.__class__.__name__}: {exc})") from None
    for arr in (mean, std, flops, params, acc):
        arr.setflags(write=False)
    return CBMTable(
        space=space,
        path=path,
        keys=keys,
        index={k: i for i, k in enumerate(keys)},
        mean=mean,
        std=std,
        flops=flops,
        params=params,
        acc=acc,
    )


def load_table(space: str, tables: Optional[Any] = None) -> CBMTable:
    """Load (once; cached while the file is unchanged) a space's table."""
    name = _space_name(space)
    path = table_path(name, tables).resolve()
    st = path.stat()
    return _load_table_cached(str(path), st.st_mtime_ns, st.st_size, name)


@functools.lru_cache(maxsize=4)
def cbm_channel_space(space: str) -> Any:
    """The core's ``ChannelSpace`` of the zoo net of a CBM space (groups=4: 4 choices/unit)."""
    import torch

    try:
        from widthsearch.models import build_model
        from widthsearch.space import ChannelSpace
    except ImportError as exc:  # pragma: no cover - only while the tree is incomplete
        raise UserError(f"the channel-space analysis is unavailable: {exc}") from None
    name = _space_name(space)
    model = build_model(MODEL_NAMES[name])
    return ChannelSpace.from_model(model, torch.randn(1, 3, 32, 32), groups=len(DIGITS))


def rank_desc(values: np.ndarray, value: float) -> int:
    """Rank of ``value`` among ``values`` (1 = highest; ties share the best rank)."""
    return int(np.count_nonzero(values > value)) + 1


class CBMBench:
    """One CBM space: its table, the key <-> config mapping, the oracle and the scorers.

    ``channel_space`` defaults to the core's analysis of the zoo net; any object with
    ``.units`` (7 units of 4 ascending choices) works, which is how tests run without it.
    """

    def __init__(self, space: str, tables: Optional[Any] = None, channel_space: Any = None):
        self.name = _space_name(space)
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
        **kwargs: Any,
    ) -> Dict[str, Any]:
        """Run one search algorithm with the table's ``mean`` as evaluator and report how good
        its pick is (rank among feasible archs, global rank, evaluations used)."""
        from widthsearch.search.evolution import evolution_search
        from widthsearch.search.greedy import greedy_slim
        from widthsearch.search.random_search import random_search

        b = self.budget_flops(budget)
        n_feasible = self.check_budget(b)
        evaluator = CountingEvaluator(self.oracle())
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
            "seconds": seconds,
        }

    # ---- scoring a proxy (supernet scores, FLOPs, ...) ------------------------------
    def flops_baseline(self, keys: Sequence[str]) -> Dict[str, Any]:
        """Kendall & co. of FLOPs alone on the same ``keys``: the bar a scorer of a sample must clear
        (the all-archs figure does not apply to a FLOPs-stratified sample)."""
        flops = {k: float(self.table.flops[self.table.index[k]]) for k in keys}
        found = self.score_correlation(flops, budgets=())
        return {k: found[k] for k in ("count", "kendall", "spearman", "pearson", "no1")}

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


# Constraint window used by evolution and random search on CBM: FLOPs in [0.8*T, T], the
# window BCNetV2 imposes on its candidates.  On the oracle it lowered evolution's mean rank
# among feasible from 3.97 to 1.85 (see docs/methods/search.md); the ranks reported are
# still among *all* archs with FLOPs <= T.
CBM_LOWER = 0.8
# Evolution hyperparameters on CBM beyond the library defaults (none: BCNetV2's defaults).
EVOLUTION_CBM: Dict[str, Any] = {}


def _pct(frac: float) -> str:
    return f"{round(float(frac) * 100):d}%"


def _nan_none(x: float) -> Optional[float]:
    x = float(x)
    return None if not math.isfinite(x) else x


def expected_best_of_n(values: Sequence[float], n: int) -> Dict[str, float]:
    """Expected value and expected rank (1 = best, ties share the best rank) of the maximum
    of ``n`` distinct elements drawn uniformly without replacement from ``values``."""
    from scipy.special import gammaln

    a = np.sort(np.asarray(values, float))
    m = len(a)
    if m == 0:
        raise ValueError("no values")
    k = int(min(max(int(n), 1), m))
    i = np.arange(1, m + 1, dtype=float)
    # P(max is among the i smallest) = C(i, k) / C(m, k)
    log_c = gammaln(i + 1) - gammaln(np.maximum(i - k + 1, 1)) - (gammaln(m + 1) - gammaln(m - k + 1))
    cdf = np.where(i >= k, np.exp(np.minimum(log_c, 0.0)), 0.0)
    pmf = np.diff(np.concatenate([[0.0], cdf]))
    ranks = m - np.searchsorted(a, a, side="right") + 1
    return {"n": k, "acc": float(np.dot(pmf, a)), "rank": float(np.dot(pmf, ranks))}


def correlations(x: Sequence[float], y: Sequence[float]) -> Dict[str, Any]:
    """Kendall tau (tau-b), Spearman rho and Pearson r between two score vectors.

    ``None`` where undefined (fewer than 2 points or a constant vector)."""
    from scipy import stats

    x = np.asarray(x, float)
    y = np.asarray(y, float)
    n = int(len(x))
    out: Dict[str, Any] = {"count": n, "kendall": None, "spearman": None, "pearson": None}
    if n < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    out["kendall"] = _nan_none(stats.kendalltau(x, y)[0])
    out["spearman"] = _nan_none(stats.spearmanr(x, y)[0])
    out["pearson"] = _nan_none(stats.pearsonr(x, y)[0])
    return out


def topk_overlap(scores: Sequence[float], truth: Sequence[float], k: int) -> int:
    """How many of the top-``k`` by ``scores`` are also in the top-``k`` by ``truth``
    (ties broken by position, first wins)."""
    scores = np.asarray(scores, float)
    truth = np.asarray(truth, float)
    k = int(min(k, len(scores)))
    if k <= 0:
        return 0
    a = set(np.argsort(-scores, kind="stable")[:k].tolist())
    b = set(np.argsort(-truth, kind="stable")[:k].tolist())
    return len(a & b)


def _unwrap_supernet_scores(raw: Any, metric: str, path: Path) -> Any:
    """``{key: score}`` from a ``--supernet`` scores file; any other JSON is returned unchanged."""
    from widthsearch.training.evaluate import check_metric

    check_metric(metric)
    if not (isinstance(raw, dict) and isinstance(raw.get("meta"), dict) and isinstance(raw.get("scores"), dict)):
        return raw
    if metric == "accuracy":
        return raw["scores"]
    loss = raw.get("loss")
    if not isinstance(loss, dict) or not loss:
        raise UserError(f"{path} records no cross-entropy; rescore with --supernet to get it")
    return {k: -v if isinstance(v, (int, float)) and not isinstance(v, bool) else v for k, v in loss.items()}


def load_scores(path: Any, metric: str = "accuracy") -> Dict[str, float]:
    """Read scores: a JSON object ``{key: score}``, a CSV with rows ``key,score`` (an optional
    header row is skipped), or the ``cbm_scores.json`` that ``--supernet`` writes (its accuracy,
    or its negative cross-entropy with ``metric="loss"``)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"scores file {p} not found")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read scores file {p}: {exc}") from None
    stripped = text.lstrip()
    out: Dict[str, float] = {}
    if stripped.startswith("{"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{p}: invalid JSON ({exc})") from None
        raw = _unwrap_supernet_scores(raw, metric, p)
        for k, v in raw.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise UserError(f"{p}: score of {k!r} is not a number")
            out[str(k)] = float(v)
    else:
        header_seen = False
        for lineno, row in enumerate(csv.reader(text.splitlines()), 1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if len(row) < 2:
                raise UserError(f"{p}:{lineno}: expected 'key,score'")
            key, val = row[0].strip(), row[1].strip()
            try:
                score = float(val)
            except ValueError:
                if not out and not header_seen:
                    header_seen = True  # the first row may be a header such as "key,score"
                    continue
                raise UserError(f"{p}:{lineno}: score {val!r} is not a number") from None
            if key in out:
                raise UserError(f"{p}:{lineno}: key {key!r} appears twice")
            out[key] = score
    if not out:
        raise UserError(f"{p}: no scores found")
    bad = [k for k in out if not is_key(k)]
    if bad:
        raise UserError(f"{p}: {bad[0]!r} is not a Channel-Bench-Macro key (7 digits 1-4)")
    return out


# --------------------------------------------------------------------------------------
# report: algorithms x budgets x spaces with the oracle
# --------------------------------------------------------------------------------------
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
) -> List[Dict[str, Any]]:
    """Every algorithm on every space and budget (greedy once: it is deterministic).

    Returns one row per (space, budget, algorithm) with the per-seed runs and summaries."""
    rows: List[Dict[str, Any]] = []
    for space in spaces:
        bench = benches[space] if benches is not None else CBMBench(space, tables)
        for frac in budgets:
            b = bench.budget_flops(frac)
            opt_key, opt_acc = bench.optimum(b)
            for algo in algos:
                run_seeds = [None] if algo == "greedy" else list(seeds)
                runs = [
                    bench.search(algo, frac, max_evals=max_evals, seed=0 if s is None else s, lower=lower)
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


def plot_space(bench: "CBMBench", rows: Sequence[Mapping[str, Any]], path: Any) -> None:
    """Accuracy vs MFLOPs of all archs, the Pareto front, the budgets and each algorithm's picks."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = bench.table
    mf = t.flops / 1e6
    fig = Figure(figsize=(8, 5.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(mf, t.mean, s=2, c="0.7", alpha=0.5, linewidths=0, label=f"all {len(t.keys)} archs", rasterized=True)
    order = np.lexsort((-t.mean, t.flops))
    best = np.maximum.accumulate(t.mean[order])
    front = np.concatenate([[True], best[1:] > best[:-1]])
    fx, fy = mf[order][front], best[front]
    ax.step(np.append(fx, mf.max()), np.append(fy, fy[-1]), where="post", color="k", lw=1, label="Pareto front")
    style = {"greedy": ("s", "tab:red"), "evolution": ("^", "tab:blue"), "random": ("o", "tab:green")}
    labelled = set()
    for frac in sorted({r["budget"] for r in rows}):
        ax.axvline(frac * t.max_flops / 1e6, color="0.4", ls="--", lw=0.8)
        ax.text(frac * t.max_flops / 1e6, 0.01, f" {frac:.0%}", color="0.3", fontsize=8, va="bottom",
                transform=ax.get_xaxis_transform())
    for r in rows:
        marker, color = style.get(r["algo"], ("x", "k"))
        label = None if r["algo"] in labelled else r["algo"]
        labelled.add(r["algo"])
        ax.scatter(
            np.array(r["flops"]) / 1e6, r["accs"], marker=marker, s=36, facecolors="none",
            edgecolors=color, linewidths=1.2, label=label, zorder=3,
        )
    ax.set_xlabel("MFLOPs (multiply-accumulates, 32x32 input)")
    ax.set_ylabel("CIFAR-10 top-1, mean of 3 runs (%)")
    ax.set_title(f"Channel-Bench-Macro {bench.name}: picks under 25/50/75% of max FLOPs")
    lo = float(np.percentile(t.mean, 1))
    ax.set_ylim(lo, t.mean.max() + 0.1)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(str(path))


def plot_scores(bench: "CBMBench", scores: Mapping[str, float], path: Any, label: str = "score") -> Path:
    """Two panels over the scored archs: the proxy's score vs the true accuracy, and FLOPs vs the
    true accuracy (the bar the proxy must clear), each titled with its Kendall tau; colour = MFLOPs."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = list(scores)
    rows = np.array([bench.table.index[k] for k in keys])
    s = np.array([float(scores[k]) for k in keys])
    truth, mflops = bench.table.mean[rows], bench.table.flops[rows] / 1e6
    tau = correlations(s, truth)["kendall"]
    tau_flops = correlations(mflops, truth)["kendall"]
    fig = Figure(figsize=(10, 4.3), dpi=120)
    FigureCanvasAgg(fig)
    panels = ((s, label, tau), (mflops, "MFLOPs", tau_flops))
    for i, (x, xlabel, t) in enumerate(panels, 1):
        ax = fig.add_subplot(1, 2, i)
        dots = ax.scatter(x, truth, c=mflops, s=14, cmap="viridis", linewidths=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("CIFAR-10 top-1, table mean (%)")
        ax.set_title(f"{xlabel}: Kendall tau {_fmt_tau(t)} ({len(keys)} archs)", fontsize=10)
        ax.grid(alpha=0.3)
    fig.subplots_adjust(wspace=0.3)
    fig.colorbar(dots, ax=fig.axes, label="MFLOPs")
    fig.suptitle(f"Channel-Bench-Macro {bench.name}: a proxy's ranking vs the truth", fontsize=11)
    fig.savefig(str(path))
    return Path(path)


def _fmt_tau(tau: Optional[float]) -> str:
    return "n/a" if tau is None or not np.isfinite(tau) else f"{tau:.3f}"


def write_report(
    out_dir: Any,
    spaces: Sequence[str] = SPACES,
    tables: Optional[Any] = None,
    budgets: Sequence[float] = DEFAULT_BUDGETS,
    seeds: Sequence[int] = tuple(range(5)),
    max_evals: int = 300,
    command: Optional[str] = None,
    lower: Optional[float] = None,
) -> Dict[str, Any]:
    """Run :func:`run_benchmark` and write ``report.md`` plus ``cbm_<space>.png`` to ``out_dir``."""
    import datetime

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create report directory {out}: {exc}") from None
    benches = {s: CBMBench(s, tables) for s in (_space_name(x) for x in spaces)}
    t0 = time.perf_counter()
    rows = run_benchmark(list(benches), tables, budgets, seeds, max_evals, benches=benches, lower=lower)
    seconds = time.perf_counter() - t0
    images = {}
    for name, bench in benches.items():
        img = out / f"cbm_{name}.png"
        plot_space(bench, [r for r in rows if r["space"] == name], img)
        images[name] = img.name

    lines = [
        "# Channel-Bench-Macro search report",
        "",
        f"Generated {datetime.date.today().isoformat()} by widthsearch {widthsearch.__version__}"
        + (f" with `{command}`" if command else "")
        + f" in {seconds:.1f} s.",
        "",
        "Evaluator: the table's `mean` (3-run mean CIFAR-10 top-1, %), i.e. a perfect proxy (oracle). "
        "Budget: fraction of the largest net's FLOPs (MACs at 32x32). **rank** = rank of the pick by mean "
        "accuracy among *all* archs with FLOPs <= budget (1 = the feasible optimum). "
        f"Evolution and random search draw candidates with FLOPs in [{CBM_LOWER if lower is None else lower:g}*T, T] "
        "and at most "
        f"{max_evals} distinct evaluations; greedy slimming is deterministic and is run once "
        "(its evaluations are whatever its trajectory needs). "
        f"Seeds: {', '.join(map(str, seeds))}. The last column is the expected rank of the best of N "
        "distinct uniformly drawn feasible archs, N = that row's mean evaluations (exact, not sampled).",
        "",
        "| space | budget | feasible | optimum (key, acc) | algorithm | runs | rank mean | rank median "
        "| rank worst | runs with rank <= 5 | acc mean | evals mean | s mean | random best-of-N E[rank] |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        n_ok = sum(1 for x in r["ranks"] if x <= 5)
        detail = f" ({' '.join(map(str, r['ranks']))})" if 1 < len(r["ranks"]) <= 10 else ""
        lines.append(
            f"| {r['space']} | {r['budget']:.0%} | {r['feasible']} | {r['optimum_key']} {r['optimum_acc']:.3f} "
            f"| {r['algo']} | {len(r['ranks'])} | {r['rank_mean']:.2f} | {r['rank_median']:g} | {r['rank_max']} "
            f"| {n_ok}/{len(r['ranks'])}{detail} | {r['acc_mean']:.3f} | {r['evaluations_mean']:.0f} "
            f"| {r['seconds_mean']:.3f} | {r['random_best_of_n_rank']:.1f} |"
        )
    lines.append("")
    for name, img in images.items():
        lines += [f"## {name}", "", f"![{name}]({img})", ""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    summary = [
        {k: r[k] for k in ("space", "budget", "algo", "rank_mean", "rank_median", "rank_max", "evaluations_mean",
                           "seconds_mean", "random_best_of_n_rank")}
        for r in rows
    ]
    return {"report": str(out / "report.md"), "images": [str(out / i) for i in images.values()], "rows": summary}
