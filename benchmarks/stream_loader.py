"""Streamed image folder: loader-only images/s against model-step images/s.

    python benchmarks/stream_loader.py [--images 256] [--size 224] [--workers 0,1,2] [--model mobilenet_v2]

Writes ``--images`` JPEGs (quality 90, 500x375 like a typical ImageNet photo; smooth random
colour fields, so they compress like photos rather than noise) into a temporary
``train/<class>/`` tree, then measures

* loader only: one epoch of the training ``StreamLoader`` (RandomResizedCrop + flip at ``--size``,
  normalised batches of ``--batch``) per worker count, nothing else running;
* model step: forward + backward + SGD step of ``--model`` on in-memory batches of the same shape
  with ``--threads`` threads (one sub-network; an AutoSlim step runs four of them).

The loader keeps up when its images/s is at least the model step's: the data is then not the
bottleneck. Prints one JSON line per measurement.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def write_folder(root: Path, images: int, classes: int = 8) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(images):
        folder = root / "train" / f"c{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (12, 16, 3)).astype(np.uint8)
        Image.fromarray(coarse).resize((500, 375), Image.Resampling.BICUBIC).save(folder / f"{i}.jpg", quality=90)
    for c in range(classes):  # one evaluation image per class: the reader wants a val/ tree
        folder = root / "val" / f"c{c}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (375, 500, 3)).astype(np.uint8)).save(folder / "0.jpg", quality=90)


def loader_rate(root: Path, size: int, batch: int, workers: int) -> float:
    from widthsearch.data import load_data

    data = load_data(f"imagefolder:{root}", heldout_fraction=0.0, loading="stream", image_size=size)
    loader = data.loader("train", batch, shuffle=True, drop_last=True, augment=True, workers=workers)
    loader.set_epoch(0)
    seen = 0
    t0 = time.perf_counter()
    for x, _ in loader:
        seen += len(x)
    return seen / (time.perf_counter() - t0)


def model_rate(model_name: str, size: int, batch: int, steps: int) -> float:
    from widthsearch.models import build_model

    model = build_model(model_name)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()  # warm-up: allocations, first-call dispatch
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", default="0,1,2")
    p.add_argument("--model", default="mobilenet_v2")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_folder(root, a.images)
        for w in (int(v) for v in a.workers.split(",")):
            rate = loader_rate(root, a.size, a.batch, w)
            print(json.dumps({"what": "loader", "workers": w, "size": a.size, "img_per_s": round(rate, 1)}), flush=True)
    rate = model_rate(a.model, a.size, a.batch, a.steps)
    print(json.dumps({"what": "model step", "model": a.model, "threads": a.threads, "size": a.size,
                      "img_per_s": round(rate, 1)}), flush=True)


if __name__ == "__main__":
    main()
