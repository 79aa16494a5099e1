"""``widthsearch search``: AutoSlim greedy slimming of a trained supernet checkpoint."""
from __future__ import annotations

import argparse
from pathlib import Path

from widthsearch.cli.common import existing_file
from widthsearch.cli.main import print_json
from widthsearch.methods.autoslim import greedy_search
from widthsearch.space.units import format_count
from widthsearch.training.distributed import resolve_device
from widthsearch.training.evaluate import supernet_evaluator
from widthsearch.training.slimmable import load_supernet


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("search", help="search channel configs on a trained supernet (AutoSlim greedy)")
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="supernet.pt written by `widthsearch supernet`")
    parser.add_argument("--algo", default="greedy", choices=["greedy"], help="search algorithm (default greedy)")
    parser.add_argument("--target", action="append", default=[], metavar="METRIC=VALUE",
                        help="e.g. flops=300M, flops=0.5 (of max), params=1.5M, latency_ms=4; repeat for several")
    parser.add_argument("--bn", default="batch", choices=["batch", "calibrate"],
                        help="BN statistics while scoring: one large batch's own (AutoSlim, default) or calibrated")
    parser.add_argument("--search-images", type=int, default=2000, metavar="N",
                        help="fixed held-out images that score every candidate (default 2000)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where candidates are scored (default auto: CUDA when available)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for configs/, trajectory.csv, PNGs")
    parser.add_argument("--resume", action="store_true", help="continue the search saved in --out")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def search_meta(meta: dict) -> dict:
    """What a config YAML records about the supernet it came from."""
    return {
        "model": meta["model"], "width_mult": meta["width_mult"], "input_shape": list(meta["input_shape"]),
        "num_classes": meta["num_classes"], "groups": meta["groups"], "supernet": meta["path"],
        "space": meta.get("space"),
    }


def run(args: argparse.Namespace) -> int:
    existing_file(args.checkpoint, "supernet checkpoint") if not Path(args.checkpoint).is_dir() else None
    net, meta = load_supernet(args.checkpoint, resolve_device(args.device))
    evaluator, _ = supernet_evaluator(net, meta, args.bn, args.search_images)
    summary = greedy_search(net, evaluator, args.target, args.out, meta=search_meta(meta),
                            resume=args.resume, progress=not args.json)
    summary["bn"] = args.bn
    if args.json:
        print_json(summary)
        return 0
    for entry in summary["found"]:
        acc = entry["heldout_accuracy"]
        print(f"{entry['target']}: FLOPs {format_count(entry['flops'])}, params {format_count(entry['params'])}, "
              f"held-out acc {100 * acc:.2f}% -> {entry['config']}")
    print(f"{summary['steps']} greedy steps, {summary['evaluations']} evaluations; trajectory in {summary['trajectory']}")
    return 0
