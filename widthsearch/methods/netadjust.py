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
    done: Mapping[str, Sequence[float]] | None = None,
    on_unit: Callable[[str, list[float]], None] | None = None,
) -> dict[str, list[float]]:
    """Per unit, the held-out loss increase when only that unit drops channels, for each pass.

    The network runs its active sub-network in eval mode (BN running statistics); ``x, y`` are
    held-out training images without augmentation. Each pass draws fresh masks from a generator
    seeded by ``(seed, pass, unit index)``, so the probe is reproducible. FUR is the mean over
    passes (see :func:`fur_of`); keeping the passes lets callers measure its stability.
    ``done`` holds units measured by an earlier, interrupted probe of the same network (they are
    not measured again); ``on_unit(name, increases)`` is called after each unit measured now.
    """
    if passes < 1:
        raise UserError(f"--passes must be at least 1, got {passes}")
    was_training = net.model.training
    net.model.eval()
    try:
        names = [u.name for u in net.space.units if rates.get(u.name, 0.0) > 0]
        result: dict[str, list[float]] = {name: list(done[name]) for name in names if done and name in done}
        clean = _mean_loss(net.model, x, y, batch_size) if len(result) < len(names) else 0.0
        for i, name in enumerate(names):
            if name not in result:
                increases = []
                for k in range(passes):
                    generator = torch.Generator().manual_seed(mix_seed(seed, k, i))
                    with net.masked({name: channel_dropout(rates[name], generator)}):
                        increases.append(_mean_loss(net.model, x, y, batch_size) - clean)
                result[name] = increases
                if on_unit is not None:
                    on_unit(name, increases)
            if progress is not None:
                progress(i + 1, len(names))
        return {name: result[name] for name in names}
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


# ---- where the channels went: units grouped by the resolution of their output ---------------------------
@torch.no_grad()
def unit_resolutions(net: Supernet, example: Tensor) -> dict[str, str]:
    """Per unit, the spatial size of its output feature map (``"32x32"``; ``"flat"`` for a linear
    layer's features), from one forward pass of ``example`` at the default widths.

    A unit's output is where its channels leave their first output layer (its batch norm, or its
    producer without one: :meth:`Supernet.output_layers`), so a unit that a stride-2 depthwise conv
    shares (MobileNet's expansion) counts at the resolution of the expansion, before the stride.
    """
    shapes: dict[str, tuple[int, ...]] = {}

    def hook(name: str):
        def record(_module: nn.Module, _inputs, output: Tensor) -> None:
            shapes.setdefault(name, tuple(output.shape[2:]))  # returns None: the output is unchanged
        return record

    handles = [net.model.get_submodule(layer).register_forward_hook(hook(unit.name))
               for unit in net.space.units for layer in net.output_layers(unit.name)]
    was_training = net.model.training
    try:
        net.model.eval()
        with net.using(net.space.default_config()):
            net.model(example)
    finally:
        for handle in handles:
            handle.remove()
        net.model.train(was_training)
    return {u.name: "x".join(map(str, shapes[u.name])) if shapes.get(u.name) else "flat" for u in net.space.units}


