"""Image-folder data: ``train/<class>/*`` and ``test/<class>/*`` (or ``val/``) trees of image
files, as a folder or a ``.tar``/``.tar.gz`` archive, decoded once into uint8 arrays (cached).

Images of another size than the most common one in the training split are resized to it.
"""

from __future__ import annotations

import io
import tarfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from widthsearch.data.cache import read_cached_tree, tree_cache_file, write_cached_tree
from widthsearch.errors import UserError

__all__ = ["ImageFile", "decode_tree", "exception_summary", "is_archive", "read_image_tree"]

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


class ImageFile(NamedTuple):
    """One image of a tree: its class, a name for messages, and how to get its bytes."""

    cls: str
    name: str
    read: Callable[[], bytes]


def exception_summary(exc: BaseException) -> str:
    """``Type: first line of the message``, short enough for a one-line error."""
    lines = str(exc).strip().splitlines()
    text = lines[0].rstrip(":") if lines else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _folder_files(root: Path, what: str) -> dict[str, list[ImageFile]]:
    """``{"train": [ImageFile], "test": [...]}`` for a folder tree (maybe one level down)."""
    base = root
    subdirs = [p for p in root.iterdir() if p.is_dir()]
    if not any(_split_role(p.name) == "train" for p in subdirs) and len(subdirs) == 1:
        base = subdirs[0]
    out: dict[str, list[ImageFile]] = {"train": [], "test": []}
    for split_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        role = _split_role(split_dir.name)
        if role is None or (role == "test" and out["test"]):
            continue
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            for f in sorted(class_dir.iterdir()):
                if f.suffix.lower() in _IMAGE_SUFFIXES:
                    out[role].append(ImageFile(class_dir.name, str(f), f.read_bytes))
    if not out["train"]:
        raise UserError(f"{what}: no images under {base}/train/<class>/ (expected train/ and test/ or val/ class folders)")
    if not out["test"]:
        raise UserError(f"{what}: no images under {base}/test/<class>/ or {base}/val/<class>/")
    return out


def _open_archive(path: Path, what: str) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:*")
    except (tarfile.ReadError, tarfile.CompressionError, EOFError, zlib.error):
        # tarfile's own message lists every compression it tried, one line each
        raise UserError(
            f"{what}: cannot open archive {path}: not a tar file, or not compressed with gzip, bzip2 or xz"
        ) from None
    except OSError as exc:
        raise UserError(f"{what}: cannot open archive {path} ({exception_summary(exc)})") from None


def _archive_files(path: Path, what: str) -> dict[str, list[ImageFile]]:
    out: dict[str, list[ImageFile]] = {"train": [], "test": []}
    try:
        with _open_archive(path, what) as tf:
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
                out[role].append(ImageFile(parts[-2], f"{m.name} in {path}", (lambda d=data: d)))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        # a truncated or damaged archive fails part-way through, in the decompressor or tarfile
        raise UserError(f"{what}: cannot read archive {path}: corrupt or truncated ({exception_summary(exc)})") from None
    if not out["train"] or not out["test"]:
        raise UserError(f"{what}: archive {path} holds no [top/]train/<class>/ and test/<class>/ images")
    return out


def _decode_image(item: ImageFile, what: str) -> np.ndarray:
    """The image as an H x W x 3 uint8 array; a one-line ``UserError`` naming the file if it
    cannot be read or decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(item.read())) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError:
        # PIL's message names the in-memory buffer, not the file
        reason = "not an image format PIL recognises"
    except Exception as exc:  # truncated data, broken chunks, unreadable file: PIL raises many kinds
        reason = exception_summary(exc)
    raise UserError(f"{what}: cannot decode image {item.name} ({reason})")


def decode_tree(files: dict[str, list[ImageFile]], what: str, path: Path):
    from PIL import Image

    classes = sorted({f.cls for f in files["train"]})
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({f.cls for f in files["test"]} - set(classes))
    if unknown:
        raise UserError(f"{what}: test classes {unknown[:3]} have no training images in {path}")

    def decode(items: list[ImageFile]):
        imgs = [_decode_image(item, what) for item in items]
        return imgs, np.asarray([index[item.cls] for item in items], dtype=np.int64)

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
