"""``widthsearch bench``: score search algorithms and proxies on benchmark tables.

``widthsearch bench cbm --space mobilenet|resnet`` works on Channel-Bench-Macro:
``--verify-costs`` checks the core's FLOPs/params against the table, ``--algo`` runs a
search with the table as oracle, ``--scores FILE`` scores a proxy's per-architecture
scores, ``--report DIR`` writes the algorithms x budgets x spaces report.
"""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any, Dict, Optional

from widthsearch.errors import UserError

ALGOS = ("greedy", "evolution", "random")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="score search algorithms and supernet scores on benchmark tables",
        description="Score search algorithms and supernet scores on benchmark tables.",
    )
    sub = parser.add_subparsers(dest="bench", metavar="BENCHMARK")
    sub.required = True
    from widthsearch.bench.cbm import CBM_LOWER, SPACES
    from widthsearch.search.evolution import VARIANTS

    p = sub.add_parser(
        "cbm",
        help="Channel-Bench-Macro (16,384 trained CIFAR-10 width configs per space)",
        description=(
            "Channel-Bench-Macro: every width config of two CIFAR-10 macro spaces trained 3 times "
            "(tables from github.com/xiusu/Channel-Bench-Macro). Use the table as an oracle to score "
            "search algorithms, or score a proxy's per-architecture scores against it."
        ),
    )
    p.add_argument("--space", choices=SPACES, help="search space (required except with --report alone: both)")
    p.add_argument("--tables", metavar="DIR", help="directory with Results_MobileNet.json / Results_ResNet.json")
    p.add_argument("--verify-costs", action="store_true", help="check the core's FLOPs and params for all 16,384 configs")
    p.add_argument("--algo", choices=ALGOS, help="run this search with the table's mean accuracy as evaluator")
    p.add_argument(
        "--budget", default="0.5",
        help="FLOPs budget: fraction of the max net (0.5, 50%%) or absolute (100M); default 0.5",
    )
    p.add_argument("--max-evals", type=int, default=300, metavar="N",
                   help="evaluation budget of evolution/random search (default 300; greedy needs what its path needs)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed (evolution/random; first seed of --report; bootstrap of --compare)")
    p.add_argument("--lower", type=float, default=None, metavar="FRAC",
                   help=f"evolution/random only sample FLOPs >= FRAC*budget (default {CBM_LOWER:g})")
    p.add_argument("--variant", choices=VARIANTS, default=None,
                   help="evolution (--algo evolution and --report): screened (default) or bcnet, BCNetV2's loop "
                   "as published (top-k 10, 25 mutations + 25 crossovers, random fill-up)")
    p.add_argument("--prior", metavar="FILE",
                   help="with --algo evolution: seed it with BCNetV2's prior fitted to these loss records (a supernet "
                   "checkpoint trained with --strategy bcnet --groups 4, or the JSON --records-out writes)")
    p.add_argument("--records-out", metavar="FILE.json",
                   help="with --prior: write its loss records as JSON (a few KB), to rerun without the checkpoint")
    p.add_argument("--noise-std", type=float, default=0.0, metavar="S",
                   help="with --algo: score with the table's accuracy plus Gaussian noise of std S (%% points), fixed "
                   "per architecture and seeded by --seed, like a supernet's error; the pick is ranked by the truth")
    p.add_argument("--scores", metavar="FILE", help="JSON {key: score} or CSV key,score to correlate with the table")
    p.add_argument("--compare", metavar="FILE|flops",
                   help="with --scores: compare its ranking with these scores' (or FLOPs') on their common archs: "
                   "difference of Kendall tau against the table, with a paired bootstrap 95%% interval")
    p.add_argument("--bootstrap", type=int, default=None, metavar="N",
                   help="with --compare: bootstrap resamples over the common archs (default 1000; seeded by --seed)")
    p.add_argument("--supernet", metavar="CKPT",
                   help="score architectures with this supernet (cbm_* trained with --groups 4), then correlate")
    p.add_argument("--sample", type=int, default=16384, metavar="N",
                   help="with --supernet: N architectures stratified by FLOPs (default all 16,384)")
    p.add_argument("--scores-out", metavar="FILE",
                   help="with --supernet: where scores are written and resumed from (default DIR_OF_CKPT/cbm_scores.json)")
    p.add_argument("--eval-images", type=int, default=2000, metavar="N",
                   help="with --supernet: held-out images per architecture (default 2000)")
    p.add_argument("--align", choices=("left", "right", "both"), default=None,
                   help="with --supernet: score the first channels (left), the last (right) or the mean of both sides, "
                   "each with its own BN statistics (default: both for a --strategy bcnet supernet, else left)")
    p.add_argument("--calib-images", type=int, default=2048, metavar="N",
                   help="with --supernet: training images recalibrating BN for each architecture (default 2048)")
    p.add_argument("--metric", choices=("accuracy", "loss"), default="accuracy",
                   help="with --supernet (or its scores file as --scores): rank by held-out accuracy (default) or "
                   "by negative cross-entropy, which is less noisy on few images; both are recorded")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="with --supernet: where archs are scored (default auto: CUDA when available)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="with --scores/--supernet: scatter of the scores and of FLOPs against the true accuracy")
    p.add_argument("--report", metavar="DIR", help="write report.md and a PNG per space to DIR")
    p.add_argument("--seeds", type=int, default=5, metavar="N", help="seeds per algorithm in --report (default 5)")
    p.add_argument("--force", action="store_true", help="overwrite the files of --report and --plot")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_cbm)


