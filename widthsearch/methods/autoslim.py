"""AutoSlim (Yu & Huang, arXiv 1903.11728): greedy slimming of a trained slimmable supernet.

The supernet half (sandwich rule, inplace distillation) is in :mod:`widthsearch.training`; this
module runs the search on a trained supernet and writes what a user needs: one config YAML per
target, the trajectory as CSV and PNG, and the per-unit widths next to the uniform net of the same
FLOPs. State is saved after every greedy step, so a killed search resumes to the same result.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from widthsearch.costs import measure_latency
from widthsearch.errors import UserError
from widthsearch.plots import plot_trajectory, plot_widths
from widthsearch.search import cost_fns, greedy_slim, parse_budget
from widthsearch.space import Supernet
from widthsearch.space.config import save_config
from widthsearch.space.units import format_count
from widthsearch.training.loop import write_json_atomic

METRICS = ("flops", "params", "latency_ms")
STATE_FILE = "search_state.json"


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


def latency_cost(net: Supernet, input_shape: Sequence[int], runs: int = 10) -> Callable[[Mapping[str, int]], float]:
    """Measured CPU latency (ms, batch 1, median) of a config's exported static net, cached per config."""
    cache: dict[tuple, float] = {}
    example = torch.randn(1, *input_shape)

    def latency(config: Mapping[str, int]) -> float:
        key = net.space.key(config)
        if key not in cache:
            static = net.export(dict(config))
            cache[key] = measure_latency(static, example, runs=runs, warmup=3).median_ms
        return cache[key]

    return latency


