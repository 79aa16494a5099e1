"""Cost of switching a supernet's sub-network (``Supernet.set_config``) with the selection cache
against working every layer's selection out afresh, measured side by side in one process.

    python benchmarks/set_config.py [--rounds 15] [--calls 30] [--models resnet20,mobilenet_v2]

Joint training (SP-Net's fine-tune, S-Net) switches among K = 3 fixed sub-networks at every step,
so each case cycles through 3 sub-networks: ``ranked`` (random widths, each unit a random channel
ranking: index selections, SP-Net's case, residuals joined by zero padding) and ``left`` (random
widths, prefixes). ``cached`` is the normal path (the sub-networks are remembered after their
first use); ``afresh`` clears the cache before every call. Each round times ``--calls`` switches
of both variants in a shuffled order; the reported ratio is the median over rounds of the ratio
within a round (a paired comparison, robust to drift in machine load). Pure Python and CPU: what
a GPU step waits for before its first kernel.
"""
from __future__ import annotations

import argparse
import datetime
import random
import statistics
import time

import torch

from widthsearch.latency import cpu_model
from widthsearch.space import SpaceSpec, Subnet, Supernet, build_supernet


def subnets(net: Supernet, ranked: bool, rng: random.Random, count: int = 3) -> list[Subnet]:
    found = []
    for _ in range(count):
        widths = {u.name: rng.choice(u.choices) for u in net.space.units}
        orders = {}
        if ranked:
            for u in net.space.units:
                order = list(range(u.max))
                rng.shuffle(order)
                orders[u.name] = order
        found.append(Subnet(widths, orders))
    return found


def time_switches(net: Supernet, chosen: list[Subnet], calls: int, afresh: bool) -> float:
    """Seconds per ``set_config`` over ``calls`` switches cycling through ``chosen``."""
    start = time.perf_counter()
    for i in range(calls):
        if afresh:
            net._selection_cache.clear()
        net.set_config(chosen[i % len(chosen)])
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--models", default="resnet20,mobilenet_v2")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cpu = cpu_model()
    print(f"# {datetime.date.today()}, {cpu}, torch {torch.__version__}, 1 thread")
    print("| model | sub-networks | afresh (ms per switch) | cached (ms per switch) | afresh / cached |")
    print("|---|---|---|---|---|")
    rng = random.Random(0)
    for model in args.models.split(","):
        net, _ = build_supernet(SpaceSpec(model, groups=None, divisor=1, residual="pad"))
        for kind in ("ranked", "left"):
            chosen = subnets(net, kind == "ranked", rng)
            times = {"afresh": [], "cached": []}
            for _ in range(args.rounds):
                order = ["afresh", "cached"]
                rng.shuffle(order)
                for variant in order:
                    times[variant].append(time_switches(net, chosen, args.calls, variant == "afresh"))
            ratio = statistics.median(a / c for a, c in zip(times["afresh"], times["cached"]))
            print(f"| {model} | {kind} | {1000 * statistics.median(times['afresh']):.2f} | "
                  f"{1000 * statistics.median(times['cached']):.2f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
