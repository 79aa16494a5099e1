"""SP-Net (Kuratsu & Nakamura, arXiv 2212.03415): slimmable networks whose sub-networks come from
multi-base pruning.

Instead of uniform widths, sub-network k of a slimmable net takes its per-unit channel *counts*
from pruning base network k (trained at its own width multiplier, with an L1 penalty on the BN
scales) to a FLOPs target; the weights of the largest base are sorted per unit by importance so
every sub-network is a prefix of one set of weights (*slimmable channel sorting*); residual
streams are untied and matched by zero padding. The K sub-networks are then fine-tuned jointly.

This module holds the pieces over the shared core: per-unit importance, pruning to a FLOPs
target with a global threshold, and channel sorting. Departures from the official code
(hideakikuratsu/SP-Net) are in docs/methods/spnet.md.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from widthsearch.errors import UserError
from widthsearch.io import write_json_atomic, write_text_atomic
from widthsearch.methods.run_state import load_run_state
from widthsearch.space import ChannelSpace, Subnet, Supernet


def _bn_gamma(net: Supernet, unit: str) -> Tensor | None:
    """Sum of |gamma| over the unit's own batch norms (a tied stream has several)."""
    length = net.space.unit(unit).max
    total = None
    for name, dim, span in net.members(unit):
        module = net.model.get_submodule(name)
        if dim == 0 and isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine and len(span) == length:
            gamma = module.weight.detach().abs()[span.start:span.stop].double()
            total = gamma if total is None else total + gamma
    return total


def _filter_norm(net: Supernet, unit: str) -> Tensor:
    """L1 norm of each output filter of the unit's producers (a unit without batch norm)."""
    length = net.space.unit(unit).max
    total = torch.zeros(length, dtype=torch.float64)
    for name, dim, span in net.members(unit):
        module = net.model.get_submodule(name)
        if dim == 0 and isinstance(module, (nn.Conv2d, nn.Linear)) and len(span) == length:
            total += module.weight.detach().abs()[span.start:span.stop].flatten(1).sum(1).double()
    return total


def _bn_gamma_or_magnitude(net: Supernet, unit: str) -> Tensor:
    gamma = _bn_gamma(net, unit)
    return gamma if gamma is not None else _filter_norm(net, unit)


#: per-unit channel importance protocols: ``(net, unit) -> tensor of the unit's physical width``
IMPORTANCE: dict[str, Callable[[Supernet, str], Tensor]] = {
    "bn_gamma": _bn_gamma_or_magnitude,  # SP-Net's |gamma|; units without BN fall back to filter norms
    "magnitude": _filter_norm,
}


def unit_importance(net: Supernet, kind: str = "bn_gamma") -> dict[str, Tensor]:
    """Importance of every channel of every unit (higher = keep)."""
    try:
        measure = IMPORTANCE[kind]
    except KeyError:
        raise UserError(f"unknown importance {kind!r}; choose from {', '.join(IMPORTANCE)}") from None
    return {u.name: measure(net, u.name) for u in net.space.units}


def prune_to_flops(
    space: ChannelSpace,
    importance: Mapping[str, Tensor],
    target_flops: float,
    *,
    floor: float = 0.1,
    iterations: int = 100,
    flops: Callable[[Mapping[str, int]], float] | None = None,
) -> dict[str, int]:
    """Per-unit channel counts from one global importance threshold, bisected so that the pruned
    network is the largest within ``target_flops``. Each unit keeps at least ``floor`` of its
    channels (at least one): a global threshold compares layers with different scales, and the
    floor stops a layer from vanishing (the official code's 10 %).

    ``flops(counts)`` measures a candidate (default ``space.cost(counts).flops``); SP-Net measures
    the sub-network the counts become in another space (see :func:`run_spnet`). It must grow with
    the counts."""
    floors = {u.name: max(1, round(floor * u.max)) for u in space.units}
    measure = flops or (lambda c: space.cost(c).flops)

    def counts(threshold: float) -> dict[str, int]:
        return {u.name: max(floors[u.name], int((importance[u.name] > threshold).sum())) for u in space.units}

    if measure(counts(float("inf"))) > target_flops:
        raise UserError(f"even the floors ({100 * floor:g}% of every unit) exceed {target_flops:.0f} FLOPs")
    everything = max(float(v.max()) for v in importance.values())
    low, high = -1.0, everything  # counts(low) keeps all channels; counts(high) only the floors
    if measure(counts(low)) <= target_flops:
        return counts(low)
    for _ in range(iterations):
        mid = (low + high) / 2
        if measure(counts(mid)) <= target_flops:
            high = mid
        else:
            low = mid
    return counts(high)


