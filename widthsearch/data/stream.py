"""Streaming image folders: ``imagefolder:DIR`` decoded image by image through a ``DataLoader``.

For image sets too large to hold decoded in memory (ImageNet: 1.28 M JPEGs). The files are
listed once (``DIR/train/<class>/*``, ``DIR/val/<class>/*`` or ``test/``); every image is decoded
when a batch needs it, in ``workers`` processes, with the standard ImageNet transforms of
:mod:`widthsearch.data.transforms` at ``image_size`` and ImageNet's per-channel normalisation.

* The held-out split (search and calibration images; AutoSlim holds out 50k ImageNet training
  images) is a stratified, seeded draw from ``train/``, the same as the in-memory path; the run
  stores its file list (``heldout.txt``) and a digest so a changed folder is noticed.
* Training order comes from ``torch.utils.data.DistributedSampler`` (one rank or many) with
  ``set_epoch``; each image's random crop is seeded by ``(seed, epoch, index)``, so an epoch is
  the same whatever the worker count and a run resumed at an epoch boundary repeats it exactly.
* Held-out and test images are read through :class:`LazyImages`, an indexable stand-in for the
  in-memory image tensor: ``x[indices]`` decodes just those images (evaluation transform) with a
  thread pool, so evaluation, BN calibration and the searches run unchanged on a streamed set.
"""

from __future__ import annotations

import hashlib
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.utils.data as tud
from torch import Tensor

from widthsearch.data.core import mix_seed
from widthsearch.data.transforms import CenterCrop, RandomResizedCrop, to_chw_uint8
from widthsearch.errors import UserError

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "MEMORY_LIMIT_BYTES",
    "ImageFiles",
    "LazyImages",
    "StreamLoader",
    "StreamSplit",
    "default_workers",
    "files_digest",
    "should_stream",
]

#: crop of the training images and size of the evaluation images of a streamed image folder
DEFAULT_IMAGE_SIZE = 224

#: image folders whose decoded float32 images would take more than this are streamed by default
MEMORY_LIMIT_BYTES = 2 * 1024**3


