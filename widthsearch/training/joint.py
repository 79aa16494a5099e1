"""Joint training of K fixed sub-networks as one slimmable network, and splitting it again.

``widthsearch train --channels A.yaml B.yaml C.yaml`` trains the K configs (which must refer to
one space) inside the supernet of that space: every step runs the largest one (by FLOPs) on the
labels, then every other with ``kd_weight * KD + (1 - kd_weight) * CE`` against the largest one's
soft predictions (SP-Net's loss; its default weight 0.9), one optimizer step for all (slimmable
networks, Yu et al., ICLR 2019, train a fixed set of widths this way).

The K sub-networks share weights but not BN statistics: after every epoch each one's statistics
are calibrated exactly (:meth:`Supernet.calibrate_bn` on a fixed set of training images) and
stored in the checkpoint, so :func:`member_static` (``widthsearch export --checkpoint joint.pt``)
gives K static networks that compute what the joint network computes at each sub-network.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from widthsearch.data import Dataset, mix_seed
from widthsearch.errors import UserError
from widthsearch.space.spec import SpaceSpec, build_supernet
from widthsearch.space.subnet import Subnet, as_subnet
from widthsearch.training.bn_sparsity import init_bn_weights
from widthsearch.training.checkpoint import JOINT_FORMAT, load_checkpoint, load_state_checked, read_torch_file
from widthsearch.training.distributed import DistContext
from widthsearch.training.evaluate import (
    DEFAULT_CALIB_IMAGES, calibration_batches, evaluate_metrics, preserve_bn_state, share_batches,
)
from widthsearch.training.loop import EpochLoop
from widthsearch.training.precision import apply_memory_format
from widthsearch.training.retrain import config_file_spec
from widthsearch.training.skeleton import Job, TrainingKind, record_spec, run_training, spec_for_data
from widthsearch.training.slimmable import heldout_sample
from widthsearch.training.steps import SubnetLoss, subnet_step

__all__ = [
    "JOINT_TRAINING", "DEFAULT_KD_WEIGHT", "JointMember", "train_joint", "load_joint", "member_static",
    "bn_statistics", "using_bn_statistics", "load_initial_weights", "member_exports",
]

CHECKPOINT_NAME = "joint.pt"
#: SP-Net's weight of the distillation term in the smaller sub-networks' loss
DEFAULT_KD_WEIGHT = 0.9

#: joint training's arguments beyond the recipe; ``subnets`` is set from the configs at the start
JOINT_OPTIONS: dict[str, Any] = {
    "model": None,
    "subnets": None,
    "residual": "tie",
    "kd_weight": DEFAULT_KD_WEIGHT,
    "calib_images": DEFAULT_CALIB_IMAGES,
    "init_from": None,
}


class JointMember(NamedTuple):
    """One sub-network of a joint checkpoint: its config file, its Subnet and its BN statistics."""

    source: str
    subnet: Subnet
    bn: Mapping[str, Tensor]


# ---- per-subnet BN statistics ------------------------------------------------------------------
def bn_statistics(model: nn.Module) -> dict[str, Tensor]:
    """Every BN layer's running mean and variance, by ``state_dict`` key (CPU copies)."""
    stats = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            stats[f"{name}.running_mean"] = module.running_mean.detach().cpu().clone()
            stats[f"{name}.running_var"] = module.running_var.detach().cpu().clone()
    return stats


@contextlib.contextmanager
def using_bn_statistics(model: nn.Module, stats: Mapping[str, Tensor]) -> Iterator[nn.Module]:
    """Run ``model`` with these BN statistics; its own are restored afterwards."""
    with preserve_bn_state(model), torch.no_grad():
        for key, value in stats.items():
            buffer = model.get_buffer(key)
            buffer.copy_(value.to(buffer.device))
        yield model


class SubnetBatchNorms:
    """The latest calibrated BN statistics of each sub-network (checkpointed as a state)."""

    def __init__(self) -> None:
        self.subnets: list[dict[str, Tensor]] = []

    def state_dict(self) -> dict[str, Any]:
        return {"subnets": self.subnets}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.subnets = [dict(s) for s in state.get("subnets", [])]


def member_static(net, member: JointMember) -> nn.Module:
    """The static network of one member (eval mode), normalised with its own BN statistics."""
    with using_bn_statistics(net.model, member.bn):
        static = net.export(member.subnet)
    return static.eval()


def load_initial_weights(model: nn.Module, path: str | Path) -> None:
    """Start from trained weights at full width of the same space: a trained-model checkpoint
    (``model.pt``), a static export of the full config, or a plain state_dict."""
    path = Path(path)
    ckpt = read_torch_file(path, "--init-from")
    if isinstance(ckpt.get("state_dict"), Mapping):  # a static export
        state = ckpt["state_dict"]
    elif isinstance(ckpt.get("model"), Mapping):  # a training checkpoint
        state = ckpt["model"]
    else:
        state = ckpt
    load_state_checked(model, state, f"--init-from {path} (the configs' space at full width)")


