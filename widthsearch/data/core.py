"""In-memory image-classification data for supernet training, search and retraining.

A data set is named by a *spec string* (the ``--data`` option of the command line):

``digits``
    scikit-learn's bundled 8x8 handwritten digits (1x8x8, 10 classes, 1,797 images). Nothing is
    downloaded. There is no official test split, so a fixed stratified 20 % (seed 0, whatever
    ``--seed`` says) is the test set.
``cifar10:PATH``
    CIFAR-10 as either the python-pickle batches folder (``data_batch_1`` .. ``data_batch_5`` and
    ``test_batch``), a class-folder tree ``PATH/{train,test}/<class>/*.jpg|png``, or a ``.tar``/
    ``.tar.gz`` archive of such a tree (optionally under one top-level folder).
``imagefolder:PATH``
    ``PATH/train/<class>/*`` and ``PATH/test/<class>/*`` (or ``val/``) images of one size (images
    of another size are resized to the most common one); also a ``.tar``/``.tar.gz`` archive.
``fashion_mnist:FILE.npz``
    an ``.npz`` with ``xtr`` (N, 28, 28) uint8, ``ytr``, ``xte``, ``yte``.
``fake:N[:CxHxW[:K]]``
    ``N`` synthetic, learnable training images (default shape 1x8x8, ``K`` = 10 classes) plus
    ``N // 5`` test images; class prototypes plus noise, fully determined by the spec.

Decoded image files (JPEG/PNG) are cached as uint8 ``.npz`` arrays in ``$WIDTHSEARCH_CACHE`` (or
``~/.cache/widthsearch``), keyed by the absolute path, size and modification time of the source,
so the decoding cost is paid once.

Everything lives in memory as tensors: ``x`` float32 NCHW, normalised with the per-channel mean
and standard deviation of the training images; ``y`` int64. A *held-out* part of the training
data (default 10 %, stratified by class, drawn with ``seed``) is kept apart for the search and
for BN calibration; the test split is only for final reporting.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import pickle
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from widthsearch.errors import UserError
from widthsearch.io import savez_atomic

__all__ = [
    "Augment",
    "BatchLoader",
    "Dataset",
    "Split",
    "cache_dir",
    "load_data",
    "mix_seed",
    "DATA_HELP",
]

DATA_HELP = (
    "data spec: digits | cifar10:DIR_OR_TAR | imagefolder:DIR_OR_TAR | fashion_mnist:FILE.npz | "
    "fake:N[:CxHxW[:K]]"
)

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".gif", ".webp", ".tif", ".tiff")
_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_CACHE_VERSION = "1"


def mix_seed(*parts: int) -> int:
    """A 63-bit seed derived deterministically from integers (epoch, rank, stream, ...)."""
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# ----------------------------------------------------------------------------------------------
# containers
# ----------------------------------------------------------------------------------------------


@dataclass
class Split:
    """Images ``x`` (float32, N x C x H x W, normalised) and labels ``y`` (int64, N)."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class Augment:
    """Training augmentation applied to whole tensor batches.

    ``pad`` > 0: random crop of the original size out of the image padded by ``pad`` pixels of
    black (the value that zero intensity has after normalisation); ``flip``: random horizontal
    flip with probability 1/2. ``fill`` holds the per-channel padding value.
    """

    pad: int = 0
    flip: bool = False
    fill: tuple[float, ...] = ()

    @property
    def active(self) -> bool:
        return self.pad > 0 or self.flip

    def describe(self) -> str:
        parts = []
        if self.pad > 0:
            parts.append(f"random crop (padding {self.pad})")
        if self.flip:
            parts.append("horizontal flip")
        return " + ".join(parts) if parts else "none"

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not self.active or x.shape[0] == 0:
            return x
        b, c, h, w = x.shape
        if self.pad > 0:
            p = self.pad
            fill = torch.tensor(self.fill or [0.0] * c, dtype=x.dtype).view(1, c, 1, 1)
            padded = fill.expand(b, c, h + 2 * p, w + 2 * p).clone()
            padded[:, :, p : p + h, p : p + w] = x
            oy = torch.randint(0, 2 * p + 1, (b,), generator=generator).tolist()
            ox = torch.randint(0, 2 * p + 1, (b,), generator=generator).tolist()
            out = torch.empty_like(x)
            for i in range(b):
                out[i] = padded[i, :, oy[i] : oy[i] + h, ox[i] : ox[i] + w]
            x = out
        if self.flip:
            chosen = torch.nonzero(torch.rand(b, generator=generator) < 0.5).flatten()
            if self.pad == 0:
                x = x.clone()
            x[chosen] = x[chosen].flip(3)
        return x.contiguous()