def _score_source(args: argparse.Namespace, bench: Any) -> Optional[Dict[str, float]]:
    """Per-architecture scores to correlate with the table (``--scores FILE``).

    Other sources of scores (e.g. evaluating a trained supernet checkpoint on every
    architecture) belong here: return ``{key: score}``."""
    from widthsearch.bench.cbm import load_scores

    if args.scores and args.supernet:
        raise UserError("give --scores or --supernet, not both")
    if args.scores:
        return load_scores(args.scores, args.metric)
    if args.supernet:
        from widthsearch.bench.supernet_scores import score_with_supernet, stratified_keys

        keys = stratified_keys(bench, args.sample, args.seed)
        ckpt = Path(args.supernet)
        out = args.scores_out or (ckpt if ckpt.is_dir() else ckpt.parent) / "cbm_scores.json"
        return score_with_supernet(ckpt, bench, keys, out, eval_images=args.eval_images,
                                   calib_images=args.calib_images, metric=args.metric, device=args.device,
                                   align=args.align,
                                   progress=not args.json)
    return None


def run_cbm(args: argparse.Namespace) -> int:
    from widthsearch.bench import cbm

    if args.max_evals < 1:
        raise UserError("--max-evals must be at least 1")
    if args.seeds < 1:
        raise UserError("--seeds must be at least 1")
    if args.lower is not None and not 0.0 <= args.lower <= 1.0:
        raise UserError("--lower must be a fraction in [0, 1]")
    _check_compare(args)
    if args.variant and not (args.algo == "evolution" or args.report):
        raise UserError("--variant applies to --algo evolution and --report")
    _check_prior_noise(args)
    if args.plot and not (args.scores or args.supernet):
        raise UserError("--plot draws scores: give it with --scores or --supernet")
    if args.plot and Path(args.plot).suffix.lower() not in (".png", ".pdf", ".svg"):
        raise UserError(f"--plot {args.plot}: name a .png, .pdf or .svg file")
    _refuse_overwrites(args)
    wants_space = args.verify_costs or args.algo or args.scores or args.supernet or args.prior
    if wants_space and not args.space:
        raise UserError("--space is required (mobilenet or resnet)")
    if not (wants_space or args.report) and not args.space:
        raise UserError("give --space, and --verify-costs, --algo, --scores, --supernet or --report")

    result: Dict[str, Any] = {}
    text = []
    bench = cbm.CBMBench(args.space, args.tables) if args.space else None
    if bench is not None:
        result["space"] = bench.name

    prior = _records_prior(args, bench, result, text) if args.prior else None
    if bench is not None and not (args.verify_costs or args.algo or args.scores or args.supernet or args.report
                                  or args.prior):
        key, acc = bench.optimum()
        result.update({"archs": len(bench.table.keys), "max_flops": bench.table.max_flops,
                       "best_key": key, "best_acc": acc})
        text.append(f"{bench.name}: {len(bench.table.keys)} archs, max {bench.table.max_flops / 1e6:.2f} MFLOPs, "
                    f"best {key} {acc:.3f}%")
        for u, ch in zip(bench.genome.names, bench.genome.choices):
            text.append(f"  {u}: {', '.join(map(str, ch))}")

    if args.verify_costs:
        v = bench.verify_costs()
        result.update({k: v[k] for k in ("checked", "mismatches", "flops_mismatches", "params_mismatches", "examples")})
        text.append(f"verify-costs {bench.name}: {v['checked']} configs checked, {v['mismatches']} mismatches "
                    f"(flops {v['flops_mismatches']}, params {v['params_mismatches']}) in {v['seconds']:.1f} s")
        for e in v["examples"]:
            text.append(f"  {e['key']}: flops {e['flops']} vs table {e['table_flops']}, "
                        f"params {e['params']} vs table {e['table_params']}")

    if args.algo:
        extra = {"variant": args.variant} if args.variant else {}
        r = bench.search(args.algo, args.budget, max_evals=args.max_evals, seed=args.seed, lower=args.lower,
                         noise_std=args.noise_std, prior=prior, **extra)
        if args.algo == "evolution":
            result["variant"] = r["variant"]
        for k in ("key", "mean_acc", "rank_feasible", "rank_global", "evaluations", "optimum_key", "optimum_acc",
                  "feasible", "algo", "budget_flops", "budget_fraction", "flops", "params", "config", "seed",
                  "seconds", "rank_best_scored", "evals_to_top5", "noise_std"):
            result[k] = r[k]
        if r["prior"] is not None:
            result["prior"].update(r["prior"])
        name = f"evolution ({r['variant']})" if args.algo == "evolution" else args.algo
        text.append(
            f"{name} on {bench.name}, budget {r['budget_fraction']:.1%} of max = {r['budget_flops'] / 1e6:.2f} "
            f"MFLOPs{'' if args.algo == 'greedy' else f', seed {args.seed}'}: {r['key']}  acc {r['mean_acc']:.3f}  "
            f"rank {r['rank_feasible']}/{r['feasible']} among feasible (global {r['rank_global']}/16384)  "
            f"{r['flops'] / 1e6:.2f} MFLOPs  {r['evaluations']} evaluations"
        )
        text.append(f"feasible optimum: {r['optimum_key']}  acc {r['optimum_acc']:.3f}")
        if args.noise_std:
            text.append(f"noisy evaluator (std {args.noise_std:g}): the best arch it scored ranks "
                        f"{r['rank_best_scored']} by the table; its pick ranks {r['rank_feasible']}")
        if r["prior"] is not None:
            text.append(f"first population: {r['prior']['initial_population']} archs drawn from the prior")

    scores = _score_source(args, bench)
    if scores is not None:
        s = bench.score_correlation(scores)
        for k in ("count", "kendall", "spearman", "pearson", "no1", "top10_overlap", "top1pct_k",
                  "top1pct_overlap", "picks", "per_unit"):
            result[k] = s[k]
        base = bench.flops_baseline(list(scores))
        result["flops_proxy"] = base
        text.append(_format_scores(s))
        text.append(f"  FLOPs alone on the same archs: Kendall {_fmt(base['kendall'])}  Spearman "
                    f"{_fmt(base['spearman'])}  Pearson {_fmt(base['pearson'])}  (without digit 1: Kendall "
                    f"{_fmt(base['no1']['kendall'])})")
        if args.compare:
            c = _compare(args, bench, scores)
            result.update(c)
            text.append(_format_compare(args, c))
        if args.plot:
            label = "supernet " + ("accuracy (%)" if args.metric == "accuracy" else "-cross-entropy") \
                if args.supernet else "score"
            Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
            result["plot"] = str(cbm.plot_scores(bench, scores, args.plot, label))
            text.append(f"  wrote {result['plot']}")

    if args.report:
        spaces = [args.space] if args.space else list(cbm.SPACES)
        seeds = list(range(args.seed, args.seed + args.seeds))
        rep = cbm.write_report(args.report, spaces, args.tables, seeds=seeds, max_evals=args.max_evals,
                               command=_command(args), lower=args.lower, variant=args.variant)
        result["report"] = rep["report"]
        result["images"] = rep["images"]
        result["rows"] = rep["rows"]
        text.append(f"wrote {rep['report']} and {', '.join(rep['images'])}")
        for row in rep["rows"]:
            text.append(f"  {row['space']:9s} {row['budget']:4.0%} {row['algo']:9s} rank mean {row['rank_mean']:6.1f} "
                        f"median {row['rank_median']:5g} worst {row['rank_max']:4d}  evals {row['evaluations_mean']:.0f}")

    if args.json:
        from widthsearch.cli.main import print_json

        print_json(result)
    else:
        print("\n".join(text))
    return 0


