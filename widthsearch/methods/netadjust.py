"""Network Adjustment (Chen et al., CVPR 2020, arXiv 2004.02767): widen what pays, narrow what does not.

Each round trains the network at its current widths (with channel dropout ramped over epochs and
depth, as the official code does), measures every unit's *FLOPs utilisation
ratio* (FUR: how much the held-out loss rises when a unit loses channels, per FLOP removed) and
moves channels from the least to the most useful units, then rescales all widths by one factor so
the FLOPs stay those of the original network. The pieces here are pure functions over the core
(cost model, channel masks); :func:`run_rounds` strings them together with checkpoints.

Departures from the official code (danczs/NetworkAdjustment), each for a reason given in
docs/methods/netadjust.md: drop rates are clamped (the official rate can exceed 1); the FUR is
measured on held-out training images *without* augmentation; FLOPs derivatives come from the exact
cost model rather than a symbolic chain formula; residual blocks are untied through the core's
zero-padded sums (``residual="pad"``); the training-time channel dropout (``train_drop``) covers every
unit, stem and projection shortcuts included.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from widthsearch.data import mix_seed
from widthsearch.errors import UserError
from widthsearch.space import ChannelSpace, Supernet
from widthsearch.io import write_json_atomic
from widthsearch.methods.run_state import load_run_state
from widthsearch.runfolder import folder_has_content
from widthsearch.training.channel_dropout import check_drop_rate

#: the official CIFAR schedule: k layers move per round (k0 decaying by k_decay per round), the
#: i-th ranked layer moves a_i = max(a_lr - i * a_decay, 0) of its *original* width
DEFAULTS = {"p0": 0.05, "max_rate": 0.9, "passes": 5, "k0": 6, "k_decay": 0.5, "a_lr": 0.15, "a_decay": 0.01,
            "floor": 4, "tolerance": 0.01}


def utilisation_weights(space: ChannelSpace, config: Mapping[str, int]) -> dict[str, float]:
    """``D_u = c_u * dFLOPs/dc_u``: the FLOPs that hang on unit u's channels at ``config``."""
    gradient = space.flops_gradient(config)
    return {name: config[name] * g for name, g in gradient.items()}


def drop_rates(weights: Mapping[str, float], p0: float, max_rate: float = DEFAULTS["max_rate"]) -> dict[str, float]:
    """``p_u = p0 * mean(D) / D_u``: every unit drops the same expected FLOPs, clamped to ``max_rate``.

    The official code does not clamp: a unit with few dependent FLOPs gets ``p >= 1`` there, and
    the dropout scale ``1/(1-p)`` turns negative. A unit with no FLOPs at all is never dropped.
    """
    if not 0 < p0 < 1:
        raise UserError(f"--p0 must be in (0, 1), got {p0}")
    if not 0 < max_rate < 1:
        raise UserError(f"the drop-rate clamp must be in (0, 1), got {max_rate}")
    positive = [d for d in weights.values() if d > 0]
    if not positive:
        raise UserError("no unit carries any FLOPs: nothing to adjust")
    mean = sum(weights.values()) / len(weights)
    return {name: min(max_rate, p0 * mean / d) if d > 0 else 0.0 for name, d in weights.items()}


def channel_dropout(rate: float, generator: torch.Generator) -> Callable[[int, int, torch.device], Tensor]:
    """A mask drawer for :meth:`Supernet.masked`: SpatialDropout -- whole channels per sample,
    kept with probability ``1 - rate`` and rescaled by ``1 / (1 - rate)``."""

    def draw(batch: int, width: int, device: torch.device) -> Tensor:
        keep = torch.rand(batch, width, generator=generator) >= rate
        return (keep.float() / (1.0 - rate)).to(device)

    return draw