def greedy_search(
    net: Supernet,
    evaluator: Callable[[Mapping[str, int]], float],
    targets: Sequence[str | tuple[str, str]],
    out_dir: str | Path,
    *,
    meta: Mapping[str, Any],
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run AutoSlim's greedy slimming on ``net`` and write the results into ``out_dir``.

    ``targets``: ``"metric=value"`` strings or pairs (metric in flops / params / latency_ms; value
    like ``300M`` or a fraction of the max config's cost like ``0.5``). ``meta`` is written into
    each config YAML (model, width_mult, input_shape, groups, ...). Returns a JSON-ready summary.
    """
    out = Path(out_dir)
    state_path = out / STATE_FILE
    state = None
    if resume and state_path.is_file():
        state = json.loads(state_path.read_text())
    elif resume:  # killed before its first step: nothing was lost, start over
        print(f"note: no saved search in {out}; starting from scratch", file=sys.stderr)
    elif state_path.exists():
        raise UserError(f"{out} already holds a search ({STATE_FILE}); use --resume to continue or another --out")
    out.mkdir(parents=True, exist_ok=True)

    pairs = [parse_target(t) if isinstance(t, str) else (t[0], str(t[1])) for t in targets]
    if not pairs:
        raise UserError("give at least one --target, e.g. --target flops=0.5")
    metrics = sorted({m for m, _ in pairs} | {"flops", "params"}, key=METRICS.index)
    costs = cost_fns(net.space, [m for m in metrics if m != "latency_ms"])
    if "latency_ms" in metrics:
        costs["latency_ms"] = latency_cost(net, meta["input_shape"])
    max_config = net.space.max_config()
    numeric = [(m, parse_budget(v, costs[m](max_config))) for m, v in pairs]

    bar = None
    if progress:
        from widthsearch.progress import Progress

        bar = Progress(sum(len(u.choices) - 1 for u in net.space.units), "greedy slimming")

    def on_step(st: dict) -> None:
        write_json_atomic(state_path, st)
        if bar is not None:
            last = st["trajectory"][-1]
            bar.set(st["step"], flops=format_count(last["costs"]["flops"]), acc=f"{100 * last['score']:.1f}%")

    try:
        result = greedy_slim(net.space, evaluator, costs, numeric, state=state, on_step=on_step)
    finally:
        if bar is not None:
            bar.close()
    write_json_atomic(state_path, result.state)
    return write_results(net, result.found, result.trajectory, result.evaluations, out, meta)


def write_results(net: Supernet, found: Sequence[Mapping], trajectory: Sequence[Mapping], evaluations: int,
                  out: Path, meta: Mapping[str, Any]) -> dict[str, Any]:
    """configs/<target>.yaml, trajectory.csv, trajectory.png and widths.png; returns the summary."""
    space = net.space
    (out / "configs").mkdir(exist_ok=True)
    entries = []
    for f in found:
        label = target_label(f["metric"], f["target"])
        path = save_config(out / "configs" / f"{label}.yaml", space, f["config"], **dict(meta),
                           target=f"{f['metric']}<={f['target']:g}",
                           heldout_accuracy=None if f["score"] is None else float(f["score"]))
        cost = space.cost(f["config"])
        entries.append({
            "target": label, "metric": f["metric"], "value": f["target"], "flops": cost.flops,
            "params": cost.params, "heldout_accuracy": f["score"], "step": f["step"], "config": str(path),
        })
    with open(out / "trajectory.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "unit", "channels", "flops", "params", "accuracy"])
        for t in trajectory:
            writer.writerow([t["step"], t["unit"] or "", t["channels"] or "", int(t["costs"]["flops"]),
                             int(t["costs"]["params"]), "" if t["score"] is None else f"{t['score']:.6f}"])
    plot_trajectory(trajectory, found, out / "trajectory.png")
    names = [u.name for u in space.units]
    series = []
    for f, entry in zip(found, entries):
        uniform = space.uniform_config_for_flops(entry["flops"])
        series.append((entry["target"], [f["config"][n] for n in names], [uniform[n] for n in names]))
    plot_widths(names, [u.max for u in space.units], series, out / "widths.png")
    summary = {
        "found": entries, "evaluations": evaluations, "steps": len(trajectory) - 1,
        "trajectory": str(out / "trajectory.csv"), "plots": [str(out / "trajectory.png"), str(out / "widths.png")],
    }
    write_json_atomic(out / "search.json", summary)
    return summary


# ---- the whole method: supernet -> greedy search -> retraining -> report ------------------------
RUN_DEFAULTS: dict[str, Any] = {
    "model": "tiny_cnn",
    "data": "digits",
    "width_mult": 1.0,
    "groups": 10,
    "epochs": 8,
    "retrain_epochs": 8,
    "batch_size": 128,
    "lr": 0.1,
    "seed": 0,
    "targets": (0.75, 0.5, 0.25),
    "bn": "batch",
    "search_images": 2000,
    "threads": None,
    "device": "auto",
}


def run_autoslim(
    settings: Mapping[str, Any],
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """AutoSlim end to end in ``out_dir``: ``supernet/``, ``search/``, ``retrain/<name>/``, ``report.md``.

    Each stage keeps its own checkpoint, so ``resume=True`` continues wherever a killed run stopped.
    Found configs and the uniform-width baselines of the same FLOPs are retrained with the same
    recipe and seed; accuracy is on the test split.
    """
    from widthsearch.cli.search import search_meta
    from widthsearch.training.evaluate import supernet_evaluator
    from widthsearch.training.distributed import resolve_device
    from widthsearch.training.retrain import train_network
    from widthsearch.training.slimmable import load_supernet, train_supernet

    s = {**RUN_DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    out = Path(out_dir)
    if (out / "report.md").exists() and not resume:
        raise UserError(f"{out} already holds a finished run (report.md); use another --out")
    if out.exists() and any(out.iterdir()) and not resume:
        raise UserError(f"{out} is not empty; pass --resume to continue the run in it, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)

    echo(f"[1/3] supernet: {s['model']} x{s['width_mult']} on {s['data']}, {s['epochs']} epochs")
    supernet_args = {
        "model": s["model"], "data": s["data"], "width_mult": s["width_mult"], "groups": s["groups"],
        "epochs": s["epochs"], "batch_size": s["batch_size"], "lr": s["lr"], "seed": s["seed"],
        "threads": s["threads"], "device": s["device"],
    }
    train_supernet(supernet_args, out / "supernet", resume=resume, progress=progress)
    net, meta = load_supernet(out / "supernet", resolve_device(s["device"]))

    targets = [f"flops={float(t):g}" for t in s["targets"]]
    echo(f"[2/3] greedy search: {', '.join(targets)} of max FLOPs")
    evaluator, _ = supernet_evaluator(net, meta, s["bn"], s["search_images"])
    search_resume = resume and (out / "search" / STATE_FILE).exists()
    summary = greedy_search(net, evaluator, targets, out / "search", meta=search_meta(meta),
                            resume=search_resume, progress=progress)

    recipe = {"model": s["model"], "data": s["data"], "epochs": s["retrain_epochs"], "batch_size": s["batch_size"],
              "lr": s["lr"], "seed": s["seed"], "threads": s["threads"], "device": s["device"]}
    rows = []
    for i, entry in enumerate(summary["found"]):
        echo(f"[3/3] retrain {entry['target']} ({i + 1}/{len(summary['found'])}) and its uniform baseline")
        searched = train_network(recipe, out / "retrain" / entry["target"], channels=entry["config"],
                                 resume=resume and (out / "retrain" / entry["target"] / "model.pt").exists(),
                                 progress=progress)
        uniform_dir = out / "retrain" / f"uniform-{entry['target']}"
        uniform = train_network(recipe, uniform_dir, uniform_flops=float(entry["flops"]),
                                resume=resume and (uniform_dir / "model.pt").exists(), progress=progress)
        rows.append({
            "target": entry["target"], "target_flops": int(entry["value"]), "flops": entry["flops"],
            "params": entry["params"], "config": entry["config"], "heldout_accuracy": entry["heldout_accuracy"],
            "accuracy": searched["accuracy"], "uniform_flops": uniform["flops"], "uniform_params": uniform["params"],
            "uniform_accuracy": uniform["accuracy"],
        })
    report = write_report(out, s, meta, summary, rows)
    return {"targets": rows, "report": str(report), "search": str(out / "search")}


def write_report(out: Path, settings: Mapping[str, Any], meta: Mapping[str, Any], summary: Mapping[str, Any],
                 rows: Sequence[Mapping[str, Any]]) -> Path:
    lines = [
        "# AutoSlim run",
        "",
        f"Model `{settings['model']}` (supernet width x{settings['width_mult']}, {settings['groups']} groups per unit) "
        f"on `{settings['data']}`; supernet {settings['epochs']} epochs, retraining {settings['retrain_epochs']} epochs, "
        f"seed {settings['seed']}. Greedy search scored candidates on {settings['search_images']} held-out training "
        f"images (BN: {settings['bn']}); accuracies below are on the test split.",
        "",
        "| target | FLOPs | params | accuracy | uniform FLOPs | uniform accuracy | delta |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        delta = 100 * (r["accuracy"] - r["uniform_accuracy"])
        lines.append(
            f"| {r['target']} | {format_count(r['flops'])} | {format_count(r['params'])} | {100 * r['accuracy']:.2f}% | "
            f"{format_count(r['uniform_flops'])} | {100 * r['uniform_accuracy']:.2f}% | {delta:+.2f} |"
        )
    lines += [
        "",
        f"{summary['steps']} greedy steps, {summary['evaluations']} supernet evaluations.",
        "",
        "![accuracy along the greedy path](search/trajectory.png)",
        "",
        "![channels per unit](search/widths.png)",
        "",
        "Configs: " + ", ".join(f"[{r['target']}](search/configs/{r['target']}.yaml)" for r in rows),
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
