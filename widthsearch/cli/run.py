"""``widthsearch run``: a method end to end, from training to the retrained networks' report (AutoSlim, BCNet,
Network Adjustment, SP-Net against S-Net).

The method is looked up by name in :data:`widthsearch.methods.METHODS`."""
from __future__ import annotations

import argparse
import sys
import time

from widthsearch.cli.common import MODEL_HELP, add_model_arg_argument, check_counts, model_kwargs
from widthsearch.cli.main import print_json
from widthsearch.errors import UserError
from widthsearch.methods import METHODS, method
from widthsearch.methods.autoslim import RUN_DEFAULTS
from widthsearch.formatting import format_count


def register(sub: argparse._SubParsersAction) -> None:
    d = RUN_DEFAULTS
    parser = sub.add_parser("run", help="a method end to end, retraining and report included "
                            "(autoslim, bcnet, netadjust, spnet)")
    parser.add_argument("--method", default="autoslim", metavar="NAME",
                        help=f"method: {', '.join(METHODS)} (default autoslim)")
    parser.add_argument("--model", default=None, metavar="M", help=f"{MODEL_HELP} (default {d['model']})")
    add_model_arg_argument(parser)
    parser.add_argument("--data", default=None, metavar="SPEC", help=f"data set (default {d['data']})")
    parser.add_argument("--width-mult", type=float, default=None, metavar="X", help="supernet width (default 1.0; spnet: bases at 0.75X and X)")
    parser.add_argument("--groups", type=int, default=None, metavar="G", help=f"groups per unit (default {d['groups']})")
    parser.add_argument("--epochs", type=int, default=None, metavar="E",
                        help=f"supernet epochs (default {d['epochs']}; netadjust: per round; spnet: per base)")
    parser.add_argument("--retrain-epochs", type=int, default=None, metavar="E",
                        help=f"epochs for each retrained net (default {d['retrain_epochs']}; spnet: the joint fine-tune)")
    parser.add_argument("--batch-size", type=int, default=None, metavar="B", help=f"default {d['batch_size']}")
    parser.add_argument("--lr", type=float, default=None, help=f"default {d['lr']}")
    parser.add_argument("--seed", type=int, default=None, help="supernet and search seed (default 0)")
    parser.add_argument("--seeds", default=None, metavar="S,S,S",
                        help="autoslim, bcnet, netadjust: retrain every net under each seed and compare with "
                        "intervals (default 0,1,2); spnet: run both arms under each seed (default 0,1; may change on --resume: "
                        "new seeds are trained, the report covers the seeds given)")
    parser.add_argument("--ablation", default=None, choices=["nopad"],
                        help="spnet: add the SP-Net arm without zero-padding match (residual tie, same bases)")
    parser.add_argument("--rounds", type=int, default=None, metavar="N", help="netadjust: adjustment rounds (default 3)")
    parser.add_argument("--targets", default=None, metavar="F,F,F",
                        help="FLOPs targets as fractions of the max config (default 0.75,0.5,0.25; spnet: of the "
                        "largest base, default the uniform nets at 0.5,0.75,1 of its width)")
    parser.add_argument("--bn", default=None, choices=["batch", "calibrate"], help="BN mode of the search (default batch)")
    parser.add_argument("--align", default=None, choices=["left", "right", "both"],
                        help="channels that score a candidate (default: both for bcnet, left otherwise)")
    parser.add_argument("--search-images", type=int, default=None, metavar="N", help="held-out images scoring the search")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="torch threads (default: torch's)")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="autoslim, bcnet, netadjust: retrain up to N networks at once; spnet: run up to N seeds' "
                        "arms at once; each in its own process (default 1; the same results; on a CPU keep "
                        "N x --threads within the cores)")
    parser.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"],
                        help="for every stage (default auto: CUDA when available)")
    parser.add_argument("--compile", action="store_const", const=True, default=None,
                        help="compile the training steps of static networks with torch.compile: the retraining "
                        "(autoslim, bcnet, netadjust), the bases (spnet); may be added on --resume")
    parser.add_argument("--out", default="runs/autoslim", metavar="DIR", help="run folder (default runs/autoslim)")
    parser.add_argument("--resume", action="store_true",
                        help="continue a killed run in --out (also after the folder moved: its recorded paths "
                        "follow it; finished trainings and a finished autoslim search need no *.pt checkpoint)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def _targets(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(t) for t in text.split(","))
    except ValueError:
        raise UserError(f"--targets {text!r}: expected fractions like 0.75,0.5,0.25") from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise UserError(f"--targets {text!r}: every fraction must be in (0, 1]")
    return values


def _seeds(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise UserError(f"--seeds {text!r}: expected integers like 0,1,2") from None


def _comparison_text(r: dict) -> str:
    """The delta of one report row, with its intervals and verdict when the method measured them."""
    delta = f"delta {100 * (r['accuracy'] - r['uniform_accuracy']):+.2f}"
    c = r.get("comparison")
    if not c:
        return delta
    intervals = [f"{name} [{100 * i[0]:+.2f}, {100 * i[1]:+.2f}]"
                 for name, i in (("seeds", c["t_interval"]), ("images", c["bootstrap_interval"])) if i]
    return f"{delta} ({len(c['seeds'])} seeds; 95% {', '.join(intervals)}): {c['verdict']}"


#: settings of `run` that count something, so must be positive integers when given
_COUNTS = ("epochs", "retrain_epochs", "groups", "batch_size", "search_images", "rounds", "threads", "jobs")


def run(args: argparse.Namespace) -> int:
    run_method = method(args.method)  # an unknown name fails before anything is read or written
    settings = {
        "model": args.model, "model_kwargs": model_kwargs(args), "data": args.data, "width_mult": args.width_mult,
        "groups": args.groups,
        "epochs": args.epochs, "retrain_epochs": args.retrain_epochs, "batch_size": args.batch_size, "lr": args.lr,
        "seed": args.seed, "seeds": _seeds(args.seeds), "targets": _targets(args.targets), "bn": args.bn, "search_images": args.search_images,
        "threads": args.threads, "device": args.device, "rounds": args.rounds, "align": args.align,
        "ablation": args.ablation, "jobs": args.jobs, "compile": args.compile,
    }
    check_counts(settings, _COUNTS)  # before the supernet trains: a later stage would refuse them after hours
    start = time.time()
    echo = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    result = run_method(settings, args.out, resume=args.resume, progress=not args.json, echo=echo)
    result["seconds"] = round(time.time() - start, 1)
    if args.json:
        print_json(result)
        return 0
    for r in [*result["targets"], *result.get("ablation", [])]:  # spnet's ablation arm against S-Net too
        line = f"{r['target']}: FLOPs {format_count(r['flops'])}  acc {100 * r['accuracy']:.2f}%"
        if "uniform_accuracy" in r:
            baseline = r.get("baseline", "uniform")
            line += f"  {baseline} {100 * r['uniform_accuracy']:.2f}%  {_comparison_text(r)}"
        if "goal" in r:
            line += f"; goal {100 * r['goal']:+.2f} {'met' if r['goal_met'] else 'not met'}"
        print(line)
    if "flops_match" in result:  # netadjust: the adjusted net's FLOPs against the original's
        f = result["flops_match"]
        print(f"FLOPs {100 * f['relative_difference']:+.3f}% of the original "
              f"({'within' if f['within_tolerance'] else 'OUTSIDE'} ±{100 * f['tolerance']:g}%)")
    print(f"report: {result['report']} ({result['seconds']:.0f} s)")
    return 0