DEFAULT_BOOTSTRAP = 1000


def _refuse_overwrites(args: argparse.Namespace) -> None:
    """``--report DIR`` and ``--plot FILE`` replace nothing of the user's without ``--force``; checked
    before the minutes of scoring that precede the writes."""
    from widthsearch.bench.cbm import SPACES, report_files
    from widthsearch.cli.common import refuse_overwrite
    from widthsearch.runfolder import check_folder

    if args.report:
        folder = check_folder(args.report, "--report")
        for name in report_files([args.space] if args.space else SPACES):
            refuse_overwrite(folder / name, args.force)
    if args.plot:
        plot = Path(args.plot)
        if plot.is_dir():
            raise UserError(f"--plot {plot} is a folder; name a file")
        refuse_overwrite(plot, args.force)
        check_folder(plot, "--plot")  # only a folder above it can be a file now


def _check_prior_noise(args: argparse.Namespace) -> None:
    """``--prior``, ``--records-out`` and ``--noise-std`` only where they act."""
    import math

    if args.prior and not (args.algo == "evolution" or args.records_out):
        raise UserError("--prior seeds --algo evolution (or, with --records-out, exports the records)")
    if args.records_out and not args.prior:
        raise UserError("--records-out writes the loss records of --prior: give --prior CKPT")
    if args.records_out and Path(args.records_out).exists():
        raise UserError(f"--records-out {args.records_out} exists; remove it or choose another name")
    if not math.isfinite(args.noise_std) or args.noise_std < 0:
        raise UserError(f"--noise-std must be a finite number >= 0, got {args.noise_std}")
    if args.noise_std and not args.algo:
        raise UserError("--noise-std applies to --algo (the evaluator of a search)")


