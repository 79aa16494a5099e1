"""Latency lookup tables: predict a config's latency from per-layer measurements.

Measuring every candidate of a search costs a forward pass (tens of runs of it, for a stable
median) per config. A table measures each *block* of the network once at every width it can take,
and predicts a config's latency as the sum of its blocks' entries plus a constant for the rest.

* A block is a conv or linear layer with the batch norm and the pointwise activation that follow
  it alone in the graph (``conv -> bn -> relu``), or a batch norm with no conv before it. Its
  input and output widths are sums of unit widths (a concat), each a unit's width, the widest of a
  zero-padded sum's members (residual policy ``pad``), or a constant (fixed units, the image).
  A block is measured alone, on a random input of its own input resolution, at every pair
  (input width, output width) that the space's choices give; a block whose input and output are
  the same channels (depthwise conv, batch norm) only along the diagonal. ``grid`` keeps at most
  that many widths per side, evenly spread over the possible ones; other widths are then
  interpolated (bilinearly on two sides, linearly on one).
* What the blocks leave out is calibrated on ``references`` whole-network measurements (uniform
  configs from the smallest to the largest, then seeded configs spread over the same range): the
  prediction is ``offset + scale * sum of blocks``, the line through the references that is least
  wrong *relative to* each measurement (a constant ``offset`` alone when there are fewer than 3).
  Relative, because a search compares a 20 ms net with a 250 ms one: fitted in milliseconds, the
  largest references set the line and the smallest nets came out 1.6x too slow (resnet50,
  docs/benchmarks.md). The offset holds what does not grow with the
  widths (residual adds, pooling, per-op overhead); the scale what does: in a network every
  block's output is fresh memory that the allocator often has to page in, while a block measured
  alone reuses the buffer it just freed, so on glibc a wide network runs slower than the sum of
  its blocks alone (docs/deploy.md).
* ``passes`` > 1 measures every entry and reference that many times, each pass over the whole
  table in alternating order, and keeps the median or, with ``statistic="min"``, the fastest: on
  a shared machine the speed drifts over minutes, and a single pass lets a slow minute inflate one
  stage's blocks all together. Other processes only ever slow a measurement down, so the fastest
  of a few passes repeats far better there than the median (docs/benchmarks.md).

The table is plain JSON: the space spec it was measured for, the runtime, threads and batch size,
each block's width expressions, grid and milliseconds. :class:`LatencyTable` predicts from that
data alone (no model, no torch), in tens of microseconds; :func:`check_table` refuses a table of
another space, runtime, thread count or batch size with one line. Building is resumable: the table
is written atomically every few seconds with the measurements made so far.
"""
from __future__ import annotations

import bisect
import copy
import datetime
import json
import math
import platform
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from widthsearch.errors import ConfigError, UserError
from widthsearch.io import write_json_atomic
from widthsearch.space.spec import SpaceSpec

TABLE_FORMAT = "widthsearch.latency-table/1"
#: an expression with more possible widths than this (a concat of many units) is measured on an even grid
MAX_EXACT_WIDTHS = 256
#: fields of the table that must match to continue building it (``--resume``)
SETTINGS = ("space", "runtime", "threads", "batch_size", "runs", "warmup", "grid", "references", "clock", "passes",
            "statistic")
#: the value of a setting that tables written before it existed had
SETTING_DEFAULTS = {"passes": 1, "statistic": "median"}
CLOCKS = ("wall", "cpu")
#: how the passes' measurements of one entry are combined
STATISTICS = {"median": statistics.median, "min": min}

Measure = Callable[[nn.Module, torch.Tensor], float]
#: a width expression: terms ``{"units": [names], "repeat": r}`` (the widest of the units, times r)
#: or ``{"const": n}``; the width is the sum of the terms
Expr = list[dict[str, Any]]

_ACT_MODULES = (
    nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.GELU,
    nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Softplus,
)
_ACT_FUNCTIONS = {
    F.relu, torch.relu, F.relu_, torch.relu_, F.relu6, F.hardtanh, F.silu, torch.sigmoid, F.sigmoid, torch.tanh,
    F.tanh, F.gelu, F.hardswish, F.hardsigmoid, F.leaky_relu, F.elu, F.selu, F.mish, F.softplus, torch.clamp,
    torch.clip,
}
_ACT_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clip", "clip_",
                "hardtanh_"}


