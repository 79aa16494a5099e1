"""Train one fixed-width network from scratch: a searched config, a uniform baseline, or the default.

Three ways to name the network (``net`` entry of the arguments):

* a channel config (``--channels CFG.yaml``): the zoo model at the config's ``width_mult`` is
  wrapped in a :class:`~widthsearch.space.Supernet` and ``export(config)`` gives the static net;
* ``--uniform-flops F``: the zoo model with the width multiplier whose FLOPs are closest to ``F``
  (bisection on ``width_mult``; the model's own rounding rule keeps it a genuine "same network,
  narrower" baseline, and is much finer than the supernet's 10 groups);
* neither: the zoo model at ``--width-mult``.

Every one of them is re-initialised by the same rule before training (:func:`reinitialize`), so
that sliced weights of a wider model do not start with the wrong scale, and all get the same
recipe: SGD with Nesterov momentum, per-iteration cosine schedule, no weight decay on BN and
biases, the data set's augmentation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from widthsearch.data import Dataset, load_data
from widthsearch.errors import UserError
from widthsearch.training.checkpoint import MODEL_FORMAT, load_checkpoint
from widthsearch.training.distributed import DistContext
from widthsearch.training.evaluate import evaluate
from widthsearch.training.loop import EpochLoop, prepare_output, resolve_args, write_json_atomic
from widthsearch.training.steps import plain_step
from widthsearch.training.supernet import _check_common, _example_input, build_for_data, set_threads

__all__ = [
    "TRAIN_DEFAULTS",
    "train_network",
    "load_trained",
    "reinitialize",
    "uniform_width_for_flops",
    "network_cost",
    "build_network",
]

TRAIN_DEFAULTS: dict[str, Any] = {
    "model": "tiny_cnn",
    "data": "digits",
    "net": None,  # {"kind": "width", "width_mult": w} | {"kind": "config", "width_mult", "groups", "channels"}
    "epochs": 10,
    "batch_size": 128,
    "lr": 0.1,
    "weight_decay": 5e-4,
    "momentum": 0.9,
    "nesterov": True,
    "warmup_epochs": 0.0,
    "label_smoothing": 0.0,
    "seed": 0,
    "heldout_fraction": 0.1,
    "augment": "default",
    "device": "auto",
    "threads": None,
    "precision": "fp32",
    "channels_last": False,
}

CHECKPOINT_NAME = "model.pt"


def reinitialize(model: nn.Module) -> nn.Module:
    """Fresh weights by the zoo's rule, for the network's *own* shapes, in place.

    Conv2d: Kaiming normal (fan-out, ReLU gain), zero bias; BatchNorm: weight 1, bias 0, running
    statistics reset; Linear: ``N(0, 0.01)`` with zero bias when it has that init now (the
    MobileNet/MNASNet rule, recognised by an all-zero bias), otherwise PyTorch's default.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()
        elif isinstance(m, nn.Linear):
            normal_rule = m.bias is not None and not bool(m.bias.detach().any())
            if normal_rule:
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
            else:
                m.reset_parameters()
    return model


def network_cost(model: nn.Module, input_shape) -> tuple[int, int]:
    """(FLOPs as MACs of conv + linear, parameters) of a static network."""
    from widthsearch.space import ChannelSpace

    cost = ChannelSpace.from_model(model, _example_input(input_shape), groups=1).cost()
    return int(cost.flops), int(cost.params)


def uniform_width_for_flops(
    model_name: str, data: Dataset, target_flops: float, *, iterations: int = 40
) -> tuple[float, int]:
    """The width multiplier whose network has FLOPs closest to ``target_flops``: ``(w, flops)``.

    FLOPs grow with ``width_mult`` in steps (channel counts are rounded), so this bisects for the
    smallest ``w`` reaching the target and then keeps whichever of the two neighbouring networks is
    closer (ties: the cheaper one).
    """
    if not target_flops > 0:
        raise UserError(f"--uniform-flops must be positive, got {target_flops}")
    cache: dict[float, int] = {}

    def flops(w: float) -> int:
        if w not in cache:
            model, _ = build_for_data(model_name, data, w)
            cache[w] = network_cost(model, data.input_shape)[0]
        return cache[w]

    lo, hi = 1e-3, 1.0
    if flops(lo) >= target_flops:
        return lo, flops(lo)
    while flops(hi) < target_flops:
        hi *= 2
        if hi > 64:
            raise UserError(f"--uniform-flops {target_flops:.0f} is beyond {model_name} at width 64x ({flops(hi / 2)} FLOPs)")
    for _ in range(iterations):  # invariant: flops(lo) < target <= flops(hi)
        mid = (lo + hi) / 2
        if flops(mid) < target_flops:
            lo = mid
        else:
            hi = mid
    below, above = flops(lo), flops(hi)
    if target_flops - below <= above - target_flops:
        return lo, below
    return hi, above


