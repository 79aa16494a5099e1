"""What a supernet's loss records carry into BCNetV2's prior, on the Channel-Bench-Macro table.

    python benchmarks/cbm_prior_check.py --space mobilenet --prior RECORDS [--seeds 0-4]

``RECORDS``: a ``--strategy bcnet`` checkpoint or the JSON ``bench cbm --records-out`` writes.
Prints (1) how the records' losses agree with the table: Kendall tau of -loss with the table's
accuracy and with FLOPs over the recorded archs, and for a checkpoint the training steps the
records come from; (2) per FLOPs budget and fit seed, how far the prior fitted to the records is
from the prior fitted with every loss equal (the FLOPs term alone, same seed): the largest
difference of a probability, and how many of the 50 first-population archs the two share; and
how far the prior is from the uniform distribution, for scale.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import datetime  # noqa: E402
import statistics  # noqa: E402

import torch  # noqa: E402

from widthsearch.bench.cbm import (  # noqa: E402
    CBM_LOWER,
    DEFAULT_BUDGETS,
    CBMBench,
    RecordsPrior,
    load_records,
    records_agreement,
)

POPULATION = 50  # evolution's default first generation


def record_steps(path: str) -> list[int] | None:
    """The 1-based step of every record of a checkpoint (None for a JSON records file)."""
    if path.lower().endswith(".json"):
        return None
    from widthsearch.training.checkpoint import load_checkpoint

    state = load_checkpoint(path)["states"]["strategy"]
    return sorted(int(arrival) + 1 for _, arrival, _ in state["records"]["records"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", required=True, choices=("mobilenet", "resnet"))
    ap.add_argument("--prior", required=True, metavar="RECORDS")
    ap.add_argument("--seeds", default="0-4", help="fit seeds, e.g. 0-4 (default)")
    ap.add_argument("--tables", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    lo, _, hi = args.seeds.partition("-")
    seeds = list(range(int(lo), int(hi or lo) + 1))
    bench = CBMBench(args.space, args.tables)
    loaded = load_records(args.prior)
    print(f"# cbm_prior_check {datetime.date.today().isoformat()}  space {args.space}  records {args.prior}  "
          f"seeds {args.seeds}")
    agree = records_agreement(bench, loaded)
    losses = [loss for loss, _ in loaded.records]
    print(f"records: {agree['records']} ({agree['distinct']} distinct archs), loss {min(losses):.4f} .. "
          f"{max(losses):.4f}; Kendall tau of -loss with the table's accuracy {agree['kendall_accuracy']:.3f}, "
          f"with FLOPs {agree['kendall_flops']:.3f}")
    steps = record_steps(args.prior)
    if steps is not None:
        print(f"record steps: {steps[0]} .. {steps[-1]} (median {statistics.median(steps):g}) of "
              f"{load_records(args.prior).source or ''}")
    real, flat = RecordsPrior(bench, loaded), RecordsPrior(bench, loaded, flat=True)
    print()
    print("| budget | fit seed | max abs(p_records - p_flat) | max abs(p_records - 1/4) | first populations shared |")
    print("|---|---|---|---|---|")
    for budget in DEFAULT_BUDGETS:
        b = bench.budget_flops(budget)
        for seed in seeds:
            a = real.seeding(b, seed, POPULATION, CBM_LOWER)
            f = flat.seeding(b, seed, POPULATION, CBM_LOWER)
            diff = max(abs(x - y) for n in a["prior"] for x, y in zip(a["prior"][n], f["prior"][n]))
            spread = max(abs(x - 0.25) for n in a["prior"] for x in a["prior"][n])
            keys_a = {bench.config_to_key(c) for c in a["initial_population"]}
            keys_f = {bench.config_to_key(c) for c in f["initial_population"]}
            print(f"| {budget:.0%} | {seed} | {diff:.4f} | {spread:.3f} | {len(keys_a & keys_f)}/{len(keys_a)} |",
                  flush=True)


if __name__ == "__main__":
    main()
