"""SP-Net against S-Net on equal training compute: ``widthsearch run --method spnet``.

The SP-Net issue's experiment, as one resumable command. For every seed of ``seeds``:

* **SP-Net arm** (``spnet/seed-<k>/``): :func:`~widthsearch.methods.spnet.run_spnet` with residual
  ``pad`` (zero-padding match): bases -> multi-base pruning -> sorting -> joint fine-tune -> static nets;
* **S-Net arm** (``snet/seed-<k>/``): the uniform-width nets of the same FLOPs targets
  (``snet/configs/``, one tied-residual space) trained jointly *from scratch* with the same joint
  losses (largest CE, the others ``kd_weight`` KD + the rest CE, per-subnet BN statistics), for
  the number of epochs whose training compute matches the SP-Net arm's (:func:`matching_epochs`);
* **ablation** ``nopad`` (``nopad/seed-<k>/``, optional): the SP-Net arm again with residual
  ``tie``: every residual stream is one unit, so the blocks of a stage share one count and one
  channel order, instead of each operand keeping its own count joined by zero padding. Base
  training does not depend on the residual policy, so this arm starts from copies of the SP-Net
  arm's trained bases and costs one pruning and one fine-tune.

``report.md`` / ``report.json`` compare the arms per target over the seeds on the test images with
:func:`~widthsearch.methods.comparison.compare_networks` (per-seed deltas, t-interval over seeds,
paired bootstrap over test images, verdict) and check the issue's goals.

**Compute** is counted as training forward MACs: (MACs of one image's forward pass) x (training
images per epoch) x epochs, summed over the networks a step runs. A joint step runs every
sub-network forward once (the largest one's output is also the distillation target, so there is no
separate teacher pass) and backward once, and a base step runs the base once each way; backward
costs the same multiple of forward in both arms, so counting forwards compares them exactly.
Evaluation and BN calibration passes (the same per epoch in both joint trainings) are not training
and are not counted. See docs/methods/spnet.md.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from widthsearch.errors import UserError
from widthsearch.formatting import format_count
from widthsearch.io import write_json_atomic, write_text_atomic
from widthsearch.methods.comparison import compare_networks, format_interval, format_mean_std, retrained_points
from widthsearch.methods.run_state import load_run_state
from widthsearch.methods.spnet import (SPNET_DEFAULTS, RESUMABLE, SpnetPlan, export_joint_members, run_spnet,
                                       spnet_data, spnet_settings)

__all__ = ["ABLATIONS", "GOALS", "arm_folder", "epoch_images", "goals", "matching_epochs", "run_spnet_experiment",
           "seed_stages", "spnet_compute", "training_macs"]

STATE_FILE = "experiment_state.json"
STATE_VERSION = 1
#: the issue's protocol: seeds 0 and 1
DEFAULT_SEEDS = (0, 1)
#: extra arms of the experiment: ``nopad`` is SP-Net without zero-padding match (residual tie)
ABLATIONS = ("nopad",)
#: the issue's goals for SP-Net minus S-Net accuracy (fractions): at the smallest target, at the
#: ones between, at the largest (the paper reports +0.5 to +2.0 points on ImageNet ResNet-50)
GOALS = {"smallest": 0.005, "middle": 0.0, "largest": -0.003}
#: settings that may differ on a resume: SP-Net's own (they do not change the computation beyond
#: float rounding), and the ablation: given (or left out) on a resume it adds its arm to the run (or
#: leaves it out of the report); and the seeds: each seed's arms depend on that seed alone, so a
#: resume with more seeds trains theirs and reports over all of them
_RESUMABLE = RESUMABLE | {"ablation", "seeds"}
#: the settings of a joint training that both arms share
_JOINT_KEYS = ("model", "data", "batch_size", "lr", "heldout_fraction", "threads", "device", "kd_weight",
               "calib_images")


# ---- compute accounting ---------------------------------------------------------------------------
def epoch_images(train_images: int, batch_size: int) -> int:
    """Images one epoch trains on: the loader drops the last incomplete batch."""
    return train_images // batch_size * batch_size


def training_macs(epochs: float, macs: Sequence[int], images: int) -> int:
    """Forward MACs of ``epochs`` epochs of ``images`` images, each image running every network of
    ``macs`` (MACs per image) forward once."""
    return int(round(epochs * images * sum(int(m) for m in macs)))


def spnet_compute(base_epochs: int, base_macs: Sequence[int], finetune_epochs: int, subnet_macs: Sequence[int],
                  images: int) -> dict[str, Any]:
    """SP-Net's training compute: every base trained alone, then the sub-networks jointly."""
    bases = [training_macs(base_epochs, [m], images) for m in base_macs]
    finetune = training_macs(finetune_epochs, subnet_macs, images)
    return {"images_per_epoch": images, "bases": bases, "finetune": finetune, "total": sum(bases) + finetune}


