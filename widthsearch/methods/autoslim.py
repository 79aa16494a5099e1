"""AutoSlim (Yu & Huang, arXiv 1903.11728): greedy slimming of a trained slimmable supernet.

The supernet half (sandwich rule, inplace distillation) is in :mod:`widthsearch.training`; this
module runs the greedy search on a trained supernet (through
:mod:`widthsearch.methods.supernet_search`, which writes one config YAML per target, the trajectory
as CSV and PNG, and the per-unit widths next to the uniform net of the same FLOPs) and, in
:func:`run_autoslim`, the whole method. State is saved after every greedy step, so a killed search
resumes to the same result.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from widthsearch.errors import UserError
from widthsearch.models.user import require_width_mult
from widthsearch.methods.supernet_search import STATE_FILE, search_meta, search_supernet
from widthsearch.space import Supernet
from widthsearch.formatting import format_count


def greedy_search(
    net: Supernet,
    evaluator: Callable[[Mapping[str, int]], float],
    targets: Sequence[str | tuple[str, str]],
    out_dir: str | Path,
    *,
    meta: Mapping[str, Any],
    resume: bool = False,
    progress: bool = True,
    scoring: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run AutoSlim's greedy slimming on ``net`` and write the results into ``out_dir``.

    ``targets``: ``"metric=value"`` strings or pairs (metric in flops / params / latency_ms; value
    like ``300M``, or for flops/params a fraction of the max config's cost like ``0.5``). ``meta`` is
    written into each config YAML (model, width_mult, input_shape, groups, supernet, ...). Returns a
    JSON-ready summary. See :func:`~widthsearch.methods.supernet_search.search_supernet`, which this
    calls with ``algo="greedy"``, for the saved state and when a resume is refused.
    """
    return search_supernet(net, evaluator, targets, out_dir, meta=meta, algo="greedy", scoring=scoring,
                           resume=resume, progress=progress)