@torch.no_grad()
def _mean_loss(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> float:
    total = 0.0
    device = next(model.parameters()).device
    for start in range(0, len(y), batch_size):
        logits = model(x[start:start + batch_size].to(device)).float()
        total += float(nn.functional.cross_entropy(logits, y[start:start + batch_size].to(device), reduction="sum"))
    return total / len(y)


def fur_probe(
    net: Supernet,
    x: Tensor,
    y: Tensor,
    rates: Mapping[str, float],
    *,
    passes: int = DEFAULTS["passes"],
    seed: int = 0,
    batch_size: int = 500,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, list[float]]:
    """Per unit, the held-out loss increase when only that unit drops channels, for each pass.

    The network runs its active sub-network in eval mode (BN running statistics); ``x, y`` are
    held-out training images without augmentation. Each pass draws fresh masks from a generator
    seeded by ``(seed, pass, unit index)``, so the probe is reproducible. FUR is the mean over
    passes (see :func:`fur_of`); keeping the passes lets callers measure its stability.
    """
    if passes < 1:
        raise UserError(f"--passes must be at least 1, got {passes}")
    was_training = net.model.training
    net.model.eval()
    try:
        clean = _mean_loss(net.model, x, y, batch_size)
        names = [u.name for u in net.space.units if rates.get(u.name, 0.0) > 0]
        result: dict[str, list[float]] = {}
        for i, name in enumerate(names):
            increases = []
            for k in range(passes):
                generator = torch.Generator().manual_seed(mix_seed(seed, k, i))
                with net.masked({name: channel_dropout(rates[name], generator)}):
                    increases.append(_mean_loss(net.model, x, y, batch_size) - clean)
            result[name] = increases
            if progress is not None:
                progress(i + 1, len(names))
        return result
    finally:
        net.model.train(was_training)


def fur_of(increases: Mapping[str, Sequence[float]]) -> dict[str, float]:
    return {name: sum(v) / len(v) for name, v in increases.items()}


def moves_this_round(round_index: int, k0: int, k_decay: float) -> int:
    """How many units gain (and lose) channels in round ``round_index`` (0-based): ``round(k0 - k_decay*r)``, at least 1."""
    return max(1, math.floor(k0 - k_decay * round_index + 0.5))


def adjust_widths(
    config: Mapping[str, int],
    fur: Mapping[str, float],
    original: Mapping[str, int],
    maximum: Mapping[str, int],
    *,
    k: int,
    a_lr: float = DEFAULTS["a_lr"],
    a_decay: float = DEFAULTS["a_decay"],
    floor: int = DEFAULTS["floor"],
) -> dict[str, int]:
    """The top-``k`` units by FUR gain ``round(a_i * c0_u)`` channels, the bottom-``k`` lose as many.

    ``a_i = max(a_lr - i * a_decay, 0)`` for the i-th unit from either end; steps scale with the
    *original* widths ``c0`` as in the paper. Widths stay within ``[min(floor, c0_u), max_u]``.
    """
    ranked = sorted(fur, key=lambda name: (-fur[name], name))
    k = min(k, len(ranked) // 2)  # a unit never both gains and loses
    new = dict(config)
    for i in range(k):
        a = max(a_lr - i * a_decay, 0.0)
        grow, shrink = ranked[i], ranked[-1 - i]
        new[grow] = min(maximum[grow], new[grow] + round(a * original[grow]))
        new[shrink] = max(min(floor, original[shrink]), new[shrink] - round(a * original[shrink]))
    return new


def rescale_to_flops(
    space: ChannelSpace,
    config: Mapping[str, int],
    target_flops: float,
    *,
    tolerance: float = DEFAULTS["tolerance"],
    floor: int = DEFAULTS["floor"],
    iterations: int = 60,
) -> dict[str, int]:
    """Scale every width by one factor ``s`` (``c <- clamp(round(s*c))``) so FLOPs land within
    ``tolerance`` of ``target_flops``; bisection on ``s``. Raises when no factor gets there."""
    lows = {u.name: min(floor, config[u.name]) for u in space.units}

    def at(scale: float) -> dict[str, int]:
        return {u.name: max(lows[u.name], min(u.max, round(scale * config[u.name]))) for u in space.units}

    low, high = 0.0, 1.0
    while space.cost(at(high)).flops < target_flops:
        high *= 2
        if high > 1024:
            raise UserError(f"cannot reach {target_flops:.0f} FLOPs by scaling: the units hit their physical widths")
    best = at(high)
    for _ in range(iterations):
        mid = (low + high) / 2
        flops = space.cost(at(mid)).flops
        if abs(flops - target_flops) < abs(space.cost(best).flops - target_flops):
            best = at(mid)
        if flops < target_flops:
            low = mid
        else:
            high = mid
    error = abs(space.cost(best).flops - target_flops) / target_flops
    if error > tolerance:
        raise UserError(f"rescaling reached FLOPs only within {100 * error:.2f}% of the target "
                        f"(tolerance {100 * tolerance:g}%); use a finer space (--divisor 1)")
    return best


# ---- rounds: train -> probe -> adjust, resumable ------------------------------------------------------
STATE_FILE = "adjust_state.json"
STATE_VERSION = 1
STAGES = ("train", "probe", "adjust")


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Rank correlation (average ranks for ties); None for fewer than 3 items or a constant side."""
    if len(a) < 3:
        return None

    def ranks(values: Sequence[float]) -> list[float]:
        order = sorted(range(len(values)), key=lambda i: values[i])
        result = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                result[order[k]] = (i + j) / 2
            i = j + 1
        return result

    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    return None if va == 0 or vb == 0 else cov / math.sqrt(va * vb)


def fur_stability(increases: Mapping[str, Sequence[float]]) -> float | None:
    """Spearman correlation of the FUR ranking from the first half of the passes with the second half."""
    passes = min(len(v) for v in increases.values()) if increases else 0
    if passes < 2:
        return None
    half = passes // 2
    names = sorted(increases)
    first = [sum(increases[n][:half]) / half for n in names]
    second = [sum(increases[n][half:]) / (passes - half) for n in names]
    return spearman(first, second)


ADJUST_DEFAULTS: dict = {
    "model": "tiny_cnn",
    "model_kwargs": None,  # keyword arguments of a user's model factory
    "data": "digits",
    "width_mult": 1.0,
    "widen": 2.0,
    "residual": "pad",
    "rounds": 3,
    "epochs": 8,
    "batch_size": 128,
    "lr": 0.1,
    "seed": 0,
    "heldout_fraction": 0.1,
    "probe_images": 5000,
    # the official CIFAR command's --drop_rate: channel dropout while training each round, ramped
    # over epochs and depth (widthsearch.training.channel_dropout); 0 trains without it
    "train_drop": 0.05,
    "threads": None,
    "device": "auto",
    **DEFAULTS,
}
#: settings that may differ on --resume (they do not change the computation)
_RESUMABLE = {"threads", "device"}


def _load_state(out: Path, settings: Mapping, resume: bool) -> dict | None:
    path = out / STATE_FILE
    if path.exists() and not resume:
        raise UserError(f"{out} already holds an adjustment ({STATE_FILE}); use --resume to continue or another --out")
    if not resume:
        return None
    # more rounds may be asked for when resuming: the rounds done stay what they were
    # runs saved before --train-drop existed trained their rounds without channel dropout
    return load_run_state(path, settings, version=STATE_VERSION, mutable=_RESUMABLE | {"rounds"},
                          absent={"train_drop": 0.0})


def _heldout_probe_set(data, images: int, seed: int) -> tuple[Tensor, Tensor]:
    """A fixed, seeded subset of the held-out training images (never the test set, no augmentation)."""
    held = data.heldout
    if len(held) == 0:
        raise UserError("the FUR probe needs held-out images: --heldout-fraction must be above 0")
    order = torch.randperm(len(held), generator=torch.Generator().manual_seed(seed))
    keep = torch.sort(order[: max(1, images)]).values
    return held.x[keep], held.y[keep]


def run_rounds(
    settings: Mapping,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    echo: Callable[[str], None] | None = None,
    train_fn: Callable[..., dict] | None = None,
    stop_after: Callable[[int, str], bool] | None = None,
) -> dict:
    """Network Adjustment rounds in ``out_dir``; returns the JSON summary.

    Per round: train the network at the current widths from scratch (``rounds/<r>/train``), probe
    every unit's FUR on held-out images, move channels and rescale to the original FLOPs. The state
    is saved atomically after each stage, so a killed run resumes where it stopped (a round's
    training resumes from its own checkpoint). ``stop_after(round, stage)`` returning True ends
    the call after that stage (tests use it to interrupt). ``train_fn(config_path, out, resume,
    progress)`` trains one network and returns its result (default: :func:`train_network`).
    """
    from widthsearch.data import load_data
    from widthsearch.space import SpaceSpec, build_supernet
    from widthsearch.space.config import save_config

    s = {**ADJUST_DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    check_drop_rate(s["train_drop"])  # before any work, not when the first round starts training
    out = Path(out_dir)
    state = _load_state(out, s, resume)
    if state is not None and int(settings.get("rounds") or state["settings"]["rounds"]) < state["round"]:
        raise UserError(f"the saved run already did {state['round']} rounds, more than --rounds {settings['rounds']}")
    data = load_data(s["data"], s["heldout_fraction"], s["seed"], augment="none")
    spec = SpaceSpec(s["model"], float(s["width_mult"]), int(data.num_classes), tuple(data.input_shape),
                     groups=None, divisor=1, residual=s["residual"], widen=float(s["widen"]),
                     model_kwargs=dict(s["model_kwargs"] or {}))
    net, spec = build_supernet(spec)
    space = net.space
    original = space.default_config()
    if state is None:
        state = {"version": STATE_VERSION, "settings": s, "spec": spec.to_dict(), "original": original,
                 "original_flops": space.cost(original).flops, "round": 0, "stage": "train", "config": original,
                 "pending": None, "rounds": []}
    state["settings"]["rounds"] = s["rounds"]
    out.mkdir(parents=True, exist_ok=True)
    train = train_fn or _train_network
    x, y = _heldout_probe_set(data, int(s["probe_images"]), int(s["seed"]))
    maximum = {u.name: u.max for u in space.units}

    def save() -> None:
        write_json_atomic(out / STATE_FILE, state)

    while state["round"] < s["rounds"]:
        r, config = state["round"], state["config"]
        folder = out / "rounds" / str(r + 1)
        if state["stage"] == "train":
            if echo:
                echo(f"round {r + 1}/{s['rounds']}: train {space.cost(config).flops / 1e6:.2f}M FLOPs for {s['epochs']} epochs")
            path = save_config(folder / "config.yaml", space, config, model=s["model"], space=spec.to_dict(),
                               round=r + 1)
            result = train(path, folder / "train", resume=(folder / "train" / "model.pt").exists(), progress=progress,
                           settings=s)
            state["pending"] = {"checkpoint": result["checkpoint"], "heldout_accuracy": result.get("heldout_accuracy"),
                                "accuracy": result.get("accuracy")}
            state["stage"] = "probe"
            save()
            if stop_after and stop_after(r, "train"):
                return state
        if state["stage"] == "probe":
            if echo:
                echo(f"round {r + 1}/{s['rounds']}: FUR probe, {s['passes']} passes on {len(y)} held-out images")
            _load_round_weights(net, config, state["pending"]["checkpoint"])
            rates = drop_rates(utilisation_weights(space, config), float(s["p0"]), float(s["max_rate"]))
            increases = fur_probe(net, x, y, rates, passes=int(s["passes"]), seed=mix_seed(int(s["seed"]), r, 17))
            state["pending"].update(rates=rates, increases=increases)
            state["stage"] = "adjust"
            save()
            if stop_after and stop_after(r, "probe"):
                return state
        if state["stage"] == "adjust":
            pending = state["pending"]
            fur = fur_of(pending["increases"])
            k = min(moves_this_round(r, int(s["k0"]), float(s["k_decay"])), len(fur) // 2)
            moved = adjust_widths(config, fur, original, maximum, k=k, a_lr=float(s["a_lr"]),
                                  a_decay=float(s["a_decay"]), floor=int(s["floor"]))
            new = rescale_to_flops(space, moved, state["original_flops"], tolerance=float(s["tolerance"]),
                                   floor=int(s["floor"]))
            cost = space.cost(config)
            state["rounds"].append({
                "round": r + 1, "flops": cost.flops, "params": cost.params, "widths": dict(config),
                "heldout_accuracy": pending["heldout_accuracy"], "test_accuracy": pending["accuracy"],
                "fur": fur, "drop_rates": pending["rates"], "fur_stability": fur_stability(pending["increases"]),
                "moves": k, "next_widths": new,
            })
            state.update(config=new, round=r + 1, stage="train", pending=None)
            save()
            if stop_after and stop_after(r, "adjust"):
                return state
    return _write_outputs(out, state, space, spec, s)


def _train_network(config_path: Path, out: Path, *, resume: bool, progress: bool, settings: Mapping) -> dict:
    from widthsearch.training.retrain import train_network

    recipe = {"model": settings["model"], "data": settings["data"], "epochs": settings["epochs"],
              "batch_size": settings["batch_size"], "lr": settings["lr"], "seed": settings["seed"],
              "heldout_fraction": settings["heldout_fraction"], "threads": settings["threads"],
              "device": settings["device"], "train_drop": settings["train_drop"]}
    return train_network(recipe, out, channels=None if resume else config_path, resume=resume, progress=progress)


def _load_round_weights(net: Supernet, config: Mapping[str, int], checkpoint: str) -> None:
    """Put a round's trained static network into the supernet at that round's widths."""
    from widthsearch.training.retrain import load_trained

    static, _meta = load_trained(checkpoint)
    net.set_config(config)
    net.load_static(static)


def _write_outputs(out: Path, state: Mapping, space: ChannelSpace, spec, s: Mapping) -> dict:
    from widthsearch.plots import plot_adjust_widths
    from widthsearch.space.config import save_config

    final = state["config"]
    cost = space.cost(final)
    path = save_config(out / "final.yaml", space, final, model=s["model"], space=spec.to_dict(),
                       original_flops=state["original_flops"], rounds=len(state["rounds"]))
    names = [u.name for u in space.units]
    with open(out / "rounds.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["round", "flops", "params", "heldout_accuracy", "fur_stability", "moves"]
                        + [f"width:{n}" for n in names] + [f"fur:{n}" for n in names])
        for row in state["rounds"]:
            writer.writerow([row["round"], row["flops"], row["params"], row["heldout_accuracy"], row["fur_stability"],
                             row["moves"]] + [row["widths"][n] for n in names] + [row["fur"].get(n, "") for n in names])
    series = [(f"round {row['round']}", [row["widths"][n] for n in names]) for row in state["rounds"]]
    series.append(("final", [final[n] for n in names]))
    plot_adjust_widths(names, [state["original"][n] for n in names], series, out / "widths.png")
    summary = {
        "config": str(path), "flops": cost.flops, "original_flops": state["original_flops"], "params": cost.params,
        "original_params": space.cost(state["original"]).params, "units": len(space.units),
        "residual": spec.residual, "rounds": state["rounds"], "rounds_csv": str(out / "rounds.csv"),
        "plot": str(out / "widths.png"),
    }
    write_json_atomic(out / "adjust.json", summary)
    return summary


# ---- the whole method: rounds -> retrain the adjusted and the original network -> report -------------
RUN_DEFAULTS: dict = {"rounds": 3, "epochs": 8, "retrain_epochs": 8}
_RUN_KEYS = ("model", "model_kwargs", "data", "width_mult", "rounds", "epochs", "batch_size", "lr", "seed", "threads",
             "device")


def run_netadjust(
    settings: Mapping,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict:
    """Network Adjustment end to end in ``out_dir``: ``adjust/``, ``retrain/{adjusted,original}/``,
    ``report.md``. Both networks have the same FLOPs and are retrained with the same recipe and
    seed; accuracy is on the test split. Every stage resumes after a kill."""
    from widthsearch.space.config import save_config
    from widthsearch.space import SpaceSpec, build_supernet

    s = {**ADJUST_DEFAULTS, **RUN_DEFAULTS, **{k: v for k, v in settings.items() if k in _RUN_KEYS + ("retrain_epochs",)
                                                 and v is not None}}
    out = Path(out_dir)
    if folder_has_content(out) and not resume:  # the CLI's lock file alone is no content
        raise UserError(f"{out} is not empty; pass --resume to continue the run in it, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    echo(f"[1/2] Network Adjustment: {s['model']} on {s['data']}, {s['rounds']} rounds of {s['epochs']} epochs")
    adjust_settings = {k: s[k] for k in _RUN_KEYS}
    summary = run_rounds(adjust_settings, out / "adjust", resume=resume and (out / "adjust" / STATE_FILE).exists(),
                         progress=progress, echo=echo)
    spec = SpaceSpec.from_dict(json.loads((out / "adjust" / STATE_FILE).read_text())["spec"])
    net, spec = build_supernet(spec)
    original = save_config(out / "adjust" / "original.yaml", net.space, net.space.default_config(), model=s["model"],
                           space=spec.to_dict())
    recipe = {"model": s["model"], "data": s["data"], "epochs": s["retrain_epochs"], "batch_size": s["batch_size"],
              "lr": s["lr"], "seed": s["seed"], "threads": s["threads"], "device": s["device"]}
    results = {}
    for i, (name, config) in enumerate((("adjusted", Path(summary["config"])), ("original", original))):
        echo(f"[2/2] retrain the {name} network ({i + 1}/2), {s['retrain_epochs']} epochs")
        folder = out / "retrain" / name
        again = resume and (folder / "model.pt").exists()
        results[name] = train_network_for(recipe, folder, None if again else config, again, progress)
    row = {
        "target": "same FLOPs", "flops": results["adjusted"]["flops"], "params": results["adjusted"]["params"],
        "accuracy": results["adjusted"]["accuracy"], "config": summary["config"],
        "uniform_flops": results["original"]["flops"], "uniform_params": results["original"]["params"],
        "uniform_accuracy": results["original"]["accuracy"], "baseline": "original",
    }
    report = _write_report(out, s, summary, row, results["adjusted"]["test_images"])
    return {"targets": [row], "report": str(report), "adjust": str(out / "adjust")}


def train_network_for(recipe: Mapping, folder: Path, config: Path | None, resume: bool, progress: bool) -> dict:
    from widthsearch.training.retrain import train_network

    return train_network(dict(recipe), folder, channels=config, resume=resume, progress=progress)


def _write_report(out: Path, s: Mapping, summary: Mapping, row: Mapping, test_images: int) -> Path:
    from widthsearch.formatting import format_count

    delta = 100 * (row["accuracy"] - row["uniform_accuracy"])
    lines = [
        "# Network Adjustment run",
        "",
        f"Model `{s['model']}` on `{s['data']}`, residual policy `{summary['residual']}` ({summary['units']} units); "
        f"{len(summary['rounds'])} rounds of {s['epochs']} epochs ({_train_drop_words(s['train_drop'])}), each "
        f"probing the FUR with {s['passes']} dropout passes "
        f"on held-out training images; then the adjusted and the original network retrained for {s['retrain_epochs']} "
        f"epochs with the same recipe and seed {s['seed']}. Accuracies are on the {test_images} test images "
        "(one seed: a difference of one image is "
        f"{100 / max(1, test_images):.2f} points).",
        "",
        "| network | FLOPs | params | test accuracy |",
        "|---|---|---|---|",
        f"| adjusted | {format_count(row['flops'])} | {format_count(row['params'])} | {100 * row['accuracy']:.2f}% |",
        f"| original | {format_count(row['uniform_flops'])} | {format_count(row['uniform_params'])} | "
        f"{100 * row['uniform_accuracy']:.2f}% |",
        "",
        f"Adjusted minus original: {delta:+.2f} points.",
        "",
        "| round | FLOPs | held-out accuracy | FUR stability (Spearman, halves of the passes) | units moved |",
        "|---|---|---|---|---|",
    ]
    for r in summary["rounds"]:
        acc = "-" if r["heldout_accuracy"] is None else f"{100 * r['heldout_accuracy']:.2f}%"
        stab = "-" if r["fur_stability"] is None else f"{r['fur_stability']:.2f}"
        lines.append(f"| {r['round']} | {format_count(r['flops'])} | {acc} | {stab} | {r['moves']} up, {r['moves']} down |")
    lines += ["", "![channels per unit by round](adjust/widths.png)", "",
              "Configs: [adjusted](adjust/final.yaml), [original](adjust/original.yaml); per round: "
              "[rounds.csv](adjust/rounds.csv)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _train_drop_words(rate: float) -> str:
    if not rate:
        return "trained without channel dropout"
    return f"trained with channel dropout ramped over epochs and depth up to {rate:g}"