def matching_epochs(total: int, macs: Sequence[int], images: int) -> tuple[int, float]:
    """``(epochs, exact)``: the whole number of joint epochs of the nets ``macs`` closest to
    ``total`` training MACs (at least one; the training loop runs whole epochs), and the exact
    fractional number."""
    exact = total / (images * sum(int(m) for m in macs))
    return max(1, round(exact)), exact


def goals(count: int) -> list[float]:
    """The goal of each of ``count`` targets (ascending): smallest, middle ones, largest."""
    return [GOALS["smallest"], *[GOALS["middle"]] * (count - 2), GOALS["largest"]]


# ---- settings -------------------------------------------------------------------------------------
def experiment_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """SP-Net's settings (:func:`~widthsearch.methods.spnet.spnet_settings`, generic ``run`` names
    included) without its single ``seed``, plus ``seeds`` (default 0,1; a lone ``seed`` is one seed)
    and ``ablation`` (None or ``"nopad"``)."""
    from widthsearch.methods.autoslim import check_seeds

    given = {k: v for k, v in settings.items() if v is not None}
    s = spnet_settings(given)  # without ``jobs``: how the seeds are spread, not what they compute
    del s["seed"]  # every arm runs under each of the seeds
    seeds = given.get("seeds", (given["seed"],) if "seed" in given else DEFAULT_SEEDS)
    s["seeds"] = list(check_seeds(seeds))
    ablation = given.get("ablation")
    if ablation is not None and ablation not in ABLATIONS:
        raise UserError(f"--ablation {ablation!r}: choose from {', '.join(ABLATIONS)}")
    if ablation == "nopad" and s["residual"] != "pad":
        raise UserError("--ablation nopad removes zero-padding match: the SP-Net arm must use residual pad")
    s["ablation"] = ablation
    return s


def _arm_settings(s: Mapping[str, Any], seed: int, residual: str) -> dict[str, Any]:
    return {**{k: v for k, v in s.items() if k in SPNET_DEFAULTS}, "seed": seed, "residual": residual}


# ---- the experiment -------------------------------------------------------------------------------
def run_spnet_experiment(
    settings: Mapping[str, Any],
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
    stop_after: Callable[[str], bool] | None = None,
) -> dict[str, Any]:
    """SP-Net vs S-Net (and the ``nopad`` ablation) under every seed, in ``out_dir``; see the module doc.

    Every arm is resumable on its own (SP-Net's state file, the joint checkpoint after every epoch),
    and ``experiment_state.json`` records each finished arm, so ``resume=True`` continues a killed
    run to the same report. ``stop_after(stage)`` returning True ends the call after a stage
    (``spnet:<seed>``, ``snet:<seed>``, ``nopad:<seed>``, or SP-Net's own stages as
    ``spnet:<seed>:<stage>``); tests interrupt with it. Returns ``{"stopped_after": stage}`` then.
    ``settings["jobs"]`` > 1 runs the seeds side by side in worker processes, to the same numbers.
    """
    from widthsearch.methods.autoslim import prepare_run_folder
    from widthsearch.methods.retraining import check_jobs

    s = experiment_settings(settings)
    jobs = check_jobs(settings.get("jobs"))
    if jobs > 1 and stop_after is not None:
        raise ValueError("stop_after interrupts the arms of one process: give it with jobs 1")
    out = Path(out_dir)
    plan = SpnetPlan(_arm_settings(s, s["seeds"][0], s["residual"]))  # every check before anything is written
    out = prepare_run_folder(out, resume)
    state = None
    if resume:
        state = load_run_state(out / STATE_FILE, s, version=STATE_VERSION, mutable=_RESUMABLE)
    state = state or {"version": STATE_VERSION, "arms": {}}
    state["settings"] = s
    say = echo or (lambda line: None)
    arms: dict[str, Any] = state["arms"]
    images = epoch_images(len(plan.data.train), int(s["batch_size"]))
    snet_configs = _snet_configs(s, plan, out / "snet" / "configs")

    def save() -> None:
        write_json_atomic(out / STATE_FILE, state)

    def finished(stage: str, result: Mapping[str, Any]) -> bool:
        arms[stage] = dict(result)
        save()
        return bool(stop_after and stop_after(stage))

    save()
    if jobs > 1:
        _seeds_in_processes(s, out, images, snet_configs, arms, jobs, say, save)
    else:
        for n, seed in enumerate(s["seeds"], start=1):
            stopped = _seed_arms(s, seed, f", seed {seed} ({n}/{len(s['seeds'])})", out, images, snet_configs,
                                 plan.data, arms, finished, progress, echo, stop_after)
            if stopped:
                return {"stopped_after": stopped}
    say("== report")
    return _report(out, s, plan, arms, snet_configs)