# ---- blocks of a network -----------------------------------------------------------------------------
class _Apply(nn.Module):
    """An activation that the model calls as a function or a tensor method, as a module."""

    def __init__(self, node: torch.fx.Node) -> None:
        super().__init__()
        self.op, self.target = node.op, node.target
        self.args_rest, self.kwargs = tuple(node.args[1:]), dict(node.kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.op == "call_method":
            return getattr(x, self.target)(*self.args_rest, **self.kwargs)
        return self.target(x, *self.args_rest, **self.kwargs)


@dataclass
class BlockPlan:
    """One measured block of a live network: its layers and what it is measured at."""

    name: str
    layers: list[str]  # module names: conv/linear, then bn and activation when fused
    kind: str  # the first layer's kind in the analysis: conv, depthwise, fixed, linear, bn
    modules: list[nn.Module] = field(repr=False)  # the live modules, templates of the measured copies
    in_expr: Expr
    out_expr: Expr
    input_shape: list[int]  # per sample, at full width
    axes: list[Expr]  # the expressions the latency varies with (0, 1 or 2 of them)
    grid: list[list[int]]  # measured widths per axis

    def points(self) -> list[tuple[int, ...]]:
        """Every grid point (one width per axis), in row-major order of :attr:`ms`."""
        out: list[tuple[int, ...]] = [()]
        for widths in self.grid:
            out = [p + (w,) for p in out for w in widths]
        return out

    def widths_at(self, point: Sequence[int]) -> tuple[int, int]:
        """(input width, output width) of the block at a grid point."""
        at = dict(zip(map(_expr_key, self.axes), point))
        return _width_of(self.in_expr, at), _width_of(self.out_expr, at)


def _expr_key(expr: Expr) -> str:
    return json.dumps(expr, sort_keys=True)


def _width_of(expr: Expr, at: Mapping[str, int]) -> int:
    """The width of ``expr`` at a grid point: a constant, or the axis value it is."""
    key = _expr_key(expr)
    if key in at:
        return at[key]
    if all("const" in t for t in expr):
        return sum(t["const"] for t in expr)
    raise AssertionError(f"expression {key} is neither an axis nor constant")


def _expr(space: Any, desc: Any) -> Expr:
    """The width expression of a channel descriptor (or a constant count) in ``space``."""
    if isinstance(desc, int):
        return [{"const": desc}]
    analysis = space.analysis
    names = {space.root_of(u.name): u.name for u in space.units}
    terms: Expr = []
    for seg in desc:
        root = seg.unit
        members = analysis.joins.get(root)
        if members is not None and all(m in names for m in members):
            terms.append({"units": sorted(names[m] for m in members), "repeat": seg.repeat})
        elif root in names:
            terms.append({"units": [names[root]], "repeat": seg.repeat})
        else:  # a fixed source, or a join with a fixed member: always at full width
            terms.append({"const": analysis.unit_length[root] * seg.repeat})
    consts = sum(t["const"] for t in terms if "const" in t)
    terms = [t for t in terms if "const" not in t]
    return terms + ([{"const": consts}] if consts or not terms else [])


def _expr_values(space: Any, expr: Expr) -> list[int]:
    """Every width ``expr`` takes over the space's choices, sorted (a range when too many)."""
    values = {0}
    for term in expr:
        if "const" in term:
            options = {term["const"]}
        else:  # the widest of a join's members can be any member's choice
            options = {c * term["repeat"] for name in term["units"] for c in space.unit(name).choices}
        values = {v + o for v in values for o in options}
        if len(values) > MAX_EXACT_WIDTHS:
            low = sum(_extreme(space, t, min) for t in expr)
            high = sum(_extreme(space, t, max) for t in expr)
            return sorted({round(low + (high - low) * i / (MAX_EXACT_WIDTHS - 1)) for i in range(MAX_EXACT_WIDTHS)})
    return sorted(values)


def _extreme(space: Any, term: Mapping[str, Any], pick: Callable) -> int:
    if "const" in term:
        return term["const"]
    return pick(pick(space.unit(n).choices) for n in term["units"]) * term["repeat"]


def coarsen(values: Sequence[int], grid: int | None) -> list[int]:
    """At most ``grid`` of ``values`` (sorted), evenly spread, always keeping the first and last."""
    values = sorted(values)
    if grid is None or len(values) <= grid:
        return list(values)
    if grid < 2:
        raise UserError(f"--grid must be at least 2 (the smallest and largest width), got {grid}")
    picks = sorted({round(i * (len(values) - 1) / (grid - 1)) for i in range(grid)})
    return [values[i] for i in picks]


def _single_user(node: torch.fx.Node) -> torch.fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _is_activation(node: torch.fx.Node | None, modules: Mapping[str, nn.Module]) -> bool:
    if node is None:
        return False
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), _ACT_MODULES)
    if node.op == "call_function":
        return node.target in _ACT_FUNCTIONS
    return node.op == "call_method" and node.target in _ACT_METHODS