def _records_prior(args: argparse.Namespace, bench: Any, result: Dict[str, Any], text: list) -> Any:
    """Load ``--prior``'s loss records for this space (and write them to ``--records-out``)."""
    from widthsearch.bench.cbm import RecordsPrior, load_records, records_agreement, save_records

    loaded = load_records(args.prior)
    prior = RecordsPrior(bench, loaded)  # checks that the records belong to this space
    agree = records_agreement(bench, loaded)
    result["prior"] = {"file": args.prior, "model": loaded.model, **agree}
    losses = [loss for loss, _ in loaded.records]
    text.append(f"prior: {len(losses)} loss records ({agree['distinct']} distinct archs) from {args.prior}, losses "
                f"{min(losses):.4f} .. {max(losses):.4f}; Kendall tau of -loss with the table's accuracy "
                f"{_fmt(agree['kendall_accuracy'])}, with FLOPs {_fmt(agree['kendall_flops'])}")
    if args.records_out:
        keys = [bench.config_to_key(c) for _, c in loaded.records]
        result["records_out"] = str(save_records(args.records_out, loaded, keys))
        text.append(f"wrote {result['records_out']}")
    return prior


def _check_compare(args: argparse.Namespace) -> None:
    """``--compare`` and ``--bootstrap`` only make sense together with ``--scores``."""
    if args.compare and not args.scores:
        raise UserError("--compare needs --scores FILE: the scores it is compared with")
    if args.bootstrap is not None and not args.compare:
        raise UserError("--bootstrap applies to --compare; give both")
    if args.bootstrap is not None and args.bootstrap < 1:
        raise UserError(f"--bootstrap must be at least 1, got {args.bootstrap}")