def default_workers() -> int:
    """Loader processes per training process: the node's cores shared by its processes, at most 8."""
    per_node = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(8, (os.cpu_count() or 1) // per_node - 1))


def should_stream(n_images: int, first_image: Path) -> bool:
    """Auto mode: stream when the decoded set (as float32, at its stored size) passes the limit."""
    from PIL import Image

    try:
        with Image.open(first_image) as im:
            w, h = im.size
    except Exception:
        return True  # the in-memory reader would name the file; streaming names it when reached
    return n_images * 3 * w * h * 4 > MEMORY_LIMIT_BYTES


def files_digest(files: Sequence[str]) -> str:
    """A short digest of a file list (saved with a run to notice a changed folder)."""
    return hashlib.sha1("\n".join(files).encode()).hexdigest()[:16]


def _decode(path: str, transform, rng: random.Random | None) -> tuple[Tensor, str | None]:
    """(3 x S x S uint8 image, None) or (zeros, one-line error naming the file)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return to_chw_uint8(transform(im.convert("RGB"), rng)), None
    except UnidentifiedImageError:
        reason = "not an image format PIL recognises"
    except Exception as exc:  # truncated data, unreadable file: PIL raises many kinds
        from widthsearch.data.images import exception_summary

        reason = exception_summary(exc)
    return torch.zeros(3, transform.size, transform.size, dtype=torch.uint8), f"imagefolder: cannot decode image {path} ({reason})"


class ImageFiles(tud.Dataset):
    """Image files and labels as a map-style dataset of ``(uint8 image, label, error)``.

    An item is an index or ``(index, epoch)``: a training transform's randomness is seeded by
    ``(seed, epoch, index)``. A file that cannot be decoded yields zeros and the error message,
    which the loader raises in the main process as a one-line error (a worker's exception would
    arrive wrapped in its traceback).
    """

    def __init__(self, files: Sequence[str], labels: Tensor, transform, seed: int = 0) -> None:
        self.files = list(files)
        self.labels = labels
        self.transform = transform
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item) -> tuple[Tensor, int, str | None]:
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        rng = random.Random(mix_seed(self.seed, epoch, index, 4))
        image, error = _decode(self.files[index], self.transform, rng)
        return image, int(self.labels[index]), error


def _collate(items: list[tuple[Tensor, int, str | None]]) -> tuple[Tensor, Tensor, str | None]:
    errors = [e for _, _, e in items if e is not None]
    return (torch.stack([x for x, _, _ in items]), torch.tensor([y for _, y, _ in items], dtype=torch.long),
            errors[0] if errors else None)


class _EpochIndices(tud.Sampler):
    """The distributed sampler's indices paired with the epoch (the per-image augmentation seed)."""

    def __init__(self, sampler: tud.DistributedSampler) -> None:
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        return ((int(i), self.epoch) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


@dataclass(frozen=True)
class Normalize:
    """Per-channel ``(x / 255 - mean) / std`` of a uint8 batch, on the batch's device."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, x: Tensor) -> Tensor:
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return x.float().div_(255.0).sub_(mean).div_(std)


class StreamLoader:
    """Training batches of a streamed split: the same interface as the in-memory ``BatchLoader``.

    ``DistributedSampler`` (seeded by ``seed``, re-shuffled by :meth:`set_epoch`) shards the
    images over ``world_size`` ranks, ``workers`` processes decode them, ``pin_memory`` pages the
    batches for asynchronous copies to a GPU; batches arrive normalised float32 (on ``device``
    when given, where the uint8 batch is moved before normalising: a quarter of the bytes).
    """

    def __init__(self, images: ImageFiles, batch_size: int, normalize: Normalize, *, shuffle: bool = True,
                 drop_last: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1, workers: int = 0,
                 pin_memory: bool = False, device: torch.device | None = None) -> None:
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        if workers < 0:
            raise UserError(f"--workers must be 0 or more, got {workers}")
        # the sampler drops the tail so every rank sees the same number of images (equal steps)
        sampler = tud.DistributedSampler(images, num_replicas=world_size, rank=rank, shuffle=shuffle,
                                         seed=int(seed), drop_last=True)
        self.sampler = _EpochIndices(sampler)
        self.images, self.batch_size, self.normalize, self.device = images, int(batch_size), normalize, device
        self.drop_last = drop_last
        self.loader = tud.DataLoader(
            images, batch_size=self.batch_size, sampler=self.sampler, num_workers=int(workers),
            collate_fn=_collate, pin_memory=pin_memory, drop_last=drop_last,
            persistent_workers=False, prefetch_factor=4 if workers > 0 else None,
        )

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    @property
    def num_samples(self) -> int:
        return len(self.sampler)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y, error in self.loader:
            if error is not None:
                raise UserError(error)
            if self.device is not None:
                x = x.to(self.device, non_blocking=True)
                y = y.to(self.device, non_blocking=True)
            yield self.normalize(x), y


class LazyImages:
    """An indexable stand-in for an in-memory image tensor: ``x[i]``, ``x[a:b]``, ``x[index_tensor]``
    decode those images with the evaluation transform and return normalised float32 tensors."""

    def __init__(self, files: Sequence[str], transform: CenterCrop, normalize: Normalize, threads: int = 4) -> None:
        self.files = list(files)
        self.transform, self.normalize, self.threads = transform, normalize, max(1, int(threads))

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.files), 3, self.transform.size, self.transform.size)

    def _indices(self, key) -> list[int]:
        if isinstance(key, slice):
            return list(range(len(self.files)))[key]
        if isinstance(key, Tensor):
            return [int(i) for i in key.reshape(-1).tolist()]
        if isinstance(key, (list, tuple, range)):
            return [int(i) for i in key]
        raise TypeError(f"LazyImages index must be a slice, a tensor or a list of indices, not {type(key).__name__}")

    def __getitem__(self, key) -> Tensor:
        if isinstance(key, int):
            return self[[key]][0]
        paths = [self.files[i] for i in self._indices(key)]
        if not paths:
            return torch.zeros(0, 3, self.transform.size, self.transform.size)
        if self.threads > 1 and len(paths) > 1:
            # PIL releases the GIL while decoding and resizing: threads scale on the cores
            with ThreadPoolExecutor(min(self.threads, len(paths))) as pool:
                decoded = list(pool.map(lambda p: _decode(p, self.transform, None), paths))
        else:
            decoded = [_decode(p, self.transform, None) for p in paths]
        for _, error in decoded:
            if error is not None:
                raise UserError(error)
        return self.normalize(torch.stack([x for x, _ in decoded]))


@dataclass
class StreamSplit:
    """A streamed split: ``files`` and labels ``y``; ``x`` decodes images on demand (:class:`LazyImages`)."""

    files: list[str]
    y: Tensor
    x: LazyImages

    def __len__(self) -> int:
        return int(self.y.shape[0])


def list_folder(root: Path) -> tuple[list[str], Tensor, list[str], Tensor, list[str]]:
    """(train files, labels, test files, labels, classes) of ``root/train`` and ``root/val|test``."""
    from widthsearch.data.images import _folder_files

    found = _folder_files(root, "imagefolder")
    classes = sorted({f.cls for f in found["train"]})
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({f.cls for f in found["test"]} - set(classes))
    if unknown:
        raise UserError(f"imagefolder: test classes {unknown[:3]} have no training images in {root}")

    def files_and_labels(items):
        return [f.name for f in items], torch.tensor([index[f.cls] for f in items], dtype=torch.long)

    return (*files_and_labels(found["train"]), *files_and_labels(found["test"]), classes)


def load_image_stream(spec: str, root: Path, heldout_fraction: float, seed: int, image_size: int | None,
                      augment: str, listing=None):
    """The :class:`~widthsearch.data.core.Dataset` of a streamed image folder (see the module docstring).

    ``listing``: the result of :func:`list_folder` when the caller has it already."""
    from widthsearch.data.core import Dataset, stratified_split
    from widthsearch.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    size = DEFAULT_IMAGE_SIZE if image_size is None else int(image_size)
    if size < 1:
        raise UserError(f"--image-size must be a positive integer, got {image_size}")
    train_files, ytr, test_files, yte, classes = listing if listing is not None else list_folder(root)
    train_idx, held_idx = stratified_split(ytr, heldout_fraction, seed)
    normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
    evaluation = CenterCrop(size)
    threads = max(1, min(8, os.cpu_count() or 1))

    def split(files: list[str], y: Tensor) -> StreamSplit:
        return StreamSplit(files, y, LazyImages(files, evaluation, normalize, threads))

    train_split = split([train_files[i] for i in train_idx.tolist()], ytr[train_idx])
    training = RandomResizedCrop(size, flip=True) if augment == "default" else evaluation
    return Dataset(
        name="imagefolder", spec=spec,
        train=train_split,
        heldout=split([train_files[i] for i in held_idx.tolist()], ytr[held_idx]),
        test=split(test_files, yte),
        num_classes=len(classes), input_shape=(3, size, size), classes=list(classes),
        mean=IMAGENET_MEAN, std=IMAGENET_STD, augment=_Describe(training.describe()),
        heldout_fraction=float(heldout_fraction), seed=int(seed),
        stream=StreamInfo(training=training, normalize=normalize),
    )


@dataclass(frozen=True)
class _Describe:
    """The data set's ``augment`` entry for a streamed set (augmentation happens in the workers)."""

    text: str
    active: bool = True

    def describe(self) -> str:
        return self.text


@dataclass(frozen=True)
class StreamInfo:
    """What a streamed data set's training loader needs: the training transform and normalisation."""

    training: RandomResizedCrop | CenterCrop
    normalize: Normalize

    def loader(self, split: StreamSplit, batch_size: int, *, shuffle: bool, drop_last: bool, augment: bool,
               seed: int, rank: int, world_size: int, workers: int | None, device) -> StreamLoader:
        """The :class:`StreamLoader` that ``Dataset.loader`` returns for a streamed split."""
        transform = self.training if augment else split.x.transform
        on_gpu = device is not None and torch.device(device).type == "cuda"
        return StreamLoader(
            ImageFiles(split.files, split.y, transform, seed=seed), batch_size, self.normalize, shuffle=shuffle,
            drop_last=drop_last, seed=seed, rank=rank, world_size=world_size,
            workers=default_workers() if workers is None else int(workers), pin_memory=on_gpu,
            device=torch.device(device) if on_gpu else None,
        )
