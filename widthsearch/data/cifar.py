"""CIFAR-10 from the python-pickle batches folder (``data_batch_1`` .. ``data_batch_5``,
``test_batch``), or from a class-folder tree / ``.tar.gz`` of 32x32 images.

The batches are unpickled with an allow-list (numpy arrays and plain data only), so a crafted
batch file cannot run code: it is refused with a one-line error instead.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from widthsearch.data.images import is_archive, read_image_tree
from widthsearch.errors import UserError

__all__ = ["read_cifar10"]


def read_cifar10(arg: str, use_cache: bool):
    path = Path(arg).expanduser()
    if not path.exists():
        raise UserError(f"cifar10: {path} does not exist")
    if path.is_dir() and (path / "data_batch_1").exists():
        return _read_cifar_pickles(path)
    if path.is_dir() and (path / "cifar-10-batches-py" / "data_batch_1").exists():
        return _read_cifar_pickles(path / "cifar-10-batches-py")
    if path.is_dir() or is_archive(path):
        xtr, ytr, xte, yte, classes = read_image_tree(path, use_cache, what="cifar10")
        if xtr.shape[1:] != (3, 32, 32):
            raise UserError(f"cifar10: images in {path} are {tuple(xtr.shape[1:])}, expected 3x32x32")
        return xtr, ytr, xte, yte, classes
    raise UserError(
        f"cifar10: {path} is neither a folder of python batches (data_batch_1..5, test_batch), "
        "a train/ and test/ tree of class folders, nor a .tar/.tar.gz of one"
    )


def _read_cifar_pickles(folder: Path):
    def read(name: str) -> dict:
        f = folder / name
        if not f.exists():
            raise UserError(f"cifar10: {f} is missing")
        batch = _load_batch(f)
        if not isinstance(batch, dict):
            raise UserError(f"cifar10: {f} holds a {type(batch).__name__}, not a dict with 'data' and 'labels'")
        return batch

    def arrays(d: dict, name: str):
        data = d.get(b"data", d.get("data"))
        labels = d.get(b"labels", d.get("labels"))
        if data is None or labels is None:
            raise UserError(f"cifar10: {folder / name} has no 'data'/'labels' entries")
        data = np.asarray(data, dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise UserError(f"cifar10: {folder / name} data must be (N, 3072), got {data.shape}")
        return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)

    parts = [arrays(read(f"data_batch_{i}"), f"data_batch_{i}") for i in range(1, 6)]
    xte, yte = arrays(read("test_batch"), "test_batch")
    xtr = np.concatenate([p[0] for p in parts])
    ytr = np.concatenate([p[1] for p in parts])
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    meta = folder / "batches.meta"
    if meta.exists():
        try:
            names = _load_batch(meta).get(b"label_names")
            if names and len(names) == 10:
                classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        except _UnsafePickle:
            raise  # an optional file, but one that tries to run code is not silently skipped
        except Exception:
            pass  # the class names are optional: keep the standard ones
    return xtr, ytr, xte, yte, classes


# The python batches are pickles, and unpickling may call any function the file names. A CIFAR
# batch needs only numpy arrays plus plain containers; these are the globals numpy's pickles name
# to rebuild arrays (``numpy.core`` before numpy 2, ``numpy._core`` after; ``scalar`` for numpy
# numbers such as int64 labels, ``_frombuffer`` for pickle protocol 5). Each maps to the object of
# the installed numpy, so a numpy 1 pickle is read by numpy 2 without importing its old module.
# ``_codecs.encode`` is how Python 3 writes bytes under protocols 0-2 (it only encodes a string).
def _allowed_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric
    found = {
        "multiarray._reconstruct": multiarray._reconstruct,
        "multiarray.scalar": multiarray.scalar,
        "numeric._frombuffer": numeric._frombuffer,
    }
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }
    for qualified, obj in found.items():
        module, name = qualified.split(".")
        for package in ("numpy.core", "numpy._core"):
            allowed[(f"{package}.{module}", name)] = obj
    return allowed


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a function or class outside the allowed numpy ones."""


class _UnsafePickle(UserError):
    """The one-line error for a batch that would call something other than numpy's rebuilders."""


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Reads numpy arrays, lists, dicts, bytes, str and numbers; refuses every other global."""

    _allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None


def _load_batch(path: Path) -> Any:
    """Unpickle a CIFAR python batch without letting it run code; one-line ``UserError`` on failure."""
    try:
        with open(path, "rb") as fh:
            return _ArraysOnlyUnpickler(fh, encoding="bytes").load()
    except _RefusedGlobal as exc:
        raise _UnsafePickle(
            f"cifar10: refusing {path}: it asks to call {exc}, and a CIFAR batch holds only numpy arrays, "
            "lists, dicts, strings and numbers"
        ) from None
    except Exception as exc:
        raise UserError(f"cifar10: cannot read {path} ({type(exc).__name__})") from None
