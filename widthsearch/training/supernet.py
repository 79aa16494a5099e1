"""Supernet training (US-Nets / AutoSlim recipe) and loading a trained supernet back."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from widthsearch.data import Dataset, load_data, mix_seed
from widthsearch.errors import UserError
from widthsearch.training.checkpoint import SUPERNET_FORMAT, load_checkpoint
from widthsearch.training.distributed import DistContext
from widthsearch.training.evaluate import DEFAULT_CALIB_IMAGES, calibration_batches, supernet_accuracy
from widthsearch.training.loop import EpochLoop, prepare_output, resolve_args, write_json_atomic
from widthsearch.training.precision import apply_memory_format, check_precision
from widthsearch.training.sampling import get_strategy
from widthsearch.training.steps import sandwich_step

__all__ = ["SUPERNET_DEFAULTS", "train_supernet", "load_supernet", "build_for_data"]

SUPERNET_DEFAULTS: dict[str, Any] = {
    "model": "tiny_cnn",
    "data": "digits",
    "strategy": "autoslim",
    "width_mult": 1.0,
    "groups": 10,
    "epochs": 10,
    "batch_size": 128,
    "lr": 0.1,
    "weight_decay": 5e-4,
    "momentum": 0.9,
    "nesterov": True,
    "warmup_epochs": 0.0,
    "num_samples": 4,
    "label_smoothing": 0.0,
    "seed": 0,
    "heldout_fraction": 0.1,
    "augment": "default",
    "calib_images": DEFAULT_CALIB_IMAGES,
    "device": "auto",
    "threads": None,
    "precision": "fp32",
    "channels_last": False,
}

CHECKPOINT_NAME = "supernet.pt"
#: held-out images scoring the max/min configs after every epoch (a progress signal, not a result)
EPOCH_EVAL_IMAGES = 2000


def build_for_data(model_name: str, data: Dataset, width_mult: float) -> tuple[nn.Module, dict]:
    """``build_model`` for this data set's classes and channels; returns (model, extra kwargs)."""
    from widthsearch.models import build_model, model_info

    info = model_info(model_name)
    kwargs: dict[str, Any] = {}
    want_c = int(info["input_shape"][0])
    have_c = int(data.input_shape[0])
    if have_c != want_c:
        if "in_channels" in info["kwargs"]:
            kwargs["in_channels"] = have_c
        else:
            raise UserError(
                f"model {model_name!r} takes {want_c}-channel images but {data.spec} has {have_c} channel(s)"
            )
    model = build_model(model_name, num_classes=data.num_classes, width_mult=width_mult, **kwargs)
    return model, kwargs


