"""``widthsearch supernet``: train a slimmable supernet (sandwich rule + inplace distillation)."""

from __future__ import annotations

import argparse
import os

from widthsearch.cli.common import MODEL_HELP, add_model_arg_argument, add_residual_argument, model_kwargs
from widthsearch.cli.main import print_json
from widthsearch.errors import UserError
from widthsearch.training.recipe import add_recipe_arguments, recipe_values
from widthsearch.training.sampling import STRATEGIES, check_num_samples


def is_main_process() -> bool:
    """False on the non-zero ranks of a ``torchrun`` job (only rank 0 prints)."""
    return int(os.environ.get("RANK", "0")) == 0


def reporting(args: argparse.Namespace):
    """(per-step progress?, per-epoch echo) for human output; nothing with --json.

    Per-step progress is a bar on a terminal and a line a minute otherwise (see ``widthsearch.progress.Progress``)."""
    if args.json:
        return False, None
    return True, (lambda line: print(line, flush=True))


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "supernet",
        help="train a slimmable supernet for channel search",
        description="Train a supernet whose every channel configuration can run: each step trains the max, "
        "the min and random configs (sandwich rule) with inplace distillation from the max config. "
        "Under torchrun, every process samples its own configs.",
    )
    parser.add_argument("--model", default=None, metavar="M", help=f"{MODEL_HELP} (required unless --resume)")
    add_model_arg_argument(parser)
    parser.add_argument("--strategy", default=None, choices=sorted(STRATEGIES),
                        help="autoslim: sandwich rule + inplace distillation (default); sandwich: same configs, labels "
                        "only; bcnet: left and right sub-networks at 1/2 CE each, complementary widths, loss records; "
                        "uniform: N random configs at 1/N CE each (BCNet's unilateral ablation)")
    parser.add_argument("--width-mult", type=float, default=None, metavar="X", help="width of the supernet (default 1.0; AutoSlim uses 1.5)")
    parser.add_argument("--groups", type=int, default=None, metavar="G", help="channel groups per unit (default 10)")
    add_residual_argument(parser)
    parser.add_argument("--num-samples", type=int, default=None, metavar="N",
                        help="configs per step: max, min and N-2 random, so at least 2 (default 4); uniform: N random "
                        "configs (at least 1); bcnet: does not apply")
    parser.add_argument("--full-every", type=int, default=None, metavar="K",
                        help="bcnet: train the full network every K-th step (BCNet v1; default 0 = never)")
    parser.add_argument("--min-bins", type=int, default=None, metavar="M",
                        help="BCNetV2's enlarged supernet: (G+M)/G times wider, widths from M to G of G+M bins (default 0 = off)")
    parser.add_argument("--calib-images", type=int, default=None, metavar="N",
                        help="training images for BN calibration in the per-epoch evaluation (default 2048)")
    add_recipe_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from widthsearch.training.slimmable import train_supernet

    if args.model is None and not args.resume:
        raise UserError("--model is required (unless --resume continues a checkpoint)")
    if args.num_samples is not None and not args.resume:  # before any data is read
        check_num_samples(args.strategy or "autoslim", args.num_samples)
    values = recipe_values(args)
    values.update(model=args.model, model_kwargs=model_kwargs(args), strategy=args.strategy,
                  width_mult=args.width_mult, groups=args.groups, residual=args.residual, num_samples=args.num_samples,
                  calib_images=args.calib_images, full_every=args.full_every, min_bins=args.min_bins)
    progress, echo = reporting(args)
    result = train_supernet(values, args.out, resume=args.resume, progress=progress,
                            stop_after=args.stop_after, echo=echo)
    if not is_main_process():
        return 0
    if args.json:
        print_json(result)
    else:
        acc = result.get("max_acc")
        tail = f"; held-out acc max {100 * acc:.2f}% / min {100 * result['min_acc']:.2f}%" if acc is not None else ""
        print(f"supernet: {result['epochs_done']}/{result['epochs']} epochs, checkpoint {result['checkpoint']}{tail}")
    return 0
