"""``widthsearch latency-table``: measure each block of a space once, predict any config's latency.

The table feeds ``search --target latency_ms=X --latency-table lut.json`` (no candidate is run)
and ``profile --channels CFG --latency-table lut.json`` (predicted beside measured latency).
"""
from __future__ import annotations

import argparse

from widthsearch.cli.common import add_model_arguments, add_space_arguments, model_spec
from widthsearch.cli.main import print_json
from widthsearch.deploy import RUNTIMES
from widthsearch.errors import UserError
from widthsearch.latency import CLOCKS, STATISTICS, build_table, summary
from widthsearch.space.spec import SpaceSpec, build_supernet


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("latency-table", help="measure a per-layer latency table of a model's channel space")
    add_model_arguments(parser, required=False)
    add_space_arguments(parser)
    parser.add_argument("--checkpoint", metavar="CKPT",
                        help="take the space from this supernet checkpoint (or any file carrying a space spec: "
                        "config YAML, static .pt) instead of --model and the space flags")
    parser.add_argument("--runtime", default="torch", choices=list(RUNTIMES),
                        help="where the model will run: torch (eager, default) or onnxruntime")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads, fixed while measuring (default 1)")
    parser.add_argument("--batch-size", type=int, default=1, help="batch size of every measurement (default 1)")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per measurement; the median is kept (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs before each measurement (default 3)")
    parser.add_argument("--grid", type=int, default=None, metavar="G",
                        help="measure at most G widths per side of each layer, evenly spread, and interpolate the "
                        "others (default: every width the space allows)")
    parser.add_argument("--references", type=int, default=20, metavar="N",
                        help="whole-network measurements (5 uniform configs from the smallest to the largest, then "
                        "seeded ones spread over that range) that calibrate the offset and scale of the sum of "
                        "layers (default 20)")
    parser.add_argument("--passes", type=int, default=1, metavar="P",
                        help="measure every layer width and reference P times, each pass over the whole table in "
                        "alternating order, and keep the --statistic of the P values: steadier on a shared machine "
                        "whose speed drifts (default 1)")
    parser.add_argument("--statistic", default="median", choices=list(STATISTICS),
                        help="how --passes combine: median (default) or min, the fastest pass; other processes only "
                        "slow a measurement down, so on a shared machine min repeats better")
    parser.add_argument("--clock", default="wall", choices=list(CLOCKS),
                        help="wall (default) or cpu: CPU time of the calling thread, with --threads 1 only; on a "
                        "shared machine it leaves out the time other processes get")
    parser.add_argument("--out", required=True, metavar="LUT.json", help="the table (written as it is measured)")
    parser.add_argument("--resume", action="store_true", help="continue a partial table at --out")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run, out_is_file=True)  # a file, not a run folder: no folder lock


def space_spec(args: argparse.Namespace) -> SpaceSpec:
    """The spec of ``--checkpoint`` when given, else of ``--model`` and the space flags."""
    if args.checkpoint is None:
        if not args.model:
            raise UserError("give --model (and its space flags) or --checkpoint")
        return model_spec(args)
    if args.model:
        raise UserError("--checkpoint carries its own space: drop --model")
    from widthsearch.cli.common import existing_file

    path = existing_file(args.checkpoint, "checkpoint")
    if path.suffix in (".yaml", ".yml"):
        from widthsearch.space.config import read_config_file

        doc = read_config_file(path)
    else:
        from widthsearch.training.checkpoint import read_torch_file

        doc = read_torch_file(path)
        doc = doc if "space" in doc else doc.get("args", doc)
    if not isinstance(doc.get("space", doc), dict) or not (doc.get("space") or doc).get("model"):
        raise UserError(f"{path} records no channel space")
    return SpaceSpec.from_dict(doc)


def run(args: argparse.Namespace) -> int:
    if args.resume and args.force:
        raise UserError("give --resume or --force, not both")
    net, spec = build_supernet(space_spec(args))
    table = build_table(net, spec, args.out, runtime=args.runtime, threads=args.threads, batch_size=args.batch_size,
                        runs=args.runs, warmup=args.warmup, grid=args.grid, references=args.references,
                        clock=args.clock, passes=args.passes, statistic=args.statistic, resume=args.resume, force=args.force, progress=not args.json)
    result = {"out": str(args.out), **summary(table)}
    if args.json:
        print_json(result)
        return 0
    print(f"{args.out}: {result['measurements']} measurements of {result['blocks']} blocks of {result['model']} "
          f"({result['runtime']}, {result['threads']} thread(s), batch {result['batch_size']}) "
          f"in {result['measure_seconds']:.0f} s; predicted = {result['offset_ms']:.3f} ms + "
          f"{result['scale']:.3f} x sum of layers")
    for ref in result["reference_ms"]:
        print(f"  reference: measured {ref['measured_ms']:.3f} ms, predicted {ref['predicted_ms']:.3f} ms")
    return 0
