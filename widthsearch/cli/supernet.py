"""``widthsearch supernet``: train a slimmable supernet (sandwich rule + inplace distillation)."""

from __future__ import annotations

import argparse
import os

from widthsearch.cli.main import print_json
from widthsearch.data import DATA_HELP
from widthsearch.errors import UserError


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """Data and optimisation flags shared by ``supernet`` and ``train`` (``None`` = default/checkpoint)."""
    g = parser.add_argument_group("data")
    g.add_argument("--data", default=None, metavar="SPEC", help=f"{DATA_HELP} (default digits)")
    g.add_argument("--heldout-fraction", type=float, default=None, metavar="F",
                   help="part of the training data held out for search/BN calibration (default 0.1)")
    g.add_argument("--no-augment", dest="augment", action="store_const", const="none", default=None,
                   help="no training augmentation (default: crop+flip for 32x32 colour images, none for digits)")
    g = parser.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=None, metavar="E", help="epochs (default 10)")
    g.add_argument("--batch-size", type=int, default=None, metavar="B", help="global batch size over all processes (default 128)")
    g.add_argument("--lr", type=float, default=None, help="peak learning rate (default 0.1), cosine-decayed per iteration")
    g.add_argument("--wd", "--weight-decay", dest="weight_decay", type=float, default=None, metavar="WD",
                   help="weight decay of conv/linear weights, none on BN and biases (default 5e-4)")
    g.add_argument("--momentum", type=float, default=None, help="SGD momentum (default 0.9)")
    g.add_argument("--no-nesterov", dest="nesterov", action="store_const", const=False, default=None,
                   help="plain momentum instead of Nesterov")
    g.add_argument("--warmup-epochs", type=float, default=None, metavar="E", help="linear warm-up epochs (default 0)")
    g.add_argument("--label-smoothing", type=float, default=None, metavar="EPS", help="label smoothing (default 0)")
    g.add_argument("--seed", type=int, default=None, help="seed of initialisation, split, order and sampling (default 0)")
    g.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"], help="default auto (CUDA when available)")
    g.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads per process (default: PyTorch's; 1 is fastest on a busy machine)")
    g.add_argument("--precision", default=None, choices=["fp32", "bf16"],
                   help="fp32 (default) or bf16 mixed precision (autocast; weights stay fp32); "
                   "bf16 is several times faster on CPUs with AVX-512 BF16/AMX and on recent GPUs")
    g.add_argument("--channels-last", dest="channels_last", action="store_const", const=True, default=None,
                   help="NHWC weights and activations (faster with bf16 on CPU; see docs/benchmarks.md)")
    g = parser.add_argument_group("output")
    g.add_argument("--out", required=True, metavar="DIR", help="run folder (checkpoint, log.jsonl, result.json)")
    g.add_argument("--resume", action="store_true", help="continue the checkpoint in --out (exactly)")
    g.add_argument("--json", action="store_true", help="print one JSON object (no progress output)")
    g.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)


def recipe_values(args: argparse.Namespace) -> dict:
    keys = ("data", "heldout_fraction", "augment", "epochs", "batch_size", "lr", "weight_decay", "momentum",
            "nesterov", "warmup_epochs", "label_smoothing", "seed", "device", "threads", "precision", "channels_last")
    return {k: getattr(args, k) for k in keys}


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
    parser.add_argument("--model", default=None, metavar="M", help="zoo model (required unless --resume)")
    parser.add_argument("--strategy", default=None, choices=["autoslim", "sandwich"],
                        help="autoslim: sandwich rule + inplace distillation (default); sandwich: same configs, labels only")
    parser.add_argument("--width-mult", type=float, default=None, metavar="X", help="width of the supernet (default 1.0; AutoSlim uses 1.5)")
    parser.add_argument("--groups", type=int, default=None, metavar="G", help="channel groups per unit (default 10)")
    parser.add_argument("--num-samples", type=int, default=None, metavar="N",
                        help="configs per step: max, min and N-2 random (default 4)")
    parser.add_argument("--calib-images", type=int, default=None, metavar="N",
                        help="training images for BN calibration in the per-epoch evaluation (default 2048)")
    add_recipe_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from widthsearch.training.supernet import train_supernet

    if args.model is None and not args.resume:
        raise UserError("--model is required (unless --resume continues a checkpoint)")
    values = recipe_values(args)
    values.update(model=args.model, strategy=args.strategy, width_mult=args.width_mult, groups=args.groups,
                  num_samples=args.num_samples, calib_images=args.calib_images)
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
