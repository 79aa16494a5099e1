"""CIFAR-10 from the python-pickle batches folder (``data_batch_1`` .. ``data_batch_5``,
``test_batch``), or from a class-folder tree / ``.tar.gz`` of 32x32 images."""

from __future__ import annotations

import pickle
from pathlib import Path

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
        try:
            with open(f, "rb") as fh:
                return pickle.load(fh, encoding="bytes")
        except Exception as exc:
            raise UserError(f"cifar10: cannot read {f} ({type(exc).__name__})") from None

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
            with open(meta, "rb") as fh:
                names = pickle.load(fh, encoding="bytes").get(b"label_names")
            if names and len(names) == 10:
                classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        except Exception:
            pass
    return xtr, ytr, xte, yte, classes
