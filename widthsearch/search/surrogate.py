"""An additive model of the score over a genome's width choices, fitted to what has been scored.

The screened evolution (:mod:`~widthsearch.search.evolution`) proposes more children than it
evaluates and keeps those this model predicts best.  The model is the simplest that captures
how much each unit's width is worth: score ≈ mean + Σ_units w[unit, choice], fitted by ridge
regression on one-hot genes (the least-squares form of BCNetV2's per-unit, per-width average
loss, which its prior is built from).  It costs nothing next to one evaluation and sees only
configs that were really scored.

Predictions are linear in the scores, so only the ranking of the candidates, never the
scale of the scores (%, fraction, minus a loss), affects which children are kept.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["AdditiveModel", "fit_additive"]

# Ridge penalty on the one-hot weights: one pseudo-observation per (unit, choice), which keeps
# a choice seen only once or twice from dominating; tuned on Channel-Bench-Macro seeds 100-149
# (docs/methods/search.md).
DEFAULT_RIDGE = 1.0


class AdditiveModel:
    """``predict(genomes)`` = ``mean + Σ_i weight[offset[i] + gene[i]]``."""

    def __init__(self, mean: float, weights: np.ndarray, offsets: np.ndarray):
        self.mean = float(mean)
        self.weights = weights
        self.offsets = offsets

    def predict(self, genomes: Sequence[Tuple[int, ...]]) -> np.ndarray:
        if not genomes:
            return np.zeros(0)
        cols = np.asarray(genomes, dtype=np.int64) + self.offsets[None, :]
        return self.mean + self.weights[cols].sum(axis=1)


def _one_hot(genomes: Sequence[Tuple[int, ...]], offsets: np.ndarray, width: int) -> np.ndarray:
    cols = np.asarray(genomes, dtype=np.int64) + offsets[None, :]
    x = np.zeros((len(genomes), width))
    x[np.arange(len(genomes))[:, None], cols] = 1.0
    return x


def fit_additive(
    genomes: Sequence[Tuple[int, ...]],
    scores: Sequence[float],
    n_choices: Sequence[int],
    ridge: float = DEFAULT_RIDGE,
) -> Optional[AdditiveModel]:
    """Ridge fit of the additive model to ``(genome, score)`` pairs; ``None`` with fewer than two
    finite scores (nothing to learn from; NaN/inf scores are left out)."""
    keep = [i for i, s in enumerate(scores) if math.isfinite(float(s))]
    if len(keep) < 2:
        return None
    offsets = np.concatenate([[0], np.cumsum(n_choices)[:-1]]).astype(np.int64)
    width = int(sum(n_choices))
    x = _one_hot([genomes[i] for i in keep], offsets, width)
    y = np.array([float(scores[i]) for i in keep])
    mean = float(y.mean())
    r = y - mean
    # the smaller of the two equivalent systems: (X'X + λI) w = X'r, or w = X'(XX' + λI)^-1 r
    if len(keep) >= width:
        w = np.linalg.solve(x.T @ x + ridge * np.eye(width), x.T @ r)
    else:
        w = x.T @ np.linalg.solve(x @ x.T + ridge * np.eye(len(keep)), r)
    return AdditiveModel(mean, w, offsets)


def best_predicted(model: Optional[AdditiveModel], candidates: List[Tuple[int, ...]], k: int) -> List[Tuple[int, ...]]:
    """The ``k`` candidates the model rates highest (proposal order breaks ties; without a
    model, the first ``k``)."""
    if model is None or len(candidates) <= k:
        return candidates[:k]
    pred = model.predict(candidates)
    order = sorted(range(len(candidates)), key=lambda i: (-pred[i], i))
    return [candidates[i] for i in order[:k]]