def plan_blocks(net: Any, grid: int | None = None) -> list[BlockPlan]:
    """The blocks of a supernet's model in graph order, each with its measurement grid."""
    space = net.space
    analysis = space.analysis
    graph = analysis.graph
    modules = dict(graph.named_modules())
    taken: set[torch.fx.Node] = set()
    blocks = []
    for node in graph.graph.nodes:
        if node.op != "call_module" or str(node.target) not in analysis.layers or node in taken:
            continue
        rec = analysis.layers[str(node.target)]
        chain = [node]
        if rec.kind != "bn":
            nxt = _single_user(node)
            if nxt is not None and nxt.op == "call_module" and str(nxt.target) in analysis.layers \
                    and analysis.layers[str(nxt.target)].kind == "bn":
                chain.append(nxt)
        act = _single_user(chain[-1])
        if _is_activation(act, modules) and act.args and act.args[0] is chain[-1]:
            chain.append(act)
        taken.update(chain)
        blocks.append(_plan(space, rec, chain, modules, grid))
    return blocks


def _plan(space: Any, rec: Any, chain: list[torch.fx.Node], modules: Mapping[str, nn.Module],
          grid: int | None) -> BlockPlan:
    first = chain[0]
    shape = first.args[0].meta["tensor_meta"].shape
    in_expr = _expr(space, rec.in_desc)
    out_expr = in_expr if rec.kind in ("bn", "depthwise") else _expr(space, rec.out_desc)
    if rec.kind == "fixed":  # grouped convs and linears over other dims keep all their channels
        module = rec.module
        in_expr = [{"const": int(getattr(module, "in_channels", getattr(module, "in_features", 0)))}]
        out_expr = [{"const": int(getattr(module, "out_channels", getattr(module, "out_features", 0)))}]
    axes = []
    for expr in (in_expr, out_expr):
        if not all("const" in t for t in expr) and _expr_key(expr) not in map(_expr_key, axes):
            axes.append(expr)
    layers = [str(n.target) if n.op == "call_module" else f"{n.op}:{getattr(n.target, '__name__', n.target)}"
              for n in chain]
    live = [modules[str(n.target)] if n.op == "call_module" else _Apply(n) for n in chain]
    return BlockPlan(
        name=first.name, layers=layers, kind=rec.kind, modules=live, in_expr=in_expr, out_expr=out_expr,
        input_shape=[int(s) for s in shape[1:]], axes=axes,
        grid=[coarsen(_expr_values(space, e), grid) for e in axes],
    )


def block_module(plan: BlockPlan, cin: int, cout: int, batch_size: int = 1) -> tuple[nn.Module, torch.Tensor]:
    """A fresh copy of the block at ``cin`` -> ``cout`` channels (eval mode) and a random input."""
    layers = []
    for module in plan.modules:
        if isinstance(module, nn.Conv2d) and plan.kind != "fixed":
            groups = cin if plan.kind == "depthwise" else module.groups
            layers.append(nn.Conv2d(cin, cout, module.kernel_size, module.stride, module.padding, module.dilation,
                                    groups, module.bias is not None, module.padding_mode))
        elif isinstance(module, nn.Linear) and plan.kind != "fixed":
            layers.append(nn.Linear(cin, cout, module.bias is not None))
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            layers.append(type(module)(cout, module.eps, module.momentum, module.affine, module.track_running_stats))
        else:  # activations and fixed layers: width-independent, copied as they are
            layers.append(copy.deepcopy(module))
    shape = list(plan.input_shape)
    if plan.kind != "fixed":  # a fixed layer's input keeps its shape (a linear over other dims: not channels)
        shape[0] = cin
    return nn.Sequential(*layers).eval(), torch.randn(batch_size, *shape)


