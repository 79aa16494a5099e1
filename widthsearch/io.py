"""Atomic file writes: a temporary file in the target's folder, then ``os.replace``.

A reader (or a run that crashes mid-write) sees either the old file or the complete new one,
never half of it: the rename is atomic on one file system, which is why the temporary file lives
in the target's own folder. Every writer here creates the parent folder and gives the file the
mode ``open()`` would have given it (``mkstemp`` alone would leave it readable by its owner only).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Mapping

__all__ = [
    "same_path",
    "file_mode",
    "write_atomic",
    "write_text_atomic",
    "write_json_atomic",
    "write_jsonl_atomic",
    "torch_save_atomic",
    "savez_atomic",
]


def same_path(a: str | Path, b: str | Path) -> bool:
    """Whether two spellings name the same file or folder: relative or absolute, through links
    (``os.path.samefile`` when both exist, else the resolved paths). Resumed runs compare recorded
    paths with it, so ``../data/x.tar.gz`` continues a run recorded as ``/work/data/x.tar.gz``."""
    a, b = Path(a).expanduser(), Path(b).expanduser()
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def file_mode() -> int:
    """``0o666`` minus the process umask: what ``open()`` would have given the file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None], *, fsync: bool = False) -> Path:
    """Call ``write(binary_handle)`` on a temporary file beside ``path``, then move it into place.

    ``fsync`` flushes the data to disk before the rename, for files whose loss after a power cut
    would cost hours (checkpoints). On any error the temporary file is removed and the old file,
    if any, is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    data = text.encode("utf-8")
    return write_atomic(path, lambda handle: handle.write(data))


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON plus a final newline, atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def write_jsonl_atomic(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write one JSON object per line, atomically (the whole log is rewritten each time)."""
    return write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))


def torch_save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` atomically and synced to disk (checkpoints are expensive to lose)."""
    import torch

    return write_atomic(path, lambda handle: torch.save(obj, handle), fsync=True)


def savez_atomic(path: str | Path, **arrays: Any) -> Path:
    """``numpy.savez`` (uncompressed) atomically; the name is used as given (no ``.npz`` added)."""
    import numpy as np

    return write_atomic(path, lambda handle: np.savez(handle, **arrays))