def build_network(model_name: str, data_like, net_spec: Mapping[str, Any], model_kwargs: Mapping[str, Any]) -> nn.Module:
    """The static network described by ``net_spec`` (weights as built; not re-initialised)."""
    from widthsearch.models import build_model
    from widthsearch.space import Supernet

    num_classes, input_shape = data_like
    if net_spec["kind"] == "width":
        return build_model(model_name, num_classes=num_classes, width_mult=float(net_spec["width_mult"]), **model_kwargs)
    if net_spec["kind"] == "config":
        full = build_model(model_name, num_classes=num_classes, width_mult=float(net_spec["width_mult"]), **model_kwargs)
        net = Supernet(full, _example_input(input_shape), groups=net_spec.get("groups"))
        config = net.space.validate(dict(net_spec["channels"]), strict=False)
        static = net.export(config)
        static.train()
        return static
    raise ValueError(f"unknown network kind {net_spec['kind']!r}")


def _resolve_net(
    model_name: str,
    data: Dataset,
    channels: str | Path | Mapping[str, int] | None,
    uniform_flops: float | None,
    width_mult: float | None,
) -> dict:
    if channels is not None and uniform_flops is not None:
        raise UserError("give either --channels or --uniform-flops, not both")
    if isinstance(channels, Mapping):
        # a config dict: its widths refer to the model at ``width_mult`` (the supernet's width)
        from widthsearch.space import Supernet

        wm = float(width_mult if width_mult is not None else 1.0)
        full, _ = build_for_data(model_name, data, wm)
        net = Supernet(full, _example_input(data.input_shape), groups=10)
        config = net.space.validate(dict(channels), strict=False)
        return {"kind": "config", "width_mult": wm, "groups": 10, "channels": dict(config), "source": "dict"}
    if channels is not None:
        from widthsearch.space import Supernet
        from widthsearch.space.config import load_config, read_config_file

        doc = read_config_file(channels)
        if doc.get("model") not in (None, model_name):
            raise UserError(f"{channels}: written for model {doc['model']!r}, not {model_name!r}")
        wm = float(doc.get("width_mult", width_mult if width_mult is not None else 1.0))
        groups = doc.get("groups") or 10
        full, _ = build_for_data(model_name, data, wm)
        net = Supernet(full, _example_input(data.input_shape), groups=groups)
        config, _meta = load_config(channels, net.space, model=model_name, strict=False)
        return {"kind": "config", "width_mult": wm, "groups": groups, "channels": dict(config), "source": str(channels)}
    if uniform_flops is not None:
        w, flops = uniform_width_for_flops(model_name, data, float(uniform_flops))
        return {"kind": "width", "width_mult": float(w), "target_flops": float(uniform_flops), "flops": int(flops)}
    return {"kind": "width", "width_mult": float(width_mult if width_mult is not None else 1.0)}


