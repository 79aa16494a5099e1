"""``widthsearch spnet``: SP-Net (bases with L1 on BN scales, multi-base pruning, sorting, joint fine-tune)."""
from __future__ import annotations

import argparse

from widthsearch.cli.common import MODEL_HELP, add_model_arg_argument, check_counts, model_kwargs
from widthsearch.cli.main import print_json
from widthsearch.data import DATA_HELP
from widthsearch.formatting import format_count
from widthsearch.methods.spnet import SPNET_DEFAULTS


def register(sub: argparse._SubParsersAction) -> None:
    d = SPNET_DEFAULTS
    parser = sub.add_parser(
        "spnet",
        help="SP-Net: slimmable sub-networks pruned from several bases, sorted and fine-tuned jointly",
        description="Train the model at each --bases width with an L1 penalty on the BN scales; prune base k to "
        "target k by one global |gamma| threshold bisected to the FLOPs (the i-th smallest target from the i-th "
        "smallest base, targets beyond the bases from the largest); sort the largest base's channels by |gamma| so "
        "every sub-network is a prefix of its weights (units joined by zero padding keep masks instead); fine-tune "
        "the sub-networks jointly from it; export them as static nets. Resumable after a kill at any point.",
    )
    parser.add_argument("--model", default=None, metavar="M", help=f"{MODEL_HELP} (default {d['model']})")
    add_model_arg_argument(parser)
    parser.add_argument("--data", default=None, metavar="SPEC", help=f"{DATA_HELP} (default {d['data']})")
    parser.add_argument("--bases", default=None, metavar="W,W",
                        help="width multipliers of the bases (default 0.75,1.0, SP-Net's for ResNets)")
    parser.add_argument("--targets", default=None, metavar="F,F,F",
                        help="FLOPs of the sub-networks, e.g. 10M,23M,40.8M; numbers in (0, 1] are fractions of the "
                        "largest base's FLOPs (default: the FLOPs of the uniform nets at 0.5, 0.75 and 1.0 times the "
                        "largest base's width)")
    parser.add_argument("--base-epochs", type=int, default=None, metavar="E",
                        help=f"epochs of each base (default {d['base_epochs']})")
    parser.add_argument("--finetune-epochs", type=int, default=None, metavar="E",
                        help=f"epochs of the joint fine-tune (default {d['finetune_epochs']})")
    parser.add_argument("--residual", default=None, choices=["pad", "tie"],
                        help="pad (default): residual operands keep their own widths, joined by zero padding (SP-Net's "
                        "zero-padding match); tie: one width per residual stream (the ablation)")
    parser.add_argument("--bn-l1", type=float, default=None, metavar="LAMBDA",
                        help=f"L1 penalty on the BN scales, bases and fine-tune (default {d['bn_l1']:g})")
    parser.add_argument("--bn-init", type=float, default=None, metavar="G",
                        help=f"initial BN scale of the bases (default {d['bn_init']})")
    parser.add_argument("--kd-weight", type=float, default=None, metavar="A",
                        help=f"smaller sub-networks' loss: A x KD from the largest + (1 - A) x CE (default {d['kd_weight']})")
    parser.add_argument("--batch-size", type=int, default=None, metavar="B", help=f"default {d['batch_size']}")
    parser.add_argument("--lr", type=float, default=None, help=f"peak learning rate of every training (default {d['lr']})")
    parser.add_argument("--seed", type=int, default=None, help="default 0")
    parser.add_argument("--heldout-fraction", type=float, default=None, metavar="F",
                        help=f"training images held out (default {d['heldout_fraction']})")
    parser.add_argument("--calib-images", type=int, default=None, metavar="N",
                        help=f"training images calibrating each sub-network's BN statistics (default {d['calib_images']})")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="torch threads (default: torch's)")
    parser.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"], help="default auto")
    parser.add_argument("--compile", action="store_const", const=True, default=None,
                        help="compile the base trainings' steps with torch.compile (static networks; the joint "
                        "fine-tune runs as it is)")
    parser.add_argument("--out", required=True, metavar="DIR", help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue a killed run in --out")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


SETTING_KEYS = ("model", "data", "base_epochs", "finetune_epochs", "residual", "bn_l1", "bn_init", "kd_weight",
                "batch_size", "lr", "seed", "heldout_fraction", "calib_images", "threads", "device", "compile")


def run(args: argparse.Namespace) -> int:
    from widthsearch.methods.spnet import parse_bases, parse_targets, run_spnet

    settings = {key: getattr(args, key) for key in SETTING_KEYS}
    check_counts(settings, ("base_epochs", "finetune_epochs", "batch_size", "calib_images", "threads"))
    settings["model_kwargs"] = model_kwargs(args)
    settings["bases"] = parse_bases(args.bases) if args.bases is not None else None
    settings["targets"] = parse_targets(args.targets) if args.targets is not None else None
    echo = None if args.json else (lambda line: print(line, flush=True))
    summary = run_spnet(settings, args.out, resume=args.resume, progress=not args.json, echo=echo)
    rows = [{key: r[key] for key in ("target_flops", "flops", "params", "accuracy", "static")}
            for r in summary["subnets"]]
    if args.json:
        print_json({"subnets": rows})
        return 0
    for r in rows:
        print(f"target {format_count(r['target_flops'])}: FLOPs {format_count(r['flops'])}, params "
              f"{format_count(r['params'])}, test acc {100 * r['accuracy']:.2f}%  {r['static']}")
    print(f"report: {summary['report']}")
    return 0
