"""Small data sources held in one array each: scikit-learn's digits, a Fashion-MNIST ``.npz`` and
synthetic ``fake`` data. Each reader returns ``(xtr, ytr, xte, yte, classes)`` with images as
N x C x H x W arrays in their stored range; :func:`widthsearch.data.load_data` normalises them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from widthsearch.data.core import mix_seed, stratified_split
from widthsearch.errors import UserError

__all__ = ["make_fake", "read_digits", "read_fashion_mnist"]


def read_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float32)[:, None]  # values 0..16
    y = d.target.astype(np.int64)
    tr, te = stratified_split(torch.from_numpy(y), 0.2, 0)
    tr, te = tr.numpy(), te.numpy()
    return x[tr], y[tr], x[te], y[te], [str(i) for i in range(10)]


def read_fashion_mnist(path: Path):
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


def make_fake(arg: str):
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
