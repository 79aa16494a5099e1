"""``widthsearch train``: train one network (a searched config or a baseline) from scratch."""

from __future__ import annotations

import argparse

from widthsearch.cli.main import print_json
from widthsearch.cli.supernet import add_recipe_arguments, is_main_process, recipe_values, reporting
from widthsearch.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train",
        help="train a channel config (or a uniform-width baseline) from scratch and report test accuracy",
        description="Train a network from scratch with the supernet recipe: a searched --channels config, "
        "the uniform-width network with the FLOPs closest to --uniform-flops (the fair baseline), or the "
        "model at --width-mult.",
    )
    parser.add_argument("--model", default=None, metavar="M", help="zoo model (required unless --resume)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--channels", default=None, metavar="CFG.yaml", help="channel config written by search")
    which.add_argument("--uniform-flops", default=None, metavar="F",
                       help="uniform width multiplier whose FLOPs are closest to F (e.g. 40M, 1.2G)")
    parser.add_argument("--width-mult", type=float, default=None, metavar="X",
                        help="width multiplier when neither --channels nor --uniform-flops is given (default 1.0)")
    add_recipe_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from widthsearch.formatting import format_count, parse_count
    from widthsearch.training.retrain import train_network

    if args.model is None and not args.resume:
        raise UserError("--model is required (unless --resume continues a checkpoint)")
    values = recipe_values(args)
    values["model"] = args.model
    flops = parse_count(args.uniform_flops) if args.uniform_flops is not None else None
    progress, echo = reporting(args)
    result = train_network(values, args.out, channels=args.channels, uniform_flops=flops, width_mult=args.width_mult,
                           resume=args.resume, progress=progress, stop_after=args.stop_after, echo=echo)
    if not is_main_process():
        return 0
    if args.json:
        print_json(result)
    else:
        print(f"test accuracy {100 * result['accuracy']:.2f}%  FLOPs {format_count(result['flops'])}  "
              f"params {format_count(result['params'])}  checkpoint {result['checkpoint']}")
    return 0