# ---- the whole method: supernet -> greedy search -> retraining -> report ------------------------
RUN_DEFAULTS: dict[str, Any] = {
    "model": "tiny_cnn",
    "model_kwargs": None,  # keyword arguments of a user's model factory
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
    from widthsearch.training.evaluate import supernet_evaluator

    s = {**RUN_DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    require_width_mult(s["model"], "the uniform-width baselines of the retraining")  # before hours of training
    out = prepare_run_folder(out_dir, resume)
    net, meta = supernet_stage(s, out, {"strategy": "autoslim"}, resume=resume, progress=progress, echo=echo)
    targets = [f"flops={float(t):g}" for t in s["targets"]]
    echo(f"[2/3] greedy search: {', '.join(targets)} of max FLOPs")
    align = s.get("align") or "left"
    evaluator, data = supernet_evaluator(net, meta, s["bn"], s["search_images"], align=align)
    search_resume = resume and (out / "search" / STATE_FILE).exists()
    summary = greedy_search(net, evaluator, targets, out / "search", meta=search_meta(meta),
                            resume=search_resume, progress=progress,
                            scoring={"bn": s["bn"], "search_images": s["search_images"], "align": align})
    rows = retrain_stage(s, out, summary["found"], resume=resume, progress=progress, echo=echo)
    search_text = (f"{summary['steps']} greedy steps, {summary['evaluations']} supernet evaluations.\n\n"
                   "![accuracy along the greedy path](search/trajectory.png)\n\n![channels per unit](search/widths.png)")
    report = write_report(out, s, meta, rows, title="AutoSlim run", how="Greedy search", search_text=search_text,
                          scored_images=min(int(s["search_images"]), len(data.heldout)))
    return {"targets": rows, "report": str(report), "search": str(out / "search")}


def prepare_run_folder(out_dir: str | Path, resume: bool) -> Path:
    """The run folder, refusing to reuse a non-empty one unless resuming."""
    out = Path(out_dir)
    if (out / "report.md").exists() and not resume:
        raise UserError(f"{out} already holds a finished run (report.md); use another --out")
    if out.exists() and any(out.iterdir()) and not resume:
        raise UserError(f"{out} is not empty; pass --resume to continue the run in it, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def supernet_stage(s: Mapping[str, Any], out: Path, extra: Mapping[str, Any], *, resume: bool, progress: bool,
                   echo: Callable[[str], None]):
    """Train (or resume) the run's supernet in ``out/supernet``; returns ``(net, meta)``."""
    from widthsearch.training.distributed import resolve_device
    from widthsearch.training.slimmable import load_supernet, train_supernet

    echo(f"[1/3] supernet ({extra.get('strategy', 'autoslim')}): {s['model']} x{s['width_mult']} on {s['data']}, "
         f"{s['epochs']} epochs")
    supernet_args = {
        "model": s["model"], "model_kwargs": s.get("model_kwargs"), "data": s["data"], "width_mult": s["width_mult"],
        "groups": s["groups"],
        "epochs": s["epochs"], "batch_size": s["batch_size"], "lr": s["lr"], "seed": s["seed"],
        "threads": s["threads"], "device": s["device"], **extra,
    }
    train_supernet(supernet_args, out / "supernet", resume=resume and (out / "supernet" / "supernet.pt").exists(),
                   progress=progress)
    return load_supernet(out / "supernet", resolve_device(s["device"]))


def retrain_stage(s: Mapping[str, Any], out: Path, found: Sequence[Mapping[str, Any]], *, resume: bool,
                  progress: bool, echo: Callable[[str], None]) -> list[dict[str, Any]]:
    """Retrain every found config and the uniform-width net of its FLOPs with one recipe and seed."""
    from widthsearch.training.retrain import train_network

    recipe = {"model": s["model"], "model_kwargs": s.get("model_kwargs"), "data": s["data"],
              "epochs": s["retrain_epochs"], "batch_size": s["batch_size"],
              "lr": s["lr"], "seed": s["seed"], "threads": s["threads"], "device": s["device"]}
    rows = []
    for i, entry in enumerate(found):
        echo(f"[3/3] retrain {entry['target']} ({i + 1}/{len(found)}) and its uniform baseline")
        searched_dir = out / "retrain" / entry["target"]
        uniform_dir = out / "retrain" / f"uniform-{entry['target']}"
        # a resumed training takes its network from its checkpoint: name it only for a new one
        again = resume and (searched_dir / "model.pt").exists()
        searched = train_network(recipe, searched_dir, channels=None if again else entry["config"], resume=again,
                                 progress=progress)
        again = resume and (uniform_dir / "model.pt").exists()
        uniform = train_network(recipe, uniform_dir, uniform_flops=None if again else float(entry["flops"]),
                                resume=again, progress=progress)
        rows.append({
            "target": entry["target"], "target_flops": int(entry["value"]), "flops": entry["flops"],
            "params": entry["params"], "config": entry["config"], "heldout_accuracy": entry["heldout_accuracy"],
            "accuracy": searched["accuracy"], "uniform_flops": uniform["flops"], "uniform_params": uniform["params"],
            "uniform_accuracy": uniform["accuracy"],
        })
    return rows


def write_report(out: Path, settings: Mapping[str, Any], meta: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                 *, title: str, how: str, search_text: str, scored_images: int) -> Path:
    """``report.md``: the retrained configs against their uniform baselines, then the search."""
    lines = [
        f"# {title}",
        "",
        f"Model `{settings['model']}` (supernet width x{settings['width_mult']}, {settings['groups']} groups per unit) "
        f"on `{settings['data']}`; supernet {settings['epochs']} epochs, retraining {settings['retrain_epochs']} epochs, "
        f"seed {settings['seed']}. {how} scored candidates on {scored_images} held-out training "
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
    links = ", ".join(f"[{r['target']}]({os.path.relpath(r['config'], out)})" for r in rows)
    lines += ["", search_text, "", f"Configs: {links}", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
