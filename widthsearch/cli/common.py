"""Arguments and helpers shared by the sub-commands."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn as nn

from widthsearch.errors import UserError
from widthsearch.formatting import parse_shape
from widthsearch.models import MODEL_NAMES, build_model, model_info
from widthsearch.space import ChannelSpace


def add_model_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--model", required=required, metavar="M", help=f"zoo model: {', '.join(MODEL_NAMES)}")
    parser.add_argument("--width-mult", type=float, default=1.0, metavar="X", help="width multiplier (default 1.0)")
    parser.add_argument("--num-classes", type=int, default=None, metavar="N", help="classes (default: the model's)")
    parser.add_argument("--input", default=None, metavar="CxHxW", help="input shape (default: the model's)")


def add_space_arguments(parser: argparse.ArgumentParser, default_groups: int = 10) -> None:
    parser.add_argument(
        "--groups", type=int, default=default_groups, metavar="G",
        help=f"G evenly spaced widths per unit (default {default_groups}; AutoSlim uses 10-12)",
    )
    parser.add_argument("--divisor", type=int, default=None, metavar="D", help="widths are multiples of D instead")
    parser.add_argument("--round-to", type=int, default=None, metavar="R",
                        help="round each of the G group widths to a multiple of R (the full width stays)")


def build_model_and_input(args: argparse.Namespace) -> tuple[nn.Module, torch.Tensor, tuple[int, ...]]:
    """The zoo model named by ``--model`` and an example input of ``--input`` shape (batch 1)."""
    info = model_info(args.model)
    default = tuple(info["input_shape"])
    shape = parse_shape(args.input) if args.input else default
    if len(shape) != len(default) or shape[0] != default[0]:
        expected = "x".join([str(default[0])] + ["N"] * (len(default) - 1))
        raise UserError(f"bad input shape {'x'.join(map(str, shape))} for {args.model}: expected {expected}")
    model = build_model(args.model, num_classes=args.num_classes, width_mult=args.width_mult)
    return model, torch.randn(1, *shape), shape


def build_space(model: nn.Module, example: torch.Tensor, args: argparse.Namespace) -> ChannelSpace:
    if args.groups is not None and args.groups < 1:
        raise UserError(f"--groups must be a positive integer, got {args.groups}")
    return ChannelSpace.from_model(model, example, groups=args.groups, divisor=args.divisor, round_to=args.round_to)


def existing_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    return path


def refuse_overwrite(path: str | Path, force: bool = False) -> Path:
    """Never overwrite a user's file unless they asked for it with ``--force``."""
    path = Path(path)
    if path.exists() and not force:
        raise UserError(f"{path} already exists (use --force to overwrite)")
    return path