@dataclass
class Dataset:
    """A loaded data set: train / held-out / test splits and what a model needs to know."""

    name: str
    spec: str
    train: Split
    heldout: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, int, int]
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: Augment = field(default_factory=Augment)
    heldout_fraction: float = 0.1
    seed: int = 0

    def summary(self) -> dict:
        """Plain-data description (for logs and ``--json`` output)."""
        return {
            "data": self.spec,
            "train": len(self.train),
            "heldout": len(self.heldout),
            "test": len(self.test),
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "augment": self.augment.describe(),
        }

    def loader(
        self,
        split: str | Split,
        batch_size: int,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        augment: bool = False,
        seed: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> "BatchLoader":
        """A :class:`BatchLoader` over ``"train"``, ``"heldout"``, ``"test"`` or a :class:`Split`."""
        s = getattr(self, split) if isinstance(split, str) else split
        return BatchLoader(
            s.x,
            s.y,
            batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            augment=self.augment if augment else None,
            seed=self.seed if seed is None else seed,
            rank=rank,
            world_size=world_size,
        )


class BatchLoader:
    """Fast mini-batches over in-memory tensors.

    The order of an epoch is a permutation drawn from a ``torch.Generator`` seeded with
    ``(seed, epoch)``, identical on every rank; with ``world_size`` > 1 each rank takes every
    ``world_size``-th index of it (like ``DistributedSampler``; the tail is dropped so that all
    ranks see the same number of samples). Augmentation draws from a second generator seeded with
    ``(seed, epoch, rank)``. Because every stream is re-seeded per epoch, an epoch is fully
    reproducible from ``(seed, epoch)`` alone — what exact resumption relies on.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.augment = augment
        self.seed = int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def num_samples(self) -> int:
        n = int(self.y.shape[0])
        return n // self.world_size if self.world_size > 1 else n

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def indices(self) -> Tensor:
        n = int(self.y.shape[0])
        if self.shuffle:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, 0))
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            usable = (n // self.world_size) * self.world_size
            order = order[self.rank : usable : self.world_size]
        return order

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = self.indices()
        gen = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, self.rank, 1))
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            if not self.shuffle and self.world_size == 1:
                xb, yb = self.x[int(idx[0]) : int(idx[-1]) + 1], self.y[int(idx[0]) : int(idx[-1]) + 1]
            else:
                xb, yb = self.x[idx], self.y[idx]
            if self.augment is not None:
                xb = self.augment(xb, gen)
            yield xb, yb


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where decoded image arrays are cached: ``$WIDTHSEARCH_CACHE`` or ``~/.cache/widthsearch``."""
    env = os.environ.get("WIDTHSEARCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "widthsearch"


def load_data(
    spec: str,
    heldout_fraction: float = 0.1,
    seed: int = 0,
    *,
    augment: str = "default",
    use_cache: bool = True,
) -> Dataset:
    """Load the data set named by ``spec`` (see the module docstring).

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
    spec = spec.strip()
    kind, _, arg = spec.partition(":")
    kind = kind.lower()
    if kind == "digits":
        if arg:
            raise UserError(f"'digits' takes no argument, got {spec!r}")
        xtr, ytr, xte, yte, classes, name = _load_digits()
    elif kind == "cifar10":
        xtr, ytr, xte, yte, classes = _load_cifar10(_need_arg(kind, arg), use_cache)
        name = "cifar10"
    elif kind == "imagefolder":
        xtr, ytr, xte, yte, classes = _load_image_tree(_need_path(kind, arg), use_cache)
        name = "imagefolder"
    elif kind == "fashion_mnist":
        xtr, ytr, xte, yte, classes = _load_fashion_mnist(_need_path(kind, arg))
        name = "fashion_mnist"
    elif kind == "fake":
        xtr, ytr, xte, yte, classes = _make_fake(_need_arg(kind, arg))
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

    train_idx, held_idx = _stratified_split(ytr_t, heldout_fraction, seed)
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


def _need_arg(kind: str, arg: str) -> str:
    if not arg:
        raise UserError(f"data spec '{kind}' needs an argument, e.g. '{kind}:...'; {DATA_HELP}")
    return arg


def _need_path(kind: str, arg: str) -> Path:
    path = Path(_need_arg(kind, arg)).expanduser()
    if not path.exists():
        raise UserError(f"{kind}: {path} does not exist")
    return path


def _stratified_split(y: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices (train, held-out): ``round(fraction * n_c)`` random images of each class held out."""
    if fraction <= 0:
        return torch.arange(len(y)), torch.zeros(0, dtype=torch.long)
    g = torch.Generator().manual_seed(mix_seed(seed, 7))
    held: list[Tensor] = []
    for c in torch.unique(y).tolist():
        members = torch.nonzero(y == c).flatten()
        k = int(round(fraction * len(members)))
        held.append(members[torch.randperm(len(members), generator=g)[:k]])
    held_idx = torch.sort(torch.cat(held)).values
    mask = torch.ones(len(y), dtype=torch.bool)
    mask[held_idx] = False
    return torch.nonzero(mask).flatten(), held_idx


def _load_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float32)[:, None]  # values 0..16
    y = d.target.astype(np.int64)
    tr, te = _stratified_split(torch.from_numpy(y), 0.2, 0)
    tr, te = tr.numpy(), te.numpy()
    return x[tr], y[tr], x[te], y[te], [str(i) for i in range(10)], "digits"


def _load_fashion_mnist(path: Path):
    try:
        with np.load(path, allow_pickle=False) as d:
            missing = [k for k in ("xtr", "ytr", "xte", "yte") if k not in d.files]
            if missing:
                raise UserError(f"fashion_mnist: {path} lacks key(s) {', '.join(missing)} (needs xtr, ytr, xte, yte)")
            xtr, ytr, xte, yte = (np.asarray(d[k]) for k in ("xtr", "ytr", "xte", "yte"))
    except UserError:
        raise
    except Exception as exc:  # not a zip, truncated, pickled objects, ...
        raise UserError(f"fashion_mnist: cannot read {path} as .npz ({type(exc).__name__}: {exc})") from None
    for name, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        if x.ndim == 3:
            pass
        elif x.ndim == 4 and x.shape[1] == 1:
            x = x[:, 0]
        else:
            raise UserError(f"fashion_mnist: {name} images must be (N, H, W), got shape {x.shape}")
        if y.ndim != 1 or len(y) != len(x):
            raise UserError(f"fashion_mnist: {name} labels must be (N,) matching the images, got {y.shape}")
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    num = int(max(ytr.max(initial=0), yte.max(initial=0))) + 1
    if num != 10:
        classes = [str(i) for i in range(num)]
    return xtr.reshape(len(xtr), 1, *xtr.shape[-2:]), ytr, xte.reshape(len(xte), 1, *xte.shape[-2:]), yte, classes


def _make_fake(arg: str):
    parts = arg.split(":")
    try:
        n = int(parts[0])
        shape = tuple(int(v) for v in parts[1].lower().split("x")) if len(parts) > 1 else (1, 8, 8)
        k = int(parts[2]) if len(parts) > 2 else 10
    except ValueError:
        raise UserError(f"fake data spec must be fake:N[:CxHxW[:K]], got 'fake:{arg}'") from None
    if len(parts) > 3 or len(shape) != 3 or n < 1 or k < 2 or min(shape) < 1:
        raise UserError(f"fake data spec must be fake:N[:CxHxW[:K]] with N >= 1, K >= 2, got 'fake:{arg}'")
    rng = np.random.default_rng(mix_seed(n, k, *shape) % (2**32))
    protos = rng.normal(0.0, 1.0, size=(k, *shape)).astype(np.float32)

    def draw(m: int):
        y = rng.integers(0, k, size=m)
        x = protos[y] + rng.normal(0.0, 1.0, size=(m, *shape)).astype(np.float32)
        return x, y

    xtr, ytr = draw(n)
    xte, yte = draw(max(1, n // 5))
    return xtr, ytr, xte, yte, [str(i) for i in range(k)]


# --- CIFAR-10 and image trees -----------------------------------------------------------------


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_ARCHIVE_SUFFIXES)


def _load_cifar10(arg: str, use_cache: bool):
    path = Path(arg).expanduser()
    if not path.exists():
        raise UserError(f"cifar10: {path} does not exist")
    if path.is_dir() and (path / "data_batch_1").exists():
        return _load_cifar_pickles(path)
    if path.is_dir() and (path / "cifar-10-batches-py" / "data_batch_1").exists():
        return _load_cifar_pickles(path / "cifar-10-batches-py")
    if path.is_dir() or _is_archive(path):
        xtr, ytr, xte, yte, classes = _load_image_tree(path, use_cache, what="cifar10")
        if xtr.shape[1:] != (3, 32, 32):
            raise UserError(f"cifar10: images in {path} are {tuple(xtr.shape[1:])}, expected 3x32x32")
        return xtr, ytr, xte, yte, classes
    raise UserError(
        f"cifar10: {path} is neither a folder of python batches (data_batch_1..5, test_batch), "
        "a train/ and test/ tree of class folders, nor a .tar/.tar.gz of one"
    )


def _load_cifar_pickles(folder: Path):
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


def _source_key(path: Path) -> str:
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


def _load_image_tree(path: Path, use_cache: bool, what: str = "imagefolder"):
    key = _source_key(path)
    cache_file = cache_dir() / f"{what}-{key}.npz"
    if use_cache and cache_file.exists():
        try:
            with np.load(cache_file, allow_pickle=False) as d:
                return d["xtr"], d["ytr"], d["xte"], d["yte"], [str(c) for c in d["classes"]]
        except Exception:
            pass  # a broken cache entry is rebuilt below
    if _is_archive(path):
        files = _archive_files(path, what)
    elif path.is_dir():
        files = _folder_files(path, what)
    else:
        raise UserError(f"{what}: {path} is neither a folder nor a .tar/.tar.gz archive")
    xtr, ytr, xte, yte, classes = _decode_tree(files, what, path)
    if use_cache:
        _write_cache(cache_file, xtr=xtr, ytr=ytr, xte=xte, yte=yte, classes=np.asarray(classes))
    return xtr, ytr, xte, yte, classes


def _split_role(name: str) -> str | None:
    n = name.lower()
    if n == "train":
        return "train"
    if n in ("test", "val", "valid", "validation"):
        return "test"
    return None


def _folder_files(root: Path, what: str):
    """``{"train": [(class, reader)], "test": [...]}`` for a folder tree (maybe one level down)."""
    base = root
    subdirs = [p for p in root.iterdir() if p.is_dir()]
    if not any(_split_role(p.name) == "train" for p in subdirs) and len(subdirs) == 1:
        base = subdirs[0]
    out: dict[str, list] = {"train": [], "test": []}
    for split_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        role = _split_role(split_dir.name)
        if role is None or (role == "test" and out["test"]):
            continue
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            for f in sorted(class_dir.iterdir()):
                if f.suffix.lower() in _IMAGE_SUFFIXES:
                    out[role].append((class_dir.name, f.read_bytes))
    if not out["train"]:
        raise UserError(f"{what}: no images under {base}/train/<class>/ (expected train/ and test/ or val/ class folders)")
    if not out["test"]:
        raise UserError(f"{what}: no images under {base}/test/<class>/ or {base}/val/<class>/")
    return out


def _archive_files(path: Path, what: str):
    out: dict[str, list] = {"train": [], "test": []}
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                if not m.isfile() or not m.name.lower().endswith(_IMAGE_SUFFIXES):
                    continue
                parts = Path(m.name).parts
                if len(parts) < 3:
                    continue
                role = _split_role(parts[-3])
                if role is None:
                    continue
                data = tf.extractfile(m).read()
                out[role].append((parts[-2], (lambda d=data: d)))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UserError(f"{what}: cannot read archive {path} ({type(exc).__name__}: {exc})") from None
    if not out["train"] or not out["test"]:
        raise UserError(f"{what}: archive {path} holds no [top/]train/<class>/ and test/<class>/ images")
    return out


def _decode_tree(files: dict, what: str, path: Path):
    from PIL import Image, UnidentifiedImageError

    classes = sorted({c for c, _ in files["train"]})
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({c for c, _ in files["test"]} - set(classes))
    if unknown:
        raise UserError(f"{what}: test classes {unknown[:3]} have no training images in {path}")

    def decode(items):
        imgs, labels = [], []
        for cls, read in items:
            try:
                with Image.open(io.BytesIO(read())) as im:
                    imgs.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            except (UnidentifiedImageError, OSError) as exc:
                raise UserError(f"{what}: cannot decode an image of class {cls!r} in {path} ({exc})") from None
            labels.append(index[cls])
        return imgs, np.asarray(labels, dtype=np.int64)

    tr, ytr = decode(files["train"])
    te, yte = decode(files["test"])
    size = Counter(a.shape for a in tr).most_common(1)[0][0]

    def stack(imgs):
        fixed = []
        for a in imgs:
            if a.shape != size:
                a = np.asarray(Image.fromarray(a).resize((size[1], size[0]), Image.BILINEAR))
            fixed.append(a)
        return np.stack(fixed).transpose(0, 3, 1, 2).copy()

    return stack(tr), ytr, stack(te), yte, classes


def _write_cache(target: Path, **arrays) -> None:
    try:
        savez_atomic(target, **arrays)
    except OSError:
        pass  # caching is an optimisation; an unwritable cache directory is not an error
