"""Predicted (latency table) vs measured latency on random configs, and what the table saves a search.

For each model: build (or resume) its latency table, draw ``--configs`` random configs (seeded),
predict each one's latency from the table and measure its exported static net with the same
runtime, threads, runs and warm-up; print Pearson r, the mean and largest absolute error in % of
the measured latency, and the time of one prediction vs one measurement (export included). Then a
latency-constrained evolution (score: the config's FLOPs, the most compute under the latency
budget) runs on the table, and the same search's cost with measurement is the number of distinct
configs whose latency it needed times the mean measurement time above.

``--rounds R`` measures the configs R times over (odd rounds backwards) and keeps each one's
``--statistic`` (median or min, as for the table's passes); ``--retest`` measures them all again,
to show how far the machine agrees with itself;
``--plot PNG`` draws predicted against measured, and ``--replot JSON --plot PNG`` redraws it from
an earlier ``--json`` without measuring.

    python benchmarks/latency_table.py --models mobilenet_v2:3x224x224,resnet50:3x224x224 \
        --configs 100 --sampling spread --threads 1 --passes 3 --rounds 3 --retest \
        --out-dir runs/latency_bench --json runs/latency_bench/result.json --plot runs/latency_bench/latency.png

Tables are kept in ``--out-dir`` and resumed, so an interrupted run continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from widthsearch.deploy import measure_runtime_latency  # noqa: E402
from widthsearch.formatting import parse_shape  # noqa: E402
from widthsearch.latency import STATISTICS, LatencyTable, build_table, cpu_model, spread_config  # noqa: E402
from widthsearch.models import model_info  # noqa: E402
from widthsearch.search.constraints import Constraint  # noqa: E402
from widthsearch.search.evolution import evolution_search  # noqa: E402
from widthsearch.space.spec import SpaceSpec, build_supernet  # noqa: E402


def parse_models(text: str) -> list[tuple[str, tuple[int, ...]]]:
    out = []
    for item in text.split(","):
        name, _, shape = item.partition(":")
        out.append((name.strip(), parse_shape(shape) if shape else None))
    return out


def draw_configs(space, args, seed: int) -> list[dict]:
    rng = random.Random(seed)
    if args.sampling == "spread":
        return [spread_config(space, rng) for _ in range(args.configs)]
    return [space.random_config(rng) for _ in range(args.configs)]


def measure_configs(net, configs: list[dict], example: torch.Tensor,
                    args) -> tuple[list[float], list[float], list[list[float]]]:
    """Each config's latency: the ``--statistic`` (median or min) over ``--rounds`` rounds, each
    round over all configs, odd rounds backwards (a drift in the machine's speed then spreads over
    all configs instead of inflating a run of neighbours); the seconds one measurement took, export
    included; and every round's value of each config."""
    rounds: list[list[float]] = [[] for _ in configs]
    seconds = []
    for r in range(args.rounds):
        order = range(len(configs)) if r % 2 == 0 else range(len(configs) - 1, -1, -1)
        for i in order:
            start = time.perf_counter()
            static = net.export(configs[i])
            rounds[i].append(measure_runtime_latency(static, example, runtime=args.runtime, runs=args.runs,
                                                     warmup=args.warmup, threads=args.threads,
                                                     clock=args.clock).median_ms)
            seconds.append(time.perf_counter() - start)
    combine = STATISTICS[args.statistic]
    return [combine(r) for r in rounds], seconds, rounds


def compare(net, table: LatencyTable, args, shape) -> dict:
    """Predicted vs measured latency of ``args.configs`` seeded configs (``--sampling``)."""
    configs = draw_configs(net.space, args, args.seed + 1)  # not the table's random references (seed 0)
    start = time.perf_counter()
    for _ in range(args.prediction_repeats):
        predicted = [table.predict(c) for c in configs]
    predict_s = (time.perf_counter() - start) / (args.prediction_repeats * len(configs))
    example = torch.randn(args.batch_size, *shape)
    measured, measure_times, measured_rounds = measure_configs(net, configs, example, args)
    p, m = np.array(predicted), np.array(measured)
    errors = np.abs(p - m) / m * 100.0
    retest = {}
    if args.retest:  # the same configs measured again: how far the measurement agrees with itself
        again_values, _, again_rounds = measure_configs(net, configs, example, args)
        again = np.array(again_values)
        retest = {"retest_pearson_r": float(np.corrcoef(m, again)[0, 1]),
                  "retest_mae_percent": float((np.abs(again - m) / m * 100.0).mean()),
                  "retest_pearson_r_prediction": float(np.corrcoef(p, again)[0, 1]),
                  "retest_mae_percent_prediction": float((np.abs(p - again) / again * 100.0).mean()),
                  "retest_ms": again.tolist(), "retest_rounds_ms": again_rounds}
    return {**retest,
        "configs": len(configs), "sampling": args.sampling, "pearson_r": float(np.corrcoef(p, m)[0, 1]),
        "mae_percent": float(errors.mean()), "max_error_percent": float(errors.max()),
        "bias_percent": float(((p - m) / m * 100.0).mean()),
        "measured_ms_range": [float(m.min()), float(m.max())],
        "seconds_per_prediction": predict_s, "seconds_per_measurement": statistics.fmean(measure_times),
        "pairs": [[float(a), float(b)] for a, b in zip(predicted, measured)], "measured_rounds_ms": measured_rounds,
    }