def seed_stages(s: Mapping[str, Any], seed: int) -> list[str]:
    """The arms of one seed in their order, as ``<arm>:<seed>`` (the keys of the state's ``arms``)."""
    return [f"spnet:{seed}", f"snet:{seed}"] + ([f"nopad:{seed}"] if s.get("ablation") == "nopad" else [])


def arm_folder(out: Path, stage: str) -> Path:
    """The folder of the arm ``<arm>:<seed>``: ``out/<arm>/seed-<seed>``."""
    arm, seed = stage.split(":")
    return out / arm / f"seed-{seed}"


def _seed_arms(s: Mapping[str, Any], seed: int, where: str, out: Path, images: int,
               snet_configs: Sequence[Mapping[str, Any]], data, arms: dict[str, Any],
               finished: Callable[[str, Mapping[str, Any]], bool], progress: bool, echo,
               stop_after: Callable[[str], bool] | None) -> str | None:
    """One seed's arms not yet in ``arms``, in order (S-Net needs SP-Net's compute, the ablation its
    bases); ``finished(stage, arm)`` records each and returns True to stop there. Returns the stage
    the run stopped after, or None when every arm of the seed is done. ``where`` ends each arm's
    heading (", seed 0 (1/2)"; empty where every line names its seed already)."""
    say = echo or (lambda line: None)
    stage = f"spnet:{seed}"
    if stage not in arms:
        say(f"== SP-Net arm{where}: bases, pruning, sorting, joint fine-tune (residual pad)")
        arm = _spnet_arm(s, seed, "pad", arm_folder(out, stage), images, progress, echo,
                         _nested(stop_after, stage))
        if arm is None or finished(stage, arm):
            return stage
    stage = f"snet:{seed}"
    if stage not in arms:
        epochs, exact = matching_epochs(arms[f"spnet:{seed}"]["compute"]["total"],
                                        [c["flops"] for c in snet_configs], images)
        say(f"== S-Net arm{where}: {len(snet_configs)} uniform nets jointly from scratch, {epochs} epochs "
            f"(SP-Net's compute is {exact:.2f})")
        arm = _snet_arm(s, seed, snet_configs, epochs, arm_folder(out, stage), data, progress, echo)
        arm.update(exact_epochs=exact, compute=training_macs(epochs, [c["flops"] for c in snet_configs], images))
        if finished(stage, arm):
            return stage
    stage = f"nopad:{seed}"
    if s["ablation"] == "nopad" and stage not in arms:
        say(f"== ablation without zero-padding match{where}: the same bases, residual tie")
        folder = arm_folder(out, stage)
        _share_bases(arm_folder(out, f"spnet:{seed}"), folder, s["bases"])
        arm = _spnet_arm(s, seed, "tie", folder, images, progress, echo, _nested(stop_after, stage))
        if arm is None or finished(stage, arm):
            return stage
    return None


def _seeds_in_processes(s: Mapping[str, Any], out: Path, images: int, snet_configs: Sequence[Mapping[str, Any]],
                        arms: dict[str, Any], jobs: int, say: Callable[[str], None], save: Callable[[], None]) -> None:
    """``--jobs N``: the seeds' chains of arms side by side in up to N worker processes (one seed's
    arms stay in order). A chain's arms are recorded when it returns; a run killed before that
    resumes them from their own folders, which every arm checkpoints on its own."""
    from widthsearch.workers import Task, run_in_processes

    seeds = [seed for seed in s["seeds"] if any(stage not in arms for stage in seed_stages(s, seed))]
    if not seeds:
        return
    say(f"== seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}: every arm, up to {jobs} seeds at a time")
    done = {seed: {k: v for k, v in arms.items() if k in seed_stages(s, seed)} for seed in seeds}
    tasks = [Task(f"seed {seed}", _seed_in_worker, (dict(s), seed, str(out), images, list(snet_configs), done[seed]))
             for seed in seeds]

    def recorded(index: int, result: Mapping[str, Any]) -> None:
        arms.update(result)
        save()
        say(f"== seed {seeds[index]}: every arm done")

    run_in_processes(tasks, jobs, on_done=recorded)


