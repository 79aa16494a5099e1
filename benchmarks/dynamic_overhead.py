"""Speed of the dynamic supernet at a config against its exported static net (and a hand-written
static net of the same widths), forward + backward on CPU, measured side by side in one process.

    python benchmarks/dynamic_overhead.py [--repeats 20] [--batch 64] [--threads 2] [--residual tie,pad]

Configs: max, min, a random one (left-aligned prefixes), and ``ranked`` (random widths whose
channels are a random ranking per unit: index selections, SP-Net's case). With ``--residual pad``
the residual models run with untied units joined by zero-padded sums (``PadAdd``).

Runs are interleaved (each round times dynamic, export and hand-written once, in a shuffled order)
so that machine noise hits all three alike; each reported ratio is the median over rounds of the
ratio within a round (a paired comparison, robust to drift in machine load). Goal: dynamic / export <= 1.10,
export / hand-written = 1.00 +- 0.05.
"""
from __future__ import annotations

import argparse
import datetime
import random
import statistics
import time

import torch
import torch.nn as nn

from widthsearch.models import build_model, model_info
from widthsearch.space import Subnet, Supernet

# (model, groups, input side): CIFAR-scale nets and one ImageNet net at a small resolution
CASES = [("resnet20", 10, 32), ("cbm_resnet", 4, 32), ("cbm_mobilenet", 4, 32), ("mobilenet_v2", 10, 64)]
#: models with residual adds, where --residual pad changes the units
RESIDUAL_MODELS = {"resnet20", "cbm_resnet", "mobilenet_v2"}


def step_time(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> float:
    start = time.perf_counter()
    loss = nn.functional.cross_entropy(model(x), target)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def hand_written(name: str, net: Supernet, config: dict[str, int]) -> nn.Module | None:
    """The zoo's own static definition at these widths, where the zoo can build one."""
    if name.startswith("cbm_"):
        return build_model(name, widths=[config[u.name] for u in net.space.units])
    return None


def measure(name: str, groups: int, side: int, label: str, config_of, repeats: int, batch: int,
            residual: str = "tie") -> dict:
    channels = model_info(name)["input_shape"][0]
    model = build_model(name)
    net = Supernet(model, torch.randn(1, channels, side, side), groups=groups, residual=residual)
    config = config_of(net)
    net.set_config(config)
    static = net.export()
    # the zoo's own static nets exist for tied, prefix-aligned widths only
    reference = hand_written(name, net, config) if residual == "tie" and isinstance(config, dict) else None
    models = {"dynamic": net.model, "export": static}
    if reference is not None:
        models["hand"] = reference
    for m in models.values():
        m.train()
    x = torch.randn(batch, channels, side, side)
    y = torch.randint(0, 10, (batch,))
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(3):  # warm-up
        for m in models.values():
            step_time(m, x, y)
    order = list(models)
    shuffler = random.Random(0)
    for _ in range(repeats):
        shuffler.shuffle(order)
        for key in order:
            times[key].append(step_time(models[key], x, y))
    med = {k: statistics.median(v) for k, v in times.items()}

    def paired(a: str, b: str) -> float:
        return statistics.median(ta / tb for ta, tb in zip(times[a], times[b]))

    return {
        "model": name, "config": label, "flops_M": net.cost(config).flops / 1e6,
        "dynamic_ms": med["dynamic"] * 1e3, "export_ms": med["export"] * 1e3,
        "dyn/export": paired("dynamic", "export"),
        "export/hand": paired("export", "hand") if "hand" in times else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--models", default=",".join(c[0] for c in CASES), help="comma-separated subset of the cases")
    parser.add_argument("--residual", default="tie,pad", help="residual policies to run (pad only on residual models)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    configs = {
        "max": lambda net: net.space.max_config(),
        "random": lambda net: net.space.random_config(random.Random(0)),
        "min": lambda net: net.space.min_config(),
        "ranked": lambda net: ranked_subnet(net, random.Random(0)),
    }
    print(f"# dynamic_overhead {datetime.date.today()} torch {torch.__version__} threads {args.threads} "
          f"batch {args.batch} repeats {args.repeats}")
    print("| model | residual | config | MFLOPs | dynamic ms | export ms | dynamic/export | export/hand-written |")
    print("|---|---|---|---|---|---|---|---|")
    wanted = set(args.models.split(","))
    for residual in args.residual.split(","):
        for name, groups, side in [c for c in CASES if c[0] in wanted]:
            if residual == "pad" and name not in RESIDUAL_MODELS:
                continue
            for label, config_of in configs.items():
                r = measure(name, groups, side, label, config_of, args.repeats, args.batch, residual)
                hand = f"{r['export/hand']:.3f}" if r["export/hand"] is not None else "-"
                print(f"| {name} {side}x{side} | {residual} | {label} | {r['flops_M']:.1f} | {r['dynamic_ms']:.1f} | "
                      f"{r['export_ms']:.1f} | {r['dyn/export']:.3f} | {hand} |", flush=True)


def ranked_subnet(net: Supernet, rng: random.Random) -> Subnet:
    """Random widths, each unit keeping the best of a random channel ranking (index selections)."""
    widths = net.space.random_config(rng)
    return Subnet(widths, {u.name: rng.sample(range(u.max), u.max) for u in net.space.units})


if __name__ == "__main__":
    main()