# ---- measurement -----------------------------------------------------------------------------------
def runtime_measure(runtime: str, runs: int, warmup: int, threads: int, clock: str = "wall") -> Measure:
    """Median ms of ``runs`` forwards after ``warmup``: torch eager (threads set by the caller) or
    onnxruntime on the module's ONNX export with ``threads`` intra-op threads."""
    from widthsearch.deploy import measure_runtime_latency, require

    if runtime == "onnxruntime":
        require("onnx", "--runtime onnxruntime")
        require("onnxruntime", "--runtime onnxruntime")
    elif runtime != "torch":
        raise UserError(f"unknown runtime {runtime!r}; choose one of: torch, onnxruntime")

    def measure(module: nn.Module, x: torch.Tensor) -> float:
        return measure_runtime_latency(module, x, runtime=runtime, runs=runs, warmup=warmup, threads=threads,
                                       clock=clock).median_ms

    return measure


#: the first references are uniform configs this far apart in width ratio; the rest are random
_UNIFORM_REFERENCES = 5


def spread_config(space: Any, rng: random.Random) -> dict[str, int]:
    """A config whose FLOPs lie anywhere between the smallest and the largest net.

    Independently random widths average out: their FLOPs (and latencies) crowd around the middle.
    Here one global fraction f, uniform in [0, 1], sets every unit's choice index to
    f * (choices - 1), moved by a Gaussian of one choice's width, which keeps the per-unit variety
    a search meets."""
    f = rng.random()
    config = {}
    for unit in space.units:
        top = len(unit.choices) - 1
        index = min(top, max(0, round(f * top + rng.gauss(0.0, 1.0))))
        config[unit.name] = unit.choices[index]
    return config


def reference_configs(space: Any, count: int, seed: int = 0) -> list[dict[str, int]]:
    """``count`` configs that calibrate offset and scale: up to 5 uniform ones from the smallest to
    the largest, then seeded ones spread over the same range (:func:`spread_config`): random
    widths would all sit near the middle and leave the line's ends to the 5 uniform ones."""
    if count < 1:
        raise UserError(f"--references must be at least 1, got {count}")
    if count == 1:
        return [space.uniform_config(0.5)]
    uniform = min(count, _UNIFORM_REFERENCES)
    configs = [space.min_config()]
    configs += [space.uniform_config(i / (uniform - 1)) for i in range(1, uniform - 1)]
    configs.append(space.max_config())
    rng = random.Random(seed)
    return configs + [spread_config(space, rng) for _ in range(count - uniform)]


# ---- building a table --------------------------------------------------------------------------------
def new_table(net: Any, spec: Any, *, runtime: str, threads: int, batch_size: int, runs: int, warmup: int,
              grid: int | None, references: int, clock: str = "wall", passes: int = 1,
              statistic: str = "median") -> dict[str, Any]:
    """An empty table (nothing measured yet) for the supernet ``net`` of ``spec``."""
    if batch_size < 1 or runs < 1 or warmup < 0 or threads < 1 or passes < 1:
        raise UserError("--batch-size, --runs, --threads and --passes must be at least 1 and --warmup at least 0")
    if statistic not in STATISTICS:
        raise UserError(f"unknown statistic {statistic!r}; choose one of: {', '.join(STATISTICS)}")
    check_clock(clock, threads)
    blocks = [{
        "name": b.name, "layers": b.layers, "kind": b.kind, "input": b.input_shape,
        "in": b.in_expr, "out": b.out_expr, "axes": b.axes, "grid": b.grid,
        "ms": [None] * len(b.points()), "samples": [[] for _ in b.points()],
    } for b in plan_blocks(net, grid)]
    refs = [{"config": c, "measured_ms": None, "sum_ms": None, "samples": []}
            for c in reference_configs(net.space, references)]
    return {
        "format": TABLE_FORMAT, "space": spec.to_dict(), "runtime": runtime, "threads": int(threads),
        "batch_size": int(batch_size), "runs": int(runs), "warmup": int(warmup), "grid": grid,
        "references": int(references), "clock": clock, "passes": int(passes), "statistic": statistic,
        "units": [u.name for u in net.space.units],
        "environment": environment(runtime), "blocks": blocks, "reference_configs": refs,
        "offset_ms": None, "scale": None, "complete": False, "measure_seconds": 0.0,
    }