def coarsened(doc: dict, grid: int) -> dict:
    """The table ``doc`` as if measured at most ``grid`` widths per side: its own entries at the
    kept widths (same offset and scale), the rest left to interpolation."""
    from widthsearch.latency import coarsen

    out = {**doc, "blocks": []}
    for block in doc["blocks"]:
        kept = [coarsen(g, grid) for g in block["grid"]]
        index = [[g.index(w) for w in k] for g, k in zip(block["grid"], kept)]
        if len(kept) == 2:
            stride = len(block["grid"][1])
            ms = [block["ms"][i * stride + j] for i in index[0] for j in index[1]]
        elif len(kept) == 1:
            ms = [block["ms"][i] for i in index[0]]
        else:
            ms = list(block["ms"])
        out["blocks"].append({**block, "grid": kept, "ms": ms})
    return out


def grid_error(net, doc: dict, grids, configs: int, seed: int) -> dict:
    """Mean and largest |coarse - full| prediction, in % of the full table's, on random configs."""
    full = LatencyTable(doc)
    rng = random.Random(seed + 1)
    sample = [net.space.random_config(rng) for _ in range(configs)]
    out = {}
    for g in grids:
        coarse = LatencyTable(coarsened(doc, g))
        errors = [abs(coarse.predict(c) - full.predict(c)) / full.predict(c) * 100 for c in sample]
        out[str(g)] = {"mean_percent": statistics.fmean(errors), "max_percent": max(errors),
                       "measurements": sum(len(b["ms"]) for b in coarse.doc["blocks"])}
    return out


def search_cost(net, table: LatencyTable, budget_ms: float, seconds_per_measurement: float, seed: int) -> dict:
    """A latency-constrained evolution on the table, and the same search's cost with measuring."""
    asked: set[tuple] = set()

    def latency(config) -> float:
        asked.add(net.space.key(config))
        return table.predict(config)

    start = time.perf_counter()
    result = evolution_search(net.space, lambda c: float(net.space.cost(c).flops), Constraint(latency, budget_ms),
                              seed=seed)
    seconds = time.perf_counter() - start
    return {"budget_ms": budget_ms, "evaluations": result.evaluations, "configs_needing_latency": len(asked),
            "search_seconds_with_table": seconds,
            "search_seconds_measuring_estimated": len(asked) * seconds_per_measurement,
            "best_predicted_ms": table.predict(result.best_config)}


def run_model(name: str, shape, args) -> dict:
    shape = shape or tuple(model_info(name)["input_shape"])  # the model's own input when none is given
    spec = SpaceSpec(name, input_shape=shape, groups=args.groups, residual=args.residual)
    net, spec = build_supernet(spec)
    out = Path(args.out_dir) / (f"{name}_{'x'.join(map(str, spec.input_shape))}_{args.runtime}_t{args.threads}"
                                f"_{args.clock}_g{args.grid or 'all'}_p{args.passes}"
                                f"{'' if args.statistic == 'median' else '_' + args.statistic}.json")
    start = time.perf_counter()
    doc = build_table(net, spec, out, runtime=args.runtime, threads=args.threads, batch_size=args.batch_size,
                      runs=args.runs, warmup=args.warmup, grid=args.grid, references=args.references,
                      clock=args.clock, passes=args.passes, statistic=args.statistic, resume=out.exists(),
                      progress=True)
    table = LatencyTable(doc, source=str(out))
    torch.set_num_threads(args.threads)
    result = {"model": name, "input": list(spec.input_shape), "table": str(out),
              "table_measurements": sum(len(b["ms"]) for b in doc["blocks"]), "blocks": len(doc["blocks"]),
              "table_seconds": float(doc["measure_seconds"]), "table_seconds_this_run": time.perf_counter() - start,
              "offset_ms": doc["offset_ms"], "scale": doc["scale"], **compare(net, table, args, spec.input_shape)}
    if args.grid is None:
        result["grid_error"] = grid_error(net, doc, (3, 5), args.configs, args.seed)
    mid = statistics.median(m for _, m in result["pairs"])
    result["search"] = search_cost(net, table, mid, result["seconds_per_measurement"], args.seed)
    return result


