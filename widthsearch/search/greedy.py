"""Greedy slimming (AutoSlim, Yu & Huang, arXiv 1903.11728).

Start from the largest config.  At each step, try shrinking every unit by one choice
(units already at their smallest choice are skipped), score each candidate, and keep the
shrink with the best score (the first unit in unit order on ties).  The first config on
this single trajectory whose cost is <= a target is that target's answer; all targets are
served by one pass, and the search stops once the last (smallest) target is reached.

AutoSlim scores candidates by accuracy on one fixed held-out batch with batch-statistics
BatchNorm; here the evaluator is any config -> score callable (higher is better), so the
same code runs on a supernet and on a benchmark table.

The algorithm's whole state is a JSON-serialisable dict.  ``on_step(state)`` is called
after every step; passing a saved state back as ``state=`` continues the search to exactly
the result an uninterrupted run gives (for a deterministic evaluator).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from widthsearch.errors import UserError
from widthsearch.search.constraints import CostFn, parse_budget
from widthsearch.search.genome import Config, Evaluator, Genome, genome, score_order
from widthsearch.search.state import STATE_VERSION

Target = Tuple[str, float]


@dataclass
class GreedyResult:
    """``found``: one entry per target, largest first within a metric, each
    ``{"metric", "target", "step", "config", "costs", "score"}``.  ``trajectory``: one entry
    per step, ``{"step", "unit", "channels", "costs", "score"}`` (step 0 is the max config,
    with ``unit``/``score`` None)."""

    found: List[Dict[str, Any]]
    trajectory: List[Dict[str, Any]]
    evaluations: int
    state: Dict[str, Any]
    extra: Dict[str, Any] = field(default_factory=dict)

    def config_for(self, metric: str, target: float) -> Config:
        for f in self.found:
            if f["metric"] == metric and math.isclose(f["target"], float(target), rel_tol=1e-12, abs_tol=0.0):
                return dict(f["config"])
        raise KeyError((metric, target))

    def to_dict(self) -> Dict[str, Any]:
        return {"found": self.found, "trajectory": self.trajectory, "evaluations": self.evaluations}


def _cost_fns(costs: Union[CostFn, Mapping[str, CostFn]]) -> Dict[str, CostFn]:
    if callable(costs) and not isinstance(costs, Mapping):
        return {"cost": costs}
    fns = dict(costs)
    if not fns:
        raise UserError("greedy slimming needs at least one cost function")
    return fns


def _targets(
    targets: Sequence[Any], fns: Mapping[str, CostFn], max_costs: Mapping[str, float]
) -> List[Target]:
    out: List[Target] = []
    for t in targets:
        if isinstance(t, (tuple, list)):
            if len(t) != 2:
                raise UserError(f"a target is (metric, value), got {t!r}")
            metric, value = str(t[0]), t[1]
        else:
            if len(fns) != 1:
                raise UserError(f"target {t!r} names no metric, but there are several: {', '.join(fns)}")
            metric, value = next(iter(fns)), t
        if metric not in fns:
            raise UserError(f"target metric {metric!r} has no cost function (have: {', '.join(fns)})")
        v = parse_budget(value, max_costs[metric]) if isinstance(value, str) else float(value)
        if not (v > 0 and math.isfinite(v)):
            raise UserError(f"target {value!r} for {metric} must be a positive number")
        out.append((metric, v))
    if not out:
        raise UserError("greedy slimming needs at least one target")
    # largest first within each metric; metrics keep the order of their first appearance
    order = {m: i for i, m in reversed(list(enumerate(m for m, _ in out)))}
    uniq = sorted(set(out), key=lambda mv: (order[mv[0]], -mv[1]))
    return uniq


def greedy_slim(
    space: Any,
    evaluate: Evaluator,
    costs: Union[CostFn, Mapping[str, CostFn]],
    targets: Sequence[Any],
    *,
    state: Optional[Mapping[str, Any]] = None,
    on_step: Optional[Callable[[Dict[str, Any]], None]] = None,
) -> GreedyResult:
    """Run (or resume) greedy slimming.

    ``costs`` is one cost function (metric name ``"cost"``) or a dict metric -> function.
    ``targets`` are ``(metric, value)`` pairs, or bare values when there is one metric;
    a string value is parsed by :func:`parse_budget` against the max config's cost.
    A target below the smallest config's cost raises ``UserError``.
    """
    g: Genome = genome(space)
    fns = _cost_fns(costs)

    def costs_of(genes: Tuple[int, ...]) -> Dict[str, float]:
        cfg = g.config(genes)
        return {m: float(f(cfg)) for m, f in fns.items()}

    max_genes = g.max_genes()
    min_costs = costs_of(g.min_genes())

    if state is None:
        max_costs = costs_of(max_genes)
        tlist = _targets(targets, fns, max_costs)
        for metric, value in tlist:
            if value < min_costs[metric]:
                raise UserError(
                    f"target {metric} <= {value:.6g} is below the smallest config's {metric} "
                    f"({min_costs[metric]:.6g}); no config can meet it"
                )
        st: Dict[str, Any] = {
            "algorithm": "greedy",
            "version": STATE_VERSION,
            "units": g.state_units(),
            "targets": [[m, v] for m, v in tlist],
            "step": 0,
            "channels": g.channels(max_genes),
            "pending": [[m, v] for m, v in tlist],
            "found": [],
            "trajectory": [
                {"step": 0, "unit": None, "channels": None, "costs": max_costs, "score": None}
            ],
            "evaluations": 0,
            "done": False,
        }
        _record(st, g, max_genes, max_costs, None)
    else:
        st = copy.deepcopy(dict(state))
        if st.get("algorithm") != "greedy":
            raise UserError("saved state is not a greedy-slimming state")
        g.check_state_units(st)
        for metric, _ in st["targets"]:
            if metric not in fns:
                raise UserError(f"saved state has a target on {metric!r}, but no such cost function was given")

    genes = g.genes_from_channels(st["channels"])
    while st["pending"]:
        # candidates: shrink each unit by one choice
        best: Optional[Tuple[float, int, float]] = None  # (order key, unit index, raw score)
        for i in range(len(genes)):
            if genes[i] == 0:
                continue
            cand = genes[:i] + (genes[i] - 1,) + genes[i + 1 :]
            score = float(evaluate(g.config(cand)))
            st["evaluations"] += 1
            key = score_order(score)
            if best is None or key > best[0]:
                best = (key, i, score)
        if best is None:  # cannot happen: targets >= min cost are met at the min config
            raise UserError("greedy slimming reached the smallest config without meeting every target")
        _, i, score = best
        genes = genes[:i] + (genes[i] - 1,) + genes[i + 1 :]
        st["step"] += 1
        st["channels"] = g.channels(genes)
        c = costs_of(genes)
        st["trajectory"].append(
            {"step": st["step"], "unit": g.names[i], "channels": g.choices[i][genes[i]], "costs": c, "score": score}
        )
        _record(st, g, genes, c, score)
        if on_step is not None:
            on_step(copy.deepcopy(st))

    st["done"] = True
    order = {(m, v): i for i, (m, v) in enumerate(st["targets"])}
    found = sorted(st["found"], key=lambda f: order.get((f["metric"], f["target"]), len(order)))
    return GreedyResult(
        found=copy.deepcopy(found),
        trajectory=copy.deepcopy(st["trajectory"]),
        evaluations=st["evaluations"],
        state=st,
    )


def _record(st: Dict[str, Any], g: Genome, genes: Tuple[int, ...], c: Mapping[str, float], score) -> None:
    """Mark every pending target met by the current config."""
    still = []
    for metric, value in st["pending"]:
        if c[metric] <= value:
            st["found"].append(
                {
                    "metric": metric,
                    "target": value,
                    "step": st["step"],
                    "config": g.config(genes),
                    "costs": dict(c),
                    "score": score,
                }
            )
        else:
            still.append([metric, value])
    st["pending"] = still
    if not still:
        st["done"] = True
