"""Static networks exported from a supernet, saved with what is needed to rebuild them.

File format (``torch.save`` of plain data, loadable with ``weights_only=True``)::

    {"format": "widthsearch.static/1", "model": str, "width_mult": float, "num_classes": int,
     "input_shape": [C, H, W], "groups": int, "channels": {unit: width}, "flops": int,
     "params": int, "bn_recalibrated": bool, "state_dict": {...}}
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from widthsearch.errors import UserError
from widthsearch.models import build_model
from widthsearch.space import Supernet
from widthsearch.training.checkpoint import atomic_save, load_checkpoint

STATIC_FORMAT = "widthsearch.static/1"


def save_static(path: str | Path, net: Supernet, config: Mapping[str, int], meta: Mapping[str, Any],
                bn_recalibrated: bool) -> dict[str, Any]:
    """Export ``net`` at ``config`` and save it with its metadata; returns the saved header."""
    static = net.export(dict(config))
    cost = net.space.cost(config)
    header = {
        "format": STATIC_FORMAT,
        "model": meta["model"],
        "width_mult": float(meta.get("width_mult", 1.0)),
        "num_classes": int(meta["num_classes"]),
        "input_shape": [int(d) for d in meta["input_shape"]],
        "groups": meta.get("groups"),
        "channels": {k: int(v) for k, v in config.items()},
        "flops": cost.flops,
        "params": cost.params,
        "bn_recalibrated": bool(bn_recalibrated),
    }
    atomic_save({**header, "state_dict": static.state_dict()}, path)
    return header


def load_static(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild an exported static network (eval mode) and its header."""
    ckpt = load_checkpoint(path, expect=STATIC_FORMAT)
    model = build_model(ckpt["model"], num_classes=ckpt["num_classes"], width_mult=ckpt["width_mult"])
    example = torch.randn(1, *ckpt["input_shape"])
    net = Supernet(model, example, groups=ckpt["groups"])
    static = net.export(net.space.validate(ckpt["channels"], strict=False))
    try:
        static.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not fit {ckpt['model']} at these channels ({str(exc).splitlines()[0]})") from None
    static.eval()
    return static, {k: v for k, v in ckpt.items() if k != "state_dict"}
