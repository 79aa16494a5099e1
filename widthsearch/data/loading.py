"""``load_data(spec)``: read the data set a spec string names, normalise it, split off held-out.

The spec strings are described in :mod:`widthsearch.data`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from widthsearch.data.augment import Augment
from widthsearch.data.cifar import read_cifar10
from widthsearch.data.core import Dataset, Split, stratified_split
from widthsearch.data.images import read_image_tree
from widthsearch.data.sources import make_fake, read_digits, read_fashion_mnist
from widthsearch.errors import UserError
from widthsearch.io import same_path

__all__ = ["DATA_HELP", "LOADINGS", "check_heldout", "load_data", "load_run_data", "same_data_spec"]

DATA_HELP = (
    "data spec: digits | cifar10:DIR_OR_TAR | imagefolder:DIR_OR_TAR | fashion_mnist:FILE.npz | "
    "fake:N[:CxHxW[:K]]"
)


def load_data(
    spec: str,
    heldout_fraction: float = 0.1,
    seed: int = 0,
    *,
    augment: str = "default",
    use_cache: bool = True,
    loading: str = "auto",
    image_size: int | None = None,
) -> Dataset:
    """Load the data set named by ``spec`` (see the module docstring).

    ``loading`` (image folders only): ``"stream"`` decodes images as batches need them
    (:mod:`widthsearch.data.stream`; ``image_size`` sets the training crop and evaluation size,
    default 224), ``"memory"`` decodes them all once, ``"auto"`` streams when the decoded set
    would pass :data:`~widthsearch.data.stream.MEMORY_LIMIT_BYTES` or ``image_size`` is given.

    ``heldout_fraction`` of the training images (stratified by class, drawn with ``seed``) form
    the held-out split. ``augment`` is ``"default"`` (the data set's usual training augmentation)
    or ``"none"``. Missing or malformed data raise :class:`UserError` with one line.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"empty data spec; {DATA_HELP}")
    if not 0.0 <= float(heldout_fraction) < 1.0:
        raise UserError(f"--heldout-fraction must be in [0, 1), got {heldout_fraction}")
    if augment not in ("default", "none"):
        raise UserError(f"augment must be 'default' or 'none', got {augment!r}")
    if loading not in LOADINGS:
        raise UserError(f"loading must be one of {', '.join(LOADINGS)}, got {loading!r}")
    spec = spec.strip()
    kind, _, arg = spec.partition(":")
    kind = kind.lower()
    if kind == "imagefolder":
        streamed = _streamed_folder(spec, _need_path(kind, arg), heldout_fraction, seed, augment, loading, image_size)
        if streamed is not None:
            return streamed
        if image_size is not None:
            print("note: --image-size applies to streamed image folders; in memory the images keep their size",
                  file=sys.stderr)
    elif loading == "stream" or image_size is not None:
        # a recipe written for an image folder also runs on other data (fake: in the checks)
        print(f"note: --stream and --image-size apply to image folders; {spec} is read as usual", file=sys.stderr)
    if kind == "digits":
        if arg:
            raise UserError(f"'digits' takes no argument, got {spec!r}")
        xtr, ytr, xte, yte, classes = read_digits()
        name = "digits"
    elif kind == "cifar10":
        xtr, ytr, xte, yte, classes = read_cifar10(_need_arg(kind, arg), use_cache)
        name = "cifar10"
    elif kind == "imagefolder":
        xtr, ytr, xte, yte, classes = read_image_tree(_need_path(kind, arg), use_cache)
        name = "imagefolder"
    elif kind == "fashion_mnist":
        xtr, ytr, xte, yte, classes = read_fashion_mnist(_need_path(kind, arg))
        name = "fashion_mnist"
    elif kind == "fake":
        xtr, ytr, xte, yte, classes = make_fake(_need_arg(kind, arg))
        name = "fake"
    else:
        raise UserError(f"unknown data set {kind!r}; {DATA_HELP}")

    # float [0, 1] images, per-channel statistics of the whole training set (independent of the
    # held-out draw, so every run on the same data normalises identically)
    scale = 16.0 if name == "digits" else (1.0 if name == "fake" else 255.0)
    xtr_t = torch.from_numpy(np.ascontiguousarray(xtr)).float().div_(scale)
    xte_t = torch.from_numpy(np.ascontiguousarray(xte)).float().div_(scale)
    mean = xtr_t.mean(dim=(0, 2, 3))
    std = xtr_t.std(dim=(0, 2, 3)).clamp_min(1e-6)
    xtr_t = xtr_t.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
    xte_t = xte_t.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
    ytr_t = torch.from_numpy(np.asarray(ytr, dtype=np.int64))
    yte_t = torch.from_numpy(np.asarray(yte, dtype=np.int64))

    num_classes = len(classes)
    for what, y in (("training", ytr_t), ("test", yte_t)):
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise UserError(f"{spec}: {what} labels outside 0..{num_classes - 1}")

    train_idx, held_idx = stratified_split(ytr_t, heldout_fraction, seed)
    c, h, w = (int(s) for s in xtr_t.shape[1:])
    fill = tuple(float(v) for v in (-mean / std))
    if augment == "none" or name in ("digits", "fake"):
        aug = Augment(fill=fill)
    elif name == "fashion_mnist":
        aug = Augment(pad=2, flip=True, fill=fill)
    else:
        aug = Augment(pad=max(1, min(h, w) // 8), flip=True, fill=fill)
    return Dataset(
        name=name,
        spec=spec,
        train=Split(xtr_t[train_idx].contiguous(), ytr_t[train_idx].contiguous()),
        heldout=Split(xtr_t[held_idx].contiguous(), ytr_t[held_idx].contiguous()),
        test=Split(xte_t, yte_t),
        num_classes=num_classes,
        input_shape=(c, h, w),
        classes=list(classes),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        augment=aug,
        heldout_fraction=float(heldout_fraction),
        seed=int(seed),
    )


#: data sets whose spec argument is a path (compared as files, not as strings)
_PATH_KINDS = ("cifar10", "imagefolder", "fashion_mnist")


def same_data_spec(a: str, b: str) -> bool:
    """Whether two data specs name the same data: the same kind and, for the kinds read from a file
    or folder, the same file however its path is spelled (relative, absolute, through a link)."""
    if a == b:
        return True
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    (kind_a, _, arg_a), (kind_b, _, arg_b) = a.strip().partition(":"), b.strip().partition(":")
    if kind_a.lower() != kind_b.lower():
        return False
    if kind_a.lower() in _PATH_KINDS and arg_a and arg_b:
        return same_path(arg_a, arg_b)
    return arg_a == arg_b


#: how an image folder is read: decide by size, decode image by image, or decode all at once
LOADINGS = ("auto", "stream", "memory")


def _streamed_folder(spec: str, path: Path, heldout_fraction: float, seed: int, augment: str, loading: str,
                     image_size: int | None) -> Dataset | None:
    """The streamed data set of an image folder, or None when it is to be held in memory."""
    from widthsearch.data.stream import list_folder, load_image_stream, should_stream

    if loading == "memory":
        return None
    if not path.is_dir():
        if loading == "stream":
            raise UserError(f"imagefolder: --stream reads a folder, and {path} is an archive; unpack it first")
        return None
    listing = list_folder(path)
    # an explicit --image-size asks for the streamed transforms (the in-memory path keeps the size)
    if loading == "auto" and image_size is None and not should_stream(len(listing[0]) + len(listing[2]), Path(listing[0][0])):
        return None
    return load_image_stream(spec, path, heldout_fraction, seed, image_size, augment, listing=listing)


def _need_arg(kind: str, arg: str) -> str:
    if not arg:
        raise UserError(f"data spec '{kind}' needs an argument, e.g. '{kind}:...'; {DATA_HELP}")
    return arg


def _need_path(kind: str, arg: str) -> Path:
    path = Path(_need_arg(kind, arg)).expanduser()
    if not path.exists():
        raise UserError(f"{kind}: {path} does not exist")
    return path


def check_heldout(data: Dataset, meta: Mapping[str, Any]) -> str | None:
    """The digest of a streamed data set's held-out file list, checked against ``meta``'s.

    ``meta`` is a run's saved arguments; a digest there that differs means the image folder
    changed since the run drew its held-out split: a one-line error. None for in-memory data."""
    from widthsearch.data.stream import files_digest

    if data.stream is None:
        return None
    digest = files_digest(data.heldout.files)
    saved = meta.get("heldout_digest")
    if saved is not None and saved != digest:
        raise UserError(
            f"{data.spec}: the held-out images drawn now differ from the run's (heldout.txt beside its checkpoint); "
            "the folder changed since the run began"
        )
    return digest


def load_run_data(meta: Mapping[str, Any], augment: str = "none") -> Dataset:
    """The data set of a run from its saved arguments (data, held-out fraction, seed, loading, image size)."""
    data = load_data(meta["data"], meta["heldout_fraction"], meta["seed"], augment=augment,
                     loading=meta.get("loading") or "auto", image_size=meta.get("image_size"))
    check_heldout(data, meta)
    return data
