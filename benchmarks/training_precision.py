"""Speed of one supernet training step (sandwich rule, 4 sub-networks, inplace distillation) in
fp32 vs bf16 mixed precision, NCHW vs channels_last, measured side by side in one process.

    python benchmarks/training_precision.py [--model cbm_mobilenet] [--batch 64] [--rounds 6] [--threads 2]

Each round times one step of every variant in a shuffled order, all with the same sampled
configurations, so machine noise hits them alike; a variant's ratio to fp32/NCHW is the median over
rounds of the ratio within a round (a paired comparison). The variants keep separate copies of the
same initial weights. Also prints each variant's first-step max-config loss minus fp32's, to show
that bf16 computes the same thing up to rounding.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import random
import statistics
import time

import torch

from widthsearch.models import build_model, model_info
from widthsearch.space import Supernet
from widthsearch.training.precision import apply_memory_format, autocast, to_memory_format
from widthsearch.training.sampling import sandwich_configs
from widthsearch.training.steps import SubnetLoss, subnet_step, zero_grads

VARIANTS = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]


def make_variant(base: torch.nn.Module, groups: int, side: int, channels: int, channels_last: bool) -> Supernet:
    model = copy.deepcopy(base)
    net = Supernet(model, torch.zeros(2, channels, side, side), groups=groups)
    apply_memory_format(model, channels_last)
    model.train()
    return net


def one_step(net: Supernet, precision: str, channels_last: bool, x, y, configs) -> tuple[float, float]:
    params = [p for p in net.model.parameters()]
    zero_grads(params)
    xb = to_memory_format(x, channels_last)
    start = time.perf_counter()
    with autocast(torch.device("cpu"), precision):
        terms = [SubnetLoss(c, 1.0, "ce" if i == 0 else "kd") for i, c in enumerate(configs)]
        stats = subnet_step(net, xb, y, terms)
    return time.perf_counter() - start, stats["losses"][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cbm_mobilenet")
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    info = model_info(args.model)
    channels, side = int(info["input_shape"][0]), int(info["input_shape"][-1])
    base = build_model(args.model, num_classes=10)
    nets = {v: make_variant(base, args.groups, side, channels, v[1]) for v in VARIANTS}
    space = nets[VARIANTS[0]].space
    rng = random.Random(0)
    x = torch.randn(args.batch, channels, side, side)
    y = torch.randint(0, 10, (args.batch,))

    first_loss = {}
    for v, net in nets.items():  # warm-up, and the first step's loss of each variant
        configs = sandwich_configs(space, random.Random(0), 4)
        first_loss[v] = one_step(net, v[0], v[1], x, y, configs)[1]
    times: dict[tuple, list[float]] = {v: [] for v in VARIANTS}
    order = list(VARIANTS)
    for _ in range(args.rounds):
        configs = sandwich_configs(space, rng, 4)
        random.shuffle(order)
        for v in order:
            times[v].append(one_step(nets[v], v[0], v[1], x, y, configs)[0])

    base_key = VARIANTS[0]
    print(f"# {datetime.date.today()}  {args.model} groups={args.groups} batch={args.batch} "
          f"threads={args.threads} rounds={args.rounds}  torch {torch.__version__}")
    print("| precision | layout | s/step (median) | img/s | speed-up vs fp32 NCHW | first loss - fp32 |")
    print("|---|---|---|---|---|---|")
    for v in VARIANTS:
        med = statistics.median(times[v])
        ratio = statistics.median(b / t for b, t in zip(times[base_key], times[v]))
        layout = "channels_last" if v[1] else "NCHW"
        diff = first_loss[v] - first_loss[base_key]
        print(f"| {v[0]} | {layout} | {med:.3f} | {args.batch / med:.1f} | {ratio:.2f}x | {diff:+.4f} |")


if __name__ == "__main__":
    main()
