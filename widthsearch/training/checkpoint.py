"""Checkpoints: written atomically, plain data only (``torch.load(..., weights_only=True)`` works).

A checkpoint is a dict of tensors, ints, floats, strings, bools, lists and dicts:

``format``      ``"widthsearch.supernet/1"``, ``"widthsearch.model/1"`` or ``"widthsearch.joint/1"``
``epoch``       number of completed epochs
``args``        the run's arguments (model, width_mult, groups, input_shape, num_classes, data, ...)
``space``       the :class:`~widthsearch.space.spec.SpaceSpec` of the network, as a dict (older
                checkpoints have none: their args hold model/width_mult/groups/...)
``states``      further states by name: ``strategy`` (a supernet training strategy's own state),
                ``subnet_bn`` (a joint run's per-subnet BN statistics)
``model``       the model's ``state_dict``
``optimizer``   / ``scheduler`` states
``rng``         python / numpy / torch (and CUDA) generator states at the end of the epoch
``history``     the per-epoch log rows
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from widthsearch.errors import UserError
from widthsearch.io import torch_save_atomic as atomic_save  # the name importers know

__all__ = [
    "SUPERNET_FORMAT",
    "MODEL_FORMAT",
    "JOINT_FORMAT",
    "atomic_save",
    "load_checkpoint",
    "load_state_checked",
    "state_dict_mismatch",
    "rng_state",
    "set_rng_state",
]

SUPERNET_FORMAT = "widthsearch.supernet/1"
MODEL_FORMAT = "widthsearch.model/1"
JOINT_FORMAT = "widthsearch.joint/1"


def read_torch_file(path: str | Path, what: str = "checkpoint") -> dict:
    """A ``torch.save``d mapping read with ``weights_only=True``; one-line ``UserError`` when the
    file is missing, unreadable or not a mapping (``what`` names it in the message)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).splitlines()[0][:200] if str(exc).strip() else ""
        raise UserError(f"cannot read {what} {path} ({type(exc).__name__}{': ' + first if first else ''})") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"{what} {path} holds no state_dict")
    return ckpt


def _listed(names: list[str], show: int = 3) -> str:
    more = f", +{len(names) - show} more" if len(names) > show else ""
    return ", ".join(names[:show]) + more


def state_dict_mismatch(expected: Mapping[str, Any], given: Mapping[str, Any]) -> str | None:
    """What keeps ``given`` from loading into a module whose ``state_dict()`` is ``expected``, in one
    line (missing keys, unexpected keys, shape mismatches, a few named each), or None when it fits.

    PyTorch's own message puts each problem on its own line after a header line, so cutting it at
    its first line (as one-line errors must) used to leave only the header."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k} {_shape(given[k])} here, {_shape(expected[k])} in the model" for k in expected
              if k in given and hasattr(given[k], "shape") and tuple(given[k].shape) != tuple(expected[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_listed(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_listed(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es): {_listed(shapes)}")
    return "; ".join(parts) or None


def _shape(t: Any) -> str:
    return "x".join(str(int(s)) for s in t.shape) or "scalar"


def load_state_checked(module: torch.nn.Module, state: Mapping[str, Any], what: str) -> None:
    """``module.load_state_dict(state)``, or a one-line ``UserError`` "``what`` does not fit: ..."."""
    if not isinstance(state, Mapping):
        raise UserError(f"{what} holds no state_dict")
    problem = state_dict_mismatch(module.state_dict(), state)
    if problem is not None:
        raise UserError(f"{what} does not fit: {problem}")
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:  # e.g. a value of the wrong type; PyTorch lists problems one per line
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise UserError(f"{what} does not fit: {' '.join(lines)[:400]}") from None


def load_checkpoint(path: str | Path, expect: str | None = None) -> dict:
    """Load a checkpoint with ``weights_only=True``; ``UserError`` if missing or of another kind."""
    path = Path(path)
    ckpt = read_torch_file(path)
    if "format" not in ckpt:
        raise UserError(f"{path} is not a widthsearch checkpoint")
    if expect is not None and ckpt["format"] != expect:
        raise UserError(f"{path} is a {ckpt['format']!r} checkpoint, expected {expect!r}")
    return ckpt


def rng_state() -> dict:
    """The global generator states as plain data."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": {"version": int(py[0]), "state": [int(v) for v in py[1]], "gauss": py[2] if py[2] is not None else "none"},
        "numpy": {
            "algorithm": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    gauss = None if py["gauss"] == "none" else float(py["gauss"])
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"]), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["algorithm"], n["keys"].numpy().astype(np.uint32), int(n["pos"]), int(n["has_gauss"]), float(n["cached_gaussian"]))
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