def member_exports(path: str | Path):
    """``(net, meta, [(config file, subnet, context)])`` of a joint checkpoint: entering a member's
    context normalises the net with that member's BN statistics (what ``widthsearch export
    --checkpoint joint.pt`` saves). A one-line error before the first epoch has finished."""
    net, meta, members = load_joint(path)
    if not all(m.bn for m in members):
        raise UserError(f"{path} holds no per-config BN statistics yet (no epoch finished)")
    return net, meta, [(Path(m.source), m.subnet, using_bn_statistics(net.model, m.bn)) for m in members]


# ---- training -----------------------------------------------------------------------------------
def _common_spec(paths: Sequence[str | Path], model_name: str | None, residual: str | None) -> SpaceSpec:
    """The one space all config files refer to; a one-line error when they differ."""
    from widthsearch.space.config import read_config_file

    if len(paths) < 2:
        raise UserError("joint training needs at least two --channels configs")
    specs = [config_file_spec(read_config_file(p), p, model_name, residual) for p in paths]

    def comparable(spec: SpaceSpec) -> dict:  # data fields follow the training data anyway
        return dataclasses.replace(spec, num_classes=None, input_shape=None, model_kwargs={}, physical=None)

    for path, spec in zip(paths[1:], specs[1:]):
        if comparable(spec) != comparable(specs[0]):
            raise UserError(f"{path} and {paths[0]} refer to different spaces; joint training needs one supernet")
    return specs[0]


def _refuse_duplicates(subnets: Sequence[Mapping[str, Any]]) -> None:
    """Two files with one sub-network would train it twice per step under two sets of BN statistics."""
    seen: dict[str, str] = {}
    for entry in subnets:
        key = json.dumps({k: v for k, v in entry.items() if k != "source"}, sort_keys=True, default=str)
        if key in seen:
            raise UserError(f"{entry['source']} and {seen[key]} hold the same sub-network; give distinct configs")
        seen[key] = entry["source"]


def _largest_first(space, subnets: Sequence[Subnet]) -> list[int]:
    return sorted(range(len(subnets)), key=lambda i: -space.cost(subnets[i]).flops)


def _build(a: dict, data: Dataset, ctx: DistContext, ckpt: dict | None, *, channels, residual) -> Job:
    if not 0.0 <= float(a["kd_weight"]) <= 1.0:
        raise UserError(f"--kd-weight must be in [0, 1], got {a['kd_weight']}")
    if ckpt is not None:
        if channels:
            raise UserError("when resuming, the sub-networks come from the checkpoint; drop --channels")
        spec = SpaceSpec.from_dict(ckpt["space"])
    else:
        spec = spec_for_data(_common_spec([str(p) for p in channels or ()], a["model"], residual), data)
    torch.manual_seed(a["seed"])
    net, spec = build_supernet(spec)
    if ckpt is None:
        from widthsearch.space.config import load_config

        configs = [load_config(p, net.space, model=spec.model, strict=False)[0] for p in channels]
        a["subnets"] = [{"source": str(p), **as_subnet(c).to_doc()} for p, c in zip(channels, configs)]
        _refuse_duplicates(a["subnets"])
        if a["init_from"] is not None:
            if a.get("bn_init") is not None:
                raise UserError("--bn-init does not apply with --init-from: the weights come from the file")
            a["init_from"] = str(a["init_from"])
            load_initial_weights(net.model, a["init_from"])
        else:
            init_bn_weights(net.model, a.get("bn_init"))
    a.update(model=spec.model, residual=spec.residual)
    record_spec(a, spec)
    net.to(ctx.device)
    space = net.space
    subnets = [as_subnet(space.validate(Subnet.from_doc(d), strict=False)) for d in a["subnets"]]
    order = _largest_first(space, subnets)
    kd_weight = float(a["kd_weight"])
    terms = [SubnetLoss(subnets[order[0]], 1.0, "ce")]
    terms += [SubnetLoss(subnets[i], 1.0, "mix", kd_weight) for i in order[1:]]

    def step(xb, yb, rng):
        stats = subnet_step(net, xb, yb, terms, label_smoothing=a["label_smoothing"])
        net.set_config(terms[0].subnet)
        return stats

    norms = SubnetBatchNorms()
    calib = calibration_batches(data.train.x, a["calib_images"], seed=mix_seed(a["seed"], 5))
    x, y = heldout_sample(data, a["seed"])

    def evaluate_epoch() -> dict:
        """Calibrate every sub-network's BN statistics (kept for the checkpoint) and score it; under
        torchrun each process calibrates on its share of the batches and scores its share of the
        images, the sums are reduced (every process keeps the statistics of all the batches)."""
        stats, accuracies, losses = [], [], []
        mine, reduce = share_batches(calib, ctx)
        for subnet in subnets:
            with preserve_bn_state(net.model):
                net.calibrate_bn(mine, subnet, reduce=reduce)
                stats.append(bn_statistics(net.model))
                if len(y):
                    found = evaluate_metrics(net, x, y, ctx=ctx)
                    accuracies.append(found["accuracy"])
                    losses.append(found["loss"])
        net.set_config(terms[0].subnet)
        norms.subnets = stats
        return {"subnet_acc": accuracies, "subnet_loss": losses} if accuracies else {}

    def summarize(loop: EpochLoop, last: dict) -> dict:
        rows = []
        for i, (doc, subnet) in enumerate(zip(a["subnets"], subnets)):
            cost = space.cost(subnet)
            accuracy = None
            if norms.subnets:  # on every process: each scores its share of the test images
                static = member_static(net, JointMember(doc["source"], subnet, norms.subnets[i]))
                accuracy = evaluate_metrics(static, data.test.x, data.test.y, ctx=ctx)["accuracy"]
            rows.append({"channels": doc["source"], "flops": cost.flops, "params": cost.params, "accuracy": accuracy,
                         "heldout_accuracy": (last.get("subnet_acc") or [None] * len(subnets))[i]})
        return {"subnets": rows, "kd_weight": kd_weight, "residual": spec.residual, "loss": last.get("loss"),
                "test_images": len(data.test)}

    return Job(model=net.model, step=step, evaluate_epoch=evaluate_epoch, summarize=summarize,
               states={"subnet_bn": norms}, ckpt_extra={"space": spec.to_dict()})


