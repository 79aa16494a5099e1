"""``widthsearch space``: the channel units found in a model and the size of its search space."""
from __future__ import annotations

import argparse
import dataclasses

from widthsearch.cli.common import add_model_arguments, add_space_arguments, model_spec
from widthsearch.cli.main import print_json
from widthsearch.errors import UserError
from widthsearch.space.spec import build_supernet
from widthsearch.formatting import format_count


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("space", help="list the channel units of a model and their width choices")
    add_model_arguments(parser, required=False)
    add_space_arguments(parser)
    parser.add_argument("--widen", type=float, default=1.0, metavar="W",
                        help="a space W times wider than the model (units may grow past their default width; default 1)")
    parser.add_argument("--members", action="store_true", help="also list the layers of each unit")
    parser.add_argument("--presets", action="store_true",
                        help="list the published networks usable as --channels preset:NAME (of --model, if given)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.presets:
        return _list_presets(args)
    if not args.model:
        raise UserError("give --model (or --presets to list the published networks)")
    spec = model_spec(args)
    if args.widen != 1.0:
        spec = dataclasses.replace(spec, widen=args.widen)
    space = build_supernet(spec)[0].space
    max_cost, min_cost = space.cost(space.max_config()), space.cost(space.min_config())
    if args.json:
        print_json({
            "model": args.model,
            "input_shape": list(spec.input_shape),
            "residual": spec.residual,
            "units": [
                {"name": u.name, "max": u.max, "default": u.default, "choices": list(u.choices),
                 "copies": u.copies, "members": list(u.members)}
                for u in space.units
            ],
            "fixed_units": [
                {"name": f.name, "channels": f.channels, "fixed_reason": f.reason, "members": list(f.members)}
                for f in space.fixed_units
            ],
            "size": space.size,
            "max_flops": max_cost.flops,
            "min_flops": min_cost.flops,
        })
        return 0
    width = max(len(u.name) for u in space.units) if space.units else 4
    print(f"{'unit':<{width}}  {'max':>5}  {'default':>7}  choices")
    for u in space.units:
        choices = ", ".join(map(str, u.choices))
        copies = f"  (x{u.copies}: channels per group)" if u.copies > 1 else ""
        print(f"{u.name:<{width}}  {u.max:>5}  {u.default:>7}  {choices}{copies}")
        if args.members:
            print(f"{'':<{width}}         layers: {', '.join(u.members)}")
    print(f"{len(space.units)} units, {space.size:,} configs; FLOPs {format_count(min_cost.flops)} .. {format_count(max_cost.flops)}")
    if space.fixed_units:
        print(f"fixed ({len(space.fixed_units)}):")
        name_width = max(len(f.name) for f in space.fixed_units)
        for f in space.fixed_units:
            print(f"  {f.name:<{name_width}}  {f.channels:>5}  {f.reason}")
            if args.members and f.members:
                print(f"  {'':<{name_width}}         layers: {', '.join(f.members)}")
    return 0


def _list_presets(args: argparse.Namespace) -> int:
    """Name, model, our MACs and params, and what the authors published, of every preset."""
    from widthsearch.space.config import preset_document
    from widthsearch.space.presets import PRESETS

    if args.model and args.model not in {p.model for p in PRESETS.values()}:
        raise UserError(f"no presets of {args.model}; presets exist for {', '.join(sorted({p.model for p in PRESETS.values()}))}")
    rows = []
    for name, preset in PRESETS.items():
        if args.model and preset.model != args.model:
            continue
        doc = preset_document(name)
        rows.append({"name": name, "channels": f"preset:{name}", "model": preset.model,
                     "width_mult": preset.width_mult, "flops": doc["flops"], "params": doc["params"],
                     "published_flops": preset.published_flops, "published_top1": preset.top1,
                     "source": doc["source"]})
    if args.json:
        print_json({"presets": rows})
        return 0
    width = max(len(r["name"]) for r in rows)
    print(f"{'preset':<{width}}  {'model':<12}  {'width':>5}  {'MACs':>8}  {'params':>7}  "
          f"{'published MACs':>14}  published top-1")
    for r in rows:
        published = f"{r['published_flops'] / 1e6:.0f}M"  # as the authors state it, in millions
        print(f"{r['name']:<{width}}  {r['model']:<12}  {r['width_mult']:>5g}  {format_count(r['flops']):>8}  "
              f"{format_count(r['params']):>7}  {published:>14}  {r['published_top1']:.1f}%")
    print("use one as --channels preset:NAME (profile, export, train)")
    return 0
