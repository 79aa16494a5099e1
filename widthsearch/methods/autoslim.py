"""AutoSlim (Yu & Huang, arXiv 1903.11728): greedy slimming of a trained slimmable supernet.

The supernet half (sandwich rule, inplace distillation) is in :mod:`widthsearch.training`; this
module runs the greedy search on a trained supernet (through
:mod:`widthsearch.methods.supernet_search`, which writes one config YAML per target, the trajectory
as CSV and PNG, and the per-unit widths next to the uniform net of the same FLOPs) and, in
:func:`run_autoslim`, the whole method. State is saved after every greedy step, so a killed search
resumes to the same result.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from widthsearch.errors import UserError
from widthsearch.io import write_json_atomic, write_text_atomic
from widthsearch.methods.comparison import format_interval, format_mean_std, retrained_points
from widthsearch.models.user import require_width_mult
from widthsearch.methods.retraining import check_jobs, check_seeds, retrain_pairs
from widthsearch.data.loading import same_data_spec
from widthsearch.methods.supernet_search import STATE_FILE, same_targets, search_meta, search_supernet
from widthsearch.runfolder import check_folder, folder_has_content, rehome_paths
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
    "seeds": (0, 1, 2),
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

    Each stage keeps its own checkpoint, so ``resume=True`` continues wherever a killed run stopped
    and ends with the same report. Found configs and the uniform-width baselines of the same FLOPs
    are retrained with the same recipe under each of ``settings["seeds"]`` (default 0, 1, 2) and
    compared on the test split with intervals (:mod:`widthsearch.methods.comparison`).
    ``settings["jobs"]`` (default 1): retrain in up to that many worker processes; the results do
    not depend on it.
    """
    from widthsearch.training.evaluate import supernet_evaluator

    s = {**RUN_DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    jobs = check_jobs(s.pop("jobs", None))  # how the work is spread, not what it computes: not in the report
    s["seeds"] = check_seeds(s["seeds"])  # a bad list fails before any training
    require_width_mult(s["model"], "the uniform-width baselines of the retraining")  # before hours of training
    out = prepare_run_folder(out_dir, resume)
    targets = [f"flops={float(t):g}" for t in s["targets"]]
    align = s.get("align") or "left"
    scoring = {"bn": s["bn"], "search_images": s["search_images"], "align": align}
    summary = searched_without_supernet(out, s, scoring) if resume else None
    if summary is None:
        net, meta = supernet_stage(s, out, {"strategy": "autoslim"}, resume=resume, progress=progress, echo=echo)
        echo(f"[2/3] greedy search: {', '.join(targets)} of max FLOPs")
        evaluator, data = supernet_evaluator(net, meta, s["bn"], s["search_images"], align=align)
        search_resume = resume and (out / "search" / STATE_FILE).exists()
        summary = greedy_search(net, evaluator, targets, out / "search", meta=search_meta(meta),
                                resume=search_resume, progress=progress, scoring=scoring)
        # what the report needs of the search, so that a resume can go on without the supernet
        summary = {**summary, "scored_images": min(int(s["search_images"]), len(data.heldout))}
        write_json_atomic(out / "search" / "search.json", summary)
    else:
        echo("[1/3] supernet and [2/3] greedy search: finished before (the supernet checkpoint is not needed)")
    rows = retrain_stage(s, out, summary["found"], resume=resume, progress=progress, echo=echo, jobs=jobs)
    search_text = (f"{summary['steps']} greedy steps, {summary['evaluations']} supernet evaluations.\n\n"
                   "![accuracy along the greedy path](search/trajectory.png)\n\n![channels per unit](search/widths.png)")
    report = write_report(out, s, rows, title="AutoSlim run", how="Greedy search", search_text=search_text,
                          scored_images=summary["scored_images"])
    return {"targets": rows, "report": str(report), "report_json": str(out / "report.json"),
            "plot": str(out / "accuracy.png"), "search": str(out / "search")}


def searched_without_supernet(out: Path, s: Mapping[str, Any], scoring: Mapping[str, Any]) -> dict[str, Any] | None:
    """The summary of the run's finished search when its supernet checkpoint is gone; None while the
    checkpoint is there (the search is then checked against it) or before a supernet was trained.

    The retraining needs only the found configs, so a run folder kept or moved without
    ``supernet/supernet.pt`` resumes from ``supernet/result.json`` and ``search/``. What those
    record must agree with the run (model, data, supernet epochs, width, groups, targets, scoring);
    a search that did not finish cannot go on without its supernet and is refused.
    """
    supernet, search = out / "supernet", out / "search"
    if (supernet / "supernet.pt").exists() or not (supernet / "result.json").exists():
        return None
    if not (search / "search.json").exists():
        raise UserError(f"{supernet / 'supernet.pt'} is gone and the search has not finished; the search needs "
                        "its supernet: put the checkpoint back, or start over in another --out")
    trained = json.loads((supernet / "result.json").read_text())
    summary = json.loads((search / "search.json").read_text())
    state = json.loads((search / STATE_FILE).read_text())
    if "scored_images" not in summary:  # written before the report's numbers were kept with the search
        raise UserError(f"{search / 'search.json'} predates resuming without the supernet; put "
                        f"{supernet / 'supernet.pt'} back to resume this run")
    if "args" in trained:  # the whole recipe, checked as the checkpoint's would be
        from widthsearch.training.loop import resolve_args
        from widthsearch.training.slimmable import SUPERNET_TRAINING

        resolve_args(supernet_args(s, {"strategy": "autoslim"}), SUPERNET_TRAINING.defaults(), trained["args"])
    recorded = {"model": trained.get("model"), "epochs": trained.get("epochs"),
                "width_mult": trained.get("width_mult"), "groups": trained.get("groups")}
    for key, value in recorded.items():
        if value != s[key]:
            raise UserError(f"--{key.replace('_', '-')} {s[key]} differs from the saved run's {value}; resume with "
                            "the same settings or use a new --out")
    if not same_data_spec(s["data"], trained.get("data")):
        raise UserError(f"--data {s['data']} differs from the saved run's {trained.get('data')}; resume with the "
                        "same data or use a new --out")
    wanted = [["flops", float(t) * trained["max_flops"]] for t in s["targets"]]
    if state["scoring"] != dict(scoring) or not same_targets(state["targets"], wanted):
        raise UserError(f"the saved search in {search} was run with other targets or scoring; resume with the same "
                        "settings or use a new --out")
    return rehome_paths(summary, out)


def prepare_run_folder(out_dir: str | Path, resume: bool) -> Path:
    """The run folder, refusing to reuse a non-empty one unless resuming."""
    out = Path(out_dir)
    if (out / "report.md").exists() and not resume:
        raise UserError(f"{out} already holds a finished run (report.md); use another --out")
    if folder_has_content(check_folder(out)) and not resume:  # the CLI's lock file alone is no content
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
    train_supernet(supernet_args(s, extra), out / "supernet", resume=resume and (out / "supernet" / "supernet.pt").exists(),
                   progress=progress)
    return load_supernet(out / "supernet", resolve_device(s["device"]))


def supernet_args(s: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """The run's settings as :func:`~widthsearch.training.slimmable.train_supernet` takes them."""
    return {
        "model": s["model"], "model_kwargs": s.get("model_kwargs"), "data": s["data"], "width_mult": s["width_mult"],
        "groups": s["groups"],
        "epochs": s["epochs"], "batch_size": s["batch_size"], "lr": s["lr"], "seed": s["seed"],
        "threads": s["threads"], "device": s["device"], **extra,
    }


def retrain_stage(s: Mapping[str, Any], out: Path, found: Sequence[Mapping[str, Any]], *, resume: bool,
                  progress: bool, echo: Callable[[str], None], jobs: int = 1) -> list[dict[str, Any]]:
    """Retrain every found config and the uniform-width net of its FLOPs under every seed of ``s["seeds"]``.

    Each network and seed trains in ``retrain/<name>/seed-<k>/`` with one recipe, up to ``jobs`` at a
    time (:func:`~widthsearch.methods.retraining.retrain_pairs`); the row of a target compares the
    two over the seeds on the test images (:func:`~widthsearch.methods.comparison.compare_networks`).
    """
    seeds, jobs = check_seeds(s["seeds"]), check_jobs(jobs)
    count = 2 * len(found) * len(seeds)
    echo(f"[3/3] retrain {', '.join(e['target'] for e in found)} and their uniform baselines, seeds "
         f"{','.join(map(str, seeds))}: {count} trainings" + (f", up to {jobs} at a time" if jobs > 1 else ""))
    # the cheapest target's trainings first: a run stopped inside this long stage (a session's end)
    # has then finished the most of them; the order changes no number
    order = sorted(range(len(found)), key=lambda i: found[i]["flops"])
    pairs = [((e["target"], {"channels": e["config"]}), (f"uniform-{e['target']}", {"uniform_flops": float(e["flops"])}))
             for e in (found[i] for i in order)]
    trained = dict(zip(order, retrain_pairs(s, out, pairs, resume=resume, progress=progress, jobs=jobs, echo=echo)))
    rows = []
    for i, entry in enumerate(found):
        searched, uniform, comparison = trained[i]
        rows.append({
            "target": entry["target"], "target_flops": int(entry["value"]), "flops": entry["flops"],
            "params": entry["params"], "config": entry["config"], "heldout_accuracy": entry["heldout_accuracy"],
            "accuracy": comparison["found"]["mean"], "uniform_flops": uniform[0]["flops"],
            "uniform_params": uniform[0]["params"], "uniform_accuracy": comparison["base"]["mean"],
            "comparison": comparison,
        })
    return rows


def retrain_pair(s: Mapping[str, Any], out: Path, found: tuple[str, Mapping[str, Any]],
                 base: tuple[str, Mapping[str, Any]], *, resume: bool, progress: bool, jobs: int = 1,
                 echo: Callable[[str], None] | None = None,
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Retrain two networks with one recipe under every seed of ``s["seeds"]`` and compare them.

    ``found`` and ``base`` are ``(folder name, network)`` with the network as
    :func:`~widthsearch.training.retrain.train_network` names it (``channels=``, ``uniform_flops=``);
    each seed trains ``retrain/<name>/seed-<k>/``, the found net first, up to ``jobs`` at a time.
    Returns both nets' training results (one per seed) and
    :func:`~widthsearch.methods.comparison.compare_networks` over the test images.
    """
    return retrain_pairs(s, out, [(found, base)], resume=resume, progress=progress, jobs=jobs, echo=echo)[0]


def write_report(out: Path, settings: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                 *, title: str, how: str, search_text: str, scored_images: int) -> Path:
    """``report.md`` (and the same numbers in ``report.json``): the retrained configs against their
    uniform baselines over the seeds, then the search."""
    seeds = rows[0]["comparison"]["seeds"] if rows else list(settings["seeds"])
    images = rows[0]["comparison"]["test_images"] if rows else 0
    lines = [
        f"# {title}",
        "",
        f"Model `{settings['model']}` (supernet width x{settings['width_mult']}, {settings['groups']} groups per unit) "
        f"on `{settings['data']}`; supernet {settings['epochs']} epochs (seed {settings['seed']}), retraining "
        f"{settings['retrain_epochs']} epochs under seeds {', '.join(map(str, seeds))}. {how} scored candidates on "
        f"{scored_images} held-out training images (BN: {settings['bn']}); accuracies below are on the {images} "
        f"test images (one image is {100 / max(1, images):.2f} points), mean ± standard deviation over the seeds.",
        "",
        "| target | FLOPs | params | accuracy | uniform FLOPs | uniform accuracy | delta | 95 % interval, seeds "
        "| 95 % interval, test images | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["comparison"]
        lines.append(
            f"| {r['target']} | {format_count(r['flops'])} | {format_count(r['params'])} | "
            f"{format_mean_std(c['found'])} | "
            f"{format_count(r['uniform_flops'])} | {format_mean_std(c['base'])} | {100 * c['delta']:+.2f} | "
            f"{format_interval(c['t_interval'])} | {format_interval(c['bootstrap_interval'])} | {c['verdict']} |"
        )
    lines += [
        "",
        "Delta: searched minus uniform accuracy in points, averaged over the seeds; per seed: "
        + "; ".join(f"{r['target']} " + ", ".join(f"{100 * d:+.2f}" for d in r["comparison"]["deltas"]) for r in rows)
        + ". The first interval is a paired t-interval over the per-seed deltas (training noise), the second a "
        "paired bootstrap over the test images pooled across the seeds (test-set noise); a difference is called "
        "significant only when neither contains 0.",
    ]
    plot = _plot_retrained(out, rows, title) if rows else None
    if plot:
        lines += ["", f"![retrained accuracy against FLOPs]({plot.name})"]
    links = ", ".join(f"[{r['target']}]({os.path.relpath(r['config'], out)})" for r in rows)
    lines += ["", search_text, "", f"Configs: {links}", ""]
    path = out / "report.md"
    write_text_atomic(path, "\n".join(lines))
    write_json_atomic(out / "report.json", {"title": title, "settings": dict(settings), "scored_images": scored_images,
                                            "test_images": images, "seeds": seeds, "targets": list(rows),
                                            "plot": str(plot) if plot else None})
    return path


def _plot_retrained(out: Path, rows: Sequence[Mapping[str, Any]], title: str) -> Path:
    """``accuracy.png``: the retrained searched nets and their uniform baselines, accuracy against FLOPs."""
    from widthsearch.plots import plot_accuracy_vs_flops

    searched, uniform = retrained_points(rows)
    return plot_accuracy_vs_flops([("searched", searched), ("uniform width", uniform)], out / "accuracy.png",
                                  title=f"{title}: retrained searched nets vs uniform width of the same FLOPs")

