"""``report.md``: every search algorithm on every space and budget with the table as oracle."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import widthsearch
from widthsearch.bench.cbm.oracle import CBM_LOWER, CBMBench, run_benchmark
from widthsearch.bench.cbm.plots import plot_space
from widthsearch.bench.cbm.table import DEFAULT_BUDGETS, SPACES, space_name
from widthsearch.errors import UserError
from widthsearch.io import write_text_atomic
from widthsearch.search.evolution import DEFAULT_VARIANT

__all__ = ["write_report"]


def report_files(spaces: Sequence[str] = SPACES) -> list[str]:
    """The names :func:`write_report` writes into its folder (checked against overwriting first)."""
    return ["report.md"] + [f"cbm_{space_name(s)}.png" for s in spaces]


def write_report(
    out_dir: Any,
    spaces: Sequence[str] = SPACES,
    tables: Optional[Any] = None,
    budgets: Sequence[float] = DEFAULT_BUDGETS,
    seeds: Sequence[int] = tuple(range(5)),
    max_evals: int = 300,
    command: Optional[str] = None,
    lower: Optional[float] = None,
    variant: Optional[str] = None,
) -> Dict[str, Any]:
    """Run :func:`run_benchmark` and write ``report.md`` plus ``cbm_<space>.png`` to ``out_dir``
    (evolution: ``variant``, None = the library default)."""
    import datetime

    out = Path(out_dir)
    benches = {s: CBMBench(s, tables) for s in (space_name(x) for x in spaces)}  # a missing table: nothing made
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create report directory {out}: {exc}") from None
    t0 = time.perf_counter()
    rows = run_benchmark(list(benches), tables, budgets, seeds, max_evals, benches=benches, lower=lower,
                         variant=variant)
    seconds = time.perf_counter() - t0
    images = {}
    for name, bench in benches.items():
        img = out / f"cbm_{name}.png"
        plot_space(bench, [r for r in rows if r["space"] == name], img)
        images[name] = img.name

    lines = [
        "# Channel-Bench-Macro search report",
        "",
        f"Generated {datetime.date.today().isoformat()} by widthsearch {widthsearch.__version__}"
        + (f" with `{command}`" if command else "")
        + f" in {seconds:.1f} s.",
        "",
        "Evaluator: the table's `mean` (3-run mean CIFAR-10 top-1, %), i.e. a perfect proxy (oracle). "
        "Budget: fraction of the largest net's FLOPs (MACs at 32x32). **rank** = rank of the pick by mean "
        "accuracy among *all* archs with FLOPs <= budget (1 = the feasible optimum). "
        f"Evolution and random search draw candidates with FLOPs in [{CBM_LOWER if lower is None else lower:g}*T, T] "
        "and at most "
        f"{max_evals} distinct evaluations (evolution: the {variant or DEFAULT_VARIANT} variant); "
        "greedy slimming is deterministic and is run once "
        "(its evaluations are whatever its trajectory needs). "
        f"Seeds: {', '.join(map(str, seeds))}. The last column is the expected rank of the best of N "
        "distinct uniformly drawn feasible archs, N = that row's mean evaluations (exact, not sampled).",
        "",
        "| space | budget | feasible | optimum (key, acc) | algorithm | runs | rank mean | rank median "
        "| rank worst | runs with rank <= 5 | acc mean | evals mean | s mean | random best-of-N E[rank] |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        n_ok = sum(1 for x in r["ranks"] if x <= 5)
        detail = f" ({' '.join(map(str, r['ranks']))})" if 1 < len(r["ranks"]) <= 10 else ""
        lines.append(
            f"| {r['space']} | {r['budget']:.0%} | {r['feasible']} | {r['optimum_key']} {r['optimum_acc']:.3f} "
            f"| {r['algo']} | {len(r['ranks'])} | {r['rank_mean']:.2f} | {r['rank_median']:g} | {r['rank_max']} "
            f"| {n_ok}/{len(r['ranks'])}{detail} | {r['acc_mean']:.3f} | {r['evaluations_mean']:.0f} "
            f"| {r['seconds_mean']:.3f} | {r['random_best_of_n_rank']:.1f} |"
        )
    lines.append("")
    for name, img in images.items():
        lines += [f"## {name}", "", f"![{name}]({img})", ""]
    write_text_atomic(out / "report.md", "\n".join(lines))
    summary = [
        {k: r[k] for k in ("space", "budget", "algo", "rank_mean", "rank_median", "rank_max", "evaluations_mean",
                           "seconds_mean", "random_best_of_n_rank")}
        for r in rows
    ]
    return {"report": str(out / "report.md"), "images": [str(out / i) for i in images.values()], "rows": summary}
