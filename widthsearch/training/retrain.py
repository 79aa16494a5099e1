"""Train one fixed-width network from scratch: a searched config, a uniform baseline, or the default.

Three ways to name the network (``net`` entry of the arguments):

* a channel config (``--channels CFG.yaml``): the supernet of the config's space spec (its
  ``space`` entry; older files: model/width_mult/groups) is rebuilt with
  :func:`~widthsearch.space.spec.build_supernet` and ``export(config)`` gives the static net;
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

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from widthsearch.data import Dataset
from widthsearch.errors import UserError
from widthsearch.models.user import require_width_mult
from widthsearch.space.spec import SpaceSpec, build_space_model, build_supernet
from widthsearch.space.subnet import Subnet
from widthsearch.training.bn_sparsity import init_bn_weights
from widthsearch.training.channel_dropout import TrainingChannelDropout, check_drop_rate
from widthsearch.training.checkpoint import MODEL_FORMAT, load_checkpoint, load_state_checked
from widthsearch.training.distributed import DistContext
from widthsearch.training.evaluate import correct_predictions, evaluate_metrics
from widthsearch.training.loop import EpochLoop
from widthsearch.training.precision import compile_failures, compiled
from widthsearch.training.skeleton import Job, TrainingKind, record_spec, run_training, spec_for_data
from widthsearch.training.steps import plain_step

__all__ = [
    "NETWORK_TRAINING",
    "TRAIN_DEFAULTS",
    "train_network",
    "load_trained",
    "reinitialize",
    "UniformWidth",
    "uniform_network",
    "uniform_width_for_flops",
    "network_cost",
    "build_network",
    "config_file_spec",
]

CHECKPOINT_NAME = "model.pt"

#: retraining's arguments beyond the recipe; ``net`` is set from the network chosen at the start:
#: ``{"kind": "width", "width_mult": w}`` or ``{"kind": "config", "channels": {...}, "select": ...}``;
#: ``train_drop``: Network Adjustment's ramped channel dropout while training (0 = off, see
#: :mod:`widthsearch.training.channel_dropout`)
NETWORK_OPTIONS: dict[str, Any] = {"model": "tiny_cnn", "model_kwargs": None, "net": None, "residual": "tie", "train_drop": 0.0}


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
    """(FLOPs as MACs of conv + linear, parameters) of a static network, on whatever device it is
    (a run resumed on a GPU counts a model that is already there)."""
    from widthsearch.costs import count_flops, count_params
    from widthsearch.space.dynamic import module_device

    example = torch.zeros(1, *[int(s) for s in input_shape], device=module_device(model))
    return count_flops(model, example), count_params(model)


def uniform_width_for_flops(
    model_name: str, data: Dataset, target_flops: float, *, iterations: int = 40,
    model_kwargs: Mapping[str, Any] | None = None,
) -> tuple[float, int]:
    """The width multiplier whose network has FLOPs closest to ``target_flops``: ``(w, flops)``.

    FLOPs grow with ``width_mult`` in steps (channel counts are rounded), so this bisects for the
    smallest ``w`` reaching the target and then keeps whichever of the two neighbouring networks is
    closer (ties: the cheaper one). A user's factory must take ``width_mult``; ``model_kwargs`` are
    its other arguments.
    """
    if not target_flops > 0:
        raise UserError(f"--uniform-flops must be positive, got {target_flops}")
    require_width_mult(model_name, "the uniform-width network of --uniform-flops")
    cache: dict[float, int] = {}

    def flops(w: float) -> int:
        if w not in cache:
            spec = spec_for_data(SpaceSpec(model_name, w, model_kwargs=dict(model_kwargs or {})), data)
            cache[w] = network_cost(build_space_model(spec), data.input_shape)[0]
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


@dataclasses.dataclass(frozen=True)
class UniformWidth:
    """The uniform-width network found for a FLOPs target (:func:`uniform_network`): pass it as
    ``train_network(uniform_flops=...)`` to train that network again (another seed) without
    repeating the bisection."""

    target_flops: float
    width_mult: float
    flops: int


def uniform_network(model_name: str, data: Dataset, target_flops: float, *,
                    model_kwargs: Mapping[str, Any] | None = None) -> UniformWidth:
    """The network that ``train_network(uniform_flops=target_flops)`` trains, found once
    (:func:`uniform_width_for_flops`); only ``data``'s classes and image shape matter."""
    w, flops = uniform_width_for_flops(model_name, data, float(target_flops), model_kwargs=model_kwargs)
    return UniformWidth(float(target_flops), float(w), int(flops))


def build_network(spec: SpaceSpec, net: Mapping[str, Any]) -> nn.Module:
    """The static network ``net`` of the space ``spec`` (weights as built; not re-initialised).

    A ``"width"`` network is the spec's model itself; a ``"config"`` network is exported from the
    spec's supernet at its channels (and selectors).
    """
    if net["kind"] == "width":
        return build_space_model(spec)
    if net["kind"] == "config":
        supernet, _ = build_supernet(spec)
        static = supernet.export(supernet.space.validate(Subnet.from_doc(net), strict=False))
        static.train()
        return static
    raise ValueError(f"unknown network kind {net['kind']!r}")


