"""Random sampling of genomes from a per-unit prior (shared by evolution and random search)."""
from __future__ import annotations

import math
import random
from typing import List, Mapping, Optional, Sequence, Tuple

from widthsearch.errors import UserError
from widthsearch.search.genome import Genome


def normalise_prior(g: Genome, prior: Optional[Mapping[str, Sequence[float]]]) -> Optional[List[List[float]]]:
    """Per-unit probabilities over choices, as cumulative weights; None = uniform everywhere."""
    if not prior:
        return None
    unknown = [k for k in prior if k not in g.names]
    if unknown:
        raise UserError(f"prior names unknown unit(s): {', '.join(unknown[:5])}")
    out: List[List[float]] = []
    for name, ch in zip(g.names, g.choices):
        if name not in prior:
            out.append([1.0 / len(ch)] * len(ch))
            continue
        p = [float(x) for x in prior[name]]
        if len(p) != len(ch):
            raise UserError(f"prior for unit {name!r} has {len(p)} probabilities for {len(ch)} choices")
        if any(not math.isfinite(x) or x < 0 for x in p) or sum(p) <= 0:
            raise UserError(f"prior for unit {name!r} must be non-negative with a positive sum")
        s = sum(p)
        out.append([x / s for x in p])
    return out


def draw_gene(rng: random.Random, n_choices: int, probs: Optional[List[float]]) -> int:
    if probs is None:
        return rng.randrange(n_choices)
    r = rng.random()
    acc = 0.0
    for i, p in enumerate(probs):
        acc += p
        if r < acc:
            return i
    # rounding: return the last choice with non-zero probability
    return max(i for i, p in enumerate(probs) if p > 0)


def draw_genome(rng: random.Random, g: Genome, prior: Optional[List[List[float]]]) -> Tuple[int, ...]:
    return tuple(
        draw_gene(rng, len(ch), None if prior is None else prior[i]) for i, ch in enumerate(g.choices)
    )