def _compare(args: argparse.Namespace, bench: Any, scores: Dict[str, float]) -> Dict[str, Any]:
    """τ(--scores) − τ(--compare) on their common archs, with its paired bootstrap interval."""
    from widthsearch.bench.cbm import load_scores

    other = None if args.compare == "flops" else load_scores(args.compare, args.metric)
    n = DEFAULT_BOOTSTRAP if args.bootstrap is None else args.bootstrap
    out = bench.compare_scores(scores, other, n=n, seed=args.seed)
    out["compare"] = args.compare
    return out


def _format_compare(args: argparse.Namespace, c: Dict[str, Any]) -> str:
    lo, hi = c["delta_ci95"]
    ci = "n/a" if lo is None or hi is None else f"[{lo:+.3f}, {hi:+.3f}]"
    delta = "n/a" if c["delta_kendall"] is None else f"{c['delta_kendall']:+.3f}"
    return (f"  compared with {args.compare} on {c['common']} common archs: Kendall {_fmt(c['kendall_a'])} vs "
            f"{_fmt(c['kendall_b'])}, delta {delta}, 95% CI {ci} ({c['bootstrap']} paired bootstrap resamples, "
            f"seed {c['bootstrap_seed']})")


def _command(args: argparse.Namespace) -> str:
    """The command line equivalent to ``args`` (for the report's provenance line)."""
    parts = ["widthsearch", "bench", "cbm"]
    for flag, value, default in (
        ("--space", args.space, None),
        ("--tables", args.tables, None),
        ("--max-evals", args.max_evals, 300),
        ("--seed", args.seed, 0),
        ("--seeds", args.seeds, 5),
        ("--lower", args.lower, None),
        ("--variant", args.variant, None),
        ("--report", args.report, None),
    ):
        if value is not None and value != default:
            parts += [flag, str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _format_scores(s: Dict[str, Any]) -> str:
    lines = [
        f"scores on {s['space']}: {s['count']} archs  Kendall {_fmt(s['kendall'])}  Spearman {_fmt(s['spearman'])}  "
        f"Pearson {_fmt(s['pearson'])}",
        f"  without digit 1 ({s['no1']['count']} archs): Kendall {_fmt(s['no1']['kendall'])}  "
        f"Spearman {_fmt(s['no1']['spearman'])}  Pearson {_fmt(s['no1']['pearson'])}",
        f"  top-10 overlap {s['top10_overlap']}/10  top-1% overlap {s['top1pct_overlap']}/{s['top1pct_k']}",
    ]
    for budget, p in s["picks"].items():
        if p is None:
            lines.append(f"  pick at {budget}: no scored arch is feasible")
        else:
            lines.append(f"  pick at {budget}: {p['key']}  acc {p['mean_acc']:.3f}  rank {p['rank_feasible']}/"
                         f"{p['feasible']} among feasible (optimum {p['optimum_acc']:.3f})")
    lines.append("  Kendall tau of each unit's width digit with the scores / with the truth:")
    lines += [f"    {u['unit']}: {_fmt(u['score_tau'])} / {_fmt(u['truth_tau'])}" for u in s["per_unit"]]
    return "\n".join(lines)