@torch.no_grad()
def sort_channels(net: Supernet, importance: Mapping[str, Tensor]) -> dict[str, tuple[int, ...]]:
    """Slimmable channel sorting: permute every unit's weights by descending importance, so a
    prefix keeps the most important channels. Returns the rankings that units joined by zero
    padding keep instead (their channels are added position by position, so they cannot be
    sorted independently; as in SP-Net's zero-padding match they keep masks in the original
    order: each unit's own top-importance channels, and the sum runs their union)."""
    joined = {m for members in net.space.analysis.joins.values() for m in members}
    rankings: dict[str, tuple[int, ...]] = {}
    for unit in net.space.units:
        order = torch.argsort(importance[unit.name], descending=True, stable=True)
        if net.space.root_of(unit.name) in joined:
            rankings[unit.name] = tuple(int(i) for i in order)
        else:
            net.permute(unit.name, order)
    return rankings


def sorted_subnet(counts: Mapping[str, int], rankings: Mapping[str, tuple[int, ...]]) -> Subnet:
    """The sub-network of ``counts`` on sorted weights: prefixes, rankings for joined units."""
    return Subnet(counts, dict(rankings))


# ---- the whole method: bases -> multi-base pruning + sorting -> joint fine-tune -> export -----------
STATE_FILE = "spnet_state.json"
STATE_VERSION = 1
#: the default targets: FLOPs of the uniform nets at these fractions of the largest base's width
#: (S-Net's widths, which SP-Net matches)
UNIFORM_TARGETS = (0.5, 0.75, 1.0)

SPNET_DEFAULTS: dict[str, Any] = {
    "model": "tiny_cnn",
    "model_kwargs": None,  # keyword arguments of a user's model factory
    "data": "digits",
    "bases": (0.75, 1.0),  # SP-Net's bases for ResNets
    "targets": None,  # None: UNIFORM_TARGETS; numbers in (0, 1]: fractions of the largest base's FLOPs
    "base_epochs": 8,
    "finetune_epochs": 8,
    "residual": "pad",  # SP-Net's zero-padding match; "tie" is the ablation
    "bn_l1": 1e-5,
    "bn_init": 0.5,
    "kd_weight": 0.9,
    "floor": 0.1,
    "batch_size": 128,
    "lr": 0.1,
    "seed": 0,
    "heldout_fraction": 0.1,
    "calib_images": 2048,
    "threads": None,
    "device": "auto",
    "compile": False,  # torch.compile the base trainings' steps (speed only)
}
#: settings that may differ on --resume (they do not change the computation beyond float rounding)
RESUMABLE = frozenset({"threads", "device", "compile"})


def parse_bases(text: str) -> list[float]:
    """``"0.75,1.0"`` -> ``[0.75, 1.0]``: distinct positive width multipliers."""
    try:
        values = [float(t) for t in text.split(",")]
    except ValueError:
        raise UserError(f"--bases {text!r}: expected width multipliers like 0.75,1.0") from None
    return check_bases(values)


def check_bases(values: Sequence[float]) -> list[float]:
    values = sorted(float(v) for v in values)
    if not values or any(not (math.isfinite(v) and v > 0) for v in values):
        raise UserError(f"--bases {','.join(f'{v:g}' for v in values) or '(none)'}: every width must be positive")
    if len(set(values)) < len(values):
        raise UserError(f"--bases {','.join(f'{v:g}' for v in values)}: a width is given twice")
    return values


def parse_targets(text: str) -> list[float]:
    """``"10M,23M,40.8M"`` -> FLOPs; numbers in (0, 1] are fractions of the largest base's FLOPs."""
    from widthsearch.formatting import parse_count

    try:
        values = [parse_count(t) for t in text.split(",")]
    except UserError:
        raise UserError(f"--targets {text!r}: expected FLOPs like 10M,23M,40.8M (or fractions like 0.5,1)") from None
    return check_targets(values)