def config_file_spec(doc: Mapping[str, Any], path: str | Path, model_name: str | None,
                     residual: str | None = None) -> SpaceSpec:
    """The space a config YAML's widths refer to (its ``space`` entry, or the older top-level keys).

    ``model_name`` and an explicit ``residual`` must agree with the file.
    """
    if doc.get("model") not in (None, model_name) and model_name is not None:
        raise UserError(f"{path}: written for model {doc['model']!r}, not {model_name!r}")
    saved = doc.get("space") if isinstance(doc.get("space"), Mapping) else doc
    spec = SpaceSpec.from_dict({"model": model_name, **{k: v for k, v in saved.items() if v is not None}})
    if residual is not None and residual != spec.residual:
        raise UserError(f"{path}: its widths refer to the space with --residual {spec.residual}, not {residual}")
    return spec


def _resolve_net(
    model_name: str,
    model_kwargs: Mapping[str, Any],
    data: Dataset,
    channels: str | Path | Mapping[str, int] | None,
    uniform_flops: float | UniformWidth | None,
    width_mult: float | None,
    residual: str | None,
) -> tuple[dict, SpaceSpec]:
    """The network to train as ``(net entry of the arguments, its space spec)``."""
    if channels is not None and uniform_flops is not None:
        raise UserError("give either --channels or --uniform-flops, not both")
    if isinstance(channels, Mapping):
        # a config dict or Subnet: its widths refer to the model at ``width_mult`` (the supernet's width)
        spec = SpaceSpec(model_name, float(width_mult if width_mult is not None else 1.0), residual=residual or "tie",
                         model_kwargs=model_kwargs)
        net, spec = build_supernet(spec_for_data(spec, data))
        config = net.space.validate(channels, strict=False)
        return _config_entry(config, spec, "dict"), spec
    if channels is not None:
        from widthsearch.space.config import load_config, read_config_file

        spec = config_file_spec(read_config_file(channels), channels, model_name, residual)
        net, spec = build_supernet(spec_for_data(spec, data))
        config, _meta = load_config(channels, net.space, model=model_name, strict=False)
        return _config_entry(config, spec, str(channels)), spec
    if uniform_flops is not None:
        uniform = uniform_flops if isinstance(uniform_flops, UniformWidth) else \
            uniform_network(model_name, data, float(uniform_flops), model_kwargs=model_kwargs)
        net = {"kind": "width", "width_mult": uniform.width_mult, "target_flops": uniform.target_flops,
               "flops": uniform.flops}
    else:
        net = {"kind": "width", "width_mult": float(width_mult if width_mult is not None else 1.0)}
    spec = SpaceSpec(model_name, net["width_mult"], residual=residual or "tie", model_kwargs=model_kwargs)
    return net, spec_for_data(spec, data)


def _config_entry(config: Mapping[str, int], spec: SpaceSpec, source: str) -> dict:
    doc = (config if isinstance(config, Subnet) else Subnet(config)).to_doc()
    return {"kind": "config", "width_mult": spec.width_mult, "groups": spec.groups, **doc, "source": source}


def saved_network_spec(ckpt: Mapping[str, Any]) -> SpaceSpec:
    """The space spec of a trained-model checkpoint (older ones: from the arguments and ``net``)."""
    if ckpt.get("space"):
        return SpaceSpec.from_dict(ckpt["space"])
    a, net = ckpt["args"], ckpt["args"]["net"]
    return SpaceSpec.from_dict({**a, **{k: net[k] for k in ("width_mult", "groups") if k in net}})


