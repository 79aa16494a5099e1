"""Search a trained supernet with any registered algorithm and write what a user needs.

This is what ``widthsearch search`` and AutoSlim's search stage run. It turns ``METRIC=VALUE``
targets into cost budgets, runs the algorithm named in
:data:`widthsearch.search.SEARCH_ALGORITHMS` on the supernet's channel space and writes one
config YAML per target into ``out/configs/`` plus a CSV and plots.

Resuming. The search state is written to ``out/search_state.json`` after every greedy step or
every evaluation (evolution, random search), together with what the search was started with:
the algorithm, its options, the targets, how candidates were scored and a fingerprint of the
supernet checkpoint (its path and the SHA-256 of its bytes). ``resume=True`` continues that
state to exactly the result an uninterrupted search gives, also after a ``kill -9``, and
refuses (``UserError``, nothing written) when any of those differ: a state continued with
another supernet, target or algorithm would mix two searches in one result.
"""
from __future__ import annotations

import csv
import hashlib
import inspect
import json
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from widthsearch.costs import measure_latency
from widthsearch.errors import UserError
from widthsearch.plots import plot_trajectory, plot_widths
from widthsearch.search import search_algorithm
from widthsearch.search.constraints import Constraint, CostFn, cost_fns, parse_budget
from widthsearch.search.evolution import evolution_search, planned_evaluations
from widthsearch.space import Supernet
from widthsearch.space.config import save_config
from widthsearch.formatting import format_count
from widthsearch.io import same_path, write_json_atomic

METRICS = ("flops", "params", "latency_ms")
STATE_FILE = "search_state.json"
#: marks the state file written here (the algorithm's own state sits under "state")
STATE_FORMAT = "widthsearch.search-state/2"
#: keyword parameters of a search function that are not user options
_NOT_OPTIONS = ("state", "on_step", "prior", "initial_population")

Target = tuple[str, float]


# ---- targets ---------------------------------------------------------------------------------
def parse_target(text: str) -> tuple[str, str]:
    """``"flops=300M"`` -> ``("flops", "300M")``; the value may be absolute or a fraction of max."""
    metric, sep, value = str(text).partition("=")
    metric = metric.strip().lower()
    if not sep or not value.strip():
        raise UserError(f"bad target {text!r}: expected METRIC=VALUE, e.g. flops=300M, params=1.5M, latency_ms=4")
    if metric not in METRICS:
        raise UserError(f"bad target {text!r}: metric must be one of {', '.join(METRICS)}")
    return metric, value.strip()


def target_label(metric: str, value: float) -> str:
    """File-name form of a target: flops-300.00M, latency_ms-4."""
    shown = f"{value:g}" if metric == "latency_ms" else format_count(value)
    return f"{metric}-{shown}"


def target_value(metric: str, text: str, max_cost: Callable[[], float]) -> float:
    """The budget of one target. FLOPs and params take absolute counts or fractions of the max
    config's cost; latency takes absolute milliseconds only, because a plain ``0.5`` there means
    half a millisecond, not half the max latency."""
    if metric == "latency_ms":
        try:
            return parse_budget(text, fractions=False)
        except UserError:
            raise UserError(f"bad target latency_ms={text}: give absolute milliseconds, e.g. latency_ms=4") from None
    return parse_budget(text, max_cost())


def latency_cost(net: Supernet, input_shape: Sequence[int], runs: int = 10) -> Callable[[Mapping[str, int]], float]:
    """Measured CPU latency (ms, batch 1, median) of a config's exported static net, cached per config."""
    cache: dict[tuple, float] = {}
    example = torch.randn(1, *input_shape)

    def latency(config: Mapping[str, int]) -> float:
        key = net.space.key(config)
        if key not in cache:
            static = net.export(dict(config)).cpu()  # CPU latency, wherever the supernet is
            cache[key] = measure_latency(static, example, runs=runs, warmup=3).median_ms
        return cache[key]

    return latency


