"""``widthsearch export``: split a supernet, a joint run or a zoo model's weights into static nets,
saved as widthsearch ``.pt`` files, ONNX (checked in onnxruntime) or TorchScript."""
from __future__ import annotations

import argparse
import contextlib
from pathlib import Path


from widthsearch.cli.common import (
    add_model_arguments, add_space_arguments, existing_file, model_spec, preset_model_spec, refuse_overwrite,
)
from widthsearch.cli.main import print_json
from widthsearch.errors import UserError
from widthsearch.deploy import FORMATS, SUFFIXES, save_deployed
from widthsearch.export import STATIC_FORMAT, load_static, static_with_header
from widthsearch.formatting import format_count
from widthsearch.models import model_info
from widthsearch.space.config import load_config
from widthsearch.space.presets import get_preset, preset_name
from widthsearch.space.spec import build_supernet
from widthsearch.training.checkpoint import (
    JOINT_FORMAT, SUPERNET_FORMAT, atomic_save, load_state_checked, read_torch_file,
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("export", help="export channel configs of a checkpoint as static networks")
    parser.add_argument("--checkpoint", required=True, metavar="CKPT",
                        help="supernet.pt from `widthsearch supernet`, joint.pt from `widthsearch train --channels A B ...` "
                        "(exports each of its configs), a static .pt from `widthsearch export` (to convert it "
                        "with --format), or a state_dict of --model at full width")
    parser.add_argument("--channels", nargs="+", default=None, metavar="CFG.yaml",
                        help="channel config(s) or preset:NAME to export (then --out is a folder when several; "
                        "not for joint.pt)")
    parser.add_argument("--out", required=True, metavar="FILE|DIR", help="output file (a folder for several)")
    parser.add_argument("--format", default="pt", choices=list(FORMATS),
                        help="pt: widthsearch's static file (default); onnx: ONNX opset 17, checked in onnxruntime; "
                        "torchscript: torch.jit.trace, checked with torch.jit.load (files in a folder get "
                        ".pt/.onnx/.ts)")
    parser.add_argument("--no-verify", action="store_true",
                        help="onnx/torchscript: skip loading the file back and comparing outputs on random inputs")
    parser.add_argument("--no-recalibrate", action="store_true",
                        help="keep the supernet's shared BN statistics instead of recalibrating per config")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_model_arguments(parser, required=False)
    add_space_arguments(parser, default_residual=None)
    parser.set_defaults(func=run)


def _check_residual(args: argparse.Namespace, meta: dict) -> None:
    recorded = meta["space"]["residual"]
    if args.residual is not None and args.residual != recorded:
        raise UserError(f"{args.checkpoint} was trained with --residual {recorded}, not {args.residual}")


def _supernet_and_meta(args: argparse.Namespace, ckpt: dict, path: Path):
    """(net, meta, calibration batches or None) for a supernet checkpoint or a plain state_dict."""
    if ckpt.get("format") == SUPERNET_FORMAT:
        from widthsearch.data import load_run_data
        from widthsearch.training.evaluate import calibration_batches
        from widthsearch.training.slimmable import load_supernet

        net, meta = load_supernet(path)
        _check_residual(args, meta)
        calib = None
        if not args.no_recalibrate:
            data = load_run_data(meta)
            calib = calibration_batches(data.train.x, seed=data.seed)
        return net, meta, calib
    names = [preset_name(c) for c in args.channels]
    if None not in names and len({(get_preset(n).model, get_preset(n).width_mult) for n in names}) == 1:
        spec = preset_model_spec(args, args.channels[0])  # presets name the model and width of their weights
    elif not args.model:
        raise UserError(f"{path} is a plain state_dict: say which model it belongs to with --model")
    else:
        spec = model_spec(args)
    state = ckpt.get("state_dict", ckpt.get("model", ckpt))
    net, spec = build_supernet(spec)
    load_state_checked(net.model, state, f"{path} (for {spec.model})")
    meta = {"model": spec.model, "width_mult": spec.width_mult, "input_shape": list(spec.input_shape),
            "num_classes": spec.num_classes or model_info(spec.model)["num_classes"], "groups": spec.groups,
            "space": spec.to_dict()}
    return net, meta, None


def _targets(sources: list[Path], out: Path, suffix: str = ".pt") -> list[Path]:
    """Where each export goes: ``--out`` itself for one config (unless a folder), else ``out/<stem><suffix>``."""
    stems = [preset_name(s) or s.stem for s in sources]  # preset:NAME -> NAME.pt
    if len(sources) == 1:
        return [out / f"{stems[0]}{suffix}" if out.is_dir() else out]
    if len(set(stems)) < len(stems):  # same file names from different folders: number them
        stems = [f"{i}-{stem}" for i, stem in enumerate(stems)]
    return [out / f"{stem}{suffix}" for stem in stems]


def _joint_exports(args: argparse.Namespace, path: Path):
    """(meta, [(config file, subnet, context normalising with its BN statistics)]) of a joint run."""
    from widthsearch.training.joint import member_exports

    if args.channels:
        raise UserError(f"{path} is a joint run: it exports its own configs; drop --channels")
    net, meta, exports = member_exports(path)
    _check_residual(args, meta)
    return net, meta, exports


def _config_exports(args: argparse.Namespace, ckpt: dict, path: Path):
    if not args.channels:
        raise UserError("give the --channels config(s) to export")
    sources = [Path(c) if preset_name(c) else existing_file(c, "channel config") for c in args.channels]
    net, meta, calib = _supernet_and_meta(args, ckpt, path)
    exports = []
    for source in sources:
        config = load_config(source, net.space, model=meta["model"], strict=False)[0]
        exports.append((source, config, _calibrated(net, calib, config)))
    return net, meta, exports


def _static_exports(args: argparse.Namespace, path: Path):
    """(meta, [(source, static net and header)]) of a file already exported: convert its format."""
    if args.channels:
        raise UserError(f"{path} is already a static network at fixed channels; drop --channels")
    if args.format == "pt":
        raise UserError(f"{path} is already a static .pt file; give --format onnx or torchscript to convert it")
    static, header = load_static(path)
    return None, header, [(path, (static, header), contextlib.nullcontext())]


@contextlib.contextmanager
def _calibrated(net, calib, config):
    """Recalibrate BN for ``config`` when entered (the statistics are written into the net)."""
    if calib is not None:
        net.calibrate_bn(calib, config)
    yield


def _exports(args: argparse.Namespace, ckpt: dict, path: Path):
    kind = ckpt.get("format")
    if kind == JOINT_FORMAT:
        return _joint_exports(args, path)
    if kind == STATIC_FORMAT:
        return _static_exports(args, path)
    return _config_exports(args, ckpt, path)


def _write(target: Path, fmt: str, static, header: dict, verify: bool) -> float | None:
    """Write one static net in ``fmt``; the largest output difference found by verification."""
    if fmt == "pt":
        atomic_save({**header, "state_dict": static.state_dict()}, target)
        return None
    return save_deployed(target, fmt, static, header["input_shape"], header, verify=verify)


def run(args: argparse.Namespace) -> int:
    path = existing_file(args.checkpoint, "checkpoint")
    ckpt = read_torch_file(path)
    suffix = SUFFIXES[args.format]
    if ckpt.get("format") not in (JOINT_FORMAT, STATIC_FORMAT) and args.channels:
        for target in _targets([Path(c) for c in args.channels], Path(args.out), suffix):
            refuse_overwrite(target, args.force)  # before any work
    net, meta, exports = _exports(args, ckpt, path)
    targets = _targets([source for source, _, _ in exports], Path(args.out), suffix)
    for target in targets:
        refuse_overwrite(target, args.force)
    recalibrated = ckpt.get("format") == JOINT_FORMAT or (
        not args.no_recalibrate and ckpt.get("format") == SUPERNET_FORMAT)
    verify = not args.no_verify and args.format != "pt"
    results = []
    for (source, config, bn_context), target in zip(exports, targets):
        target.parent.mkdir(parents=True, exist_ok=True)
        with bn_context:
            if net is None:  # a static file: already exported
                static, header = config
            else:
                static, header = static_with_header(net, config, meta, bn_recalibrated=recalibrated)
            difference = _write(target, args.format, static, header, verify)
        results.append({"channels": str(source), "out": str(target), "format": args.format,
                        "flops": header["flops"], "params": header["params"],
                        "bn_recalibrated": header["bn_recalibrated"],
                        "verified": difference is not None, "max_difference": difference})
    if args.json:
        print_json({"exported": results})
    else:
        for r in results:
            check = f", verified (max difference {r['max_difference']:.2g})" if r["verified"] else ""
            print(f"{r['out']}: FLOPs {format_count(r['flops'])}, params {format_count(r['params'])}"
                  f"{', BN recalibrated' if r['bn_recalibrated'] else ''}{check}")
    return 0
