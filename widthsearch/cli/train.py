"""``widthsearch train``: train one network (a searched config or a baseline), or several jointly, from scratch."""

from __future__ import annotations

import argparse
from pathlib import Path

from widthsearch.cli.common import MODEL_HELP, add_model_arg_argument, add_residual_argument, model_kwargs
from widthsearch.cli.main import print_json
from widthsearch.cli.supernet import is_main_process, reporting
from widthsearch.errors import UserError
from widthsearch.training.recipe import add_recipe_arguments, recipe_values


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train",
        help="train a channel config (or a uniform-width baseline, or several configs jointly) from scratch",
        description="Train a network from scratch with the supernet recipe: a searched --channels config, "
        "the uniform-width network with the FLOPs closest to --uniform-flops (the fair baseline), or the "
        "model at --width-mult. Several --channels configs (of one space) are trained jointly as one "
        "slimmable network: every step trains the largest on the labels and the others with "
        "--kd-weight x distillation from it + (1 - --kd-weight) x labels; each keeps its own BN statistics "
        "and `widthsearch export --checkpoint joint.pt` splits them into static nets.",
    )
    parser.add_argument("--model", default=None, metavar="M",
                        help=f"{MODEL_HELP} (required unless --resume or --channels)")
    add_model_arg_argument(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--channels", nargs="+", default=None, metavar="CFG.yaml",
                       help="channel config(s) written by search, or preset:NAME (`widthsearch space --presets`); "
                       "two or more are trained jointly")
    which.add_argument("--uniform-flops", default=None, metavar="F",
                       help="uniform width multiplier whose FLOPs are closest to F (e.g. 40M, 1.2G)")
    parser.add_argument("--width-mult", type=float, default=None, metavar="X",
                        help="width multiplier when neither --channels nor --uniform-flops is given (default 1.0)")
    add_residual_argument(parser)
    g = parser.add_argument_group("joint training (several --channels)")
    g.add_argument("--kd-weight", type=float, default=None, metavar="A",
                   help="loss of the smaller configs: A x KD from the largest + (1 - A) x CE (default 0.9, SP-Net's)")
    g.add_argument("--calib-images", type=int, default=None, metavar="N",
                   help="training images calibrating each config's BN statistics after every epoch (default 2048)")
    g.add_argument("--init-from", default=None, metavar="CKPT",
                   help="start from these weights (model.pt, a static export or a state_dict of the configs' space at "
                   "full width) instead of a fresh initialisation")
    add_recipe_arguments(parser)
    parser.set_defaults(func=run)


def _is_joint(args: argparse.Namespace) -> bool:
    from widthsearch.training.joint import CHECKPOINT_NAME

    if args.channels is not None:
        return len(args.channels) > 1
    return bool(args.resume and (Path(args.out) / CHECKPOINT_NAME).exists())


def run(args: argparse.Namespace) -> int:
    progress, echo = reporting(args)
    values = {**recipe_values(args), "model": args.model, "residual": args.residual}
    if args.model_arg and args.channels:
        raise UserError("--model-arg does not apply with --channels: the config's space records the model's arguments")
    if _is_joint(args):
        from widthsearch.training.joint import train_joint

        if args.width_mult is not None:
            raise UserError("--width-mult does not apply to joint training: the configs' space sets the width")
        values.update(kd_weight=args.kd_weight, calib_images=args.calib_images, init_from=args.init_from)
        result = train_joint(values, args.out, channels=args.channels, resume=args.resume, progress=progress,
                             stop_after=args.stop_after, echo=echo)
        return _report_joint(args, result)
    from widthsearch.formatting import format_count, parse_count
    from widthsearch.training.retrain import train_network

    if args.kd_weight is not None or args.calib_images is not None or args.init_from is not None:
        raise UserError("--kd-weight, --calib-images and --init-from are for joint training (two or more --channels)")
    channels = args.channels[0] if args.channels else None
    if args.model is None and channels is not None:
        values["model"] = _model_of(channels)
    elif args.model is None and not args.resume:
        raise UserError("--model is required (unless --channels names it or --resume continues a checkpoint)")
    values["model_kwargs"] = model_kwargs(args)
    flops = parse_count(args.uniform_flops) if args.uniform_flops is not None else None
    result = train_network(values, args.out, channels=channels, uniform_flops=flops, width_mult=args.width_mult,
                           resume=args.resume, progress=progress, stop_after=args.stop_after, echo=echo)
    if not is_main_process():
        return 0
    if args.json:
        print_json(result)
    else:
        print(f"test accuracy {100 * result['accuracy']:.2f}%  FLOPs {format_count(result['flops'])}  "
              f"params {format_count(result['params'])}  checkpoint {result['checkpoint']}")
    return 0


def _model_of(channels: str) -> str:
    """The model a config file was searched for (its space spec names it)."""
    from widthsearch.space.config import read_config_file
    from widthsearch.training.retrain import config_file_spec

    return config_file_spec(read_config_file(channels), channels, None).model


def _report_joint(args: argparse.Namespace, result: dict) -> int:
    from widthsearch.space.units import format_count

    if not is_main_process():
        return 0
    if args.json:
        print_json(result)
        return 0
    for row in result["subnets"]:
        acc = "n/a" if row["accuracy"] is None else f"{100 * row['accuracy']:.2f}%"
        print(f"{row['channels']}: test accuracy {acc}  FLOPs {format_count(row['flops'])}  "
              f"params {format_count(row['params'])}")
    print(f"joint: {result['epochs_done']}/{result['epochs']} epochs, checkpoint {result['checkpoint']}")
    return 0
