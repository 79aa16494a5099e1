"""The Channel-Bench-Macro tables: keys, where the files live, parsing, and the zoo net's space.

A key is 7 digits 1-4, one per searchable width in network order, digit d meaning d/4 of that
width's maximum. A table maps each of the 4^7 = 16,384 keys to ``acc`` (3 runs), ``mean``,
``std``, ``flops`` and ``params``.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

import widthsearch
from widthsearch.errors import UserError

__all__ = [
    "DEFAULT_BUDGETS", "DIGITS", "KEY_LENGTH", "MODEL_NAMES", "N_ARCHS", "SOURCE_URL", "SPACES", "TABLE_FILES",
    "CBMTable", "cbm_channel_space", "default_tables_dir", "is_key", "load_table", "space_name", "table_path",
]


SPACES = ("mobilenet", "resnet")
TABLE_FILES = {"mobilenet": "Results_MobileNet.json", "resnet": "Results_ResNet.json"}
MODEL_NAMES = {"mobilenet": "cbm_mobilenet", "resnet": "cbm_resnet"}
KEY_LENGTH = 7
DIGITS = "1234"
N_ARCHS = len(DIGITS) ** KEY_LENGTH
SOURCE_URL = "github.com/xiusu/Channel-Bench-Macro"
DEFAULT_BUDGETS = (0.25, 0.5, 0.75)


def default_tables_dir() -> Path:
    """``<repo>/../shared/channel_bench_macro``: where the project keeps the public tables."""
    return Path(widthsearch.__file__).resolve().parents[2] / "shared" / "channel_bench_macro"


def space_name(space: str) -> str:
    """The canonical space name (``mobilenet``/``resnet``; ``cbm_`` prefix and case ignored)."""
    name = str(space).lower()
    if name.startswith("cbm_"):
        name = name[4:]
    if name not in SPACES:
        raise UserError(f"unknown Channel-Bench-Macro space {space!r}; choose one of: {', '.join(SPACES)}")
    return name


def table_path(space: str, tables: Optional[Any] = None) -> Path:
    """Path of a space's table; ``UserError`` saying where to get it when it is missing."""
    name = space_name(space)
    directory = Path(tables) if tables is not None else default_tables_dir()
    path = directory / TABLE_FILES[name]
    if not path.is_file():
        where = f"directory {directory}" if directory.is_dir() else f"{directory} (no such directory)"
        raise UserError(
            f"Channel-Bench-Macro table {TABLE_FILES[name]} not found in {where}; the public tables "
            f"come from {SOURCE_URL} -- download them and pass --tables DIR"
        )
    return path


def is_key(key: Any) -> bool:
    return isinstance(key, str) and len(key) == KEY_LENGTH and all(c in DIGITS for c in key)


@dataclass(frozen=True)
class CBMTable:
    """A parsed table: arrays aligned with ``keys`` (sorted), plus ``index`` key -> row."""

    space: str
    path: str
    keys: Tuple[str, ...]
    index: Mapping[str, int]
    mean: np.ndarray
    std: np.ndarray
    flops: np.ndarray
    params: np.ndarray
    acc: np.ndarray  # (N, runs)

    @property
    def max_key(self) -> str:
        return DIGITS[-1] * KEY_LENGTH

    @property
    def max_flops(self) -> int:
        return int(self.flops[self.index[self.max_key]])

    @property
    def max_params(self) -> int:
        return int(self.params[self.index[self.max_key]])

    def row(self, key: str) -> int:
        try:
            return self.index[key]
        except KeyError:
            raise UserError(f"{key!r} is not a Channel-Bench-Macro key (7 digits 1-4)") from None

    def entry(self, key: str) -> Dict[str, Any]:
        i = self.row(key)
        return {
            "key": key,
            "mean": float(self.mean[i]),
            "std": float(self.std[i]),
            "acc": [float(a) for a in self.acc[i]],
            "flops": int(self.flops[i]),
            "params": int(self.params[i]),
        }


@functools.lru_cache(maxsize=8)
def _load_table_cached(path: str, mtime_ns: int, size: int, space: str) -> CBMTable:
    try:
        with open(path, "r", encoding="utf-8") as fh:
            raw = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read Channel-Bench-Macro table {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a JSON object key -> entry")
    keys = tuple(sorted(raw))
    bad = [k for k in keys if not is_key(k)]
    if bad:
        raise UserError(f"{path}: {bad[0]!r} is not a 7-digit key of digits 1-4")
    if len(keys) != N_ARCHS:
        raise UserError(f"{path}: expected {N_ARCHS} architectures, found {len(keys)}")
    try:
        mean = np.array([float(raw[k]["mean"]) for k in keys])
        std = np.array([float(raw[k].get("std", float("nan"))) for k in keys])
        flops = np.array([int(raw[k]["flops"]) for k in keys], dtype=np.int64)
        params = np.array([int(raw[k]["params"]) for k in keys], dtype=np.int64)
        runs = max(len(raw[k].get("acc", [])) for k in keys)
        acc = np.full((len(keys), runs), np.nan)
        for i, k in enumerate(keys):
            a = raw[k].get("acc", [])
            acc[i, : len(a)] = a
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: malformed entry ({exc.__class__.__name__}: {exc})") from None
    for arr in (mean, std, flops, params, acc):
        arr.setflags(write=False)
    return CBMTable(
        space=space,
        path=path,
        keys=keys,
        index={k: i for i, k in enumerate(keys)},
        mean=mean,
        std=std,
        flops=flops,
        params=params,
        acc=acc,
    )


def load_table(space: str, tables: Optional[Any] = None) -> CBMTable:
    """Load (once; cached while the file is unchanged) a space's table."""
    name = space_name(space)
    path = table_path(name, tables).resolve()
    st = path.stat()
    return _load_table_cached(str(path), st.st_mtime_ns, st.st_size, name)


@functools.lru_cache(maxsize=4)
def cbm_channel_space(space: str) -> Any:
    """The core's ``ChannelSpace`` of the zoo net of a CBM space (groups=4: 4 choices/unit)."""
    import torch

    try:
        from widthsearch.models import build_model
        from widthsearch.space import ChannelSpace
    except ImportError as exc:  # pragma: no cover - only while the tree is incomplete
        raise UserError(f"the channel-space analysis is unavailable: {exc}") from None
    name = space_name(space)
    model = build_model(MODEL_NAMES[name])
    return ChannelSpace.from_model(model, torch.randn(1, 3, 32, 32), groups=len(DIGITS))