def _seed_in_worker(s: Mapping[str, Any], seed: int, out: str, images: int, snet_configs: list, done: dict) -> dict:
    """:func:`_seed_arms` in a worker process: epoch lines instead of progress bars (workers share
    one terminal), each naming its seed; returns the seed's arms."""
    from widthsearch.methods.retraining import worker_say

    arms = dict(done)
    data = spnet_data(_arm_settings(s, seed, s["residual"]))  # the data alone: no plan (FLOPs, targets) needed

    def finished(stage: str, arm: Mapping[str, Any]) -> bool:
        arms[stage] = dict(arm)
        return False

    _seed_arms(s, seed, "", Path(out), images, snet_configs, data, arms, finished, False,
               functools.partial(worker_say, f"seed {seed}"), None)
    return arms


def _nested(stop_after: Callable[[str], bool] | None, prefix: str) -> Callable[[str], bool] | None:
    return None if stop_after is None else (lambda stage: stop_after(f"{prefix}:{stage}"))


def _spnet_arm(s: Mapping[str, Any], seed: int, residual: str, folder: Path, images: int, progress: bool,
               echo, stop) -> dict[str, Any] | None:
    """One SP-Net run (resumed when its folder holds one); None when ``stop`` ended it early."""
    summary = run_spnet(_arm_settings(s, seed, residual), folder, resume=True, progress=progress, echo=echo,
                        stop_after=stop)
    if "report" not in summary:
        return None
    subnets = [{k: r[k] for k in ("target_flops", "base", "config", "flops", "params", "accuracy", "static")}
               for r in summary["subnets"]]
    bases = [{k: b[k] for k in ("width", "flops", "accuracy", "checkpoint")} for b in summary["bases"]]
    compute = spnet_compute(s["base_epochs"], [b["flops"] for b in bases], s["finetune_epochs"],
                            [r["flops"] for r in subnets], images)
    return {"folder": str(folder), "report": summary["report"], "subnets": subnets, "bases": bases,
            "compute": compute}


def _share_bases(source: Path, folder: Path, widths: Sequence[float]) -> None:
    """Copy the trained bases of ``source`` into ``folder``, where :func:`run_spnet` resumes them as
    finished trainings (a base is trained without the residual policy, so it is the same network).
    A copy lands by renaming a finished temporary copy, so a kill leaves none half-written."""
    for width in widths:
        name = f"{width:g}"
        target = folder / "bases" / name
        if target.exists():
            continue
        partial = folder / "bases" / f".{name}.copying"
        if partial.exists():
            shutil.rmtree(partial)  # a copy a kill interrupted
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source / "bases" / name, partial)
        os.replace(partial, target)


def _snet_configs(s: Mapping[str, Any], plan: SpnetPlan, folder: Path) -> list[dict[str, Any]]:
    """S-Net's sub-networks: per target, the widest uniform net (every unit of the largest base
    scaled by one ratio) within it, in the tied-residual space of the largest base. With the default
    targets these are the nets at 0.5x, 0.75x and 1.0x the largest base's width."""
    from widthsearch.space import build_supernet
    from widthsearch.space.config import save_config

    net, spec = build_supernet(dataclasses.replace(plan.largest, residual="tie"))
    space = net.space
    spec = spec.with_physical({u.name: u.max for u in space.units})
    rows = []
    for k, target in enumerate(plan.targets):
        config = space.uniform_config_for_flops(target)
        cost = space.cost(config)
        if cost.flops > target:
            raise UserError(f"no uniform net of {s['model']} is within {format_count(target)} FLOPs (one channel per "
                            f"unit is {format_count(cost.flops)}); raise the smallest target")
        # rewritten identically by every call: the file is a function of the settings
        path = save_config(folder / f"uniform-{k + 1}.yaml", space, config, model=s["model"], space=spec.to_dict(),
                           target_flops=int(round(target)))
        rows.append({"target_flops": int(round(target)), "config": str(path), "flops": cost.flops,
                     "params": cost.params})
    return rows


