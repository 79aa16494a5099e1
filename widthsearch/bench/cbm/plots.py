"""Figures of a CBM space: all archs with the Pareto front and the searches' picks, and a proxy's
scores against the true accuracy. Drawn with matplotlib's Agg canvas (no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np

from widthsearch.bench.cbm.stats import correlations

if TYPE_CHECKING:
    from widthsearch.bench.cbm.oracle import CBMBench

__all__ = ["plot_scores", "plot_space"]


def plot_space(bench: "CBMBench", rows: Sequence[Mapping[str, Any]], path: Any) -> None:
    """Accuracy vs MFLOPs of all archs, the Pareto front, the budgets and each algorithm's picks."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = bench.table
    mf = t.flops / 1e6
    fig = Figure(figsize=(8, 5.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(mf, t.mean, s=2, c="0.7", alpha=0.5, linewidths=0, label=f"all {len(t.keys)} archs", rasterized=True)
    order = np.lexsort((-t.mean, t.flops))
    best = np.maximum.accumulate(t.mean[order])
    front = np.concatenate([[True], best[1:] > best[:-1]])
    fx, fy = mf[order][front], best[front]
    ax.step(np.append(fx, mf.max()), np.append(fy, fy[-1]), where="post", color="k", lw=1, label="Pareto front")
    style = {"greedy": ("s", "tab:red"), "evolution": ("^", "tab:blue"), "random": ("o", "tab:green")}
    labelled = set()
    for frac in sorted({r["budget"] for r in rows}):
        ax.axvline(frac * t.max_flops / 1e6, color="0.4", ls="--", lw=0.8)
        ax.text(frac * t.max_flops / 1e6, 0.01, f" {frac:.0%}", color="0.3", fontsize=8, va="bottom",
                transform=ax.get_xaxis_transform())
    for r in rows:
        marker, color = style.get(r["algo"], ("x", "k"))
        label = None if r["algo"] in labelled else r["algo"]
        labelled.add(r["algo"])
        ax.scatter(
            np.array(r["flops"]) / 1e6, r["accs"], marker=marker, s=36, facecolors="none",
            edgecolors=color, linewidths=1.2, label=label, zorder=3,
        )
    ax.set_xlabel("MFLOPs (multiply-accumulates, 32x32 input)")
    ax.set_ylabel("CIFAR-10 top-1, mean of 3 runs (%)")
    ax.set_title(f"Channel-Bench-Macro {bench.name}: picks under 25/50/75% of max FLOPs")
    lo = float(np.percentile(t.mean, 1))
    ax.set_ylim(lo, t.mean.max() + 0.1)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(str(path))


def plot_scores(bench: "CBMBench", scores: Mapping[str, float], path: Any, label: str = "score") -> Path:
    """Two panels over the scored archs: the proxy's score vs the true accuracy, and FLOPs vs the
    true accuracy (the bar the proxy must clear), each titled with its Kendall tau; colour = MFLOPs."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = list(scores)
    rows = np.array([bench.table.index[k] for k in keys])
    s = np.array([float(scores[k]) for k in keys])
    truth, mflops = bench.table.mean[rows], bench.table.flops[rows] / 1e6
    tau = correlations(s, truth)["kendall"]
    tau_flops = correlations(mflops, truth)["kendall"]
    fig = Figure(figsize=(10, 4.3), dpi=120)
    FigureCanvasAgg(fig)
    panels = ((s, label, tau), (mflops, "MFLOPs", tau_flops))
    for i, (x, xlabel, t) in enumerate(panels, 1):
        ax = fig.add_subplot(1, 2, i)
        dots = ax.scatter(x, truth, c=mflops, s=14, cmap="viridis", linewidths=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("CIFAR-10 top-1, table mean (%)")
        ax.set_title(f"{xlabel}: Kendall tau {_fmt_tau(t)} ({len(keys)} archs)", fontsize=10)
        ax.grid(alpha=0.3)
    fig.subplots_adjust(wspace=0.3)
    fig.colorbar(dots, ax=fig.axes, label="MFLOPs")
    fig.suptitle(f"Channel-Bench-Macro {bench.name}: a proxy's ranking vs the truth", fontsize=11)
    fig.savefig(str(path))
    return Path(path)


def _fmt_tau(tau: Optional[float]) -> str:
    return "n/a" if tau is None or not np.isfinite(tau) else f"{tau:.3f}"
