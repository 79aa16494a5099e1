"""``widthsearch adjust``: Network Adjustment rounds (train, FUR probe, move channels at constant FLOPs)."""
from __future__ import annotations

import argparse

from widthsearch.cli.common import MODEL_HELP, add_model_arg_argument, check_counts, model_kwargs
from widthsearch.cli.main import print_json
from widthsearch.data import DATA_HELP
from widthsearch.methods.netadjust import ADJUST_DEFAULTS
from widthsearch.formatting import format_count


def register(sub: argparse._SubParsersAction) -> None:
    d = ADJUST_DEFAULTS
    parser = sub.add_parser(
        "adjust",
        help="Network Adjustment: widen the units whose FLOPs pay off, narrow the others, same FLOPs",
        description="Rounds of: train the network at its current widths from scratch, measure each unit's FLOPs "
        "utilisation ratio (held-out loss increase under channel dropout that removes equal FLOPs per unit), give "
        "channels to the top units and take them from the bottom ones, rescale to the original FLOPs. "
        "Resumable after a kill at any point.",
    )
    parser.add_argument("--model", default=None, metavar="M", help=f"{MODEL_HELP} (default {d['model']})")
    add_model_arg_argument(parser)
    parser.add_argument("--data", default=None, metavar="SPEC", help=f"{DATA_HELP} (default {d['data']})")
    parser.add_argument("--width-mult", type=float, default=None, metavar="X", help="the original network's width (default 1.0)")
    parser.add_argument("--widen", type=float, default=None, metavar="W",
                        help=f"units may grow up to W times their original width (default {d['widen']:g})")
    parser.add_argument("--residual", default=None, choices=["pad", "tie"],
                        help="pad (default): residual blocks keep their own widths, joined by zero padding; tie: one width per stream")
    parser.add_argument("--rounds", type=int, default=None, metavar="N", help=f"adjustment rounds (default {d['rounds']})")
    parser.add_argument("--epochs", type=int, default=None, metavar="E", help=f"training epochs per round (default {d['epochs']})")
    parser.add_argument("--batch-size", type=int, default=None, metavar="B", help=f"default {d['batch_size']}")
    parser.add_argument("--lr", type=float, default=None, help=f"default {d['lr']}")
    parser.add_argument("--seed", type=int, default=None, help="default 0")
    parser.add_argument("--train-drop", type=float, default=None, metavar="P",
                        help=f"channel dropout while training each round, ramped linearly over epochs and depth up to P "
                        f"(default {d['train_drop']:g}, the paper's CIFAR setting; 0 = off)")
    parser.add_argument("--heldout-fraction", type=float, default=None, metavar="F",
                        help=f"training images held out for the FUR probe (default {d['heldout_fraction']})")
    g = parser.add_argument_group("FUR probe and adjustment (defaults: the official CIFAR settings)")
    g.add_argument("--p0", type=float, default=None, help=f"base channel-drop rate (default {d['p0']})")
    g.add_argument("--max-rate", type=float, default=None, help=f"clamp of every unit's drop rate (default {d['max_rate']})")
    g.add_argument("--passes", type=int, default=None, metavar="K", help=f"dropout passes per unit (default {d['passes']})")
    g.add_argument("--probe-images", type=int, default=None, metavar="N", help=f"held-out images probed (default {d['probe_images']})")
    g.add_argument("--k0", type=int, default=None, help=f"units moved in round 1 (default {d['k0']})")
    g.add_argument("--k-decay", type=float, default=None, help=f"fewer units moved per round (default {d['k_decay']})")
    g.add_argument("--a-lr", type=float, default=None, help=f"step of the top-ranked unit, in original widths (default {d['a_lr']})")
    g.add_argument("--a-decay", type=float, default=None, help=f"smaller step per rank (default {d['a_decay']})")
    g.add_argument("--floor", type=int, default=None, help=f"fewest channels a unit keeps (default {d['floor']})")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="torch threads (default: torch's)")
    parser.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"], help="default auto")
    parser.add_argument("--out", required=True, metavar="DIR", help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue a killed run in --out")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


SETTING_KEYS = ("model", "data", "width_mult", "widen", "residual", "rounds", "epochs", "batch_size", "lr", "seed",
                "train_drop", "heldout_fraction", "p0", "max_rate", "passes", "probe_images", "k0", "k_decay",
                "a_lr", "a_decay", "floor", "threads", "device")


def run(args: argparse.Namespace) -> int:
    from widthsearch.methods.netadjust import run_rounds

    settings = {key: getattr(args, key) for key in SETTING_KEYS}
    check_counts(settings, ("rounds", "epochs", "batch_size", "passes", "probe_images", "floor", "threads"))
    settings["model_kwargs"] = model_kwargs(args)
    echo = None if args.json else (lambda line: print(line, flush=True))
    summary = run_rounds(settings, args.out, resume=args.resume, progress=not args.json, echo=echo)
    if args.json:
        print_json({key: summary[key] for key in ("config", "flops", "original_flops", "params", "rounds")})
        return 0
    for row in summary["rounds"]:
        acc = row["heldout_accuracy"]
        print(f"round {row['round']}: FLOPs {format_count(row['flops'])}, held-out acc "
              f"{'-' if acc is None else f'{100 * acc:.2f}%'}, FUR stability {row['fur_stability']}")
    print(f"final: {summary['config']}  FLOPs {format_count(summary['flops'])} (original "
          f"{format_count(summary['original_flops'])}), params {format_count(summary['params'])} (original "
          f"{format_count(summary['original_params'])})")
    return 0
