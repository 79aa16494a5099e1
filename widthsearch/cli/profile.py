"""``widthsearch profile``: FLOPs, params and measured latency of a model or a channel config."""
from __future__ import annotations

import argparse

import torch

from widthsearch.cli.common import add_model_arguments, add_space_arguments, model_spec, preset_model_spec
from widthsearch.cli.main import print_json
from widthsearch.costs import count_flops, count_params
from widthsearch.deploy import RUNTIMES, measure_runtime_latency
from widthsearch.errors import UserError
from widthsearch.space.config import load_config
from widthsearch.space.presets import preset_name
from widthsearch.space.spec import build_space_model, build_supernet
from widthsearch.formatting import format_count


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("profile", help="count FLOPs/params (and latency) of a model or a channel config")
    add_model_arguments(parser, required=False)
    add_space_arguments(parser)
    parser.add_argument("--channels", metavar="CFG.yaml",
                        help="profile this channel config instead of the full model (or preset:NAME, whose model "
                        "and width it fixes: `widthsearch space --presets`)")
    parser.add_argument("--latency", action="store_true", help="also measure CPU latency (median of --runs)")
    parser.add_argument("--runtime", default=None, choices=list(RUNTIMES),
                        help="where latency is measured: torch eager (default) or onnxruntime on the ONNX export")
    parser.add_argument("--latency-table", default=None, metavar="LUT.json",
                        help="also predict the latency from this table (`widthsearch latency-table`) as "
                        "predicted_latency_ms; runtime, threads and batch size default to the table's")
    parser.add_argument("--clock", default=None, choices=["wall", "cpu"],
                        help="latency clock: wall (default) or cpu time of the calling thread (1 thread only)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size for latency (default 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads for latency (default: the table's, else torch's current)")
    parser.add_argument("--runs", type=int, default=30, help="timed runs after 5 warm-up runs (default 30)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def _table(args: argparse.Namespace, spec):
    """The ``--latency-table`` checked against this space and run settings; fills their defaults."""
    from widthsearch.latency import check_table, load_table

    table = load_table(args.latency_table)
    check_table(table, spec, runtime=args.runtime, threads=args.threads, batch_size=args.batch_size, clock=args.clock)
    args.clock = args.clock or table.doc.get("clock", "wall")
    args.runtime = args.runtime or table.runtime
    args.threads = args.threads or table.threads
    args.batch_size = args.batch_size or table.batch_size
    return table


def run(args: argparse.Namespace) -> int:
    if args.channels and preset_name(args.channels) is not None:
        spec = preset_model_spec(args, args.channels)
    elif not args.model:
        raise UserError("give --model (or --channels preset:NAME, which names its model)")
    else:
        spec = model_spec(args)
    shape = spec.input_shape
    example = torch.randn(1, *shape)
    table = None
    if args.channels or args.latency_table:
        net, spec = build_supernet(spec)
        if args.latency_table:
            table = _table(args, spec)
        if args.channels:
            config, _ = load_config(args.channels, net.space, model=args.model, strict=False)
        else:  # the model as built: every unit at its physical width
            config = net.space.physical_config()
        model = net.export(config) if args.channels else build_space_model(spec)
    else:
        model = build_space_model(spec)
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    flops = count_flops(model, example)
    params = count_params(model)
    latency = None
    if args.latency:
        batch = torch.randn(args.batch_size or 1, *shape)
        latency = measure_runtime_latency(model, batch, runtime=args.runtime or "torch", runs=args.runs,
                                          threads=args.threads, clock=args.clock or "wall")
    result = {
        "model": spec.model,
        "width_mult": spec.width_mult,
        "input_shape": list(shape),
        "channels": args.channels,
        "flops": flops,
        "params": params,
        "runtime": args.runtime or "torch",
        "latency_ms": latency.median_ms if latency else None,
        "latency": latency.as_dict() if latency else None,
    }
    if table is not None:
        result["predicted_latency_ms"] = table.predict(config)
        result["latency_table"] = args.latency_table
    if args.json:
        print_json(result)
        return 0
    line = f"{spec.model} {'x'.join(map(str, shape))}: FLOPs {format_count(flops)} ({flops:,} MACs), params {format_count(params)} ({params:,})"
    print(line)
    if latency:
        print(
            f"latency: {latency.median_ms:.2f} ms median (p90 {latency.p90_ms:.2f} ms) over {latency.runs} runs, "
            f"batch {latency.batch_size}, {latency.threads} threads, {latency.device}"
        )
    if table is not None:
        print(f"predicted latency: {result['predicted_latency_ms']:.2f} ms ({args.latency_table}, {table.runtime}, "
              f"{table.threads} threads, batch {table.batch_size})")
    return 0