def check_targets(values: Sequence[float]) -> list[float]:
    values = sorted(float(v) for v in values)
    shown = ",".join(f"{v:g}" for v in values)
    if any(not (math.isfinite(v) and v > 0) for v in values):
        raise UserError(f"--targets {shown}: every target must be positive")
    if len(values) < 2:
        raise UserError(f"--targets {shown or '(none)'}: a slimmable net needs at least two sub-networks")
    if len(set(values)) < len(values):
        raise UserError(f"--targets {shown}: a target is given twice")
    return values


def base_of_target(index: int, bases: int) -> int:
    """The base that sub-network ``index`` (targets sorted ascending) is pruned from: the i-th
    smallest target uses the i-th smallest base, targets beyond the bases use the largest (SP-Net's
    ResNet runs: 3 targets from bases 0.75 and 1.0 = [0.75, 1.0, 1.0])."""
    return min(index, bases - 1)


def spnet_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """SP-Net's checked settings: defaults < given settings, in plain JSON form. ``run --method spnet``'s generic names map
    onto SP-Net's: ``epochs`` -> ``base_epochs``, ``retrain_epochs`` -> ``finetune_epochs``, and
    ``width_mult`` scales the default bases."""
    given = {k: v for k, v in settings.items() if v is not None}
    aliases = {"epochs": "base_epochs", "retrain_epochs": "finetune_epochs"}
    for generic, own in aliases.items():
        if generic in given and own not in given:
            given[own] = given[generic]
    if "width_mult" in given and "bases" not in given:
        given["bases"] = [b * float(given["width_mult"]) for b in SPNET_DEFAULTS["bases"]]
    s = {**SPNET_DEFAULTS, **{k: v for k, v in given.items() if k in SPNET_DEFAULTS}}
    s["bases"] = check_bases(s["bases"])
    s["targets"] = None if s["targets"] is None else check_targets(s["targets"])
    if s["residual"] not in ("pad", "tie"):
        raise UserError(f"--residual must be pad or tie, got {s['residual']!r}")
    for key in ("base_epochs", "finetune_epochs"):
        if not isinstance(s[key], int) or s[key] < 1:
            raise UserError(f"--{key.replace('_', '-')} must be a positive integer, got {s[key]!r}")
    if not 0 < float(s["floor"]) < 1:
        raise UserError(f"the pruning floor must be in (0, 1), got {s['floor']}")
    return s


def _load_state(out: Path, s: Mapping[str, Any], resume: bool) -> dict | None:
    if not resume:
        return None
    return load_run_state(out / STATE_FILE, s, version=STATE_VERSION, mutable=RESUMABLE)


def spnet_data(s: Mapping[str, Any]):
    """The data every SP-Net arm trains and scores on: held-out split by ``s["seed"]``, no augmentation
    (the trainings add their own)."""
    from widthsearch.data import load_data

    return load_data(s["data"], s["heldout_fraction"], s["seed"], augment="none")


class SpnetPlan:
    """What every call derives again from the settings (:func:`spnet_settings`): the data, the
    spaces of the bases (``spec(width)``), the bases' FLOPs and the FLOPs targets."""

    def __init__(self, s: Mapping[str, Any]) -> None:
        from widthsearch.space import SpaceSpec
        from widthsearch.training.retrain import network_cost
        from widthsearch.space.spec import build_space_model
        from widthsearch.training.skeleton import spec_for_data

        self.data = spnet_data(s)

        def spec(width: float) -> SpaceSpec:  # every channel count is allowed: pruning sets them freely
            return spec_for_data(SpaceSpec(s["model"], float(width), groups=None, divisor=1, residual=s["residual"],
                                           model_kwargs=dict(s["model_kwargs"] or {})), self.data)

        def flops(width: float) -> int:
            return network_cost(build_space_model(spec(width)), self.data.input_shape)[0]

        self.spec = spec
        self.bases = list(s["bases"])
        self.largest = spec(self.bases[-1])
        self.base_flops = [flops(w) for w in self.bases]
        if s["targets"] is None:
            targets = [float(flops(f * self.bases[-1])) for f in UNIFORM_TARGETS]
        else:
            targets = [t * self.base_flops[-1] if t <= 1 else t for t in s["targets"]]
        self.targets = check_targets(targets)
        if self.targets[-1] > self.base_flops[-1]:
            raise UserError(f"target {self.targets[-1]:.0f} FLOPs is above the largest base "
                            f"({self.base_flops[-1]} FLOPs at x{self.bases[-1]:g})")
        if len(self.targets) < len(self.bases):
            raise UserError(f"{len(self.bases)} bases for {len(self.targets)} targets: every base prunes to one "
                            "target, so give at least as many targets as bases")