def target_costs(net: Supernet, metrics: Sequence[str], input_shape: Sequence[int],
                 latency: CostFn | None = None) -> dict[str, CostFn]:
    """Cost functions for ``metrics`` plus flops and params (which every summary reports).

    ``latency`` (e.g. a :class:`~widthsearch.latency.LatencyTable`'s prediction) replaces
    measuring each candidate's latency."""
    wanted = sorted(set(metrics) | {"flops", "params"}, key=METRICS.index)
    costs = cost_fns(net.space, [m for m in wanted if m != "latency_ms"])
    if "latency_ms" in wanted:
        costs["latency_ms"] = latency if latency is not None else latency_cost(net, input_shape)
    return costs


def resolve_targets(net: Supernet, targets: Sequence[str | tuple[str, Any]],
                    costs: Mapping[str, CostFn]) -> list[Target]:
    """``[(metric, budget)]`` from ``"metric=value"`` strings or pairs; one-line errors for
    malformed targets and for targets below the smallest config's cost."""
    pairs = [parse_target(t) if isinstance(t, str) else (str(t[0]), str(t[1])) for t in targets]
    if not pairs:
        raise UserError("give at least one --target, e.g. --target flops=0.5")
    max_config, min_config = net.space.max_config(), net.space.min_config()
    out = []
    for metric, text in pairs:
        value = target_value(metric, text, lambda: costs[metric](max_config))
        smallest = costs[metric](min_config)
        if value < smallest:
            raise UserError(f"target {metric} <= {value:.6g} is below the smallest config's {metric} "
                            f"({smallest:.6g}); no config can meet it")
        out.append((metric, value))
    return out


# ---- what a search records about its supernet ----------------------------------------------------
def search_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """What a config YAML records about the supernet it came from (``meta`` of ``load_supernet``)."""
    return {
        "model": meta["model"], "width_mult": meta["width_mult"], "input_shape": list(meta["input_shape"]),
        "num_classes": meta["num_classes"], "groups": meta["groups"], "supernet": meta["path"],
        "space": meta.get("space"),
    }


def checkpoint_fingerprint(path: str | Path | None) -> dict[str, Any] | None:
    """Resolved path, size and SHA-256 of a checkpoint file (None for no path). The hash, not the
    modification time, decides whether two checkpoints are the same: copying a file keeps it."""
    if path is None:
        return None
    path = Path(path).resolve()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path), "size": path.stat().st_size, "sha256": digest.hexdigest()}


# ---- options of the registered algorithms --------------------------------------------------------
def takes_constraint(fn: Callable) -> bool:
    """Evolution and random search take one ``Constraint``; greedy slimming takes a list of targets."""
    return "constraint" in inspect.signature(fn).parameters


def algorithm_options(algo: str) -> dict[str, Any]:
    """The tunable keyword options of a registered search algorithm with their defaults, read
    from its signature (so a new option needs no wiring here). Constrained searches also take
    ``lower``, the lower cost bound as a fraction of the budget."""
    fn = search_algorithm(algo)
    options = {
        name: p.default for name, p in inspect.signature(fn).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in _NOT_OPTIONS
    }
    if takes_constraint(fn):
        options["lower"] = 0.0
    return options


