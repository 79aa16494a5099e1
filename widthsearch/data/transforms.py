"""The standard ImageNet transforms, written on PIL images (the project does not depend on torchvision).

Training: ``RandomResizedCrop(size)`` (a crop of 8-100 % of the area with an aspect ratio between
3/4 and 4/3, resized to ``size`` x ``size``) and a horizontal flip with probability 1/2.
Evaluation: resize the shorter side to ``size / 0.875`` (256 for 224) and take the central
``size`` x ``size`` crop. Both return ``size`` x ``size`` RGB images; :func:`to_chw_uint8` turns
them into tensors, and the loader normalises whole batches.

The randomness of a training image comes from a ``random.Random`` the caller seeds per image and
epoch, so an image's crop does not depend on which worker process decodes it or in which order.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["EVAL_RESIZE_RATIO", "RandomResizedCrop", "CenterCrop", "to_chw_uint8", "IMAGENET_MEAN", "IMAGENET_STD"]

#: evaluation resizes the shorter side to size / ratio before the centre crop (256 -> 224)
EVAL_RESIZE_RATIO = 0.875

#: per-channel mean and standard deviation of ImageNet's training images (0..1 scale)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _bilinear():
    from PIL import Image

    return Image.Resampling.BILINEAR


@dataclass(frozen=True)
class RandomResizedCrop:
    """Inception-style random crop + resize, then a random horizontal flip (if ``flip``)."""

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    attempts: int = 10

    def describe(self) -> str:
        return f"random resized crop to {self.size}" + (" + horizontal flip" if self.flip else "")

    def box(self, width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the crop in a ``width`` x ``height`` image."""
        area = width * height
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(self.attempts):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(log_lo, log_hi))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                left = rng.randint(0, width - w)
                top = rng.randint(0, height - h)
                return left, top, left + w, top + h
        # no sampled crop fits (a very elongated image): the largest central crop whose aspect
        # ratio lies inside the allowed range
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            w, h = width, height
        left, top = (width - w) // 2, (height - h) // 2
        return left, top, left + w, top + h

    def __call__(self, image, rng: random.Random):
        box = self.box(image.width, image.height, rng)
        out = image.resize((self.size, self.size), _bilinear(), box=box)
        if self.flip and rng.random() < 0.5:
            from PIL import Image

            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return out


@dataclass(frozen=True)
class CenterCrop:
    """Resize the shorter side to ``round(size / ratio)``, then crop the central ``size`` x ``size``."""

    size: int
    ratio: float = EVAL_RESIZE_RATIO

    def describe(self) -> str:
        return f"resize to {int(round(self.size / self.ratio))} + centre crop {self.size}"

    def box(self, width: int, height: int) -> tuple[tuple[int, int], tuple[float, float, float, float]]:
        """(resized size, crop box in the *original* image) so one resize does both steps."""
        short = int(round(self.size / self.ratio))
        if width <= height:
            new_w, new_h = short, max(short, int(short * height / width))
        else:
            new_w, new_h = max(short, int(short * width / height)), short
        # the central crop of the resized image, mapped back to the original's coordinates
        sx, sy = width / new_w, height / new_h
        left = (new_w - self.size) / 2
        top = (new_h - self.size) / 2
        return (new_w, new_h), (left * sx, top * sy, (left + self.size) * sx, (top + self.size) * sy)

    def __call__(self, image, rng: random.Random | None = None):
        _, box = self.box(image.width, image.height)
        return image.resize((self.size, self.size), _bilinear(), box=box)


def to_chw_uint8(image) -> Tensor:
    """An RGB PIL image as a 3 x H x W uint8 tensor."""
    arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
