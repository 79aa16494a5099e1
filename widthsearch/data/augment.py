"""Training augmentation on whole tensor batches: random crop from a padded image, horizontal flip.

Working on the in-memory batch (not per image through PIL) keeps augmentation as cheap as the
tensors are; the randomness comes from a ``torch.Generator`` the loader re-seeds every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Augment"]


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
        if self.pad == 0:
            chosen = torch.nonzero(torch.rand(b, generator=generator) < 0.5).flatten()
            x = x.clone()
            x[chosen] = x[chosen].flip(3)
            return x.contiguous()
        p = self.pad
        fill = torch.tensor(self.fill or [0.0] * c, dtype=x.dtype).view(1, c, 1, 1)
        padded = fill.expand(b, c, h + 2 * p, w + 2 * p).clone()
        padded[:, :, p : p + h, p : p + w] = x
        # the draws in the order they always had (crop rows, crop columns, flips), so a seeded
        # epoch gives the same batches; then one gather for the whole batch instead of a Python
        # loop over its images (a flipped image reads its crop's columns backwards)
        oy = torch.randint(0, 2 * p + 1, (b,), generator=generator)
        ox = torch.randint(0, 2 * p + 1, (b,), generator=generator)
        cols = ox[:, None] + torch.arange(w)
        if self.flip:
            flipped = torch.rand(b, generator=generator) < 0.5
            cols = torch.where(flipped[:, None], ox[:, None] + torch.arange(w - 1, -1, -1), cols)
        rows = oy[:, None] + torch.arange(h)
        flat = padded.reshape(b, c, -1)
        index = (rows[:, :, None] * (w + 2 * p) + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
        return flat.gather(2, index).reshape(b, c, h, w)