def _snet_arm(s: Mapping[str, Any], seed: int, configs: Sequence[Mapping[str, Any]], epochs: int, folder: Path,
              data, progress: bool, echo) -> dict[str, Any]:
    """The uniform nets trained jointly from scratch (no BN L1, the model's own BN init), then exported."""
    from widthsearch.training.joint import train_joint

    again = (folder / "joint.pt").exists()  # a killed training continues from its last epoch
    args = {**{k: s[k] for k in _JOINT_KEYS}, "seed": seed, "epochs": epochs, "residual": "tie"}
    result = train_joint(args, folder, channels=None if again else [c["config"] for c in configs], resume=again,
                         progress=progress, echo=echo)
    subnets = [dict(c) for c in configs]
    export_joint_members(folder, result["checkpoint"], subnets, data, s["device"])
    return {"folder": str(folder), "epochs": epochs, "checkpoint": result["checkpoint"], "subnets": subnets}


# ---- report ---------------------------------------------------------------------------------------
def _correct(path: str, test, device) -> list[bool]:
    """Per test image, whether the static net saved at ``path`` gets it right."""
    from widthsearch.export import load_static
    from widthsearch.training.evaluate import correct_predictions

    model, _ = load_static(path)
    return correct_predictions(model.to(device), test.x, test.y).tolist()


def _named_verdict(comparison: dict[str, Any], better: str, worse: str) -> dict[str, Any]:
    """compare_networks speaks of "searched" and "baseline"; here the arms have names."""
    names = {"searched better": f"{better} better", "baseline better": f"{worse} better"}
    return {**comparison, "verdict": names.get(comparison["verdict"], comparison["verdict"])}


def _goal_check(comparison: Mapping[str, Any], goal: float) -> dict[str, Any]:
    """Is the mean delta at least ``goal``, and do both intervals lie at or above it?"""
    lows = [i[0] for i in (comparison["t_interval"], comparison["bootstrap_interval"]) if i is not None]
    return {"goal": goal, "goal_met": comparison["delta"] >= goal,
            "goal_met_by_intervals": comparison["t_interval"] is not None and min(lows) >= goal}


def _compare(s: Mapping[str, Any], found: Sequence[Mapping[str, Any]], base: Sequence[Mapping[str, Any]],
             correct: Callable[[str], list[bool]], names: tuple[str, str], label: str,
             with_goals: bool = True) -> list[dict[str, Any]]:
    """One row per target: arm ``found`` (one summary per seed) against arm ``base``, checked
    against the issue's goals when ``with_goals``."""
    rows = []
    for k, goal in enumerate(goals(len(found[0]["subnets"]))):
        a = [arm["subnets"][k] for arm in found]
        b = [arm["subnets"][k] for arm in base]
        comparison = _named_verdict(compare_networks([correct(r["static"]) for r in a],
                                                     [correct(r["static"]) for r in b], s["seeds"]), *names)
        rows.append({
            "target": format_count(a[0]["target_flops"]) + label, "target_flops": a[0]["target_flops"],
            "flops": sum(r["flops"] for r in a) / len(a), "flops_per_seed": [r["flops"] for r in a],
            "params": sum(r["params"] for r in a) / len(a), "accuracy": comparison["found"]["mean"],
            "uniform_flops": sum(r["flops"] for r in b) / len(b), "uniform_flops_per_seed": [r["flops"] for r in b],
            "uniform_params": sum(r["params"] for r in b) / len(b), "uniform_accuracy": comparison["base"]["mean"],
            "baseline": names[1], "comparison": comparison, **(_goal_check(comparison, goal) if with_goals else {}),
        })
    return rows


