"""Static networks exported from a supernet, saved with what is needed to rebuild them.

File format (``torch.save`` of plain data, loadable with ``weights_only=True``)::

    {"format": "widthsearch.static/1", "model": str, "width_mult": float, "num_classes": int,
     "input_shape": [C, H, W], "groups": int, "space": {SpaceSpec as a dict}, "channels": {unit: width},
     "select": {unit: "right" | ranking} (only when some unit does not keep its first channels),
     "flops": int, "params": int, "bn_recalibrated": bool, "state_dict": {...}}

Files written before ``space`` existed are rebuilt from their model/width_mult/groups entries.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch.nn as nn

from widthsearch.space import Supernet
from widthsearch.space.spec import SpaceSpec, build_supernet
from widthsearch.space.subnet import Subnet, as_subnet
from widthsearch.training.checkpoint import atomic_save, load_checkpoint, load_state_checked

STATIC_FORMAT = "widthsearch.static/1"


def save_static(path: str | Path, net: Supernet, config: Mapping[str, int], meta: Mapping[str, Any],
                bn_recalibrated: bool) -> dict[str, Any]:
    """Export ``net`` at ``config`` and save it with its metadata; returns the saved header.

    ``meta`` names the model (model, num_classes, input_shape, ...) and, as ``space``, the spec of
    ``net``'s space, from which :func:`load_static` rebuilds the network.
    """
    static, header = static_with_header(net, config, meta, bn_recalibrated)
    atomic_save({**header, "state_dict": static.state_dict()}, path)
    return header


def static_with_header(net: Supernet, config: Mapping[str, int], meta: Mapping[str, Any],
                       bn_recalibrated: bool) -> tuple[nn.Module, dict[str, Any]]:
    """The static export of ``net`` at ``config`` (eval mode) and the header every exported file
    carries (the ``.pt`` format's, which ONNX and TorchScript files store as metadata)."""
    subnet = as_subnet(config)
    static = net.export(subnet).eval()
    cost = net.space.cost(subnet)
    space = meta.get("space") or {}
    header = {
        "format": STATIC_FORMAT,
        "model": meta["model"],
        "width_mult": float(space.get("width_mult", meta.get("width_mult", 1.0))),
        "num_classes": int(meta["num_classes"]),
        "input_shape": [int(d) for d in meta["input_shape"]],
        "groups": space.get("groups", meta.get("groups")),
        "space": meta.get("space"),
        **subnet.to_doc(),
        "flops": cost.flops,
        "params": cost.params,
        "bn_recalibrated": bool(bn_recalibrated),
    }
    return static, header


def load_static(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild an exported static network (eval mode) and its header."""
    ckpt = load_checkpoint(path, expect=STATIC_FORMAT)
    net, _ = build_supernet(SpaceSpec.from_dict(ckpt.get("space") or ckpt))
    static = net.export(net.space.validate(Subnet.from_doc(ckpt), strict=False))
    load_state_checked(static, ckpt["state_dict"], f"{path} ({ckpt['model']} at its channels)")
    static.eval()
    return static, {k: v for k, v in ckpt.items() if k != "state_dict"}
