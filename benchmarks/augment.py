"""Training augmentation (random crop from a padded image + horizontal flip) of one CIFAR batch:
the one-gather ``Augment`` against a per-image Python loop (what it replaced), side by side.

    python benchmarks/augment.py [--batch 128] [--rounds 15] [--calls 20]

Both produce the same tensor from the same generator seed (checked before timing). Each round
times ``--calls`` batches of both in a shuffled order; the ratio is the median over rounds of the
ratio within a round. On a GPU run the augmentation is CPU work the step waits for.
"""
from __future__ import annotations

import argparse
import datetime
import random
import statistics
import time

import torch

from widthsearch.data import Augment
from widthsearch.latency import cpu_model


def per_image(aug: Augment, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The loop over images that ``Augment`` replaced (crop rows, columns, then flips drawn)."""
    b, c, h, w = x.shape
    p = aug.pad
    fill = torch.tensor(aug.fill, dtype=x.dtype).view(1, c, 1, 1)
    padded = fill.expand(b, c, h + 2 * p, w + 2 * p).clone()
    padded[:, :, p:p + h, p:p + w] = x
    oy = torch.randint(0, 2 * p + 1, (b,), generator=generator).tolist()
    ox = torch.randint(0, 2 * p + 1, (b,), generator=generator).tolist()
    out = torch.empty_like(x)
    for i in range(b):
        out[i] = padded[i, :, oy[i]:oy[i] + h, ox[i]:ox[i] + w]
    chosen = torch.nonzero(torch.rand(b, generator=generator) < 0.5).flatten()
    out[chosen] = out[chosen].flip(3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    aug = Augment(pad=4, flip=True, fill=(0.0, 0.0, 0.0))
    x = torch.randn(args.batch, 3, 32, 32)
    assert torch.equal(per_image(aug, x, torch.Generator().manual_seed(0)), aug(x, torch.Generator().manual_seed(0)))
    variants = {"per-image loop": lambda g: per_image(aug, x, g), "one gather": lambda g: aug(x, g)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    rng, generator = random.Random(0), torch.Generator().manual_seed(0)
    for _ in range(args.rounds):
        order = list(variants)
        rng.shuffle(order)
        for name in order:
            start = time.perf_counter()
            for _ in range(args.calls):
                variants[name](generator)
            times[name].append((time.perf_counter() - start) / args.calls)
    cpu = cpu_model()
    ratio = statistics.median(a / b for a, b in zip(times["per-image loop"], times["one gather"]))
    print(f"# {datetime.date.today()}, {cpu}, torch {torch.__version__}, 1 thread, batch {args.batch} of 3x32x32")
    for name in variants:
        print(f"{name}: {1000 * statistics.median(times[name]):.2f} ms per batch")
    print(f"per-image loop / one gather: {ratio:.2f}x")


if __name__ == "__main__":
    main()
