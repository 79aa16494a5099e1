"""Evolution on the Channel-Bench-Macro oracle: the screened variant against BCNetV2's loop,
side by side, on every space and budget, over many seeds.

    python benchmarks/cbm_evolution.py [--seeds 0-49] [--variants screened,bcnet] [--max-evals 300]

A variant may carry options of ``evolution_search`` for an ablation, e.g.
``--variants "bcnet;screened:screen=1,top_k=10,mutations=25,crossovers=25"`` (``;`` between variants).

Each run is ``CBMBench(space).search("evolution", budget, max_evals=..., seed=s, variant=v)``,
exactly what ``widthsearch bench cbm --algo evolution --variant v`` runs: FLOPs window
[0.8 T, T], evaluations counted as distinct architectures scored by the oracle. The rank is
the pick's rank by mean accuracy among all archs with FLOPs <= T (1 = the feasible optimum).
Prints one table row per (space, budget, variant): mean / median / worst rank, runs above
rank 5 (and how many of those ended on a 1-gene local optimum of the window), mean
evaluations, how many of them went to random samples (the first generation included) and
mean seconds per run; then the totals per variant.  ``--landscape`` first
prints, per cell, how rugged the table is inside the [0.8 T, T] window: how many archs have
no better feasible arch one width choice away (1-gene local optima), and the ranks of the
best of them.

The screened variant's settings were chosen on seeds 100-149 (and checked on 150-249); report
on seeds 0-49, which were not used for choosing.

``--prior FILE`` (loss records of a ``--strategy bcnet`` supernet: its checkpoint or the JSON
``bench cbm --records-out`` writes) enables variants named ``V+prior``: evolution variant V seeded
with BCNetV2's prior fitted to the records, exactly ``bench cbm --algo evolution --variant V
--prior FILE``, and ``V+flatprior``: the same fit with every loss equal, the control that shows
what the records' losses add to the FLOPs term. ``--noise-std S`` scores with the table's
accuracy plus seeded Gaussian noise (``bench cbm --noise-std``); the rank stays the true one.
Two more columns then say what the evaluations found: *best scored* is the true rank of the best
arch the run evaluated (the pick can be worse under noise), *evals to top 5* how many evaluations
it took to first score an arch of true rank <= 5; and a last table gives, per cell, the true rank of
the pick if every arch of the window were scored with the same noise (what the noise alone costs,
whatever the search). ``--variants ""`` prints only that table. ``--jobs N`` runs seeds in N
processes.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny ridge fits: threads only add overhead
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

# this checkout's widthsearch, not whichever copy is installed in the environment
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import datetime  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple  # noqa: E402

from widthsearch.bench.cbm import (  # noqa: E402
    CBM_LOWER,
    DEFAULT_BUDGETS,
    SPACES,
    CBMBench,
    RecordsPrior,
    load_records,
)
from widthsearch.search.evolution import VARIANTS  # noqa: E402

GOAL_RANK = 5


def parse_seeds(text: str) -> List[int]:
    """``"0-49"`` or ``"0,3,7"`` (or both: ``"0-9,100"``)."""
    seeds: List[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return seeds


PRIOR_SUFFIXES = {"+prior": False, "+flatprior": True}  # suffix -> flat


def split_prior(name: str) -> Tuple[str, Optional[bool]]:
    """``"bcnet+prior"`` -> ("bcnet", False); ``"screened+flatprior"`` -> ("screened", True);
    ``"screened"`` -> ("screened", None): no prior."""
    for suffix, flat in PRIOR_SUFFIXES.items():
        if name.endswith(suffix):
            return name[: -len(suffix)], flat
    return name, None


def parse_variant(spec: str) -> Dict[str, Any]:
    """``"screened"`` or ``"screened:screen=1,top_k=10"`` -> keyword options of ``evolution_search``
    (``"bcnet+prior"``: the prior is attached per run, see :func:`run_task`)."""
    name, _, opts = spec.partition(":")
    out: Dict[str, Any] = {"variant": split_prior(name.strip())[0]}
    for item in filter(None, (x.strip() for x in opts.split(","))):
        key, _, value = item.partition("=")
        out[key.strip()] = float(value) if "." in value else int(value)
    return out


# per process: the bench of each space and the prior of each (space, flat), built once
_WORKER: Dict[str, Any] = {}


def _setup(tables: Any, prior_file: Optional[str]) -> None:
    _WORKER.update(tables=tables, records=None if prior_file is None else load_records(prior_file), benches={},
                   priors={})


def _bench(space: str) -> CBMBench:
    if space not in _WORKER["benches"]:
        _WORKER["benches"][space] = CBMBench(space, _WORKER["tables"])
    return _WORKER["benches"][space]


def _prior(space: str, flat: bool) -> RecordsPrior:
    if _WORKER["records"] is None:
        raise SystemExit("a +prior variant needs --prior FILE")
    if (space, flat) not in _WORKER["priors"]:
        _WORKER["priors"][(space, flat)] = RecordsPrior(_bench(space), _WORKER["records"], flat=flat)
    return _WORKER["priors"][(space, flat)]


def run_task(task: Tuple[str, float, int, Sequence[str], Dict[str, Dict[str, Any]], int, float]) -> Dict[str, Dict]:
    """One (space, budget, seed) for every variant (so that the +prior variants share one prior fit)."""
    space, budget, seed, variants, options, max_evals, noise = task
    bench = _bench(space)
    out = {}
    for v in variants:
        flat = split_prior(v.partition(":")[0].strip())[1]
        prior = None if flat is None else _prior(space, flat)
        t0 = time.perf_counter()
        r = bench.search("evolution", budget, max_evals=max_evals, seed=seed, noise_std=noise, prior=prior,
                         **options[v])
        out[v] = {"rank": r["rank_feasible"], "evals": r["evaluations"], "random": r["origins"]["random"],
                  "key": r["key"], "loss": r["optimum_acc"] - r["mean_acc"], "best_scored": r["rank_best_scored"],
                  "to_top": r["evals_to_top5"], "seconds": time.perf_counter() - t0}
    return out


def summarize(runs: Sequence[Dict[str, Any]], optima: Set[str]) -> Dict:
    ranks = [r["rank"] for r in runs]
    evals = [r["evals"] for r in runs]
    # never reaching the top 5 counts as more than any run's budget in the median and the worst
    to_top = [r["to_top"] if r["to_top"] is not None else float("inf") for r in runs]
    return {
        "mean": statistics.mean(ranks), "median": statistics.median(ranks), "worst": max(ranks),
        "missed": sum(r > GOAL_RANK for r in ranks), "evals": statistics.mean(evals), "max_evals": max(evals),
        "seconds": statistics.mean(r["seconds"] for r in runs), "ranks": ranks,
        "random": statistics.mean(r["random"] for r in runs),
        "stuck": sum(r["rank"] > GOAL_RANK and r["key"] in optima for r in runs),
        "acc_loss": statistics.mean(r["loss"] for r in runs),
        "best_scored_median": statistics.median(r["best_scored"] for r in runs),
        "best_scored_worst": max(r["best_scored"] for r in runs),
        "to_top_median": statistics.median(to_top), "to_top_worst": max(to_top),
    }


def exhaustive_noisy_pick(bench: CBMBench, budget: float, std: float, seeds: Sequence[int],
                          lower: float = CBM_LOWER) -> List[int]:
    """Per seed, the true rank of the arch a search would pick if it scored *every* arch of the
    window [lower*T, T] with the noisy evaluator of that seed: what the noise alone costs."""
    b = bench.budget_flops(budget)
    t = bench.table
    window = (t.flops >= lower * b) & (t.flops <= b)
    ranks = []
    for seed in seeds:
        noisy = bench.noisy_oracle(std, seed)
        scores = {k: noisy(bench.key_to_config(k)) for k in (t.keys[i] for i in window.nonzero()[0])}
        ranks.append(bench.rank_feasible(max(scores, key=scores.__getitem__), b))
    return ranks


def print_exhaustive(spaces: Sequence[str], std: float, seeds: Sequence[int]) -> None:
    print()
    print(f"Every arch of the window scored with the same noise (std {std:g}), best noisy score picked:")
    print()
    print("| space | budget | archs in the window | true rank of the pick: mean | median | worst |")
    print("|---|---|---|---|---|---|")
    for space in spaces:
        bench = _bench(space)
        for budget in DEFAULT_BUDGETS:
            b = bench.budget_flops(budget)
            n = int(((bench.table.flops >= CBM_LOWER * b) & (bench.table.flops <= b)).sum())
            r = exhaustive_noisy_pick(bench, budget, std, seeds)
            print(f"| {space} | {budget:.0%} | {n} | {statistics.mean(r):.2f} | {statistics.median(r):g} | {max(r)} |")


def _fmt_evals(x: float) -> str:
    return "never" if x == float("inf") else f"{x:g}"


def local_optima(bench: CBMBench, budget: float, lower: float = CBM_LOWER) -> Dict[str, Any]:
    """Archs in [lower*T, T] none of whose neighbours there (one digit changed) is more accurate."""
    t = bench.table
    b = bench.budget_flops(budget)
    acc = {k: float(t.mean[i]) for i, k in enumerate(t.keys) if lower * b <= t.flops[i] <= b}
    optima = {k for k, a in acc.items()
              if all(acc.get(k[:i] + d + k[i + 1:], -1.0) <= a for i in range(len(k)) for d in "1234" if d != k[i])}
    ranks = sorted(bench.rank_feasible(k, b) for k in optima)
    top = sorted(acc.values(), reverse=True)
    return {"window": len(acc), "optima": optima, "best_ranks": ranks[:10], "top10_spread": top[0] - top[9]}


def print_landscape(tables: Any) -> None:
    print("| space | budget | archs in [0.8 T, T] | 1-gene local optima | ranks of the best 10 "
          "| accuracy rank 1 - rank 10 |")
    print("|---|---|---|---|---|---|")
    for space in SPACES:
        bench = CBMBench(space, tables)
        for budget in DEFAULT_BUDGETS:
            lo = local_optima(bench, budget)
            print(f"| {space} | {budget:.0%} | {lo['window']} | {len(lo['optima'])} "
                  f"| {', '.join(map(str, lo['best_ranks']))} | {lo['top10_spread']:.3f} |")
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0-49", help="seeds, e.g. 0-49 or 100-149 (default 0-49)")
    ap.add_argument("--variants", default="screened;bcnet",
                    help=f"';'-separated, each {' or '.join(VARIANTS)} (+prior or +flatprior with --prior) with "
                    "optional ':key=value,...' options")
    ap.add_argument("--spaces", default=",".join(SPACES), help="comma-separated (default: both)")
    ap.add_argument("--max-evals", type=int, default=300)
    ap.add_argument("--tables", default=None, help="directory of the CBM tables (default: the shared copy)")
    ap.add_argument("--landscape", action="store_true", help="first print the local optima of every cell")
    ap.add_argument("--prior", default=None, metavar="FILE", help="loss records for the +prior variants")
    ap.add_argument("--noise-std", type=float, default=0.0, metavar="S",
                    help="evaluator noise std in accuracy %% points (default 0: the exact table)")
    ap.add_argument("--jobs", type=int, default=1, help="processes over the seeds (default 1)")
    args = ap.parse_args()
    seeds = parse_seeds(args.seeds)
    variants = [v.strip() for v in args.variants.split(";") if v.strip()]
    options = {v: parse_variant(v) for v in variants}
    spaces = [x.strip() for x in args.spaces.split(",") if x.strip()]

    extra = f"  spaces {','.join(spaces)}"
    if args.prior:
        extra += f"  prior {args.prior}"
    if args.noise_std:
        extra += f"  noise std {args.noise_std:g}"
    print(f"# cbm_evolution {datetime.date.today().isoformat()}  python {platform.python_version()}  "
          f"seeds {args.seeds} ({len(seeds)})  max_evals {args.max_evals}  variants {'; '.join(variants)}{extra}")
    print()
    if args.landscape:
        print_landscape(args.tables)
    if variants:
        print(f"| space | budget | variant | rank mean | median | worst | runs with rank > {GOAL_RANK} "
              f"| of those, at a local optimum | evals mean (max) | of which random | acc. below optimum "
              f"| best scored median / worst | evals to top {GOAL_RANK} median / worst | s per run |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    totals: Dict[str, List[int]] = {v: [] for v in variants}
    evals: Dict[str, List[float]] = {v: [] for v in variants}
    t0 = time.perf_counter()
    _setup(args.tables, args.prior)
    pool = multiprocessing.Pool(args.jobs, _setup, (args.tables, args.prior)) if args.jobs > 1 else None
    for space in spaces if variants else ():
        for budget in DEFAULT_BUDGETS:
            optima = local_optima(_bench(space), budget)["optima"]
            tasks = [(space, budget, seed, variants, options, args.max_evals, args.noise_std) for seed in seeds]
            per_seed = pool.map(run_task, tasks) if pool is not None else [run_task(t) for t in tasks]
            for v in variants:
                c = summarize([r[v] for r in per_seed], optima)
                totals[v] += c["ranks"]
                evals[v].append(c["evals"])
                print(f"| {space} | {budget:.0%} | {v} | {c['mean']:.2f} | {c['median']:g} | {c['worst']} "
                      f"| {c['missed']}/{len(seeds)} | {c['stuck']} | {c['evals']:.1f} ({c['max_evals']}) "
                      f"| {c['random']:.1f} | {c['acc_loss']:.3f} "
                      f"| {c['best_scored_median']:g} / {c['best_scored_worst']} "
                      f"| {_fmt_evals(c['to_top_median'])} / {_fmt_evals(c['to_top_worst'])} "
                      f"| {c['seconds']:.3f} |",
                      flush=True)
    if pool is not None:
        pool.close()
    if args.noise_std:
        print_exhaustive(spaces, args.noise_std, seeds)
    print()
    for v in variants:
        r = totals[v]
        print(f"{v}: {len(r)} runs, rank mean {statistics.mean(r):.2f}, worst {max(r)}, "
              f"{sum(x > GOAL_RANK for x in r)} above rank {GOAL_RANK}, "
              f"evaluations mean {statistics.mean(evals[v]):.1f}")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
