"""``widthsearch export``: split a supernet (or any checkpoint of a zoo model) into static nets."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from widthsearch.cli.common import (
    add_model_arguments, add_space_arguments, build_model_and_input, build_space, existing_file, refuse_overwrite,
)
from widthsearch.cli.main import print_json
from widthsearch.errors import UserError
from widthsearch.export import save_static
from widthsearch.formatting import format_count
from widthsearch.models import model_info
from widthsearch.space import Supernet
from widthsearch.space.config import load_config
from widthsearch.training.checkpoint import SUPERNET_FORMAT


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("export", help="export channel configs of a checkpoint as static networks")
    parser.add_argument("--checkpoint", required=True, metavar="CKPT",
                        help="supernet.pt from `widthsearch supernet`, or a state_dict of --model at full width")
    parser.add_argument("--channels", action="append", required=True, metavar="CFG.yaml",
                        help="channel config; repeat to export several (then --out is a folder)")
    parser.add_argument("--out", required=True, metavar="FILE|DIR", help="output .pt file (a folder for several)")
    parser.add_argument("--no-recalibrate", action="store_true",
                        help="keep the supernet's shared BN statistics instead of recalibrating per config")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_model_arguments(parser, required=False)
    add_space_arguments(parser)
    parser.set_defaults(func=run)


def _read(path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"cannot read checkpoint {path} ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"{path} holds no state_dict")
    return ckpt


def _supernet_and_meta(args: argparse.Namespace):
    """(net, meta, calibration batches or None) for either kind of checkpoint."""
    path = existing_file(args.checkpoint, "checkpoint")
    ckpt = _read(path)
    if ckpt.get("format") == SUPERNET_FORMAT:
        from widthsearch.data import load_data
        from widthsearch.training.evaluate import calibration_batches
        from widthsearch.training.supernet import load_supernet

        net, meta = load_supernet(path)
        calib = None
        if not args.no_recalibrate:
            data = load_data(meta["data"], meta["heldout_fraction"], meta["seed"], augment="none")
            calib = calibration_batches(data.train.x, seed=data.seed)
        return net, meta, calib
    if not args.model:
        raise UserError(f"{path} is a plain state_dict: say which zoo model it belongs to with --model")
    state = ckpt.get("state_dict", ckpt.get("model", ckpt))
    model, example, shape = build_model_and_input(args)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"{path} does not fit {args.model}: {str(exc).splitlines()[0]}") from None
    net = Supernet(model, example, space=build_space(model, example, args))
    meta = {"model": args.model, "width_mult": args.width_mult, "input_shape": list(shape),
            "num_classes": args.num_classes or model_info(args.model)["num_classes"], "groups": args.groups}
    return net, meta, None


def run(args: argparse.Namespace) -> int:
    configs = [existing_file(c, "channel config") for c in args.channels]
    out = Path(args.out)
    if len(configs) > 1:
        targets = [out / f"{c.stem}.pt" for c in configs]
    else:
        targets = [out / f"{configs[0].stem}.pt" if out.is_dir() else out]
    for target in targets:
        refuse_overwrite(target, args.force)
    net, meta, calib = _supernet_and_meta(args)
    loaded = [load_config(c, net.space, model=meta["model"], strict=False)[0] for c in configs]
    results = []
    for path, config, target in zip(configs, loaded, targets):
        target.parent.mkdir(parents=True, exist_ok=True)
        if calib is not None:
            net.calibrate_bn(calib, config)
        header = save_static(target, net, config, meta, bn_recalibrated=calib is not None)
        results.append({"channels": str(path), "out": str(target), "flops": header["flops"],
                        "params": header["params"], "bn_recalibrated": header["bn_recalibrated"]})
    if args.json:
        print_json({"exported": results})
    else:
        for r in results:
            print(f"{r['out']}: FLOPs {format_count(r['flops'])}, params {format_count(r['params'])}"
                  f"{', BN recalibrated' if r['bn_recalibrated'] else ''}")
    return 0
