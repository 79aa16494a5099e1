"""Is a searched network better than its baseline? Seeds, intervals and a verdict for the run reports.

Both networks of a comparison (a found config and the uniform net of the same FLOPs) are retrained
with the same recipe under several seeds and scored on the same test images. Two sources of noise
can fake a difference, and each has its own 95 % interval over the seed-averaged delta
(searched minus baseline accuracy):

* **training noise** (initialisation, data order, the held-out draw): a paired t-interval over
  the per-seed deltas (n - 1 degrees of freedom, so 2 seeds give a very wide interval);
* **test-set noise** (which images happen to be in the test split): a paired bootstrap over the
  test images, pooled across seeds: every resample draws the same images for both networks and
  all seeds, so what both get right or wrong cancels.

The verdict calls a difference significant only when *neither* interval contains 0; otherwise
it is "no significant difference". With one seed there is no training-noise interval and no
verdict. Nothing here reads files or trains: callers pass the per-image correctness.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["LEVEL", "RESAMPLES", "accuracy_summary", "bootstrap_interval", "compare_networks", "format_interval",
           "format_mean_std", "retrained_points", "t_interval"]

#: confidence level of both intervals
LEVEL = 0.95
#: bootstrap resamples; the percentile interval's Monte Carlo error is then well under 0.1 point
RESAMPLES = 10_000


def accuracy_summary(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (None for one value) and the values themselves."""
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        raise ValueError("no accuracies")
    std = float(a.std(ddof=1)) if a.size > 1 else None
    return {"mean": float(a.mean()), "std": std, "values": [float(v) for v in a]}


def t_interval(deltas: Sequence[float], level: float = LEVEL) -> list[float] | None:
    """Student-t interval of the mean of paired ``deltas`` (None for fewer than two)."""
    from scipy.special import stdtrit  # the t quantile, without importing all of scipy.stats

    d = np.asarray(deltas, dtype=float)
    if d.size < 2:
        return None
    half = float(stdtrit(d.size - 1, (1 + level) / 2)) * float(d.std(ddof=1)) / math.sqrt(d.size)
    return [float(d.mean()) - half, float(d.mean()) + half]


def bootstrap_interval(found: np.ndarray, base: np.ndarray, *, level: float = LEVEL, resamples: int = RESAMPLES,
                       seed: int = 0, chunk: int = 500) -> list[float]:
    """Percentile interval of the seed-averaged accuracy delta over test images resampled with replacement.

    ``found`` and ``base`` are ``seeds x images`` arrays of 0/1 correctness on the same images.
    Averaging over seeds first gives one delta per image; a resample's delta is their mean over
    the drawn images (the same draw for every seed and both networks: a paired bootstrap).
    """
    found, base = np.asarray(found, dtype=float), np.asarray(base, dtype=float)
    if found.shape != base.shape or found.ndim != 2 or found.shape[1] == 0:
        raise ValueError(f"need two equal seeds x images arrays, got {found.shape} and {base.shape}")
    per_image = (found - base).mean(axis=0)
    n = per_image.size
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, resamples, chunk):  # chunks keep memory at chunk x images
        draw = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        means.append(per_image[draw].mean(axis=1))
    lo, hi = np.quantile(np.concatenate(means), [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def _excludes_zero(interval: Sequence[float] | None) -> bool:
    return interval is not None and (interval[0] > 0 or interval[1] < 0)


def compare_networks(found: Sequence[Sequence[bool]], base: Sequence[Sequence[bool]], seeds: Sequence[int], *,
                     level: float = LEVEL, resamples: int = RESAMPLES) -> dict[str, Any]:
    """The comparison of two networks retrained under ``seeds`` (per seed, per test image: correct?).

    Returns both networks' :func:`accuracy_summary`, the mean and per-seed deltas (found minus
    base, as fractions), both intervals, ``significant`` (None with one seed) and a ``verdict``.
    """
    f = np.asarray(found, dtype=bool)
    b = np.asarray(base, dtype=bool)
    if f.shape != b.shape or f.shape[0] != len(seeds):
        raise ValueError(f"need one row per seed for both networks, got {f.shape}, {b.shape} for {len(seeds)} seeds")
    acc_f, acc_b = f.mean(axis=1), b.mean(axis=1)
    deltas = acc_f - acc_b
    t_int = t_interval(deltas, level)
    boot = bootstrap_interval(f, b, level=level, resamples=resamples)
    # identical per-seed deltas (common when a test set of a few hundred images quantises them) give
    # a zero-width t-interval: that says nothing about the seed-to-seed noise, so it proves nothing
    degenerate = t_int is not None and t_int[0] == t_int[1]
    significant = None if t_int is None else not degenerate and _excludes_zero(t_int) and _excludes_zero(boot)
    return {
        "seeds": [int(s) for s in seeds],
        "test_images": int(f.shape[1]),
        "found": accuracy_summary(acc_f),
        "base": accuracy_summary(acc_b),
        "delta": float(deltas.mean()),
        "deltas": [float(d) for d in deltas],
        "level": level,
        "t_interval": t_int,
        "bootstrap_interval": boot,
        "significant": significant,
        "verdict": _verdict(significant, float(deltas.mean()))
        + (" (identical per-seed deltas: the seed noise is not estimable)" if degenerate else ""),
    }


def _verdict(significant: bool | None, delta: float) -> str:
    if significant is None:
        return "one seed: not tested"
    if not significant:
        return "no significant difference"
    return "searched better" if delta > 0 else "baseline better"


def format_interval(interval: Sequence[float] | None) -> str:
    """An interval of accuracy deltas in points for a report (``-`` when there is none)."""
    return "-" if interval is None else f"[{100 * interval[0]:+.2f}, {100 * interval[1]:+.2f}]"


def format_mean_std(summary: dict[str, Any]) -> str:
    """An :func:`accuracy_summary` as ``91.23% ± 0.15`` (no ``±`` for one value)."""
    std = "" if summary["std"] is None else f" ± {100 * summary['std']:.2f}"
    return f"{100 * summary['mean']:.2f}%{std}"


def retrained_points(rows: Sequence[Mapping[str, Any]]) -> tuple[list[tuple[float, list[float]]],
                                                              list[tuple[float, list[float]]]]:
    """The two arms of report rows (each with ``flops``, ``uniform_flops`` and a ``comparison``) as
    the points :func:`~widthsearch.plots.plot_accuracy_vs_flops` draws: ``(FLOPs, accuracy per
    seed)`` of the compared network, then of its baseline."""
    found = [(r["flops"], r["comparison"]["found"]["values"]) for r in rows]
    base = [(r["uniform_flops"], r["comparison"]["base"]["values"]) for r in rows]
    return found, base
