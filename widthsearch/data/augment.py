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
