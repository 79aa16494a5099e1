"""Image-folder data: ``train/<class>/*`` and ``test/<class>/*`` (or ``val/``) trees of image
files, as a folder or a ``.tar``/``.tar.gz`` archive, decoded once into uint8 arrays (cached).

Images of another size than the most common one in the training split are resized to it.
"""

from __future__ import annotations

import io
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np

from widthsearch.data.cache import read_cached_tree, tree_cache_file, write_cached_tree
from widthsearch.errors import UserError

__all__ = ["decode_tree", "is_archive", "read_image_tree"]

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".gif", ".webp", ".tif", ".tiff")
_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_ARCHIVE_SUFFIXES)


def read_image_tree(path: Path, use_cache: bool, what: str = "imagefolder"):
    """``(xtr, ytr, xte, yte, classes)`` of the tree at ``path``; ``what`` names the data set in
    errors and in the cache file's name."""
    cache_file = tree_cache_file(path, what)
    if use_cache:
        cached = read_cached_tree(cache_file)
        if cached is not None:
            return cached
    if is_archive(path):
        files = _archive_files(path, what)
    elif path.is_dir():
        files = _folder_files(path, what)
    else:
        raise UserError(f"{what}: {path} is neither a folder nor a .tar/.tar.gz archive")
    xtr, ytr, xte, yte, classes = decode_tree(files, what, path)
    if use_cache:
        write_cached_tree(cache_file, xtr, ytr, xte, yte, classes)
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


def decode_tree(files: dict, what: str, path: Path):
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