def stage_summary(resolutions: Mapping[str, str], original: Mapping[str, int],
                  final: Mapping[str, int]) -> list[dict]:
    """The units grouped by output resolution (``resolutions`` in network order): per group its
    units and the summed original and final widths, with the change in percent."""
    stages: dict[str, list[str]] = {}
    for name, resolution in resolutions.items():
        stages.setdefault(resolution, []).append(name)
    rows = []
    for resolution, names in stages.items():
        before, after = sum(original[n] for n in names), sum(final[n] for n in names)
        rows.append({"resolution": resolution, "units": names, "original": before, "final": after,
                     "change_percent": 100.0 * (after - before) / before if before else None})
    return rows


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
    if (out / "rounds").is_dir() and not path.exists() and not resume:
        raise UserError(f"{out} holds a started adjustment (rounds/); use --resume to continue or another --out")
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
    from widthsearch.training.distributed import resolve_device
    from widthsearch.training.recipe import check_recipe

    s = {**ADJUST_DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    # before any work, not when the first round starts training (after the state is saved)
    check_drop_rate(s["train_drop"])
    check_recipe(_round_recipe(s))
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
        _check_unrecorded_round(out, spec, s)
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

    # saved before the first round trains, so that a run killed in round 1 records its settings
    # and a resumed (or moved and adopted) one is checked against them
    save()

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
            # every unit's passes are saved as it is done: a kill loses one unit, not the probe
            probed = state["pending"].setdefault("probed", {})

            def unit_done(name: str, increases: list[float]) -> None:
                probed[name] = increases
                save()

            # the probe is 5 passes x units x held-out images of forward passes: on the run's device,
            # not on the CPU where the supernet is built (it goes back there for the outputs)
            net.to(resolve_device(str(s["device"])))
            try:
                increases = fur_probe(net, x, y, rates, passes=int(s["passes"]),
                                      seed=mix_seed(int(s["seed"]), r, 17),
                                      progress=_probe_progress(r, s) if progress else None,
                                      done=probed, on_unit=unit_done)
            finally:
                net.to("cpu")
            del state["pending"]["probed"]
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
    return _write_outputs(out, state, net, spec, s)


def _round_recipe(settings: Mapping) -> dict:
    """The training arguments of every round's network."""
    return {"model": settings["model"], "data": settings["data"], "epochs": settings["epochs"],
            "batch_size": settings["batch_size"], "lr": settings["lr"], "seed": settings["seed"],
            "heldout_fraction": settings["heldout_fraction"], "threads": settings["threads"],
            "device": settings["device"], "train_drop": settings["train_drop"]}


def _probe_progress(r: int, s: Mapping) -> Callable[[int, int], None]:
    """A progress line per probed unit (on CIFAR a probe takes tens of minutes on two cores)."""
    from widthsearch.progress import Progress

    bar: list[Progress] = []

    def update(done: int, total: int) -> None:
        if not bar:
            bar.append(Progress(total, f"round {r + 1}/{s['rounds']}: FUR probe", unit="unit"))
        bar[0].set(done)
        if done == total:
            bar[0].close()

    return update


def _train_network(config_path: Path, out: Path, *, resume: bool, progress: bool, settings: Mapping) -> dict:
    from widthsearch.training.retrain import train_network

    return train_network(_round_recipe(settings), out, channels=None if resume else config_path, resume=resume,
                         progress=progress)


def _check_unrecorded_round(out: Path, spec, s: Mapping) -> None:
    """A folder killed in round 1 by a version that saved no state before training: its round 1
    must be the one these settings would train (same space, same recipe), or it is refused."""
    from widthsearch.data.loading import same_data_spec
    from widthsearch.space import SpaceSpec
    from widthsearch.space.config import read_config_file
    from widthsearch.training.checkpoint import load_checkpoint

    folder = out / "rounds" / "1"
    recorded = read_config_file(folder / "config.yaml").get("space") if (folder / "config.yaml").exists() else None
    if recorded:
        # through SpaceSpec, so that fields added to the spec since the file was written take their defaults
        saved = SpaceSpec.from_dict(recorded).to_dict()
        for key, value in spec.to_dict().items():
            if saved.get(key) != value:
                raise UserError(f"{folder / 'config.yaml'} was written with {key} {saved.get(key)}, not {value}; "
                                "resume with the same settings or use a new --out")
    if (folder / "train" / "model.pt").exists():
        # a checkpoint from before --train-drop existed trained without channel dropout
        args = {"train_drop": 0.0, **load_checkpoint(folder / "train" / "model.pt")["args"]}
        for key, value in _round_recipe(s).items():
            if key in _RESUMABLE or (key == "data" and same_data_spec(value, args.get(key))):
                continue
            if args.get(key) != value:
                raise UserError(f"--{key.replace('_', '-')} {value} differs from round 1's {args.get(key)} "
                                f"({folder / 'train' / 'model.pt'}); resume with the same settings or use a new --out")


def _load_round_weights(net: Supernet, config: Mapping[str, int], checkpoint: str) -> None:
    """Put a round's trained static network into the supernet at that round's widths."""
    from widthsearch.training.retrain import load_trained

    static, _meta = load_trained(checkpoint)
    net.set_config(config)
    net.load_static(static)


def _write_outputs(out: Path, state: Mapping, net: Supernet, spec, s: Mapping) -> dict:
    from widthsearch.plots import plot_adjust_stages, plot_adjust_widths
    from widthsearch.space.config import save_config

    space = net.space
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
    stages = stage_summary(unit_resolutions(net, spec.example_input(1)), state["original"], final)
    plot_adjust_stages(stages, out / "stages.png")
    summary = {
        "config": str(path), "flops": cost.flops, "original_flops": state["original_flops"], "params": cost.params,
        "original_params": space.cost(state["original"]).params, "units": len(space.units),
        "residual": spec.residual, "rounds": state["rounds"], "rounds_csv": str(out / "rounds.csv"),
        "plot": str(out / "widths.png"), "stages": stages, "stages_plot": str(out / "stages.png"),
    }
    write_json_atomic(out / "adjust.json", summary)
    return summary


# ---- the whole method: rounds -> retrain the adjusted and the original network -> report -------------
RUN_DEFAULTS: dict = {"rounds": 3, "epochs": 8, "retrain_epochs": 8, "seeds": (0, 1, 2)}
#: the settings `run --method netadjust` passes to the rounds; the other rounds settings keep
#: ADJUST_DEFAULTS, so an `adjust` folder adopted as ``DIR/adjust`` must have been made with those
_RUN_KEYS = ("model", "model_kwargs", "data", "width_mult", "rounds", "epochs", "batch_size", "lr", "seed", "threads",
             "device")
#: the issue's success criterion: the adjusted network gains at least this many points of test
#: accuracy on average over the seeds, and gains in every seed
GOAL_GAIN_POINTS = 0.3


def run_netadjust(
    settings: Mapping,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict:
    """Network Adjustment end to end in ``out_dir``: ``adjust/`` (the layout of ``widthsearch
    adjust --out``, so such a folder moved there is continued), ``retrain/{adjusted,original}/seed-<k>/``,
    ``report.md`` and ``report.json``. Both networks have the same FLOPs and are retrained with the
    same recipe under every seed of ``settings["seeds"]``; accuracy is on the test split. Every
    stage resumes after a kill."""
    from widthsearch.methods.autoslim import check_seeds, prepare_run_folder, retrain_pair
    from widthsearch.methods.retraining import check_jobs
    from widthsearch.runfolder import RunLock
    from widthsearch.space import SpaceSpec, build_supernet
    from widthsearch.space.config import save_config

    s = {**ADJUST_DEFAULTS, **RUN_DEFAULTS, **{k: v for k, v in settings.items()
                                               if k in _RUN_KEYS + ("retrain_epochs", "seeds", "compile") and v is not None}}
    s["seeds"] = check_seeds(s["seeds"])  # a bad list fails before any training
    jobs = check_jobs(settings.get("jobs"))  # how the retraining is spread, not what it computes: not in the report
    out = prepare_run_folder(out_dir, resume)
    echo(f"[1/2] Network Adjustment: {s['model']} on {s['data']}, {s['rounds']} rounds of {s['epochs']} epochs")
    # an adopted folder could still be written by the `adjust` that made it (its lock moved with it)
    with RunLock(out / "adjust"):
        summary = run_rounds({k: s[k] for k in _RUN_KEYS}, out / "adjust", resume=resume, progress=progress,
                             echo=echo)
    spec = SpaceSpec.from_dict(json.loads((out / "adjust" / STATE_FILE).read_text())["spec"])
    net, spec = build_supernet(spec)
    original = save_config(out / "adjust" / "original.yaml", net.space, net.space.default_config(), model=s["model"],
                           space=spec.to_dict())
    echo(f"[2/2] retrain the adjusted and the original network, {s['retrain_epochs']} epochs, seeds "
         f"{','.join(map(str, s['seeds']))}" + (f", up to {jobs} at a time" if jobs > 1 else ""))
    adjusted, base, comparison = retrain_pair(s, out, ("adjusted", {"channels": Path(summary["config"])}),
                                              ("original", {"channels": original}), resume=resume,
                                              progress=progress, jobs=jobs, echo=echo)
    row = {
        "target": "same FLOPs", "flops": adjusted[0]["flops"], "params": adjusted[0]["params"],
        "config": summary["config"],
        "heldout_accuracy": summary["rounds"][-1]["heldout_accuracy"] if summary["rounds"] else None,
        "accuracy": comparison["found"]["mean"], "uniform_flops": base[0]["flops"],
        "uniform_params": base[0]["params"], "uniform_accuracy": comparison["base"]["mean"],
        "comparison": comparison, "baseline": "original",
    }
    findings = report_findings(row, summary, float(s["tolerance"]))
    # as the SP-Net rows carry theirs, so that `run` prints it on the row's line
    row.update(goal=GOAL_GAIN_POINTS / 100, goal_met=findings["goal"]["met"])
    report = _write_report(out, s, summary, row, findings)
    return {"targets": [row], **findings, "report": str(report), "report_json": str(out / "report.json"),
            "adjust": str(out / "adjust")}


def report_findings(row: Mapping, summary: Mapping, tolerance: float) -> dict:
    """What the run's report states beyond the comparison row: the FLOPs match, the goal, the FUR
    stability per round and the channels per stage."""
    c = row["comparison"]
    difference = (row["flops"] - row["uniform_flops"]) / row["uniform_flops"]
    mean_points = 100 * c["delta"]
    return {
        "flops_match": {"adjusted": row["flops"], "original": row["uniform_flops"],
                        "relative_difference": difference, "tolerance": tolerance,
                        "within_tolerance": abs(difference) <= tolerance},
        "goal": {"mean_gain_points": mean_points, "required_gain_points": GOAL_GAIN_POINTS,
                 "seeds_positive": sum(d > 0 for d in c["deltas"]), "seeds": len(c["deltas"]),
                 "met": mean_points >= GOAL_GAIN_POINTS and all(d > 0 for d in c["deltas"])},
        "fur_stability": [{"round": r["round"], "spearman": r["fur_stability"]} for r in summary["rounds"]],
        "stages": summary["stages"],
    }


def _write_report(out: Path, s: Mapping, summary: Mapping, row: Mapping, findings: Mapping) -> Path:
    from widthsearch.formatting import format_count
    from widthsearch.io import write_text_atomic
    from widthsearch.methods.comparison import format_interval, format_mean_std

    c, flops, goal = row["comparison"], findings["flops_match"], findings["goal"]
    images = c["test_images"]
    lines = [
        "# Network Adjustment run",
        "",
        f"Model `{s['model']}` on `{s['data']}`, residual policy `{summary['residual']}` ({summary['units']} units); "
        f"{len(summary['rounds'])} rounds of {s['epochs']} epochs ({_train_drop_words(s['train_drop'])}), each "
        f"probing the FUR with {s['passes']} dropout passes on held-out training images (seed {s['seed']}); then the "
        f"adjusted and the original network retrained for {s['retrain_epochs']} epochs with the same recipe under "
        f"seeds {', '.join(map(str, c['seeds']))}. Accuracies are on the {images} test images (one image is "
        f"{100 / max(1, images):.2f} points), mean ± standard deviation over the seeds.",
        "",
        "| network | FLOPs | params | test accuracy |",
        "|---|---|---|---|",
        f"| adjusted | {format_count(row['flops'])} | {format_count(row['params'])} | {format_mean_std(c['found'])} |",
        f"| original | {format_count(row['uniform_flops'])} | {format_count(row['uniform_params'])} | "
        f"{format_mean_std(c['base'])} |",
        "",
        f"FLOPs: adjusted {flops['adjusted']:,} vs original {flops['original']:,} multiply-accumulates, "
        f"{100 * flops['relative_difference']:+.3f} % ({'within' if flops['within_tolerance'] else 'OUTSIDE'} "
        f"±{100 * flops['tolerance']:g} %).",
        "",
        "| seed | adjusted | original | adjusted minus original (points) |",
        "|---|---|---|---|",
    ]
    for seed, a, b, d in zip(c["seeds"], c["found"]["values"], c["base"]["values"], c["deltas"]):
        lines.append(f"| {seed} | {100 * a:.2f}% | {100 * b:.2f}% | {100 * d:+.2f} |")
    lines += [
        f"| mean | {100 * c['found']['mean']:.2f}% | {100 * c['base']['mean']:.2f}% | {100 * c['delta']:+.2f} |",
        "",
        f"95 % intervals of the mean delta: {format_interval(c['t_interval'])} over the seeds (paired t, "
        "training noise), "
        f"{format_interval(c['bootstrap_interval'])} over the test images (paired bootstrap pooled across the seeds, "
        f"test-set noise). Verdict: **{c['verdict']}** (significant only when neither interval contains 0).",
        "",
        f"Goal (mean gain ≥ +{goal['required_gain_points']:g} points and positive in every seed): "
        f"**{'met' if goal['met'] else 'not met'}** (mean {goal['mean_gain_points']:+.2f} points, positive in "
        f"{goal['seeds_positive']} of {goal['seeds']} seeds).",
        "",
        "## Search",
        "",
        "| round | FLOPs | held-out accuracy | FUR stability | units moved |",
        "|---|---|---|---|---|",
    ]
    for r in summary["rounds"]:
        acc = "-" if r["heldout_accuracy"] is None else f"{100 * r['heldout_accuracy']:.2f}%"
        stab = "-" if r["fur_stability"] is None else f"{r['fur_stability']:.2f}"
        lines.append(f"| {r['round']} | {format_count(r['flops'])} | {acc} | {stab} | {r['moves']} up, {r['moves']} down |")
    half = int(s["passes"]) // 2
    lines += [
        "",
        f"FUR stability: Spearman rank correlation, over the probed units, of the FUR from the first {half} "
        f"dropout passes with the FUR from the other {int(s['passes']) - half} (1: the same ranking; '-' when "
        "there are too few passes or units).",
        "",
        "## Direction of change per stage",
        "",
        "Units grouped by the spatial size of their output feature map (a stem falls in the group of its "
        "output resolution), in network order; channels summed over the group's units.",
        "",
        "| stage (output) | units | original channels | final channels | change |",
        "|---|---|---|---|---|",
    ]
    for stage in findings["stages"]:
        change = "-" if stage["change_percent"] is None else f"{stage['change_percent']:+.1f} %"
        names = stage["units"]
        units = names[0] if len(names) == 1 else f"{len(names)}: {names[0]} ... {names[-1]}"
        lines.append(f"| {stage['resolution']} | {units} | {stage['original']} | {stage['final']} | {change} |")
    lines += ["", "![channels per unit by round](adjust/widths.png)", "", "![channels per stage](adjust/stages.png)",
              "", "Configs: [adjusted](adjust/final.yaml), [original](adjust/original.yaml); per round: "
              "[rounds.csv](adjust/rounds.csv)", ""]
    path = out / "report.md"
    write_text_atomic(path, "\n".join(lines))
    write_json_atomic(out / "report.json", {"title": "Network Adjustment run", "settings": dict(s),
                                            "test_images": images, "seeds": c["seeds"], "targets": [dict(row)],
                                            **findings, "rounds": summary["rounds"]})
    return path


def _train_drop_words(rate: float) -> str:
    if not rate:
        return "trained without channel dropout"
    return f"trained with channel dropout ramped over epochs and depth up to {rate:g}"