def _report(out: Path, s: Mapping[str, Any], plan: SpnetPlan, arms: Mapping[str, Any],
            snet_configs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    from widthsearch.training.distributed import resolve_device

    test, device = plan.data.test, resolve_device(s["device"])
    cache: dict[str, list[bool]] = {}

    def correct(path: str) -> list[bool]:
        if path not in cache:
            cache[path] = _correct(path, test, device)
        return cache[path]

    seeds = s["seeds"]
    sp = [arms[f"spnet:{k}"] for k in seeds]
    sn = [arms[f"snet:{k}"] for k in seeds]
    targets = _compare(s, sp, sn, correct, ("SP-Net", "S-Net"), "")
    ablation, zpm = [], []
    if s["ablation"] == "nopad":
        nopad = [arms[f"nopad:{k}"] for k in seeds]
        ablation = _compare(s, nopad, sn, correct, ("SP-Net without zpm", "S-Net"), " (no zpm)")
        zpm = _compare(s, sp, nopad, correct, ("zpm", "no zpm"), " (zpm effect)", with_goals=False)
    compute = [_compute_row(k, arms) for k in seeds]
    result = {"targets": targets, "ablation": ablation, "zpm_effect": zpm, "compute": compute,
              "snet_configs": list(snet_configs), "test_images": len(test), "seeds": list(seeds),
              "plot": str(_plot(out, targets, ablation)),
              "report": str(out / "report.md"), "report_json": str(out / "report.json")}
    write_text_atomic(out / "report.md", _report_text(out, s, plan, result, arms))
    write_json_atomic(out / "report.json", {"title": "SP-Net vs S-Net", "settings": dict(s), **result})
    return result


def _plot(out: Path, targets: Sequence[Mapping[str, Any]], ablation: Sequence[Mapping[str, Any]]) -> Path:
    """``accuracy.png``: every arm's test accuracy against its FLOPs (the mean over the seeds)."""
    from widthsearch.plots import plot_accuracy_vs_flops

    spnet, snet = retrained_points(targets)
    series = [("SP-Net", spnet), ("S-Net", snet)]
    if ablation:
        series.append(("SP-Net without zero-padding match", retrained_points(ablation)[0]))
    return plot_accuracy_vs_flops(series, out / "accuracy.png", title="SP-Net vs S-Net on equal training compute")


def _compute_row(seed: int, arms: Mapping[str, Any]) -> dict[str, Any]:
    sp, sn = arms[f"spnet:{seed}"], arms[f"snet:{seed}"]
    row = {"seed": seed, "images_per_epoch": sp["compute"]["images_per_epoch"], "spnet": sp["compute"],
           "snet": {"epochs": sn["epochs"], "exact_epochs": sn["exact_epochs"], "total": sn["compute"]},
           "snet_over_spnet": sn["compute"] / sp["compute"]["total"]}
    if f"nopad:{seed}" in arms:
        row["nopad"] = arms[f"nopad:{seed}"]["compute"]
        row["snet_over_nopad"] = sn["compute"] / row["nopad"]["total"]
    return row


def _tera(value: float) -> str:
    """A compute total (MACs x images): ``format_count`` with tera for CIFAR-sized runs."""
    return f"{value / 1e12:.2f}T" if value >= 1e12 else format_count(value)


def _flops(values: Sequence[float]) -> str:
    low, high = min(values), max(values)
    return format_count(low) if low == high else f"{format_count(low)}–{format_count(high)}"


def _goal_text(r: Mapping[str, Any]) -> str:
    verdict = "met" if r["goal_met"] else "not met"
    if r["goal_met_by_intervals"]:
        verdict += " (both intervals)"
    return f"≥ {100 * r['goal']:+.2f}: {verdict}"


def _table(rows: Sequence[Mapping[str, Any]], names: tuple[str, str], goal: bool) -> list[str]:
    a, b = names
    head = (f"| target | {a} FLOPs | {b} FLOPs | {a} accuracy | {b} accuracy | delta | 95 % interval, seeds "
            f"| 95 % interval, test images | verdict |" + (" goal |" if goal else ""))
    lines = [head, "|" + "---|" * (9 + goal)]
    for r in rows:
        c = r["comparison"]
        lines.append(f"| {format_count(r['target_flops'])} | {_flops(r['flops_per_seed'])} | "
                     f"{_flops(r['uniform_flops_per_seed'])} | {format_mean_std(c['found'])} | {format_mean_std(c['base'])} | "
                     f"{100 * c['delta']:+.2f} | {format_interval(c['t_interval'])} | {format_interval(c['bootstrap_interval'])} "
                     f"| {c['verdict']} |" + (f" {_goal_text(r)} |" if goal else ""))
    lines += ["", "Per-seed deltas (points): " + "; ".join(
        f"{format_count(r['target_flops'])} " + ", ".join(f"{100 * d:+.2f}" for d in r["comparison"]["deltas"])
        for r in rows) + "."]
    return lines


def _report_text(out: Path, s: Mapping[str, Any], plan: SpnetPlan, result: Mapping[str, Any],
                 arms: Mapping[str, Any]) -> str:
    seeds, images = result["seeds"], result["test_images"]
    bases = ", ".join(f"x{w:g}" for w in s["bases"])
    lines = [
        "# SP-Net vs S-Net",
        "",
        f"Model `{s['model']}` on `{s['data']}`, seeds {', '.join(map(str, seeds))}, batch {s['batch_size']}, peak "
        f"lr {s['lr']}. **SP-Net**: bases {bases}, {s['base_epochs']} epochs each (L1 {s['bn_l1']:g} on the BN "
        f"scales, initialised at {s['bn_init']}), sub-networks pruned to the targets with zero-padding match, "
        f"sorted, fine-tuned jointly for {s['finetune_epochs']} epochs. **S-Net**: the uniform nets of the same "
        f"targets trained jointly from scratch with the same joint losses (largest CE, the others "
        f"{s['kd_weight']} KD + {1 - s['kd_weight']:.2g} CE, per-subnet BN statistics), for the epochs that match "
        f"SP-Net's training compute (below). Accuracies are on the {images} test images (one image is "
        f"{100 / max(1, images):.2f} points), mean ± standard deviation over the seeds; delta is SP-Net minus S-Net "
        "in points.",
        "",
        *_table(result["targets"], ("SP-Net", "S-Net"), goal=True),
        "",
        "The first interval is a paired t-interval over the per-seed deltas (training noise), the second a paired "
        "bootstrap over the test images pooled across the seeds (test-set noise); a difference is called significant "
        "only when neither contains 0. Goals (the issue's): SP-Net minus S-Net at least +0.50 points at the smallest "
        "target, 0 at the middle, -0.30 at the largest; *met* compares the mean delta, *(both intervals)* says that "
        "both intervals lie at or above the goal.",
        "",
        f"![test accuracy against FLOPs, every arm]({os.path.basename(result['plot'])})",
    ]
    if result["ablation"]:
        lines += [
            "", "## Ablation: SP-Net without zero-padding match", "",
            "The SP-Net arm again with residual `tie` (from the same trained bases): every residual stream is one "
            "unit, so all blocks of a stage share one channel count and one order (|gamma| summed over the stream's "
            "batch norms), instead of each block's output and shortcut keeping its own count, joined by zero "
            "padding.", "",
            *_table(result["ablation"], ("no zpm", "S-Net"), goal=True),
            "", "Zero-padding match itself (SP-Net minus its ablation):", "",
            *_table(result["zpm_effect"], ("zpm", "no zpm"), goal=False),
        ]
    lines += ["", "## Training compute", "",
              "Forward MACs x training images x epochs (backward is the same multiple of forward in both arms); "
              "SP-Net counts its bases. The S-Net arm trains the whole number of epochs closest to SP-Net's compute.",
              "", "| seed | images/epoch | SP-Net bases | SP-Net fine-tune | SP-Net total | S-Net epochs (exact) | S-Net "
              "total | S-Net / SP-Net |" + (" no-zpm total | S-Net / no-zpm |" if result["ablation"] else ""),
              "|" + "---|" * (8 + 2 * bool(result["ablation"]))]
    for c in result["compute"]:
        sp = c["spnet"]
        line = (f"| {c['seed']} | {c['images_per_epoch']} | {' + '.join(_tera(b) for b in sp['bases'])} | "
                f"{_tera(sp['finetune'])} | {_tera(sp['total'])} | {c['snet']['epochs']} "
                f"({c['snet']['exact_epochs']:.2f}) | {_tera(c['snet']['total'])} | {c['snet_over_spnet']:.3f} |")
        if "nopad" in c:
            line += f" {_tera(c['nopad']['total'])} | {c['snet_over_nopad']:.3f} |"
        lines.append(line)
    links = [f"[SP-Net seed {k}]({os.path.relpath(arms[f'spnet:{k}']['report'], out)})" for k in seeds]
    if result["ablation"]:
        links += [f"[no zpm seed {k}]({os.path.relpath(arms[f'nopad:{k}']['report'], out)})" for k in seeds]
    configs = ", ".join(f"[{format_count(c['flops'])}]({os.path.relpath(c['config'], out)})"
                        for c in result["snet_configs"])
    lines += ["", f"Each arm's own report (sub-networks, bases): {', '.join(links)}. S-Net configs: {configs}.", ""]
    return "\n".join(lines)
