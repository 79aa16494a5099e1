"""Cache of decoded image trees: uint8 ``.npz`` arrays in ``$WIDTHSEARCH_CACHE``.

Decoding tens of thousands of JPEG/PNG files takes longer than a short training run, so the
decoded arrays are kept, keyed by the absolute path, size and modification time of the source:
a changed source gets a new key and is decoded again.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from widthsearch.io import savez_atomic

__all__ = ["cache_dir", "read_cached_tree", "source_key", "tree_cache_file", "write_cached_tree"]

_CACHE_VERSION = "1"


def cache_dir() -> Path:
    """Where decoded image arrays are cached: ``$WIDTHSEARCH_CACHE`` or ``~/.cache/widthsearch``."""
    env = os.environ.get("WIDTHSEARCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "widthsearch"


def source_key(path: Path) -> str:
    """Cache key of an image source: absolute path, sizes and modification times."""
    path = path.resolve()
    items = [str(path), _CACHE_VERSION]
    if path.is_file():
        st = path.stat()
        items += [str(st.st_size), str(st.st_mtime_ns)]
    else:
        # the folders' mtimes change whenever files are added, removed or renamed inside them
        for root, dirs, _files in os.walk(path):
            dirs.sort()
            depth = len(Path(root).relative_to(path).parts)
            items.append(f"{root}:{os.stat(root).st_mtime_ns}")
            if depth >= 3:
                dirs[:] = []
    return hashlib.sha1("\n".join(items).encode()).hexdigest()[:20]


def tree_cache_file(source: Path, what: str) -> Path:
    """The cache file of the image tree at ``source`` read as data set ``what``."""
    return cache_dir() / f"{what}-{source_key(source)}.npz"


def read_cached_tree(cache_file: Path):
    """``(xtr, ytr, xte, yte, classes)`` from a cache file, or ``None`` if absent or unreadable."""
    if not cache_file.exists():
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as d:
            return d["xtr"], d["ytr"], d["xte"], d["yte"], [str(c) for c in d["classes"]]
    except Exception:
        return None  # a broken cache entry is rebuilt by the caller


def write_cached_tree(cache_file: Path, xtr, ytr, xte, yte, classes: Sequence[str]) -> None:
    """Store decoded arrays; failures are ignored (the cache is an optimisation, not a need)."""
    try:
        savez_atomic(cache_file, xtr=xtr, ytr=ytr, xte=xte, yte=yte, classes=np.asarray(classes))
    except OSError:
        pass  # an unwritable cache directory is not an error
