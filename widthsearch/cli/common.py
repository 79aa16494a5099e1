"""Arguments and helpers shared by the sub-commands."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from widthsearch.errors import UserError
from widthsearch.models import MODEL_NAMES, model_info
from widthsearch.models.user import RESERVED_KWARGS, is_import_spec, is_zoo_model, unknown_model_error
from widthsearch.space.analysis import RESIDUAL_POLICIES
from widthsearch.space.spec import SpaceSpec
from widthsearch.formatting import parse_shape


#: how --model is described in every command's help
MODEL_HELP = (f"zoo model ({', '.join(MODEL_NAMES)}) or your own: package.module:factory or path/to/file.py:factory, "
              "any callable returning an nn.Module")


def add_model_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--model", required=required, metavar="M", help=MODEL_HELP)
    add_model_arg_argument(parser)
    parser.add_argument("--width-mult", type=float, default=1.0, metavar="X", help="width multiplier (default 1.0)")
    parser.add_argument("--num-classes", type=int, default=None, metavar="N", help="classes (default: the model's)")
    parser.add_argument("--input", default=None, metavar="CxHxW", help="input shape (default: the model's)")


def add_space_arguments(parser: argparse.ArgumentParser, default_groups: int = 10,
                        default_residual: str | None = "tie") -> None:
    parser.add_argument(
        "--groups", type=int, default=default_groups, metavar="G",
        help=f"G evenly spaced widths per unit (default {default_groups}; AutoSlim uses 10-12)",
    )
    parser.add_argument("--divisor", type=int, default=None, metavar="D", help="widths are multiples of D instead")
    parser.add_argument("--round-to", type=int, default=None, metavar="R",
                        help="round each of the G group widths to a multiple of R (the full width stays)")
    add_residual_argument(parser, default_residual)


def add_residual_argument(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--residual tie|pad``; ``None`` as default means "tie, or as recorded in the checkpoint/config"."""
    parser.add_argument("--residual", default=default, choices=list(RESIDUAL_POLICIES),
                        help="residual adds: tie their operands into one unit (default) or pad: separate units, "
                        "zero-padded sums")


def add_model_arg_argument(parser: argparse.ArgumentParser) -> None:
    """``--model-arg k=v`` (repeatable): keyword arguments of a user's model factory."""
    parser.add_argument("--model-arg", action="append", default=None, metavar="K=V", dest="model_arg",
                        help="keyword argument of the model's factory (zoo models: those of docs/models.md), value "
                        "read as YAML (3, 0.5, true, text); repeat for several")


def model_kwargs(args: argparse.Namespace) -> dict[str, Any] | None:
    """The ``--model-arg`` values as a dict (None when none was given)."""
    items = getattr(args, "model_arg", None)
    if not items:
        return None
    kwargs: dict[str, Any] = {}
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise UserError(f"--model-arg {item!r}: expected NAME=VALUE, e.g. width=16")
        if key in RESERVED_KWARGS:
            raise UserError(f"--model-arg may not set {key}: use --{key.replace('_', '-')}")
        if key in kwargs:
            raise UserError(f"--model-arg {key} given twice")
        kwargs[key] = _yaml_scalar(item, text)
    return kwargs


def _yaml_scalar(item: str, text: str) -> Any:
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text  # not valid YAML: the text itself
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, list) and all(isinstance(v, (bool, int, float, str)) for v in value):
        return value
    raise UserError(f"--model-arg {item!r}: the value must be a number, true/false, text or a list of those")


def input_shape(args: argparse.Namespace) -> tuple[int, ...]:
    """The ``--input`` shape (default: the model's), checked against the model's image channels.

    A user's model has no default: ``--input`` is required (its first run checks the shape)."""
    if not is_zoo_model(args.model):
        if not is_import_spec(args.model):
            raise unknown_model_error(args.model)
        if not args.input:
            raise UserError(f"--input CxHxW is required for {args.model}: only zoo models have a default input shape")
        return parse_shape(args.input)
    info = model_info(args.model)
    default = tuple(info["input_shape"])
    shape = parse_shape(args.input) if args.input else default
    if len(shape) != len(default) or shape[0] != default[0]:
        expected = "x".join([str(default[0])] + ["N"] * (len(default) - 1))
        raise UserError(f"bad input shape {'x'.join(map(str, shape))} for {args.model}: expected {expected}")
    return shape


def model_spec(args: argparse.Namespace) -> SpaceSpec:
    """The space spec named by ``--model``/``--width-mult``/``--num-classes``/``--input`` and the space flags."""
    return SpaceSpec(
        args.model, float(args.width_mult), num_classes=args.num_classes, input_shape=input_shape(args),
        groups=args.groups, divisor=args.divisor, round_to=args.round_to, residual=args.residual or "tie",
        model_kwargs=model_kwargs(args) or {},
    )


def existing_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    return path


def check_counts(settings: dict, keys: tuple[str, ...], rate: str | None = "lr") -> None:
    """One line for a count flag below 1 (and a ``rate`` flag not above 0), checked before the first
    stage: a method's later stage would otherwise refuse it after the earlier ones ran."""
    for key in keys:
        value = settings.get(key)
        if value is not None and value < 1:
            raise UserError(f"--{key.replace('_', '-')} must be a positive integer, got {value}")
    value = settings.get(rate) if rate else None
    if value is not None and not (0 < value < float("inf")):  # NaN fails too
        raise UserError(f"--{rate.replace('_', '-')} must be a positive number, got {value}")


def refuse_overwrite(path: str | Path, force: bool = False) -> Path:
    """Never overwrite a user's file unless they asked for it with ``--force``."""
    path = Path(path)
    if path.exists() and not force:
        raise UserError(f"{path} already exists (use --force to overwrite)")
    return path


def preset_model_spec(args: argparse.Namespace, channels: str) -> SpaceSpec:
    """The space of the preset ``channels`` (``preset:NAME``): the preset fixes model and width;
    ``--input`` and ``--num-classes`` still apply, and a ``--model`` given must be the preset's."""
    import dataclasses

    from widthsearch.space.presets import get_preset

    preset = get_preset(channels)
    if args.model not in (None, preset.model):
        raise UserError(f"{channels} is a network of {preset.model}, not {args.model}")
    args.model = preset.model  # input_shape() checks --input against the model's
    return dataclasses.replace(preset.spec(), num_classes=args.num_classes, input_shape=input_shape(args))
