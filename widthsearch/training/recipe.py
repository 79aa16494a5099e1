"""The training recipe shared by supernet training, retraining and joint training: one dataclass.

Each field of :class:`Recipe` carries its default and its help text; the same declaration gives
the defaults of every trainer (:func:`recipe_defaults`), the command-line flags of every training
command (:func:`add_recipe_arguments`, :func:`recipe_values`) and the checks (:func:`check_recipe`).
A field's help may name ``{default}``; flags default to ``--field-name``.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Mapping

from widthsearch.data import DATA_HELP
from widthsearch.errors import UserError
from widthsearch.training.precision import check_precision

__all__ = ["Recipe", "recipe_defaults", "add_recipe_arguments", "recipe_values", "check_recipe"]


def _option(default: Any, help: str, *, group: str = "optimisation", flags: tuple[str, ...] | None = None,
            also: tuple[tuple[str, Any, str], ...] = (), **argparse_kwargs: Any) -> Any:
    """A recipe field: its default plus what ``argparse`` needs to offer it as a flag.

    ``also``: further ``(flag, constant, help)`` flags that store a constant in the same field
    (``--stream`` and ``--in-memory`` both set ``loading``)."""
    meta = {"help": help, "group": group, "flags": flags, "also": also, "argparse": argparse_kwargs}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Recipe:
    """Data and optimisation settings of a training run (US-Nets' recipe by default)."""

    data: str = _option("digits", f"{DATA_HELP} (default {{default}})", group="data", metavar="SPEC")
    heldout_fraction: float = _option(
        0.1, "part of the training data held out for search/BN calibration (default {default})",
        group="data", type=float, metavar="F")
    loading: str = _option(
        "auto", "stream an imagefolder:DIR through DataLoader workers (default: stream when its decoded images "
        "would not fit in 2 GiB, or when --image-size is given)", group="data", flags=("--stream",),
        action="store_const", const="stream",
        also=(("--in-memory", "memory", "decode every image of an imagefolder once and train from memory"),))
    image_size: int | None = _option(
        None, "streamed image folders: training crop and evaluation size (default 224)", group="data", type=int,
        metavar="N")
    workers: int | None = _option(
        None, "streamed image folders: loader processes per training process (default: the node's cores, at most 8)",
        group="data", type=int, metavar="N")
    augment: str = _option(
        "default", "no training augmentation (default: crop+flip for 32x32 colour images, none for digits)",
        group="data", flags=("--no-augment",), action="store_const", const="none")
    epochs: int = _option(10, "epochs (default {default})", type=int, metavar="E")
    batch_size: int = _option(128, "global batch size over all processes (default {default})", type=int, metavar="B")
    lr: float = _option(0.1, "peak learning rate (default {default}), cosine-decayed per iteration", type=float)
    weight_decay: float = _option(
        5e-4, "weight decay of conv/linear weights, none on BN and biases (default {default})",
        flags=("--wd", "--weight-decay"), type=float, metavar="WD")
    momentum: float = _option(0.9, "SGD momentum (default {default})", type=float)
    nesterov: bool = _option(True, "plain momentum instead of Nesterov", flags=("--no-nesterov",),
                             action="store_const", const=False)
    warmup_epochs: float = _option(0.0, "linear warm-up epochs (default 0)", type=float, metavar="E")
    label_smoothing: float = _option(0.0, "label smoothing (default 0)", type=float, metavar="EPS")
    bn_l1: float = _option(
        0.0, "L1 penalty on BN scales: adds LAMBDA*sign(gamma) to their gradients every step (default 0 = off; "
        "SP-Net uses 1e-5)", type=float, metavar="LAMBDA")
    bn_init: float | None = _option(
        None, "initial value of every BN scale gamma (default: the model's, 1; SP-Net uses 0.5)", type=float,
        metavar="G")
    seed: int = _option(0, "seed of initialisation, split, order and sampling (default {default})", type=int)
    device: str = _option("auto", "default auto (CUDA when available)", choices=["auto", "cpu", "cuda"])
    threads: int | None = _option(
        None, "CPU threads per process (default: PyTorch's; 1 is fastest on a busy machine)", type=int, metavar="N")
    precision: str = _option(
        "fp32", "fp32 (default) or bf16 mixed precision (autocast; weights stay fp32); bf16 is several times "
        "faster on CPUs with AVX-512 BF16/AMX and on recent GPUs", choices=["fp32", "bf16"])
    channels_last: bool = _option(
        False, "NHWC weights and activations (faster with bf16 on CPU; see docs/benchmarks.md)",
        action="store_const", const=True)
    compile: bool = _option(
        False, "static networks: compile the training step with torch.compile (a one-off compile of tens of "
        "seconds per process; a ResNet-20 step alone 1.3x faster on a 2-core CPU, whole epochs less: see "
        "docs/benchmarks.md)", action="store_const", const=True)


def recipe_defaults() -> dict[str, Any]:
    """``{field: default}`` of :class:`Recipe` (a fresh dict)."""
    return asdict(Recipe())


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """The recipe's flags plus the output flags of a training command (``None`` = default/checkpoint)."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in fields(Recipe):
        meta = f.metadata
        group = groups.get(meta["group"]) or groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        flags = meta["flags"] or ("--" + f.name.replace("_", "-"),)
        default = None if f.default is MISSING else f.default
        group.add_argument(*flags, dest=f.name, default=None, help=meta["help"].format(default=default),
                           **meta["argparse"])
        for flag, const, help_text in meta["also"]:
            group.add_argument(flag, dest=f.name, action="store_const", const=const, help=help_text)
    g = parser.add_argument_group("output")
    g.add_argument("--out", required=True, metavar="DIR", help="run folder (checkpoint, log.jsonl, result.json)")
    g.add_argument("--resume", action="store_true", help="continue the checkpoint in --out (exactly)")
    g.add_argument("--json", action="store_true", help="print one JSON object (no progress output)")
    g.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)


def recipe_values(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe fields of parsed arguments (``None`` where a flag was not given)."""
    return {f.name: getattr(args, f.name) for f in fields(Recipe)}


def check_recipe(args: Mapping[str, Any]) -> None:
    """One-line errors for impossible values (also of trainer counts such as ``groups``)."""
    if args.get("image_size") is not None and (not isinstance(args["image_size"], int) or args["image_size"] < 1):
        raise UserError(f"--image-size must be a positive integer, got {args['image_size']!r}")
    if args.get("workers") is not None and (not isinstance(args["workers"], int) or args["workers"] < 0):
        raise UserError(f"--workers must be 0 or a positive integer, got {args['workers']!r}")
    for key in ("epochs", "batch_size", "groups", "num_samples"):
        if key in args and (not isinstance(args[key], int) or args[key] < 1):
            raise UserError(f"--{key.replace('_', '-')} must be a positive integer, got {args[key]!r}")
    for key in ("lr", "weight_decay", "momentum", "label_smoothing", "warmup_epochs", "bn_l1"):
        if key in args and (not math.isfinite(float(args[key])) or float(args[key]) < 0):
            raise UserError(f"--{key.replace('_', '-')} must be a non-negative number, got {args[key]!r}")
    if args.get("bn_init") is not None and not math.isfinite(float(args["bn_init"])):
        raise UserError(f"--bn-init must be a finite number, got {args['bn_init']!r}")
    if args.get("label_smoothing", 0.0) >= 1:
        raise UserError(f"--label-smoothing must be below 1, got {args['label_smoothing']}")
    if args.get("lr", 1.0) <= 0:
        raise UserError(f"--lr must be positive, got {args['lr']}")
    check_precision(args.get("precision", "fp32"))