JOINT_TRAINING = TrainingKind(
    what="a joint-training", checkpoint_name=CHECKPOINT_NAME, format=JOINT_FORMAT, options=JOINT_OPTIONS,
    build=functools.partial(_build, channels=None, residual=None),
)


def train_joint(
    args: Mapping[str, Any] | None,
    out_dir: str | Path,
    *,
    channels: Sequence[str | Path] | None = None,
    resume: bool = False,
    progress: bool = False,
    stop_after: int | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict:
    """Train the configs ``channels`` (YAML files of one space) jointly as one slimmable network.

    ``args``: recipe fields plus ``model`` (checked against the files), ``kd_weight`` (default
    :data:`DEFAULT_KD_WEIGHT`), ``calib_images``, ``residual`` (must agree with the files) and
    ``init_from``: a checkpoint whose weights, at full width of the configs' space, replace the
    fresh initialisation (SP-Net fine-tunes its sorted largest base; see
    :func:`load_initial_weights`).
    Writes ``out_dir/joint.pt`` after every epoch (weights, space spec, the sub-networks and each
    one's calibrated BN statistics), ``log.jsonl`` and ``result.json``. Returns ``{"subnets":
    [{"channels", "flops", "params", "accuracy"}, ...], ...}``; accuracies are on the test split.
    """
    explicit = dict(args or {})
    explicit.pop("subnets", None)
    residual = explicit.pop("residual", None)
    kind = dataclasses.replace(JOINT_TRAINING, build=functools.partial(_build, channels=channels, residual=residual))
    return run_training(kind, explicit, out_dir, resume=resume, progress=progress, stop_after=stop_after, echo=echo)


def load_joint(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild a joint checkpoint: ``(net, meta, members)``, one :class:`JointMember` per config.

    ``net`` is the supernet (eval mode, largest member active) with the trained weights; a
    member's BN statistics are empty when the checkpoint has none yet.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    ckpt = load_checkpoint(path, expect=JOINT_FORMAT)
    net, spec = build_supernet(SpaceSpec.from_dict(ckpt["space"]))
    load_state_checked(net.model, ckpt["model"], str(path))
    net.to(device)
    a = ckpt["args"]
    apply_memory_format(net.model, bool(a.get("channels_last", False)))
    net.model.eval()
    stats = ckpt.get("states", {}).get("subnet_bn", {}).get("subnets", [])
    members = [
        JointMember(doc["source"], as_subnet(net.space.validate(Subnet.from_doc(doc), strict=False)),
                    stats[i] if i < len(stats) else {})
        for i, doc in enumerate(a["subnets"])
    ]
    net.set_config(members[_largest_first(net.space, [m.subnet for m in members])[0]].subnet)
    meta = {**a, "space": spec.to_dict(), "epoch": int(ckpt["epoch"]), "path": str(path)}
    return net, meta, members
