"""Figures written next to search results (matplotlib, Agg backend, no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from widthsearch.formatting import format_count  # noqa: E402


def plot_trajectory(trajectory: Sequence[Mapping], found: Sequence[Mapping], path: str | Path) -> Path:
    """Held-out accuracy against FLOPs along the greedy path, found configs marked."""
    steps = [t for t in trajectory if t.get("score") is not None]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot([t["costs"]["flops"] / 1e6 for t in steps], [100 * t["score"] for t in steps], ".-", lw=1, ms=3,
            label="greedy path")
    for f in found:
        if f.get("score") is None:
            continue
        x, y = f["costs"]["flops"] / 1e6, 100 * f["score"]
        ax.plot([x], [y], "o", ms=8, label=f"{f['metric']} ≤ {format_count(f['target'])}")
        ax.annotate(f"{y:.1f}%", (x, y), textcoords="offset points", xytext=(5, -12), fontsize=8)
    ax.set_xlabel("MFLOPs (multiply-accumulates)")
    ax.set_ylabel("held-out accuracy of the supernet (%)")
    ax.invert_xaxis()
    return _finish(fig, ax, "AutoSlim greedy slimming", path)


def plot_widths(
    unit_names: Sequence[str],
    max_widths: Sequence[int],
    series: Sequence[tuple[str, Sequence[int], Sequence[int]]],
    path: str | Path,
) -> Path:
    """Per-unit channels of each found config beside the uniform-width net of the same FLOPs.

    ``series``: (label, searched widths, uniform widths) per found config.
    """
    fig, ax, xs = _unit_axes(unit_names)
    ax.plot(xs, max_widths, color="0.7", lw=1, ls=":", label="supernet max")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, searched, uniform) in enumerate(series):
        color = colors[i % len(colors)]
        ax.plot(xs, searched, "o-", color=color, ms=3, lw=1.2, label=f"searched {label}")
        ax.plot(xs, uniform, "--", color=color, lw=1, alpha=0.7, label=f"uniform {label}")
    return _save_unit_axes(fig, ax, "channels per unit: searched (solid) vs uniform width of the same FLOPs (dashed)",
                           path)


def plot_adjust_widths(
    unit_names: Sequence[str], original: Sequence[int], series: Sequence[tuple[str, Sequence[int]]], path: str | Path
) -> Path:
    """Network Adjustment: channels per unit in each round (and the final config) against the original."""
    fig, ax, xs = _unit_axes(unit_names)
    ax.plot(xs, original, "k--", lw=1.2, label="original")
    cmap = plt.get_cmap("viridis")
    for i, (label, widths) in enumerate(series):
        last = i == len(series) - 1
        ax.plot(xs, widths, "o-" if last else "-", color="C3" if last else cmap(i / max(1, len(series) - 1)),
                ms=3, lw=1.6 if last else 0.9, alpha=1.0 if last else 0.6, label=label)
    return _save_unit_axes(fig, ax, "Network Adjustment: channels per unit by round (same FLOPs as the original)", path)


def plot_adjust_stages(stages: Sequence[Mapping], path: str | Path) -> Path:
    """Network Adjustment: summed channels per stage (units of one output resolution), original
    beside final, each final bar labelled with its change in percent."""
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(stages)), 3.8))
    xs = range(len(stages))
    ax.bar([x - 0.2 for x in xs], [s["original"] for s in stages], 0.4, color="0.6", label="original")
    bars = ax.bar([x + 0.2 for x in xs], [s["final"] for s in stages], 0.4, color="C3", label="final")
    for bar, stage in zip(bars, stages):
        if stage["change_percent"] is not None:
            ax.annotate(f"{stage['change_percent']:+.1f}%", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        textcoords="offset points", xytext=(0, 2), ha="center", fontsize=8)
    ax.set_xticks(list(xs))
    counts = [f"{len(s['units'])} unit" + ("" if len(s["units"]) == 1 else "s") for s in stages]
    ax.set_xticklabels([f"{s['resolution']}\n{n}" for s, n in zip(stages, counts)], fontsize=8)
    ax.set_xlabel("stage: output resolution of the units")
    ax.set_ylabel("channels, summed over the stage's units")
    return _finish(fig, ax, "Network Adjustment: channels per stage (same FLOPs as the original)", path,
                   legend_size=7, grid_axis="y")


def plot_accuracy_vs_flops(
    series: Sequence[tuple[str, Sequence[tuple[float, Sequence[float]]]]], path: str | Path, *, title: str
) -> Path:
    """Retrained test accuracy against FLOPs, one line per arm through its per-target means.

    ``series``: ``(label, points)`` per arm, a point being ``(FLOPs, accuracy per seed)`` with
    accuracies as fractions. Each seed is a dot and a bar spans the seeds, so the reader sees
    how far apart the seeds are next to how far apart the arms are.
    """
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (label, points) in enumerate(series):
        color = f"C{i % 10}"
        ordered = sorted(points, key=lambda p: p[0])
        xs = [flops / 1e6 for flops, _ in ordered]
        means = [100 * sum(values) / len(values) for _, values in ordered]
        ax.plot(xs, means, "o-", color=color, ms=5, lw=1.4, label=label)
        for x, (_, values) in zip(xs, ordered):
            accuracies = [100 * v for v in values]
            ax.plot([x] * len(accuracies), accuracies, ".", color=color, ms=4, alpha=0.5)
            ax.vlines(x, min(accuracies), max(accuracies), color=color, lw=1, alpha=0.6)
    ax.set_xlabel("MFLOPs (multiply-accumulates)")
    ax.set_ylabel("test accuracy (%): mean line, seeds as dots")
    return _finish(fig, ax, title, path)


def _unit_axes(unit_names: Sequence[str]):
    """A figure wide enough for one tick per unit: ``(fig, ax, x positions)``."""
    fig, ax = plt.subplots(figsize=(max(7, 0.45 * len(unit_names)), 4.2))
    xs = range(len(unit_names))
    ax.set_xticks(list(xs))
    ax.set_xticklabels(unit_names, rotation=70, ha="right", fontsize=7)
    return fig, ax, xs


def _save_unit_axes(fig, ax, title: str, path: str | Path) -> Path:
    ax.set_ylabel("channels")
    return _finish(fig, ax, title, path, legend_size=7)


def _finish(fig, ax, title: str, path: str | Path, *, legend_size: int = 8, grid_axis: str = "both") -> Path:
    """Title, grid and legend as every figure here has them; saved to ``path`` and closed."""
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, axis=grid_axis)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