def train_network(
    args: Mapping[str, Any] | None,
    out_dir: str | Path,
    *,
    channels: str | Path | Mapping[str, int] | None = None,
    uniform_flops: float | None = None,
    width_mult: float | None = None,
    resume: bool = False,
    progress: bool = False,
    stop_after: int | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict:
    """Train a static network from scratch and report its test accuracy.

    ``args``: any of :data:`TRAIN_DEFAULTS` except ``net``; the network is given by ``channels``
    (a config YAML path, or a config dict whose widths refer to the model at ``width_mult``),
    ``uniform_flops`` or ``width_mult`` (see the module docstring). Writes
    ``out_dir/model.pt`` after every epoch, ``log.jsonl`` and ``result.json``. Returns
    ``{"accuracy", "flops", "params", "checkpoint", ...}``; ``accuracy`` is on the test split.
    """
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT_NAME
    ckpt = prepare_output(ckpt_path, resume)
    if ckpt is not None and ckpt.get("format") != MODEL_FORMAT:
        raise UserError(f"{ckpt_path} is not a trained-model checkpoint")
    explicit = dict(args or {})
    explicit.pop("net", None)
    a = resolve_args(explicit, TRAIN_DEFAULTS, ckpt["args"] if ckpt else None)
    _check_common(a)

    set_threads(a["threads"])
    ctx = DistContext.from_env(a["device"])
    try:
        if a["batch_size"] % ctx.world_size:
            raise UserError(f"--batch-size {a['batch_size']} (global) must be divisible by the {ctx.world_size} processes")
        data = load_data(a["data"], a["heldout_fraction"], a["seed"], augment=a["augment"])
        if ckpt is None:
            a["net"] = _resolve_net(a["model"], data, channels, uniform_flops, width_mult)
            _probe, model_kwargs = build_for_data(a["model"], data, 1.0)
            a.update(
                input_shape=list(data.input_shape),
                num_classes=int(data.num_classes),
                model_kwargs=model_kwargs,
                classes=list(data.classes),
            )
        elif channels is not None or uniform_flops is not None or width_mult is not None:
            raise UserError("when resuming, the network comes from the checkpoint; drop --channels/--uniform-flops/--width-mult")
        torch.manual_seed(a["seed"])
        model = build_network(a["model"], (a["num_classes"], a["input_shape"]), a["net"], a["model_kwargs"])
        torch.manual_seed(a["seed"])
        reinitialize(model)
        model.to(ctx.device)
        flops, params = network_cost(model, a["input_shape"])
        loader = data.loader(
            "train", a["batch_size"] // ctx.world_size, shuffle=True, drop_last=True, augment=True,
            seed=a["seed"], rank=ctx.rank, world_size=ctx.world_size,
        )

        def step(xb, yb, rng):
            return plain_step(model, xb, yb, label_smoothing=a["label_smoothing"])

        def evaluate_epoch() -> dict:
            if len(data.heldout) == 0:
                return {}
            return {"heldout_acc": evaluate(model, data.heldout.x, data.heldout.y)}

        loop = EpochLoop(
            ctx=ctx, args=a, model=model, loader=loader, step_fn=step, eval_fn=evaluate_epoch,
            ckpt_path=ckpt_path, ckpt_format=MODEL_FORMAT, progress=progress, echo=echo,
        )
        if ckpt is not None:
            loop.load(ckpt)
        history = loop.run(stop_after=stop_after)
        last = history[-1] if history else {}
        complete = loop.epoch >= a["epochs"]
        result: dict[str, Any] = {
            "accuracy": evaluate(model, data.test.x, data.test.y) if ctx.is_main else None,
            "flops": flops,
            "params": params,
            "checkpoint": str(ckpt_path),
            "model": a["model"],
            "data": a["data"],
            "network": {k: v for k, v in a["net"].items() if k != "channels"},
            "channels": a["net"].get("channels"),
            "heldout_accuracy": last.get("heldout_acc"),
            "epochs_done": loop.epoch,
            "epochs": a["epochs"],
            "complete": complete,
            "test_images": len(data.test),
            "img_per_s": last.get("img_per_s"),
            "seconds": sum(r.get("seconds", 0.0) for r in history),
            "world_size": ctx.world_size,
        }
        if ctx.is_main:
            write_json_atomic(out / "result.json", result)
        return result
    finally:
        ctx.close()


def load_trained(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild a network trained by :func:`train_network`; returns ``(model in eval mode, meta)``."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    ckpt = load_checkpoint(path, expect=MODEL_FORMAT)
    a = ckpt["args"]
    model = build_network(a["model"], (a["num_classes"], a["input_shape"]), a["net"], a.get("model_kwargs", {}))
    model.load_state_dict(ckpt["model"])
    model.to(device)
    model.eval()
    meta = {**a, "epoch": int(ckpt["epoch"]), "history": list(ckpt.get("history", [])), "path": str(path)}
    return model, meta