def _example_input(shape) -> torch.Tensor:
    return torch.zeros(2, *[int(s) for s in shape])


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads`` when given (one thread is fastest when the cores are shared)."""
    if threads is None:
        return
    if not isinstance(threads, int) or threads < 1:
        raise UserError(f"--threads must be a positive integer, got {threads!r}")
    torch.set_num_threads(threads)


def _check_common(args: Mapping[str, Any]) -> None:
    for key in ("epochs", "batch_size", "groups", "num_samples"):
        if key in args and (not isinstance(args[key], int) or args[key] < 1):
            raise UserError(f"--{key.replace('_', '-')} must be a positive integer, got {args[key]!r}")
    for key in ("lr", "weight_decay", "momentum", "label_smoothing", "warmup_epochs"):
        if key in args and (not math.isfinite(float(args[key])) or float(args[key]) < 0):
            raise UserError(f"--{key.replace('_', '-')} must be a non-negative number, got {args[key]!r}")
    if args.get("label_smoothing", 0.0) >= 1:
        raise UserError(f"--label-smoothing must be below 1, got {args['label_smoothing']}")
    if args.get("lr", 1.0) <= 0:
        raise UserError(f"--lr must be positive, got {args['lr']}")
    check_precision(args.get("precision", "fp32"))


def train_supernet(
    args: Mapping[str, Any] | None,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    stop_after: int | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict:
    """Train a slimmable supernet; checkpoint ``out_dir/supernet.pt`` after every epoch.

    ``args``: any of :data:`SUPERNET_DEFAULTS` (``None`` values mean "default"/"as in the
    checkpoint"). Every step trains the ``num_samples`` configs of the strategy (``autoslim``:
    max, min and ``num_samples - 2`` random ones, each unit drawn independently; inplace
    distillation from the max config). ``stop_after`` ends this call after that many epochs (the
    run can be resumed). Returns a summary dict (also written to ``out_dir/result.json``).
    Under ``torchrun`` each process trains on its shard with its own sampled configs; only rank 0
    writes.
    """
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT_NAME
    ckpt = prepare_output(ckpt_path, resume)
    if ckpt is not None and ckpt.get("format") != SUPERNET_FORMAT:
        raise UserError(f"{ckpt_path} is not a supernet checkpoint")
    a = resolve_args(args, SUPERNET_DEFAULTS, ckpt["args"] if ckpt else None)
    _check_common(a)
    strategy = get_strategy(a["strategy"], a["num_samples"])

    set_threads(a["threads"])
    ctx = DistContext.from_env(a["device"])
    try:
        if a["batch_size"] % ctx.world_size:
            raise UserError(f"--batch-size {a['batch_size']} (global) must be divisible by the {ctx.world_size} processes")
        data = load_data(a["data"], a["heldout_fraction"], a["seed"], augment=a["augment"])
        torch.manual_seed(a["seed"])
        model, model_kwargs = build_for_data(a["model"], data, a["width_mult"])
        from widthsearch.space import Supernet

        net = Supernet(model, _example_input(data.input_shape), groups=a["groups"])
        model.to(ctx.device)
        a.update(
            input_shape=list(data.input_shape),
            num_classes=int(data.num_classes),
            model_kwargs=model_kwargs,
            classes=list(data.classes),
        )
        space = net.space
        max_cfg, min_cfg = space.max_config(), space.min_config()
        loader = data.loader(
            "train",
            a["batch_size"] // ctx.world_size,
            shuffle=True,
            drop_last=True,
            augment=True,
            seed=a["seed"],
            rank=ctx.rank,
            world_size=ctx.world_size,
        )

        def step(xb, yb, rng):
            stats = sandwich_step(
                net, xb, yb, strategy.configs(space, rng), distill=strategy.distill, label_smoothing=a["label_smoothing"]
            )
            net.set_config(max_cfg)
            return stats

        calib = calibration_batches(data.train.x, a["calib_images"], seed=mix_seed(a["seed"], 5))

        eval_gen = torch.Generator().manual_seed(mix_seed(a["seed"], 11))
        eval_idx = torch.randperm(len(data.heldout), generator=eval_gen)[:EPOCH_EVAL_IMAGES]

        def evaluate_epoch() -> dict:
            if len(data.heldout) == 0:
                return {}
            x, y = data.heldout.x[eval_idx], data.heldout.y[eval_idx]
            return {
                "max_acc": supernet_accuracy(net, max_cfg, x, y, bn="calibrate", calib=calib),
                "min_acc": supernet_accuracy(net, min_cfg, x, y, bn="calibrate", calib=calib),
            }

        loop = EpochLoop(
            ctx=ctx,
            args=a,
            model=model,
            loader=loader,
            step_fn=step,
            eval_fn=evaluate_epoch,
            ckpt_path=ckpt_path,
            ckpt_format=SUPERNET_FORMAT,
            ckpt_extra={"units": [u.name for u in space.units]},
            progress=progress,
            echo=echo,
        )
        if ckpt is not None:
            _check_units(ckpt, space, ckpt_path)
            loop.load(ckpt)
        history = loop.run(stop_after=stop_after)
        last = history[-1] if history else {}
        result = {
            "checkpoint": str(ckpt_path),
            "model": a["model"],
            "data": a["data"],
            "strategy": a["strategy"],
            "width_mult": a["width_mult"],
            "groups": a["groups"],
            "units": len(space.units),
            "space_size": space.size,
            "max_flops": space.cost(max_cfg).flops,
            "min_flops": space.cost(min_cfg).flops,
            "epochs_done": loop.epoch,
            "epochs": a["epochs"],
            "complete": loop.epoch >= a["epochs"],
            "loss": last.get("loss"),
            "max_acc": last.get("max_acc"),
            "min_acc": last.get("min_acc"),
            "img_per_s": last.get("img_per_s"),
            "seconds": sum(r.get("seconds", 0.0) for r in history),
            "world_size": ctx.world_size,
        }
        if ctx.is_main:
            write_json_atomic(out / "result.json", result)
        return result
    finally:
        ctx.close()


def _check_units(ckpt: dict, space, path: Path) -> None:
    units = ckpt.get("units")
    if units is not None and list(units) != [u.name for u in space.units]:
        raise UserError(f"{path}: the checkpoint's channel units do not match this model's; was the model code changed?")


def load_supernet(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the supernet of a checkpoint from its stored arguments and load its weights.

    Returns ``(net, meta)``: a :class:`~widthsearch.space.Supernet` (model in eval mode, at the max
    config) and the run's arguments plus ``epoch``, ``history`` and ``path``. Accepts the
    checkpoint file or the folder holding ``supernet.pt``.
    """
    from widthsearch.models import build_model
    from widthsearch.space import Supernet

    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    ckpt = load_checkpoint(path, expect=SUPERNET_FORMAT)
    a = ckpt["args"]
    model = build_model(a["model"], num_classes=a["num_classes"], width_mult=a["width_mult"], **a.get("model_kwargs", {}))
    net = Supernet(model, _example_input(a["input_shape"]), groups=a["groups"])
    _check_units(ckpt, net.space, path)
    model.load_state_dict(ckpt["model"])
    model.to(device)
    # a run trained in NHWC is evaluated in NHWC too (its fast layout); the numbers do not change
    apply_memory_format(model, bool(a.get("channels_last", False)))
    model.eval()
    meta = {**a, "epoch": int(ckpt["epoch"]), "history": list(ckpt.get("history", [])), "path": str(path)}
    return net, meta