def effective_options(algo: str, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults of ``algo`` overridden by ``given``; ``UserError`` for an option it does not take."""
    defaults = algorithm_options(algo)
    given = {k: v for k, v in (given or {}).items() if v is not None}
    unknown = [k for k in given if k not in defaults]
    if unknown:
        takes = ", ".join(defaults) or "none"
        raise UserError(f"search algorithm {algo!r} takes no option {unknown[0]!r} (its options: {takes})")
    return {**defaults, **given}


# ---- the saved state ---------------------------------------------------------------------------
def _load_saved(out: Path, resume: bool) -> dict[str, Any] | None:
    state_path = out / STATE_FILE
    if not resume:
        if state_path.exists():
            raise UserError(f"{out} already holds a search ({STATE_FILE}); use --resume to continue or another --out")
        return None
    if not state_path.is_file():  # killed before its first step: nothing was lost, start over
        print(f"note: no saved search in {out}; starting from scratch", file=sys.stderr)
        return None
    try:
        saved = json.loads(state_path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{state_path} is not valid JSON; start a new search in another --out") from None
    if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT:
        raise UserError(f"{state_path} was written by an older widthsearch without a checkpoint fingerprint, "
                        "so it cannot be checked; start a new search in another --out")
    return saved


def same_targets(a: Sequence[Sequence[Any]], b: Sequence[Sequence[Any]]) -> bool:
    """Same (metric, budget) pairs up to rounding; the order does not matter (greedy sorts them)."""
    a, b = sorted(map(tuple, a)), sorted(map(tuple, b))
    return len(a) == len(b) and all(
        ma == mb and abs(float(va) - float(vb)) <= 1e-9 * max(abs(float(va)), abs(float(vb)))
        for (ma, va), (mb, vb) in zip(a, b)
    )


def _show_targets(targets: Sequence[Sequence[Any]]) -> str:
    return ", ".join(f"{m}<={float(v):g}" for m, v in targets) or "none"


def check_resumable(saved: Mapping[str, Any], run: Mapping[str, Any]) -> None:
    """Refuse (one line) to continue a saved search with anything that would change its result."""
    if saved["algorithm"] != run["algorithm"]:
        raise UserError(f"saved search used --algo {saved['algorithm']}, not {run['algorithm']}; "
                        "resume with the same algorithm or use another --out")
    old, new = saved["checkpoint"], run["checkpoint"]
    # the SHA-256 pins the supernet: its path may be spelled otherwise (relative, absolute) or have
    # moved with its run folder (a GPU lease unpacks the run elsewhere)
    if (old is None) != (new is None) or (old and old["sha256"] != new["sha256"]
                                          and not same_path(old["path"], new["path"])):
        raise UserError(f"saved search ran on the supernet {old and old['path']}, not {new and new['path']}; "
                        "resume with the same checkpoint or use another --out")
    if old and old["sha256"] != new["sha256"]:
        raise UserError(f"the supernet {new['path']} has changed since the saved search started "
                        "(other content); use another --out")
    if not same_targets(saved["targets"], run["targets"]):
        raise UserError(f"saved search has targets {_show_targets(saved['targets'])}, not "
                        f"{_show_targets(run['targets'])}; resume with the same targets or use another --out")
    for key, what in (("scoring", "candidates were scored with"), ("options", "options were")):
        if saved[key] != run[key]:
            diff = sorted(k for k in set(saved[key] or {}) | set(run[key] or {})
                          if (saved[key] or {}).get(k) != (run[key] or {}).get(k))
            shown = ", ".join(f"{k}={(saved[key] or {}).get(k)!r} (now {(run[key] or {}).get(k)!r})" for k in diff)
            raise UserError(f"saved search's {what} {shown}; resume with the same settings or use another --out")


# ---- the search ------------------------------------------------------------------------------
def search_supernet(
    net: Supernet,
    evaluator: Callable[[Mapping[str, int]], float],
    targets: Sequence[str | tuple[str, Any]],
    out_dir: str | Path,
    *,
    meta: Mapping[str, Any],
    algo: str = "greedy",
    options: Mapping[str, Any] | None = None,
    scoring: Mapping[str, Any] | None = None,
    resume: bool = False,
    progress: bool = True,
    seeding: Callable[[str, float], Mapping[str, Any]] | None = None,
    latency: CostFn | None = None,
) -> dict[str, Any]:
    """Run (or resume) the search ``algo`` on ``net`` and write the results into ``out_dir``.

    ``seeding(metric, budget)`` gives a constrained search extra keywords (``prior``,
    ``initial_population``: BCNetV2's prior-seeded evolution); name it in ``scoring`` so that a
    resume with other seeding is refused.

    ``targets``: ``"metric=value"`` strings or pairs (metric in flops / params / latency_ms);
    greedy slimming serves any number of targets in one pass, evolution and random search take
    exactly one. ``options``: the algorithm's keyword options (population, iterations, max_evals,
    seed, ..., and ``lower`` for the constrained searches); missing ones take the defaults.
    ``meta`` (see :func:`search_meta`) is written into each config YAML; its ``supernet`` path is
    fingerprinted. ``scoring`` describes the evaluator (e.g. BN mode and images) so that a resume
    with another one is refused. ``latency`` computes ``latency_ms`` targets (a latency table's
    prediction) instead of measuring each candidate; name its table in ``scoring``. Returns a JSON-ready summary (also written to ``search.json``).
    """
    fn = search_algorithm(algo)
    out = Path(out_dir)
    opts = effective_options(algo, options)
    saved = _load_saved(out, resume)  # before anything is computed or written

    metrics = [parse_target(t)[0] if isinstance(t, str) else str(t[0]) for t in targets]
    costs = target_costs(net, metrics, meta["input_shape"], latency)
    numeric = resolve_targets(net, targets, costs)
    if takes_constraint(fn) and len(numeric) != 1:
        raise UserError(f"--algo {algo} searches one target at a time, got {len(numeric)} "
                        f"({_show_targets(numeric)}); run one search per target, each with its own --out")
    run = {
        "format": STATE_FORMAT,
        "algorithm": algo,
        "checkpoint": checkpoint_fingerprint(meta.get("supernet")),
        "targets": [[m, v] for m, v in numeric],
        "scoring": None if scoring is None else dict(scoring),
        "options": opts,
    }
    if saved is not None:
        check_resumable(saved, run)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE_FILE

    def save(state: dict) -> None:
        write_json_atomic(state_path, {**run, "state": state})

    algo_state = None if saved is None else saved["state"]
    if takes_constraint(fn):
        extra = dict(seeding(*numeric[0])) if seeding is not None else {}
        summary = _constrained_search(fn, net, evaluator, costs, numeric[0], opts, algo_state, save, out, meta,
                                      progress, extra)
    else:
        summary = _greedy_search(fn, net, evaluator, costs, numeric, algo_state, save, out, meta, progress)
    summary = {"algo": algo, **summary}
    write_json_atomic(out / "search.json", summary)
    return summary


def _greedy_search(fn, net, evaluator, costs, numeric, algo_state, save, out, meta, progress) -> dict[str, Any]:
    bar = None
    if progress:
        from widthsearch.progress import Progress

        bar = Progress(sum(len(u.choices) - 1 for u in net.space.units), "greedy slimming")

    def on_step(st: dict) -> None:
        save(st)
        if bar is not None:
            last = st["trajectory"][-1]
            bar.set(st["step"], flops=format_count(last["costs"]["flops"]), acc=f"{100 * last['score']:.1f}%")

    try:
        result = fn(net.space, evaluator, costs, numeric, state=algo_state, on_step=on_step)
    finally:
        if bar is not None:
            bar.close()
    save(result.state)
    return write_greedy_results(net, result.found, result.trajectory, result.evaluations, out, meta)


def _constrained_search(fn, net, evaluator, costs, target, opts, algo_state, save, out, meta,
                        progress, extra) -> dict[str, Any]:
    metric, budget = target
    options = {k: v for k, v in opts.items() if k != "lower"}
    constraint = Constraint(costs[metric], budget, float(opts["lower"]))
    bar = None
    if progress:
        from widthsearch.progress import Progress

        # evolution's generation sizes depend on its variant: ask it; random search scores max_evals
        expected = planned_evaluations(**options) if fn is evolution_search else options.get("max_evals")
        bar = Progress(int(expected or 1), f"{fn.__name__.replace('_', ' ')}", unit="evaluation")

    def on_step(st: dict) -> None:
        save(st)
        if bar is not None:
            best = max(s for _, s in st["history"])
            bar.set(len(st["history"]), best=f"{100 * best:.1f}%")

    try:
        result = fn(net.space, evaluator, constraint, **options, **extra, state=algo_state, on_step=on_step)
    finally:
        if bar is not None:
            bar.close()
    save(result.state)
    return write_sampled_results(net, result, target, costs, out, meta)


# ---- outputs -----------------------------------------------------------------------------------
def _save_found(net: Supernet, out: Path, meta: Mapping[str, Any], metric: str, target: float,
                config: Mapping[str, int], score: float | None, latency_ms: float | None = None) -> dict[str, Any]:
    """configs/<target>.yaml with the supernet's metadata; the summary entry of that config."""
    label = target_label(metric, target)
    path = save_config(out / "configs" / f"{label}.yaml", net.space, config, **dict(meta),
                       target=f"{metric}<={target:g}", heldout_accuracy=None if score is None else float(score))
    cost = net.space.cost(config)
    entry = {"target": label, "metric": metric, "value": target, "flops": cost.flops, "params": cost.params,
             "heldout_accuracy": score, "config": str(path)}
    if latency_ms is not None:  # searched under a latency target: what the search saw
        entry["latency_ms"] = float(latency_ms)
    return entry


def _plot_widths(net: Supernet, found: Sequence[tuple[Mapping[str, int], Mapping[str, Any]]], path: Path) -> Path:
    """Per-unit widths of each found config beside the uniform net of the same FLOPs."""
    space = net.space
    names = [u.name for u in space.units]
    series = []
    for config, entry in found:
        uniform = space.uniform_config_for_flops(entry["flops"])
        series.append((entry["target"], [config[n] for n in names], [uniform[n] for n in names]))
    return plot_widths(names, [u.max for u in space.units], series, path)


def write_greedy_results(net: Supernet, found: Sequence[Mapping], trajectory: Sequence[Mapping], evaluations: int,
                         out: Path, meta: Mapping[str, Any]) -> dict[str, Any]:
    """configs/<target>.yaml, trajectory.csv, trajectory.png and widths.png; returns the summary."""
    entries = []
    for f in found:
        entry = _save_found(net, out, meta, f["metric"], f["target"], f["config"], f["score"],
                            f["costs"].get("latency_ms"))
        entries.append({**entry, "step": f["step"]})
    with open(out / "trajectory.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "unit", "channels", "flops", "params", "accuracy"])
        for t in trajectory:
            writer.writerow([t["step"], t["unit"] or "", t["channels"] or "", int(t["costs"]["flops"]),
                             int(t["costs"]["params"]), "" if t["score"] is None else f"{t['score']:.6f}"])
    plot_trajectory(trajectory, found, out / "trajectory.png")
    _plot_widths(net, [(f["config"], e) for f, e in zip(found, entries)], out / "widths.png")
    return {
        "found": entries, "evaluations": evaluations, "steps": len(trajectory) - 1,
        "trajectory": str(out / "trajectory.csv"), "plots": [str(out / "trajectory.png"), str(out / "widths.png")],
    }


def write_sampled_results(net: Supernet, result: Any, target: Target, costs: Mapping[str, CostFn], out: Path,
                          meta: Mapping[str, Any]) -> dict[str, Any]:
    """configs/<target>.yaml (the best config), history.csv (every scored config in order) and
    widths.png for evolution or random search; returns the summary."""
    metric, budget = target
    latency = costs["latency_ms"](result.best_config) if "latency_ms" in costs else None
    entry = _save_found(net, out, meta, metric, budget, result.best_config, result.best_score, latency)
    names = [u.name for u in net.space.units]
    with open(out / "history.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["evaluation", "flops", "params", "accuracy", "channels"])
        for i, (config, score) in enumerate(result.history, 1):
            writer.writerow([i, int(costs["flops"](config)), int(costs["params"](config)), f"{score:.6f}",
                             " ".join(str(config[n]) for n in names)])
    _plot_widths(net, [(result.best_config, entry)], out / "widths.png")
    return {
        "found": [entry], "evaluations": result.evaluations, "stop_reason": result.stop_reason, **result.extra,
        "history": str(out / "history.csv"), "plots": [str(out / "widths.png")],
    }
