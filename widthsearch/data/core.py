"""The in-memory containers (splits, data sets, batch loader) and the seeding they share.

Everything lives in memory as tensors: ``x`` float32 NCHW, normalised with the per-channel mean
and standard deviation of the training images; ``y`` int64. Every random stream (epoch order,
augmentation, held-out draw) is seeded from :func:`mix_seed` of the integers it depends on, so a
run is reproducible from its seed alone.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from widthsearch.data.augment import Augment
from widthsearch.errors import UserError

__all__ = ["BatchLoader", "Dataset", "Split", "mix_seed", "stratified_split"]


def mix_seed(*parts: int) -> int:
    """A 63-bit seed derived deterministically from integers (epoch, rank, stream, ...)."""
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def stratified_split(y: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
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


@dataclass
class Split:
    """Images ``x`` (float32, N x C x H x W, normalised) and labels ``y`` (int64, N)."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


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
    #: a streamed image folder's training transform and normalisation (None: held in memory)
    stream: Any = None

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
            "loading": "stream" if self.stream is not None else "memory",
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
        workers: int | None = None,
        device: torch.device | None = None,
    ) -> "BatchLoader":
        """A :class:`BatchLoader` over ``"train"``, ``"heldout"``, ``"test"`` or a :class:`Split`.

        A streamed split gets a :class:`~widthsearch.data.stream.StreamLoader` instead (same
        interface) with ``workers`` decoding processes (default: the node's cores); its batches
        land on ``device`` (pinned first when that is a GPU). In-memory splits ignore both.
        """
        s = getattr(self, split) if isinstance(split, str) else split
        if self.stream is not None and not isinstance(s, Split):
            return self.stream.loader(s, batch_size, shuffle=shuffle, drop_last=drop_last, augment=augment,
                                      seed=self.seed if seed is None else seed, rank=rank, world_size=world_size,
                                      workers=workers, device=device)
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