def run_spnet(
    settings: Mapping[str, Any],
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
    stop_after: Callable[[str], bool] | None = None,
) -> dict[str, Any]:
    """SP-Net end to end in ``out_dir``; returns the summary (also ``spnet.json``).

    1. ``bases/<w>/``: the model trained at each width multiplier of ``bases`` with ``bn_l1`` and
       ``bn_init``, ``base_epochs`` each;
    2. ``configs/subnet-<k>.yaml``: sub-network k (targets ascending) takes its per-unit counts from
       base :func:`base_of_target` by a global |gamma| threshold bisected to its FLOPs target
       (measured on the sub-network it becomes in the largest base's space); ``sorted.pt``: the
       largest base with every unit sorted by |gamma| (:func:`sort_channels`);
    3. ``finetune/``: the sub-networks trained jointly from ``sorted.pt`` (largest CE, the others
       ``kd_weight`` KD + the rest CE; L1 on gamma continues), ``finetune_epochs``;
    4. ``static/subnet-<k>.pt``: the static nets (each with its own calibrated BN statistics), their
       test accuracy; ``report.md``.

    The state (``spnet_state.json``) is written atomically after every stage and every training
    resumes from its own checkpoint, so a killed run continues with ``resume=True`` to the same
    result. ``stop_after(stage)`` returning True ends the call after that stage (``base:<w>``,
    ``prune``, ``finetune``, ``export``); tests use it to interrupt.
    """
    from widthsearch.methods.autoslim import prepare_run_folder

    s = spnet_settings(settings)
    out = Path(out_dir)
    if (out / STATE_FILE).exists() and not resume:
        raise UserError(f"{out} already holds an SP-Net run ({STATE_FILE}); pass --resume to continue it, "
                        "or choose another --out")
    plan = SpnetPlan(s)  # every check before anything is written
    out = prepare_run_folder(out, resume)
    state = _load_state(out, s, resume) or {"version": STATE_VERSION, "settings": s, "stage": "bases", "bases": []}
    say = echo or (lambda line: None)

    def save(stage: str, next_stage: str) -> bool:
        state["stage"] = next_stage
        write_json_atomic(out / STATE_FILE, state)
        return bool(stop_after and stop_after(stage))

    save("start", state["stage"])
    if state["stage"] == "bases":
        for i, width in enumerate(plan.bases[len(state["bases"]):], start=len(state["bases"])):
            say(f"[1/4] base x{width:g} ({i + 1}/{len(plan.bases)}): {s['model']} on {s['data']}, "
                f"{s['base_epochs']} epochs, L1 {s['bn_l1']:g} on BN scales from {s['bn_init']}")
            state["bases"].append(_train_base(s, out / "bases" / f"{width:g}", width, progress, echo))
            if save(f"base:{width:g}", "bases" if i + 1 < len(plan.bases) else "prune"):
                return state
    if state["stage"] == "prune":
        say(f"[2/4] prune the bases to {', '.join(_flops_text(t) for t in plan.targets)} FLOPs; sort the largest")
        state["subnets"] = _prune_and_sort(s, plan, out, state["bases"], say)
        if save("prune", "finetune"):
            return state
    if state["stage"] == "finetune":
        say(f"[3/4] joint fine-tune of {len(state['subnets'])} sub-networks from the sorted largest base, "
            f"{s['finetune_epochs']} epochs")
        state["finetune"] = _finetune(s, out, state["subnets"], progress, echo)
        if save("finetune", "export"):
            return state
    if state["stage"] == "export":
        say("[4/4] export the static sub-networks")
        export_joint_members(out, state["finetune"]["checkpoint"], state["subnets"], plan.data, s["device"])
        if save("export", "done"):
            return state
    return _summary(out, s, plan, state)