def plot_results(results: list[dict], path: str | Path, cpu: str, statistic: str = "median") -> Path:
    """Predicted against measured latency, one panel per model, with y = x and the ±10 % band of
    the goal. When ``--retest`` ran, the two measurements are combined: their minimum for
    ``statistic`` min (the fastest of all rounds), else their mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

    fig, axes = plt.subplots(1, len(results), figsize=(4.6 * len(results), 4.4), squeeze=False)
    for ax, r in zip(axes[0], results):
        predicted = np.array([p for p, _ in r["pairs"]])
        measured = np.array([m for _, m in r["pairs"]])
        label = "measured (ms)"
        if r.get("retest_ms") and statistic == "min":
            measured, label = np.minimum(measured, r["retest_ms"]), "measured, fastest of both measurements (ms)"
        elif r.get("retest_ms"):
            measured, label = (measured + np.array(r["retest_ms"])) / 2, "measured, mean of both measurements (ms)"
        r_value = np.corrcoef(predicted, measured)[0, 1]
        mae = float(np.mean(np.abs(predicted - measured) / measured) * 100)
        line = np.array([min(measured.min(), predicted.min()), max(measured.max(), predicted.max())])
        ax.fill_between(line, 0.9 * line, 1.1 * line, color="0.85", label="±10 %")
        ax.plot(line, line, "k-", lw=0.8, label="predicted = measured")
        ax.plot(measured, predicted, ".", ms=5, label=f"{len(measured)} configs: r {r_value:.3f}, MAE {mae:.1f} %")
        ticks = []
        for mantissas in ((1, 1.5, 2, 3, 4, 5, 7), (1, 2, 3, 5), (1, 2, 5)):  # the finest that gives at most 8
            ticks = [m * 10 ** e for e in range(-1, 5) for m in mantissas if line[0] / 1.1 <= m * 10 ** e <= line[1] * 1.1]
            if len(ticks) <= 8:
                break
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(FixedLocator(ticks))
            axis.set_major_formatter(FormatStrFormatter("%g"))
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel("predicted by the latency table (ms)")
        ax.set_title(f"{r['model']} {'x'.join(map(str, r['input']))}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"Latency table vs measurement, {cpu}, 1 thread, {statistic} of passes and rounds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mobilenet_v2:3x224x224,resnet50:3x224x224")
    parser.add_argument("--configs", type=int, default=100)
    parser.add_argument("--sampling", default="uniform", choices=["uniform", "spread"],
                        help="uniform: every unit's width drawn independently; spread: one global width "
                             "fraction per config (FLOPs over the whole range), each unit moved around it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runtime", default="torch", choices=["torch", "onnxruntime"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--residual", default="tie", choices=["tie", "pad"])
    parser.add_argument("--grid", type=int, default=None)
    parser.add_argument("--references", type=int, default=20)
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"])
    parser.add_argument("--passes", type=int, default=1, help="the table's --passes")
    parser.add_argument("--statistic", default="median", choices=list(STATISTICS),
                        help="how the table's passes and the configs' rounds are combined")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure the configs in that many rounds (odd ones backwards) and keep each one's "
                             "--statistic")
    parser.add_argument("--prediction-repeats", type=int, default=20)
    parser.add_argument("--retest", action="store_true",
                        help="measure every config a second time: the agreement of the measurement with itself")
    parser.add_argument("--out-dir", default="runs/latency_bench")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--plot", default=None, metavar="PNG", help="draw predicted against measured latency here")
    parser.add_argument("--replot", default=None, metavar="JSON",
                        help="measure nothing: draw --plot from the results an earlier --json wrote")
    args = parser.parse_args()
    if args.replot:
        if not args.plot:
            parser.error("--replot needs --plot")
        doc = json.loads(Path(args.replot).read_text())
        print(plot_results(doc["results"], args.plot, doc["cpu"], doc["args"].get("statistic", "median")))
        return
    torch.manual_seed(args.seed)
    results = []
    for name, shape in parse_models(args.models):
        r = run_model(name, shape, args)
        results.append(r)
        s = r["search"]
        print(f"{name} {'x'.join(map(str, r['input']))}: r={r['pearson_r']:.4f}, MAE {r['mae_percent']:.2f} %, "
              f"max {r['max_error_percent']:.1f} %, bias {r['bias_percent']:+.2f} %, measured "
              f"{r['measured_ms_range'][0]:.1f}-{r['measured_ms_range'][1]:.1f} ms; table {r['table_measurements']} "
              f"measurements in {r['table_seconds']:.0f} s; prediction {1e6 * r['seconds_per_prediction']:.1f} us, "
              f"measurement {r['seconds_per_measurement']:.3f} s "
              f"({r['seconds_per_measurement'] / r['seconds_per_prediction']:.0f}x); evolution at {s['budget_ms']:.2f} ms: "
              f"{s['configs_needing_latency']} configs, {s['search_seconds_with_table']:.1f} s with the table vs "
              f"~{s['search_seconds_measuring_estimated']:.0f} s measuring", flush=True)
        if "retest_pearson_r" in r:
            print(f"  measured again: r={r['retest_pearson_r']:.4f} with the first pass (MAE {r['retest_mae_percent']:.2f} %); "
                  f"prediction vs second pass r={r['retest_pearson_r_prediction']:.4f}, "
                  f"MAE {r['retest_mae_percent_prediction']:.2f} %", flush=True)
        for g, e in r.get("grid_error", {}).items():
            print(f"  --grid {g}: {e['measurements']} measurements, prediction off the full table by "
                  f"{e['mean_percent']:.2f} % on average, {e['max_percent']:.2f} % at most", flush=True)
    if args.plot:
        plot_results(results, args.plot, cpu_model(), args.statistic)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"cpu": cpu_model(), "torch": torch.__version__, "args": vars(args),
                                               "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
