"""``widthsearch search``: search channel configs on a trained supernet checkpoint.

Any algorithm of :data:`widthsearch.search.SEARCH_ALGORITHMS` (``--algo``); the work is done
by :func:`widthsearch.methods.supernet_search.search_supernet`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from widthsearch.cli.common import existing_file
from widthsearch.cli.main import print_json
from widthsearch.errors import UserError
from widthsearch.methods.supernet_search import algorithm_options, effective_options, search_meta, search_supernet
from widthsearch.search import SEARCH_ALGORITHMS, search_algorithm
from widthsearch.search.evolution import VARIANTS
from widthsearch.formatting import format_count
from widthsearch.training.distributed import resolve_device
from widthsearch.training.evaluate import check_search_images, supernet_evaluator
from widthsearch.training.slimmable import load_supernet

__all__ = ["register", "run", "search_meta"]  # search_meta: still importable from here

#: option name of the search function -> the flag that sets it (for one-line errors)
_FLAGS = {"population": "--population", "iterations": "--generations", "max_evals": "--max-evals",
          "seed": "--seed", "lower": "--lower", "variant": "--variant"}


def register(sub: argparse._SubParsersAction) -> None:
    algos = ", ".join(SEARCH_ALGORITHMS)
    parser = sub.add_parser("search", help=f"search channel configs on a trained supernet ({algos})")
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="supernet.pt written by `widthsearch supernet`")
    parser.add_argument("--algo", default="greedy", metavar="NAME",
                        help=f"search algorithm: {algos} (default greedy, AutoSlim's greedy slimming)")
    parser.add_argument("--target", action="append", default=[], metavar="METRIC=VALUE",
                        help="e.g. flops=300M, flops=0.5 (of max), params=1.5M, latency_ms=4 (absolute ms); "
                        "repeat for several (greedy only; evolution and random take one)")
    parser.add_argument("--latency-table", default=None, metavar="LUT.json",
                        help="latency_ms targets: predict each candidate's latency from this table (`widthsearch "
                        "latency-table` of the checkpoint's space) instead of measuring it")
    parser.add_argument("--bn", default="batch", choices=["batch", "calibrate"],
                        help="BN statistics while scoring: one large batch's own (AutoSlim, default) or calibrated")
    parser.add_argument("--align", default=None, choices=["left", "right", "both"],
                        help="which channels score a config: first (left), last (right) or the mean of both sides, "
                        "each with its own BN statistics (BCNet; the default for a --strategy bcnet checkpoint, else left)")
    parser.add_argument("--prior", default="none", choices=["none", "records"],
                        help="evolution: records = BCNetV2's prior fitted to the checkpoint's loss records, seeding the "
                        "initial population and mutations (a --strategy bcnet checkpoint)")
    parser.add_argument("--search-images", type=int, default=2000, metavar="N",
                        help="fixed held-out images that score every candidate (default 2000)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where candidates are scored (default auto: CUDA when available)")
    g = parser.add_argument_group("evolution and random search")
    g.add_argument("--variant", default=None, choices=VARIANTS,
                   help="evolution: screened (default: mutations change at least one width, no random fill-up, "
                   "children screened by an additive model of the scores) or bcnet (BCNetV2's loop as published)")
    g.add_argument("--population", type=int, default=None, metavar="N",
                   help="evolution: configs per generation, later ones half mutated and half crossed over "
                   "(default: 50 first, then 25 + 25 for bcnet, 10 + 10 for screened)")
    g.add_argument("--generations", type=int, default=None, metavar="N", help="evolution: generations (default 20)")
    g.add_argument("--max-evals", type=int, default=None, metavar="N",
                   help="most configs scored (default: evolution no limit, random 100)")
    g.add_argument("--seed", type=int, default=None, help="seed of every random choice (default 0)")
    g.add_argument("--lower", type=float, default=None, metavar="F",
                   help="only consider configs costing at least F x the target (default 0; CBM runs use 0.8)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for configs/, state, CSV, PNGs")
    parser.add_argument("--resume", action="store_true",
                        help="continue the search saved in --out (same checkpoint, algorithm, targets and options)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def search_options(args: argparse.Namespace) -> dict:
    """The options of ``--algo`` set on the command line; a flag the algorithm does not take is an error."""
    given = {"iterations": args.generations, "max_evals": args.max_evals, "seed": args.seed, "lower": args.lower,
             "variant": args.variant}
    if args.population is not None:
        # BCNetV2's generation: as many children as the population, half mutated, half crossed over
        given.update(population=args.population, mutations=args.population // 2,
                     crossovers=args.population - args.population // 2)
    given = {k: v for k, v in given.items() if v is not None}
    takes = algorithm_options(args.algo)
    for name in given:
        if name not in takes:
            raise UserError(f"{_FLAGS.get(name, name)} does not apply to --algo {args.algo}")
    return given


def default_align(meta: dict) -> str:
    """BCNet's bilateral score for a bcnet supernet, the left-aligned sub-networks otherwise."""
    return "both" if meta.get("strategy") == "bcnet" else "left"


def run(args: argparse.Namespace) -> int:
    search_algorithm(args.algo)  # an unknown name fails before the checkpoint is loaded
    options = search_options(args)
    check_search_images(args.search_images)
    existing_file(args.checkpoint, "supernet checkpoint") if not Path(args.checkpoint).is_dir() else None
    if args.prior != "none" and args.algo != "evolution":
        raise UserError("--prior applies to --algo evolution")
    net, meta = load_supernet(args.checkpoint, resolve_device(args.device))
    align = args.align or default_align(meta)
    evaluator, _ = supernet_evaluator(net, meta, args.bn, args.search_images, align=align)
    seeding = None
    if args.prior == "records":
        from widthsearch.methods.bcnet import checkpoint_records, prior_seeding

        opts = effective_options(args.algo, options)
        seeding = prior_seeding(net.space, checkpoint_records(meta["path"]), population=opts["population"],
                                seed=opts["seed"], lower=max(float(opts["lower"]), 0.8))
    scoring = {"bn": args.bn, "search_images": args.search_images, "align": align, "prior": args.prior}
    latency = None
    if args.latency_table and not any(str(t).strip().lower().startswith("latency_ms") for t in args.target):
        raise UserError("--latency-table predicts latency_ms targets; give one, e.g. --target latency_ms=4")
    if args.latency_table:
        from widthsearch.latency import check_table, fingerprint, load_table

        latency = load_table(args.latency_table)
        check_table(latency, meta["space"])
        scoring["latency_table"] = fingerprint(latency)  # a resume with another table is refused
    summary = search_supernet(net, evaluator, args.target, args.out, meta=search_meta(meta), algo=args.algo,
                              options=options, scoring=scoring, resume=args.resume, progress=not args.json,
                              seeding=seeding, latency=latency)
    summary["align"] = align
    summary["bn"] = args.bn
    if args.json:
        print_json(summary)
        return 0
    for entry in summary["found"]:
        acc = entry["heldout_accuracy"]
        shown = f", latency {entry['latency_ms']:.3g} ms" if "latency_ms" in entry else ""
        print(f"{entry['target']}: FLOPs {format_count(entry['flops'])}, params {format_count(entry['params'])}"
              f"{shown}, held-out acc {100 * acc:.2f}% -> {entry['config']}")
    if "steps" in summary:
        print(f"{summary['steps']} greedy steps, {summary['evaluations']} evaluations; "
              f"trajectory in {summary['trajectory']}")
    else:
        print(f"{args.algo}: {summary['evaluations']} evaluations (stopped: {summary['stop_reason']}); "
              f"history in {summary['history']}")
    return 0