def environment(runtime: str) -> dict[str, Any]:
    """Where the table was measured (informative; only the settings are checked)."""
    env = {"torch": torch.__version__, "cpu": cpu_model(), "python": platform.python_version(),
           "created": datetime.datetime.now().isoformat(timespec="seconds")}
    if runtime == "onnxruntime":
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
    return env


def cpu_model() -> str:
    """The CPU's model name (``lscpu``'s "Model name") or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _upgrade(doc: dict[str, Any]) -> dict[str, Any]:
    """A table as this version writes it: one written before ``passes`` and ``statistic`` existed
    gets their values of then, and every measurement made becomes its entry's one sample."""
    for key, value in SETTING_DEFAULTS.items():
        doc.setdefault(key, value)
    for block in doc.get("blocks", []):
        block.setdefault("samples", [[] if v is None else [v] for v in block["ms"]])
    for ref in doc.get("reference_configs", []):
        ref.setdefault("samples", [] if ref["measured_ms"] is None else [ref["measured_ms"]])
    return doc


def pending(table: Mapping[str, Any]) -> int:
    """Measurements still to make (grid points and reference configs, over all passes)."""
    made = [len(s) for b in table["blocks"] for s in b["samples"]] + [len(r["samples"]) for r in table["reference_configs"]]
    return sum(max(0, table["passes"] - n) for n in made)


