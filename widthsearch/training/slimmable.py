"""Supernet training (US-Nets / AutoSlim recipe) and loading a trained supernet back.

The supernet is built from its :class:`~widthsearch.space.spec.SpaceSpec` (stored in the
checkpoint as ``"space"``), so :func:`load_supernet` rebuilds exactly the trained space; every
step trains the terms that the run's :mod:`strategy <widthsearch.training.sampling>` plans.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from widthsearch.data import Dataset, mix_seed
from widthsearch.errors import UserError
from widthsearch.models.user import model_source
from widthsearch.space.spec import SpaceSpec, build_supernet
from widthsearch.training.bn_sparsity import init_bn_weights
from widthsearch.training.checkpoint import SUPERNET_FORMAT, load_checkpoint, load_state_checked
from widthsearch.training.distributed import DistContext
from widthsearch.training.evaluate import DEFAULT_CALIB_IMAGES, calibration_batches, supernet_metrics
from widthsearch.training.loop import EpochLoop
from widthsearch.training.precision import apply_memory_format
from widthsearch.training.sampling import get_strategy
from widthsearch.training.skeleton import Job, TrainingKind, record_spec, run_training, spec_for_data
from widthsearch.training.steps import subnet_step

__all__ = ["SUPERNET_TRAINING", "SUPERNET_DEFAULTS", "train_supernet", "load_supernet", "saved_spec"]

CHECKPOINT_NAME = "supernet.pt"
#: held-out images scoring the max/min configs after every epoch (a progress signal, not a result)
EPOCH_EVAL_IMAGES = 2000

#: supernet training's arguments beyond the recipe
SUPERNET_OPTIONS: dict[str, Any] = {
    "model": "tiny_cnn",
    "model_kwargs": None,  # keyword arguments of a user's model factory (--model-arg)
    "strategy": "autoslim",
    "width_mult": 1.0,
    "groups": 10,
    "residual": "tie",
    "num_samples": 4,
    "calib_images": DEFAULT_CALIB_IMAGES,
    "full_every": 0,
    "min_bins": 0,
}


def supernet_spec(a: Mapping[str, Any]) -> SpaceSpec:
    """The space of a new supernet run. ``min_bins=m`` builds BCNetV2's enlarged supernet: the
    model (groups+m)/groups wider, cut into groups+m bins, sub-networks using m..groups of them
    (so the top choice is the model at ``width_mult``)."""
    groups, m = a["groups"], int(a.get("min_bins") or 0)
    if m < 0:
        raise UserError(f"--min-bins must be 0 (off) or positive, got {m}")
    kwargs = dict(a.get("model_kwargs") or {})
    if not m:
        return SpaceSpec(a["model"], a["width_mult"], groups=groups, residual=a["residual"], model_kwargs=kwargs)
    return SpaceSpec(a["model"], a["width_mult"], groups=groups + m, bins=(m, groups), widen=(groups + m) / groups,
                     residual=a["residual"], model_kwargs=kwargs)


def saved_spec(ckpt: Mapping[str, Any]) -> SpaceSpec:
    """The space spec of a checkpoint; older ones without ``"space"`` keep it in their arguments."""
    return SpaceSpec.from_dict(ckpt.get("space") or ckpt["args"])


def heldout_sample(data: Dataset, seed: int, images: int = EPOCH_EVAL_IMAGES):
    """A fixed, seeded subset of the held-out split for the per-epoch progress scores."""
    gen = torch.Generator().manual_seed(mix_seed(seed, 11))
    idx = torch.randperm(len(data.heldout), generator=gen)[:images]
    return data.heldout.x[idx], data.heldout.y[idx]


def _build(a: dict, data: Dataset, ctx: DistContext, ckpt: dict | None, instance: nn.Module | None = None) -> Job:
    strategy = get_strategy(a["strategy"], a["num_samples"], full_every=a["full_every"])
    spec = saved_spec(ckpt) if ckpt is not None else spec_for_data(supernet_spec(a), data)
    torch.manual_seed(a["seed"])
    # the supernet converts its model's layers in place: never the user's own instance
    net, spec = build_supernet(spec, model=None if instance is None else copy.deepcopy(instance))
    init_bn_weights(net.model, a.get("bn_init"))
    if ckpt is not None:
        _check_units(ckpt, net.space, ckpt.get("path", CHECKPOINT_NAME))
    net.to(ctx.device)
    record_spec(a, spec)
    space = net.space
    max_cfg, min_cfg = space.max_config(), space.min_config()

    def step(xb, yb, rng):
        terms = strategy.plan(space, rng)
        stats = subnet_step(net, xb, yb, terms, label_smoothing=a["label_smoothing"])
        strategy.observe(terms, stats["losses"])
        net.set_config(max_cfg)
        return stats

    calib = calibration_batches(data.train.x, a["calib_images"], seed=mix_seed(a["seed"], 5))
    x, y = heldout_sample(data, a["seed"])

    def evaluate_epoch() -> dict:
        """Held-out accuracy and loss of the max and min configs (every process calibrates and scores
        its share, the counts are reduced: the numbers of one process on all the images)."""
        if len(data.heldout) == 0:
            return {}
        row = {}
        for name, config in (("max", max_cfg), ("min", min_cfg)):
            found = supernet_metrics(net, config, x, y, bn="calibrate", calib=calib, ctx=ctx)
            row[f"{name}_acc"], row[f"{name}_loss"] = found["accuracy"], found["loss"]
        return row

    def summarize(loop: EpochLoop, last: dict) -> dict:
        return {
            "strategy": a["strategy"],
            "width_mult": a["width_mult"],
            "groups": a["groups"],
            "residual": spec.residual,
            "units": len(space.units),
            "space_size": space.size,
            "max_flops": space.cost(max_cfg).flops,
            "min_flops": space.cost(min_cfg).flops,
            "loss": last.get("loss"),
            "max_acc": last.get("max_acc"),
            "min_acc": last.get("min_acc"),
        }

    return Job(
        model=net.model, step=step, evaluate_epoch=evaluate_epoch, summarize=summarize,
        states={"strategy": strategy},
        ckpt_extra={"units": [u.name for u in space.units], "space": spec.to_dict()},
    )


SUPERNET_TRAINING = TrainingKind(
    what="a supernet", checkpoint_name=CHECKPOINT_NAME, format=SUPERNET_FORMAT, options=SUPERNET_OPTIONS, build=_build,
)
SUPERNET_DEFAULTS: dict[str, Any] = SUPERNET_TRAINING.defaults()


def train_supernet(args: Mapping[str, Any] | None, out_dir: str | Path, *,
                   model: str | nn.Module | Callable[..., nn.Module] | None = None, **run_options: Any) -> dict:
    """Train a slimmable supernet; checkpoint ``out_dir/supernet.pt`` after every epoch.

    ``args``: any of :data:`SUPERNET_DEFAULTS` (``None`` values mean "default"/"as in the
    checkpoint"). ``model`` (or ``args["model"]``): a zoo name, an import spec
    ``"package.module:factory"`` / ``"file.py:factory"`` (``args["model_kwargs"]`` are the factory's
    keyword arguments), an importable factory, or an ``nn.Module`` instance. A copy of an instance is
    trained (the instance is left as it is) and the checkpoint records only its class name:
    resuming or :func:`load_supernet` then needs the same module passed again. Every step trains
    the terms of the strategy (``autoslim``: max, min and ``num_samples - 2`` random configs, each
    unit drawn independently; inplace distillation from the max config). ``run_options`` are those
    of :func:`~widthsearch.training.skeleton.run_training` (``resume``, ``progress``,
    ``stop_after``: end this call after that many epochs, ``echo``). Returns a summary dict (also
    written to ``out_dir/result.json``). Under ``torchrun`` each process trains on its shard with
    its own sampled configs; only rank 0 writes.
    """
    args, kind = dict(args or {}), SUPERNET_TRAINING
    name, instance = model_source(model if model is not None else args.get("model"))
    if name is not None:
        args["model"] = name  # what the checkpoint stores: always a string
    if instance is not None:
        kind = dataclasses.replace(kind, build=functools.partial(_build, instance=instance))
    return run_training(kind, args, out_dir, **run_options)


def _check_units(ckpt: dict, space, path) -> None:
    units = ckpt.get("units")
    if units is not None and list(units) != [u.name for u in space.units]:
        raise UserError(f"{path}: the checkpoint's channel units do not match this model's; was the model code changed?")


def load_supernet(path: str | Path, device: str | torch.device = "cpu", *, model: nn.Module | None = None):
    """Rebuild the supernet of a checkpoint from its stored space spec and load its weights.

    ``model``: for a supernet trained from an ``nn.Module`` instance, the same module again (a copy
    is converted; its class must be the recorded one and its units the recorded widths).

    Returns ``(net, meta)``: a :class:`~widthsearch.space.Supernet` (model in eval mode, at the max
    config) and the run's arguments plus ``space`` (the spec as a dict), ``epoch``, ``history`` and
    ``path``. Accepts the checkpoint file or the folder holding ``supernet.pt``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    ckpt = load_checkpoint(path, expect=SUPERNET_FORMAT)
    net, spec = build_supernet(saved_spec(ckpt), model=None if model is None else copy.deepcopy(model))
    _check_units(ckpt, net.space, path)
    load_state_checked(net.model, ckpt["model"], str(path))
    net.to(device)
    a = ckpt["args"]
    # a run trained in NHWC is evaluated in NHWC too (its fast layout); the numbers do not change
    apply_memory_format(net.model, bool(a.get("channels_last", False)))
    net.model.eval()
    meta = {**a, "space": spec.to_dict(), "epoch": int(ckpt["epoch"]), "history": list(ckpt.get("history", [])),
            "path": str(path)}
    return net, meta