def _build(a: dict, data: Dataset, ctx: DistContext, ckpt: dict | None, *, channels, uniform_flops,
           width_mult, residual, test_predictions: bool = False) -> Job:
    if ckpt is None:
        kwargs = dict(a.get("model_kwargs") or {})
        a["net"], spec = _resolve_net(a["model"], kwargs, data, channels, uniform_flops, width_mult, residual)
    elif channels is not None or uniform_flops is not None or width_mult is not None:
        raise UserError("when resuming, the network comes from the checkpoint; drop --channels/--uniform-flops/--width-mult")
    else:
        spec = saved_network_spec(ckpt)
        if residual is not None and residual != spec.residual:
            raise UserError(f"--residual {residual} differs from the checkpoint's {spec.residual}")
    a["residual"] = spec.residual
    record_spec(a, spec)
    # found before the seeding below: building the space's supernet draws random weights
    drop_units = _dropout_units(spec) if check_drop_rate(a.get("train_drop") or 0.0) > 0 else None
    torch.manual_seed(a["seed"])
    model = build_network(spec, a["net"])
    torch.manual_seed(a["seed"])
    reinitialize(model)
    init_bn_weights(model, a.get("bn_init"))  # after the reinitialisation, which resets them to 1
    model.to(ctx.device)
    flops, params = network_cost(model, spec.input_shape)
    if ckpt is None and isinstance(uniform_flops, UniformWidth) and flops != uniform_flops.flops:
        raise UserError(f"the uniform-width network found for {uniform_flops.target_flops:.0f} FLOPs has {flops} FLOPs "
                        f"here, not {uniform_flops.flops}: it was found for another model or data set")
    dropout = None
    if drop_units is not None:
        if a.get("compile"):
            raise UserError("--compile does not work with --train-drop: the dropout's hooks change every epoch")
        dropout = TrainingChannelDropout(model, drop_units, a["train_drop"], a["epochs"], a["seed"], ctx.rank)
    compile_step = bool(a.get("compile"))
    forward = compiled(model, compile_step)  # the optimizer, checkpoints and evaluation keep `model`

    def step(xb, yb, rng):
        with compile_failures(compile_step):
            return plain_step(forward, xb, yb, label_smoothing=a["label_smoothing"])

    def evaluate_epoch() -> dict:
        if len(data.heldout) == 0:
            return {}
        found = evaluate_metrics(model, data.heldout.x, data.heldout.y, ctx=ctx)
        return {"heldout_acc": found["accuracy"], "heldout_loss": found["loss"]}

    def summarize(loop: EpochLoop, last: dict) -> dict:
        per_image = {}
        if test_predictions:  # one pass gives both: the accuracy is the share of right answers
            # only `run` asks for these, and it refuses torchrun: this process holds every image
            correct = correct_predictions(model, data.test.x, data.test.y)
            accuracy = int(correct.sum()) / len(correct)
            per_image = {"test_correct": correct.tolist()}
        else:  # every rank takes part: the test images are shared over the ranks
            accuracy = evaluate_metrics(model, data.test.x, data.test.y, ctx=ctx)["accuracy"]
        return {
            "accuracy": accuracy,
            **per_image,
            "flops": flops,
            "params": params,
            "network": {k: v for k, v in a["net"].items() if k not in ("channels", "select")},
            "channels": a["net"].get("channels"),
            "heldout_accuracy": last.get("heldout_acc"),
            "test_images": len(data.test),
        }

    return Job(model=model, step=step, evaluate_epoch=evaluate_epoch, summarize=summarize,
               ckpt_extra={"space": spec.to_dict()}, start_epoch=dropout.start_epoch if dropout else None)


def _dropout_units(spec: SpaceSpec) -> dict[str, list[str]]:
    """Every unit of the space in network order, with the layers of the static net that output it."""
    supernet, _ = build_supernet(spec)
    return {unit.name: supernet.output_layers(unit.name) for unit in supernet.space.units}


NETWORK_TRAINING = TrainingKind(
    what="a trained-model", checkpoint_name=CHECKPOINT_NAME, format=MODEL_FORMAT, options=NETWORK_OPTIONS,
    build=functools.partial(_build, channels=None, uniform_flops=None, width_mult=None, residual=None),
    compiles=True,
)
TRAIN_DEFAULTS: dict[str, Any] = NETWORK_TRAINING.defaults()


def train_network(
    args: Mapping[str, Any] | None,
    out_dir: str | Path,
    *,
    channels: str | Path | Mapping[str, int] | None = None,
    uniform_flops: float | UniformWidth | None = None,
    width_mult: float | None = None,
    resume: bool = False,
    progress: bool = False,
    stop_after: int | None = None,
    echo: Callable[[str], None] | None = None,
    test_predictions: bool = False,
) -> dict:
    """Train a static network from scratch and report its test accuracy.

    ``args``: any of :data:`TRAIN_DEFAULTS` except ``net``; the network is given by ``channels``
    (a config YAML path, or a config dict / Subnet whose widths refer to the model at
    ``width_mult``), ``uniform_flops`` (FLOPs, or the :class:`UniformWidth` found for them before)
    or ``width_mult`` (see the module docstring). A config
    YAML brings its own space spec (``--residual`` must agree with it). Writes ``out_dir/model.pt``
    (with ``"space"``) after every epoch, ``log.jsonl`` and ``result.json``. Returns
    ``{"accuracy", "flops", "params", "checkpoint", ...}``; ``accuracy`` is on the test split.
    ``test_predictions=True`` adds ``test_correct``: per test image, whether the network gets it
    right (for paired comparisons; the same pass gives ``accuracy``).
    """
    explicit = dict(args or {})
    explicit.pop("net", None)
    residual = explicit.pop("residual", None)
    build = functools.partial(_build, channels=channels, uniform_flops=uniform_flops, width_mult=width_mult,
                              residual=residual, test_predictions=test_predictions)
    kind = dataclasses.replace(NETWORK_TRAINING, build=build)
    return run_training(kind, explicit, out_dir, resume=resume, progress=progress, stop_after=stop_after, echo=echo)


def load_trained(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild a network trained by :func:`train_network`; returns ``(model in eval mode, meta)``."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    ckpt = load_checkpoint(path, expect=MODEL_FORMAT)
    spec = saved_network_spec(ckpt)
    model = build_network(spec, ckpt["args"]["net"])
    load_state_checked(model, ckpt["model"], str(path))
    model.to(device)
    model.eval()
    meta = {**ckpt["args"], "space": spec.to_dict(), "epoch": int(ckpt["epoch"]),
            "history": list(ckpt.get("history", [])), "path": str(path)}
    return model, meta