def _flops_text(value: float) -> str:
    from widthsearch.formatting import format_count

    return format_count(value)


def _train_base(s: Mapping[str, Any], folder: Path, width: float, progress: bool, echo) -> dict[str, Any]:
    from widthsearch.training.retrain import train_network

    recipe = {k: s[k] for k in ("model", "model_kwargs", "data", "batch_size", "lr", "seed", "heldout_fraction",
                                "threads", "device", "compile", "bn_l1", "bn_init")}
    again = (folder / "model.pt").exists()  # a killed base training continues from its checkpoint
    result = train_network({**recipe, "epochs": s["base_epochs"]}, folder, width_mult=None if again else width,
                           resume=again, progress=progress, echo=echo)
    return {"width": width, "checkpoint": result["checkpoint"], "accuracy": result["accuracy"],
            "flops": result["flops"], "params": result["params"], "test_images": result["test_images"]}


def _base_supernet(plan: SpnetPlan, width: float, checkpoint: str) -> Supernet:
    """The supernet of a base's space holding the base's trained weights (at full width)."""
    from widthsearch.space import build_supernet
    from widthsearch.training.retrain import load_trained

    net, _ = build_supernet(plan.spec(width))
    trained, _meta = load_trained(checkpoint)
    net.model.load_state_dict(trained.state_dict())  # the supernet keeps the model's parameter names
    net.model.eval()
    return net


