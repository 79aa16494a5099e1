"""BCNetV2's prior fit (``widthsearch.methods.bcnet.fit_prior``): this tree against an older commit,
side by side in one run.

    python benchmarks/bcnet_prior_fit.py --before REV [--records FILE] [--rounds 2] [--repeats 3]

``REV``'s ``widthsearch/`` is unpacked into a temporary folder (``git archive``) and each tree fits
the prior in its own subprocess, the two alternating ``--rounds`` times, each fitting ``--repeats``
times per space. Spaces: the core channel space of ``cbm_mobilenet`` with 4 groups (what ``search
--prior records`` fits on) and, when the Channel-Bench-Macro tables are found, the table space of
``bench cbm --prior``. Budget: 50 % of the max FLOPs, fit seed 0, the function's defaults (2,000
steps). Prints the median CPU seconds per fit of each tree (one thread), the speed-up, and the
largest relative difference between the two trees' fitted probabilities and log-probabilities
(the logits up to a constant).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECORDS = REPO / "docs" / "data" / "cbm_mobilenet_bcnet_1epoch_records.json"


def worker(records: str, repeats: int, tables: str | None) -> None:
    """Fit in this process (``widthsearch`` from ``sys.path[0]``) and print the timings and priors as JSON."""
    import torch

    torch.set_num_threads(1)
    from widthsearch.bench.cbm import CBMBench, load_records
    from widthsearch.bench.cbm.prior import TableSpace
    from widthsearch.errors import UserError
    from widthsearch.methods.bcnet import fit_prior
    from widthsearch.space import SpaceSpec, build_supernet

    loaded = load_records(records)
    spaces = {}
    net, _ = build_supernet(SpaceSpec("cbm_mobilenet", groups=4))
    spaces["core cbm_mobilenet"] = (net.space, 0.5 * net.space.cost(net.space.max_config()).flops)
    try:
        bench = CBMBench("mobilenet", tables)
    except UserError as exc:  # the tables live outside the repository; without them the core space alone is timed
        print(f"no Channel-Bench-Macro tables ({exc}); timing the core space only", file=sys.stderr)
    else:
        spaces["table (bench cbm)"] = (TableSpace(bench), bench.budget_flops(0.5))
    out = {}
    for name, (space, budget) in spaces.items():
        seconds = []
        for _ in range(repeats):
            start = time.process_time()
            prior = fit_prior(space, loaded.records, budget, seed=0)
            seconds.append(time.process_time() - start)
        out[name] = {"seconds": seconds, "prior": prior}
    print(json.dumps(out))


def unpack(rev: str, into: Path) -> Path:
    """``rev``'s ``widthsearch`` package under ``into``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "widthsearch"], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_tree(root: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", "--records", str(args.records), "--repeats", str(args.repeats)]
    command += ["--tables", args.tables]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env, cwd=root)
    return json.loads(done.stdout.strip().splitlines()[-1])


def largest_difference(a: dict, b: dict) -> tuple[float, float]:
    """Largest relative difference of the probabilities and of their logarithms."""
    prob = max(abs(x - y) / abs(x) for unit in a for x, y in zip(a[unit], b[unit]))
    log = max(abs(math.log(x) - math.log(y)) / max(abs(math.log(x)), 1e-300) for unit in a
              for x, y in zip(a[unit], b[unit]))
    return prob, log


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", help="the commit to compare with (e.g. the one before the change)")
    ap.add_argument("--records", default=str(RECORDS))
    ap.add_argument("--tables", default=None, help="Channel-Bench-Macro tables (default: where bench cbm looks)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.records, args.repeats, args.tables)
        return
    if not args.before:
        ap.error("--before REV is required")
    # the older tree is unpacked elsewhere, so it cannot find the tables beside the repository itself
    args.tables = args.tables or str(REPO.parent / "shared" / "channel_bench_macro")
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name")), "?")
    print(f"# bcnet_prior_fit {datetime.date.today().isoformat()}  cpu {cpu}  python {platform.python_version()}  "
          f"before {args.before}  rounds {args.rounds} x repeats {args.repeats}  records {Path(args.records).name}")
    results: dict[str, dict[str, list]] = {"before": {}, "after": {}}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": unpack(args.before, Path(tmp)), "after": REPO}
        for _ in range(args.rounds):
            for tree, root in trees.items():  # alternate, so that a busy spell on the machine hits both
                for space, row in run_tree(root, args).items():
                    got = results[tree].setdefault(space, [[], None])
                    got[0] += row["seconds"]
                    got[1] = row["prior"]
    print()
    print("| space | before: CPU s per fit (median) | after | speed-up | max rel. diff. of probabilities | "
          "of log-probabilities |")
    print("|---|---|---|---|---|---|")
    for space, (seconds, prior) in results["after"].items():
        old_seconds, old_prior = results["before"][space]
        before, after = statistics.median(old_seconds), statistics.median(seconds)
        prob, log = largest_difference(old_prior, prior)
        print(f"| {space} | {before:.3f} | {after:.3f} | {before / after:.1f}x | {prob:.1e} | {log:.1e} |")


if __name__ == "__main__":
    main()
