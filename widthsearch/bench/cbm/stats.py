"""Statistics for scoring a search or a proxy against the table: ranks, correlations, top-k
overlap, the exact expected best of N random draws, and a paired bootstrap of Kendall's tau."""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from widthsearch.errors import UserError

__all__ = ["correlations", "expected_best_of_n", "paired_bootstrap_kendall", "rank_desc", "topk_overlap"]


def rank_desc(values: np.ndarray, value: float) -> int:
    """Rank of ``value`` among ``values`` (1 = highest; ties share the best rank)."""
    return int(np.count_nonzero(values > value)) + 1


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


def paired_bootstrap_kendall(
    a: Mapping[Any, float] | Sequence[float],
    b: Mapping[Any, float] | Sequence[float],
    truth: Mapping[Any, float] | Sequence[float],
    n: int = 1000,
    seed: int = 0,
) -> Dict[str, Any]:
    """Is scorer ``a`` better than scorer ``b`` at ranking like ``truth``?

    ``delta_kendall`` is Kendall's tau-b of ``(a, truth)`` minus that of ``(b, truth)`` on the
    items all three score (mappings are matched by key; sequences by position). ``delta_ci95`` is
    the 95 % percentile interval of that difference over ``n`` bootstrap resamples of the items
    (with replacement, from ``numpy.random.default_rng(seed)``). Both taus of a resample are
    computed on the *same* items, so what the two scorers get right or wrong together cancels:
    this is what makes the paired interval narrower than two separate ones. A lower bound above 0
    says ``a`` ranks better than ``b`` at the 2.5 % level. Resamples where a tau is undefined (a
    constant vector) are left out; NaN where the difference is undefined."""
    keys = _common_keys(a, b, truth)
    if len(keys) < 2:
        raise UserError(f"the scores have {len(keys)} item(s) in common; comparing rankings needs at least 2")
    if int(n) < 1:
        raise UserError(f"the number of bootstrap resamples must be at least 1, got {n}")
    xa, xb, t = (np.array([float(_as_mapping(s)[k]) for k in keys]) for s in (a, b, truth))
    rng = np.random.default_rng(seed)
    deltas = np.empty(int(n))
    for i in range(int(n)):
        pick = rng.integers(0, len(keys), size=len(keys))
        deltas[i] = _kendall(xa[pick], t[pick]) - _kendall(xb[pick], t[pick])
    defined = deltas[np.isfinite(deltas)]
    lo, hi = (float(v) for v in np.percentile(defined, [2.5, 97.5])) if len(defined) else (math.nan, math.nan)
    return {"delta_kendall": _kendall(xa, t) - _kendall(xb, t), "delta_ci95": [lo, hi], "count": len(keys)}


def _as_mapping(scores: Mapping[Any, float] | Sequence[float]) -> Mapping[Any, float]:
    return scores if isinstance(scores, Mapping) else dict(enumerate(scores))


def _common_keys(*scores: Mapping[Any, float] | Sequence[float]) -> list:
    """Keys scored by all, in the first one's order (so a seed gives the same resamples)."""
    first, *rest = (_as_mapping(s) for s in scores)
    return [k for k in first if all(k in other for other in rest)]


def _kendall(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b, NaN where undefined (a constant vector) instead of a scipy warning."""
    from scipy import stats

    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(stats.kendalltau(x, y)[0])