def _prune_and_sort(s: Mapping[str, Any], plan: SpnetPlan, out: Path, bases: Sequence[Mapping[str, Any]],
                    say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Counts per target from its base, the largest base sorted into ``sorted.pt``, one config per target."""
    from widthsearch.export import save_static
    from widthsearch.space.config import save_config

    largest = _base_supernet(plan, plan.bases[-1], bases[-1]["checkpoint"])
    space, spec = largest.space, plan.largest
    spec = spec.with_physical({u.name: u.max for u in space.units})
    largest_importance = unit_importance(largest)
    rankings = sort_channels(largest, largest_importance)
    meta = {"model": s["model"], "num_classes": spec.num_classes, "input_shape": list(spec.input_shape),
            "space": spec.to_dict()}
    save_static(out / "sorted.pt", largest, space.max_config(), meta, bn_recalibrated=False)

    def in_largest(counts: Mapping[str, int]) -> Subnet:
        # a smaller base's units are narrower (same model, smaller multiplier): its counts fit
        return sorted_subnet({u.name: min(u.max, int(counts[u.name])) for u in space.units}, rankings)

    rows = []
    for k, target in enumerate(plan.targets):
        b = base_of_target(k, len(plan.bases))
        if b == len(plan.bases) - 1:
            base_space, importance = space, largest_importance  # measured before sorting, like the others
        else:
            base = _base_supernet(plan, plan.bases[b], bases[b]["checkpoint"])
            base_space, importance = base.space, unit_importance(base)
        counts = prune_to_flops(base_space, importance, target, floor=float(s["floor"]),
                                flops=lambda c: space.cost(in_largest(c)).flops)
        subnet = in_largest(counts)
        cost = space.cost(subnet)
        if cost.flops < 0.9 * target:
            say(f"note: base x{plan.bases[b]:g} keeps {_flops_text(cost.flops)} FLOPs, below the target "
                f"{_flops_text(target)}")
        path = save_config(out / "configs" / f"subnet-{k + 1}.yaml", space, subnet, model=s["model"],
                           space=spec.to_dict(), target_flops=int(round(target)), base_width=plan.bases[b])
        rows.append({"target_flops": int(round(target)), "base": plan.bases[b], "config": str(path),
                     "flops": cost.flops, "params": cost.params})
    return rows


def _finetune(s: Mapping[str, Any], out: Path, subnets: Sequence[Mapping[str, Any]], progress: bool,
              echo) -> dict[str, Any]:
    from widthsearch.training.joint import train_joint

    folder = out / "finetune"
    again = (folder / "joint.pt").exists()
    args = {k: s[k] for k in ("model", "data", "batch_size", "lr", "seed", "heldout_fraction", "threads", "device",
                              "bn_l1", "kd_weight", "calib_images", "residual")}
    args.update(epochs=s["finetune_epochs"], init_from=str(out / "sorted.pt"))
    result = train_joint(args, folder, channels=None if again else [r["config"] for r in subnets], resume=again,
                         progress=progress, echo=echo)
    return {"checkpoint": result["checkpoint"], "accuracy": [r["accuracy"] for r in result["subnets"]],
            "test_images": result["test_images"]}


def export_joint_members(out: Path, checkpoint: str, subnets: list[dict[str, Any]], data,
                         device: str = "cpu") -> None:
    """The static nets of a joint checkpoint into ``out/static/<config stem>.pt``, as ``widthsearch
    export --checkpoint joint.pt`` writes them; each row of ``subnets`` (one per member, in order)
    gets ``static``, ``flops``, ``params`` and the test ``accuracy`` measured on the saved file, on
    ``device`` (a run's ``--device``: ``auto`` takes CUDA when there is one). SP-Net's fine-tune and
    the experiment's S-Net arm are exported alike."""
    from widthsearch.export import load_static, save_static
    from widthsearch.training.distributed import resolve_device
    from widthsearch.training.evaluate import evaluate
    from widthsearch.training.joint import member_exports

    net, meta, exports = member_exports(checkpoint)
    for (source, subnet, bn_context), row in zip(exports, subnets):
        target = out / "static" / f"{source.stem}.pt"
        target.parent.mkdir(parents=True, exist_ok=True)
        with bn_context:
            header = save_static(target, net, subnet, meta, bn_recalibrated=True)
        static, _ = load_static(target)  # scored as saved
        row.update(static=str(target), flops=header["flops"], params=header["params"],
                   accuracy=evaluate(static.to(resolve_device(device)), data.test.x, data.test.y))


def _summary(out: Path, s: Mapping[str, Any], plan: SpnetPlan, state: Mapping[str, Any]) -> dict[str, Any]:
    test_images = len(plan.data.test)
    rows = [{"target": _flops_text(r["target_flops"]), **r} for r in state["subnets"]]
    summary = {"subnets": rows, "targets": rows, "bases": state["bases"], "residual": s["residual"],
               "test_images": test_images, "report": str(out / "report.md")}
    _write_report(out, s, summary)
    write_json_atomic(out / "spnet.json", summary)
    return summary


def _write_report(out: Path, s: Mapping[str, Any], summary: Mapping[str, Any]) -> Path:
    from widthsearch.formatting import format_count

    images = summary["test_images"]
    lines = [
        "# SP-Net run",
        "",
        f"Model `{s['model']}` on `{s['data']}`, residual policy `{s['residual']}`. Bases at "
        f"{', '.join(f'x{w:g}' for w in s['bases'])}, {s['base_epochs']} epochs each with L1 {s['bn_l1']:g} on the "
        f"BN scales (initialised at {s['bn_init']}); sub-network k pruned from base k by a global |gamma| threshold "
        f"bisected to its FLOPs target (floor {100 * s['floor']:g}% per unit); the largest base sorted by |gamma| and "
        f"the sub-networks fine-tuned jointly from it for {s['finetune_epochs']} epochs (KD weight {s['kd_weight']}), "
        f"each with its own calibrated BN statistics. Accuracies are on the {images} test images, one seed "
        f"({s['seed']}): a difference of one image is {100 / max(1, images):.2f} points.",
        "",
        "| sub-network | pruned from | target FLOPs | FLOPs | params | test accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(summary["subnets"]):
        lines.append(f"| [{i + 1}]({os.path.relpath(r['config'], out)}) | base x{r['base']:g} | "
                     f"{format_count(r['target_flops'])} | {format_count(r['flops'])} | {format_count(r['params'])} | "
                     f"{100 * r['accuracy']:.2f}% |")
    lines += ["", "The bases, trained individually (before pruning):", "",
              "| base | FLOPs | params | test accuracy |", "|---|---|---|---|"]
    for b in summary["bases"]:
        lines.append(f"| x{b['width']:g} | {format_count(b['flops'])} | {format_count(b['params'])} | "
                     f"{100 * b['accuracy']:.2f}% |")
    lines.append("")
    path = out / "report.md"
    write_text_atomic(path, "\n".join(lines))
    return path