def fill_table(table: dict[str, Any], net: Any, measure: Measure, *, save: Callable[[dict], Any] | None = None,
               save_every: float = 10.0, progress: bool = False) -> dict[str, Any]:
    """Measure what ``table`` still lacks, in place; ``save(table)`` every ``save_every`` seconds and
    at the end. The offset is computed once every block and reference is measured."""
    plans = {b.name: b for b in plan_blocks(net, table["grid"])}
    bar = None
    if progress:
        from widthsearch.progress import Progress

        total = (sum(len(b["ms"]) for b in table["blocks"]) + len(table["reference_configs"])) * table["passes"]
        bar = Progress(total, "latency table", unit="measurement", initial=total - pending(table))
    started = last_save = time.perf_counter()
    spent = float(table.get("measure_seconds") or 0.0)

    def checkpoint(force: bool = False) -> None:
        nonlocal last_save
        now = time.perf_counter()
        if save is not None and (force or now - last_save >= save_every):
            table["measure_seconds"] = spent + now - started
            save(table)
            last_save = now

    passes, combine = table["passes"], STATISTICS[table["statistic"]]
    example = SpaceSpec.from_dict(table["space"]).example_input(table["batch_size"])

    def measure_point(entry: dict[str, Any], i: int) -> None:
        plan = plans[entry["name"]]
        module, x = block_module(plan, *plan.widths_at(plan.points()[i]), batch_size=table["batch_size"])
        samples = entry["samples"][i]
        samples.append(float(measure(module, x)))
        if len(samples) == passes:
            entry["ms"][i] = combine(samples)

    def measure_reference(ref: dict[str, Any]) -> None:
        static = net.export(dict(ref["config"])).eval()
        samples = ref["samples"]
        samples.append(float(measure(static, torch.randn_like(example))))
        if len(samples) == passes:
            ref["measured_ms"] = combine(samples)

    # every pass measures the blocks' points, then the references; odd passes run the same sequence
    # backwards, so that a drift in speed does not hit the same entries each time
    sequence = ([(e["samples"][i], measure_point, (e, i), e["name"])
                 for e in table["blocks"] for i in range(len(e["ms"]))]
                + [(r["samples"], measure_reference, (r,), "whole network") for r in table["reference_configs"]])
    try:
        for this_pass in range(passes):
            for samples, measure_one, where, label in (sequence if this_pass % 2 == 0 else sequence[::-1]):
                if len(samples) > this_pass:
                    continue
                measure_one(*where)
                if bar is not None:
                    bar.update(1, block=label)
                checkpoint()
    except BaseException:  # interrupted (Ctrl-C, a failed measurement): keep what was measured
        checkpoint(force=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    finish(table)
    checkpoint(force=True)
    return table


def check_clock(clock: str, threads: int) -> None:
    if clock not in CLOCKS:
        raise UserError(f"unknown clock {clock!r}; choose one of: {', '.join(CLOCKS)}")
    if clock == "cpu" and threads != 1:
        raise UserError("--clock cpu times the calling thread only: use it with --threads 1")


def finish(table: dict[str, Any]) -> None:
    """Offset and scale from the reference configs once everything is measured."""
    if pending(table):
        return
    predictor = LatencyTable(table, offset=0.0, scale=1.0)
    refs = table["reference_configs"]
    for ref in refs:
        ref["sum_ms"] = predictor.predict(ref["config"])
    table["offset_ms"], table["scale"] = calibrate([r["sum_ms"] for r in refs], [r["measured_ms"] for r in refs])
    table["complete"] = True


def calibrate(sums: Sequence[float], measured: Sequence[float]) -> tuple[float, float]:
    """(offset, scale) of the line ``measured = offset + scale * sum`` that minimises the squared
    *relative* errors, sum of ((offset + scale * s - m) / m)^2: least squares weighted by 1/m^2.
    With fewer than 3 references, sums that do not vary, or a line that does not rise (noise
    swamping tiny networks: a wider config cannot be predicted faster), the scale stays 1 and the
    offset is the weighted mean residual."""
    weights = [1.0 / (m * m) if m > 0 else 0.0 for m in measured]
    total = math.fsum(weights)
    if total <= 0:
        raise UserError("every reference measured 0 ms or less: the clock cannot time this model")
    mean_s = math.fsum(w * x for w, x in zip(weights, sums)) / total
    mean_m = math.fsum(w * y for w, y in zip(weights, measured)) / total
    spread = math.fsum(w * (x - mean_s) ** 2 for w, x in zip(weights, sums))
    if len(sums) < 3 or spread <= 1e-12 * max(1.0, mean_s ** 2) * total:
        return mean_m - mean_s, 1.0
    scale = math.fsum(w * (x - mean_s) * (y - mean_m) for w, x, y in zip(weights, sums, measured)) / spread
    if not scale > 0:
        return mean_m - mean_s, 1.0
    return mean_m - scale * mean_s, scale


def check_resumable(saved: Mapping[str, Any], fresh: Mapping[str, Any], path: Path) -> None:
    """A partial table continues only with the same settings and the same blocks."""
    if saved.get("format") != TABLE_FORMAT:
        raise UserError(f"{path} is not a widthsearch latency table; use another --out")
    for key in SETTINGS:
        if saved.get(key) != fresh.get(key):
            raise UserError(f"{path} was started with {key} {_short(saved.get(key))}, not {_short(fresh.get(key))}; "
                            "resume with the same settings or use another --out")
    shape = [(b["name"], b["grid"]) for b in saved["blocks"]]
    if shape != [(b["name"], b["grid"]) for b in fresh["blocks"]]:
        raise UserError(f"{path} holds other blocks than this model's (was the model code changed?); use another --out")


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def build_table(net: Any, spec: Any, out: str | Path, *, runtime: str = "torch", threads: int = 1,
                batch_size: int = 1, runs: int = 10, warmup: int = 3, grid: int | None = None, references: int = 20,
                clock: str = "wall", passes: int = 1, statistic: str = "median", resume: bool = False,
                force: bool = False, progress: bool = False, measure: Measure | None = None) -> dict[str, Any]:
    """Measure the latency table of ``net`` (the supernet of ``spec``) and write it to ``out``.

    ``threads`` is fixed for the whole measurement (and restored after); ``passes`` measures
    everything that many times and keeps the ``statistic`` (median or min); ``resume`` continues a partial table at
    ``out``; ``measure`` replaces the runtime's timer (tests).
    """
    out = Path(out)
    fresh = new_table(net, spec, runtime=runtime, threads=threads, batch_size=batch_size, runs=runs,
                      warmup=warmup, grid=grid, references=references, clock=clock, passes=passes,
                      statistic=statistic)
    table = fresh
    if out.exists():
        if resume:
            saved = read_table(out)
            check_resumable(saved, fresh, out)
            table = saved
        elif not force:
            raise UserError(f"{out} already exists (use --resume to continue a partial table or --force to overwrite)")
    if measure is None:
        measure = runtime_measure(runtime, runs, warmup, threads, clock)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fill_table(table, net, measure, save=lambda t: write_json_atomic(out, t), progress=progress)
    finally:
        torch.set_num_threads(previous)


# ---- reading and predicting --------------------------------------------------------------------------
def read_table(path: str | Path) -> dict[str, Any]:
    """The JSON of a latency table file; one-line errors for a missing or broken file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"latency table {path} does not exist")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"latency table {path} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != TABLE_FORMAT:
        raise UserError(f"{path} is not a widthsearch latency table (format {TABLE_FORMAT})")
    return _upgrade(doc)


def load_table(path: str | Path) -> "LatencyTable":
    """A complete latency table ready to predict; a partial one is refused."""
    doc = read_table(path)
    if not doc.get("complete"):
        raise UserError(f"latency table {path} is incomplete ({pending(doc)} measurements missing); "
                        "finish it with `widthsearch latency-table ... --resume`")
    return LatencyTable(doc, source=str(path))


class _Block:
    """A block compiled for prediction: axis expressions and its grid as tuples."""

    __slots__ = ("axes", "grid", "index", "ms")

    def __init__(self, entry: Mapping[str, Any]) -> None:
        self.axes = [(tuple((tuple(t["units"]), int(t["repeat"])) for t in e if "units" in t),
                      sum(int(t["const"]) for t in e if "const" in t)) for e in entry["axes"]]
        self.grid = [tuple(int(w) for w in g) for g in entry["grid"]]
        self.index = [{w: i for i, w in enumerate(g)} for g in self.grid]
        self.ms = [float("nan") if v is None else float(v) for v in entry["ms"]]

    def predict(self, config: Mapping[str, int]) -> float:
        if not self.axes:
            return self.ms[0]
        if len(self.axes) == 1:
            return _interpolate_1d(self.grid[0], self.index[0], self.ms, _eval(self.axes[0], config), 0, 1)
        a, b = _eval(self.axes[0], config), _eval(self.axes[1], config)
        grid_a, grid_b = self.grid
        stride = len(grid_b)
        ia = self.index[0].get(a)
        if ia is not None:  # an exact row: interpolate along the other side only
            return _interpolate_1d(grid_b, self.index[1], self.ms, b, ia * stride, 1)
        lo, t = _bracket(grid_a, a)
        row_lo = _interpolate_1d(grid_b, self.index[1], self.ms, b, lo * stride, 1)
        row_hi = _interpolate_1d(grid_b, self.index[1], self.ms, b, (lo + 1) * stride, 1)
        return row_lo + t * (row_hi - row_lo)


def _eval(axis: tuple[tuple[tuple[tuple[str, ...], int], ...], int], config: Mapping[str, int]) -> int:
    terms, const = axis
    total = const
    for units, repeat in terms:
        total += (config[units[0]] if len(units) == 1 else max(config[u] for u in units)) * repeat
    return total


def _bracket(grid: Sequence[int], value: float) -> tuple[int, float]:
    """(i, t): ``value`` lies at ``grid[i] + t * (grid[i+1] - grid[i])``, clamped to the grid's ends."""
    if len(grid) == 1 or value <= grid[0]:
        return 0, 0.0
    if value >= grid[-1]:
        return len(grid) - 2, 1.0
    i = bisect.bisect_right(grid, value) - 1
    return i, (value - grid[i]) / (grid[i + 1] - grid[i])


def _interpolate_1d(grid: Sequence[int], index: Mapping[int, int], ms: Sequence[float], value: int,
                    start: int, step: int) -> float:
    i = index.get(value)
    if i is not None:
        return ms[start + i * step]
    if len(grid) == 1:
        return ms[start]
    i, t = _bracket(grid, value)
    lo, hi = ms[start + i * step], ms[start + (i + 1) * step]
    return lo + t * (hi - lo)


class LatencyTable:
    """Predicts the latency (ms) of a config from a table's data: a pure function of (table, config).

    ``predict(config)`` is ``offset + scale * (sum over blocks of each block's entry at the
    config's widths)``, entries interpolated between measured widths. Widths outside a block's
    measured range are clamped to it. Zero-padded sums take the widest member, which is exact for
    left-aligned (and all-right-aligned) subnets.
    """

    def __init__(self, doc: Mapping[str, Any], source: str | None = None, offset: float | None = None,
                 scale: float | None = None) -> None:
        self.doc = doc
        self.source = source
        self.units = tuple(doc["units"])
        self.blocks = [_Block(b) for b in doc["blocks"]]
        self.offset = float(doc["offset_ms"] if offset is None else offset)
        self.scale = float(doc.get("scale", 1.0) if scale is None else scale)

    @property
    def runtime(self) -> str:
        return str(self.doc["runtime"])

    @property
    def threads(self) -> int:
        return int(self.doc["threads"])

    @property
    def batch_size(self) -> int:
        return int(self.doc["batch_size"])

    def block_ms(self, config: Mapping[str, int]) -> list[float]:
        """Each block's predicted ms at ``config`` (in the table's block order)."""
        self._check_units(config)
        return [b.predict(config) for b in self.blocks]

    def predict(self, config: Mapping[str, int]) -> float:
        """Predicted latency (ms) of ``config``: offset plus scale times the blocks' sum."""
        self._check_units(config)
        return self.offset + self.scale * math.fsum(b.predict(config) for b in self.blocks)

    __call__ = predict

    def _check_units(self, config: Mapping[str, int]) -> None:
        if len(config) != len(self.units) or any(u not in config for u in self.units):
            missing = [u for u in self.units if u not in config]
            extra = [u for u in config if u not in self.units]
            what = f"unit {missing[0]!r} missing" if missing else f"unknown unit {extra[0]!r}"
            raise ConfigError(f"config does not fit the latency table: {what}")


def check_table(table: LatencyTable, spec: Mapping[str, Any] | Any, *, runtime: str | None = None,
                threads: int | None = None, batch_size: int | None = None, clock: str | None = None) -> None:
    """Refuse (one line) a table measured for another space, runtime, thread count or batch size."""
    mine = _resolved(SpaceSpec.from_dict(table.doc["space"]).to_dict())
    theirs = _resolved(SpaceSpec.from_dict(spec if isinstance(spec, Mapping) else spec.to_dict()).to_dict())
    where = table.source or "the latency table"
    for key in mine:
        if key == "physical" and (mine[key] is None or theirs[key] is None):
            continue  # an older spec without recorded widths: the units are compared below
        if mine[key] != theirs[key]:
            raise UserError(f"{where} was measured for another space: {key} {_short(mine[key])}, "
                            f"here {_short(theirs[key])} (build a table for this space with `widthsearch latency-table`)")
    for key, wanted in (("runtime", runtime), ("threads", threads), ("batch_size", batch_size), ("clock", clock)):
        if wanted is not None and table.doc.get(key, "wall") != wanted:
            raise UserError(f"{where} was measured with {key} {table.doc[key]}, not {wanted}")


def _resolved(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec dict with the model's defaults written out (None classes/input mean the model's own)."""
    from widthsearch.models import model_info

    info = model_info(spec["model"])
    if spec.get("num_classes") is None:
        spec["num_classes"] = info["num_classes"]
    if spec.get("input_shape") is None:
        spec["input_shape"] = list(info["input_shape"])
    return spec


def summary(table: Mapping[str, Any]) -> dict[str, Any]:
    """What the CLI prints about a table."""
    refs = table["reference_configs"]
    return {
        "model": table["space"]["model"], "runtime": table["runtime"], "threads": table["threads"],
        "batch_size": table["batch_size"], "grid": table["grid"], "blocks": len(table["blocks"]),
        "measurements": sum(len(b["ms"]) for b in table["blocks"]), "references": len(refs),
        "clock": table["clock"], "passes": table["passes"], "statistic": table["statistic"],
        "offset_ms": table["offset_ms"],
        "scale": table["scale"], "complete": table["complete"],
        "measure_seconds": round(float(table.get("measure_seconds") or 0.0), 1),
        "reference_ms": [{"measured_ms": r["measured_ms"], "predicted_ms": None if not table["complete"] else
                          table["offset_ms"] + table["scale"] * r["sum_ms"]} for r in refs],
    }


def fingerprint(table: LatencyTable) -> dict[str, Any]:
    """What a search records about the table it used (a resume with another one is refused)."""
    import hashlib

    digest = hashlib.sha256(json.dumps(table.doc, sort_keys=True).encode()).hexdigest()
    return {"path": table.source, "sha256": digest}
