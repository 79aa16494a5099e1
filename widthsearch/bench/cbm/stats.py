"""Statistics for scoring a search or a proxy against the table: ranks, correlations, top-k
overlap, and the exact expected best of N random draws."""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence

import numpy as np

__all__ = ["correlations", "expected_best_of_n", "rank_desc", "topk_overlap"]


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
