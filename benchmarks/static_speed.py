"""What an epoch of a static network costs on this machine: the training step eager against
``torch.compile`` (``--compile``), and evaluation at several batch sizes, each measured side by
side in one process.

    python benchmarks/static_speed.py [--model resnet20 | --checkpoint DIR] [--batch 128] [--rounds 8] [--threads 1]

``--checkpoint`` takes the network of a trained-model checkpoint (``train --out DIR``, a retraining
folder of ``run``): e.g. an exported sub-network with zero-padded residuals, as retrained by a run.

Training: two copies of the same initial weights, one eager and one compiled, each with its own
SGD optimizer; every round times one full step (zero the gradients, forward, backward, optimizer
step) of both in a shuffled order on the same batch, and the reported ratio is the median over
rounds of the ratio within a round (a paired comparison, robust to drift in machine load). The
compile itself (the first compiled step) is reported apart. Also prints the first step's loss
difference (float rounding only).

Evaluation: images per second of the forward pass in eval mode under ``torch.no_grad`` over the
same images, cut into batches of each size, the sizes in a shuffled order in every round.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import random
import statistics
import time

import torch

from widthsearch.latency import cpu_model
from widthsearch.models import build_model, model_info
from widthsearch.training.optim import build_optimizer
from widthsearch.training.precision import compiled
from widthsearch.training.retrain import load_trained
from widthsearch.training.steps import plain_step, zero_grads


def train_step(model: torch.nn.Module, forward: torch.nn.Module, optimizer, x, y) -> tuple[float, float]:
    """Seconds and loss of one full training step."""
    start = time.perf_counter()
    zero_grads(list(model.parameters()))
    stats = plain_step(forward, x, y)
    optimizer.step()
    return time.perf_counter() - start, stats["losses"][0]


@torch.no_grad()
def eval_seconds(model: torch.nn.Module, x: torch.Tensor, batch: int) -> float:
    start = time.perf_counter()
    for a in range(0, len(x), batch):
        model(x[a:a + batch])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--checkpoint", default=None, metavar="DIR", help="the network of this trained-model checkpoint")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-images", type=int, default=2000)
    parser.add_argument("--eval-batches", default="100,128,256,500,1000")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.checkpoint:
        base, meta = load_trained(args.checkpoint)
        shape, network = tuple(meta["input_shape"]), f"{meta['model']} from {args.checkpoint}"
    else:
        shape, network = tuple(model_info(args.model)["input_shape"]), args.model
        base = build_model(args.model, num_classes=10)
    x = torch.randn(args.batch, *shape)
    y = torch.randint(0, 10, (args.batch,))

    models = {name: copy.deepcopy(base).train() for name in ("eager", "compiled")}
    forwards = {name: compiled(m, name == "compiled") for name, m in models.items()}  # what --compile runs
    optimizers = {name: build_optimizer(m, 0.1, 5e-4, 0.9, True) for name, m in models.items()}
    first = {name: train_step(models[name], forwards[name], optimizers[name], x, y) for name in models}
    for name in models:  # a second, untimed step of each: the allocator and the caches are warm
        train_step(models[name], forwards[name], optimizers[name], x, y)
    times: dict[str, list[float]] = {name: [] for name in models}
    rng = random.Random(0)
    for _ in range(args.rounds):
        order = list(models)
        rng.shuffle(order)
        for name in order:
            times[name].append(train_step(models[name], forwards[name], optimizers[name], x, y)[0])

    print(f"# {datetime.date.today()}, {cpu_model()}, torch {torch.__version__}, {args.threads} thread(s), "
          f"{network}, batch {args.batch}, {args.rounds} rounds")
    print("| training step | s/step (median) | img/s | speed-up vs eager | first step (s) |")
    print("|---|---|---|---|---|")
    for name in models:
        med = statistics.median(times[name])
        ratio = statistics.median(e / t for e, t in zip(times["eager"], times[name]))
        print(f"| {name} | {med:.3f} | {args.batch / med:.0f} | {ratio:.2f}x | {first[name][0]:.1f} |")
    print(f"first-step loss, compiled minus eager: {first['compiled'][1] - first['eager'][1]:+.2e}")

    model = copy.deepcopy(base).eval()
    images = torch.randn(args.eval_images, *shape)
    sizes = [int(b) for b in args.eval_batches.split(",")]
    seconds: dict[int, list[float]] = {b: [] for b in sizes}
    eval_seconds(model, images[:max(sizes)], max(sizes))  # warm-up
    for _ in range(max(2, args.rounds // 2)):
        rng.shuffle(sizes)
        for b in sizes:
            seconds[b].append(eval_seconds(model, images, b))
    print()
    print("| evaluation batch | img/s (median) |")
    print("|---|---|")
    for b in sorted(seconds):
        print(f"| {b} | {args.eval_images / statistics.median(seconds[b]):.0f} |")


if __name__ == "__main__":
    main()
