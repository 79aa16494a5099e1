"""``widthsearch profile``: FLOPs, params and measured latency of a model or a channel config."""
from __future__ import annotations

import argparse

import torch

from widthsearch.cli.common import add_model_arguments, add_space_arguments, model_spec, preset_model_spec
from widthsearch.cli.main import print_json
from widthsearch.costs import count_flops, count_params, measure_latency
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
    parser.add_argument("--batch-size", type=int, default=1, help="batch size for latency (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for latency (default: current)")
    parser.add_argument("--runs", type=int, default=30, help="timed runs after 5 warm-up runs (default 30)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.channels and preset_name(args.channels) is not None:
        spec = preset_model_spec(args, args.channels)
    elif not args.model:
        raise UserError("give --model (or --channels preset:NAME, which names its model)")
    else:
        spec = model_spec(args)
    shape = spec.input_shape
    example = torch.randn(1, *shape)
    if args.channels:
        net, spec = build_supernet(spec)
        config, _ = load_config(args.channels, net.space, model=args.model, strict=False)
        model = net.export(config)
    else:
        model = build_space_model(spec)
    flops = count_flops(model, example)
    params = count_params(model)
    latency = None
    if args.latency:
        batch = torch.randn(args.batch_size, *shape)
        latency = measure_latency(model, batch, runs=args.runs, threads=args.threads)
    result = {
        "model": spec.model,
        "width_mult": spec.width_mult,
        "input_shape": list(shape),
        "channels": args.channels,
        "flops": flops,
        "params": params,
        "latency_ms": latency.median_ms if latency else None,
        "latency": latency.as_dict() if latency else None,
    }
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
    return 0
