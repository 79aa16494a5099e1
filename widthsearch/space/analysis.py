"""Find channel units of any traceable ``nn.Module`` with torch.fx.

Every tensor in the traced graph gets a *channel descriptor*: the list of segments its
channel dimension (dim 1) is made of, each segment being a run of channels of one source
(the output of a conv/linear, or the network input). Ops then act on descriptors:

* a conv/linear consumes its input descriptor and produces a new source;
* a depthwise conv, a batch norm, an activation or pooling pass the descriptor through;
* an elementwise add/mul between two tensors ties their sources (union-find); with the residual
  policy ``"pad"`` an add/sub instead *joins* them: the sum is a pseudo-source whose active
  channels are the union of its operands' (the narrower operand is zero-padded), so each operand
  keeps its own unit (Network Adjustment's and SP-Net's zero-padding match);
* a concat along channels concatenates the segments; a flatten multiplies each channel
  into ``repeat`` features;
* a chunk/split along channels cuts the descriptor into pieces; a cut inside a source *refines*
  it: the source (and every source tied to it) becomes two sources, one per side of the cut, so
  each piece has its own width and the split sizes follow the widths (the supernet runs such
  splits as :class:`~widthsearch.space.dynamic.ChannelSplit` modules);
* a grouped conv (``1 < groups``, not depthwise) cuts its input into ``groups`` equal pieces and
  ties them, and its output is one source repeated ``groups`` times: both sides are searchable in
  multiples of the groups (a unit's width counts channels per group);
* a channel shuffle (``view(N, g, C/g, ...)``, ``transpose(1, 2)``, ``view(N, C, ...)``) ties the
  ``g`` pieces and interleaves them: each channel of the tied unit spans ``g`` adjacent channels.

Sources tied together form a *unit*. A unit that cannot change width is *fixed*, and carries the
reasons why (it reaches the network input or output, a reshape to a constant size, ...).
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp

from widthsearch.errors import AnalysisError


@dataclass(frozen=True)
class Segment:
    """``length`` consecutive channels of source ``unit``; each channel spans ``repeat`` features."""

    unit: int
    length: int
    repeat: int = 1


Desc = tuple[Segment, ...]


def desc_channels(desc: Desc) -> int:
    """The size of dim 1 of a tensor with descriptor ``desc`` (each channel spans ``repeat`` features)."""
    return sum(seg.length * seg.repeat for seg in desc)


def _bounds(desc: Desc) -> set[int]:
    """Feature offsets where one segment of ``desc`` ends and the next begins."""
    offsets, pos = set(), 0
    for seg in desc[:-1]:
        pos += seg.length * seg.repeat
        offsets.add(pos)
    return offsets


@dataclass
class LayerRecord:
    """A conv / batch norm / linear layer and how its channels map to sources."""

    name: str
    kind: str  # "conv", "grouped", "depthwise", "fixed", "bn", "linear"
    module: nn.Module
    in_desc: Desc
    out_desc: Desc
    #: positions the weights are applied at, per call: output H*W (input H*W for a transposed
    #: conv, which scatters every input pixel; 1 for a linear on (N, C))
    spatial: list[int] = field(default_factory=list)


@dataclass
class PadAddRecord:
    """An add/sub of tensors with separate units, run as a zero-padded sum (residual policy pad)."""

    node: str  # fx node name in the traced graph
    operands: tuple[Desc | None, ...]  # channel descriptor of each positional argument (None: not a channel tensor)
    out_desc: Desc


@dataclass
class SplitRecord:
    """A chunk/split along channels, run with sizes that follow the pieces' widths."""

    node: str  # fx node name in the traced graph
    pieces: tuple[Desc, ...]


RESIDUAL_POLICIES = ("tie", "pad")


@dataclass
class Analysis:
    """Result of tracing: layer records and union-find roots of every source."""

    layers: dict[str, LayerRecord]
    unit_length: dict[int, int]
    unit_fixed: dict[int, bool]
    unit_producers: dict[int, list[str]]
    other_params: int  # parameters outside analysed layers (counted as a constant)
    residual: str = "tie"
    #: join roots (sums under residual="pad") -> the source roots whose channels they unite
    joins: dict[int, tuple[int, ...]] = field(default_factory=dict)
    pad_adds: list[PadAddRecord] = field(default_factory=list)
    graph: torch.fx.GraphModule | None = None  # the traced model (rewritten for pad adds)
    splits: list[SplitRecord] = field(default_factory=list)
    #: why each fixed root cannot change width (every fixed root has at least one reason)
    unit_reasons: dict[int, tuple[str, ...]] = field(default_factory=dict)
    #: a stable name for every root with a producer or on the network input
    unit_names: dict[int, str] = field(default_factory=dict)
    #: how often each root appears in its first producer's output (a grouped conv's groups)
    unit_copies: dict[int, int] = field(default_factory=dict)
    #: (index of the naming producer among the layers, channel offset in its output): graph order
    unit_order: dict[int, tuple[int, int]] = field(default_factory=dict)

    def join_groups(self) -> list[set[int]]:
        """Sets of roots whose channels are added position by position (connected through joins)."""
        parent: dict[int, int] = {}

        def find(r: int) -> int:
            while parent.setdefault(r, r) != r:
                r = parent[r]
            return r

        for join, members in self.joins.items():
            for m in members:
                parent[find(m)] = find(join)
        groups: dict[int, set[int]] = {}
        for r in list(parent):
            groups.setdefault(find(r), set()).add(r)
        return list(groups.values())

    def searchable_roots(self) -> list[int]:
        """Roots that can change width, in graph order of their names' producers."""
        roots = [
            root
            for root, producers in self.unit_producers.items()
            if producers and not self.unit_fixed[root] and self.unit_length[root] > 1
        ]
        return sorted(roots, key=self._order)

    def fixed_roots(self) -> list[int]:
        """Named roots (produced by a layer, or the network input) that cannot change width."""
        searchable = set(self.searchable_roots())
        roots = [r for r in self.unit_names if r not in searchable]
        return sorted(roots, key=self._order)

    def fixed_reason(self, root: int) -> str:
        """Why ``root`` is not searchable, in words."""
        reasons = self.unit_reasons.get(root, ())
        if reasons:
            return "; ".join(reasons)
        if self.unit_length[root] == 1:
            return "a single channel"
        return "not searchable"

    def unit_name(self, root: int) -> str:
        return self.unit_names[root]

    def _order(self, root: int) -> tuple[int, int]:
        """Sort key: the position of the producer a root is named after, then the channel offset."""
        return self.unit_order.get(root, (-1, 0))


_ACTIVATION_MODULES = (
    nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.Sigmoid, nn.Tanh,
    nn.GELU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Softplus, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.MaxPool2d, nn.AvgPool2d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Upsample, nn.UpsamplingNearest2d,
    nn.UpsamplingBilinear2d, nn.ZeroPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d, nn.Softmax,
    nn.LogSoftmax,
)
_ACTIVATION_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.hardtanh, F.silu, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh,
    F.gelu, F.hardswish, F.hardsigmoid, F.leaky_relu, F.elu, F.selu, F.mish, F.softplus,
    F.dropout, F.dropout1d, F.dropout2d, F.avg_pool2d, F.max_pool2d, F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d, F.interpolate, torch.clamp, torch.clip, F.relu_, torch.relu_,
    F.softmax, F.log_softmax, torch.neg, torch.abs, torch.exp, torch.square,
}
_PASSTHROUGH_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clip", "clip_",
    "contiguous", "clone", "float", "half", "double", "to", "type_as", "detach", "abs", "neg",
    "exp", "softmax", "log_softmax", "hardtanh_", "square",
}
_BINARY = {
    operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
    operator.truediv, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div,
    torch.maximum, torch.minimum,
}
_BINARY_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
#: sums and differences: the ops that zero padding can join (products must stay tied)
_ADDITIVE = {operator.add, operator.iadd, operator.sub, operator.isub, torch.add, torch.sub}
_ADDITIVE_METHODS = {"add", "add_", "sub", "sub_"}
_REDUCTIONS = {torch.mean, torch.sum, torch.amax, torch.amin}
_REDUCTION_METHODS = {"mean", "sum", "amax", "amin"}
_RESHAPES = {torch.flatten, torch.reshape}
_RESHAPE_METHODS = {"flatten", "view", "reshape"}
_CONCATS = {torch.cat, torch.concat, torch.concatenate}
_SPLITS = {torch.split, torch.chunk}
_SPLIT_METHODS = {"split", "chunk"}
_TRANSPOSES = {torch.transpose, torch.swapaxes, torch.swapdims, torch.permute}
_TRANSPOSE_METHODS = {"transpose", "swapaxes", "swapdims", "permute"}


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []
        self.length: list[int] = []
        self.fixed: list[bool] = []
        self.producers: list[list[str]] = []
        self.reasons: list[list[str]] = []

    def new(self, length: int, fixed: bool = False, producer: str | None = None, reason: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.length.append(length)
        self.fixed.append(fixed)
        self.producers.append([producer] if producer else [])
        self.reasons.append([reason] if reason else [])
        return len(self.parent) - 1

    def find(self, unit: int) -> int:
        while self.parent[unit] != unit:
            self.parent[unit] = self.parent[self.parent[unit]]
            unit = self.parent[unit]
        return unit

    def mark_fixed(self, unit: int, reason: str) -> None:
        root = self.find(unit)
        self.fixed[root] = True
        if reason not in self.reasons[root]:
            self.reasons[root].append(reason)

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if self.length[ra] != self.length[rb]:
            raise AssertionError("union of sources of different lengths")
        # keep the older source as root (names come from the producers' graph order, see finish)
        root, child = (ra, rb) if ra < rb else (rb, ra)
        self.parent[child] = root
        self.fixed[root] = self.fixed[root] or self.fixed[child]
        self.producers[root] = self.producers[root] + self.producers[child]
        self.reasons[root] = self.reasons[root] + [r for r in self.reasons[child] if r not in self.reasons[root]]
        return root


class _Tracer(torch.fx.Tracer):
    """fx's tracer, with widthsearch's dynamic layers as leaves (a converted model traces again)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        from widthsearch.space.dynamic import DYNAMIC_TYPES, ChannelSplit, PadAdd

        return isinstance(m, (*DYNAMIC_TYPES, PadAdd, ChannelSplit)) or super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module) -> torch.fx.GraphModule:
    """Symbolically trace ``model``; a failure becomes an AnalysisError naming the model."""
    try:
        graph = _Tracer().trace(model)
        name = model.__class__.__name__ if isinstance(model, nn.Module) else model.__name__
        return torch.fx.GraphModule(model, graph, name)
    except Exception as exc:  # fx raises many kinds; all mean "this forward is not traceable"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AnalysisError(
            f"torch.fx cannot trace {type(model).__name__}: {first_line} "
            "(widthsearch needs a forward without data-dependent Python control flow)"
        ) from exc


def _shape(node: Any) -> tuple[int, ...] | None:
    if not isinstance(node, torch.fx.Node):
        return None
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        return None
    return tuple(meta.shape)


def _iter_nodes(value: Any) -> Iterator[torch.fx.Node]:
    if isinstance(value, torch.fx.Node):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _iter_nodes(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _iter_nodes(item)


@dataclass
class _GroupView:
    """A channel tensor viewed as (N, g, C/g, ...): its g tied pieces; ``transposed`` after transpose(1, 2)."""

    pieces: tuple[Desc, ...]
    transposed: bool = False


class _Analyser:
    def __init__(self, gm: torch.fx.GraphModule, model: nn.Module, residual: str = "tie") -> None:
        self.gm = gm
        self.model = model
        self.residual = residual
        self.modules = dict(model.named_modules())
        self.uf = _UnionFind()
        self.desc: dict[torch.fx.Node, Desc] = {}
        self.layers: dict[str, LayerRecord] = {}
        self.joins: dict[int, set[int]] = {}
        self.pad_adds: list[PadAddRecord] = []
        self.splits: list[SplitRecord] = []
        self.pieces: dict[torch.fx.Node, list[Desc]] = {}  # outputs of chunk/split, per piece
        self.views: dict[torch.fx.Node, _GroupView] = {}  # channel tensors viewed as groups
        self.refined: dict[int, tuple[Segment, ...]] = {}  # retired root -> the sources it was cut into
        self.inputs: list[tuple[str, Desc]] = []  # network inputs: (placeholder name, descriptor)

    # ---- helpers -------------------------------------------------------------------------
    def fail(self, node: torch.fx.Node, why: str) -> AnalysisError:
        where = node.target if node.op == "call_module" else getattr(node.target, "__name__", node.target)
        return AnalysisError(f"cannot analyse op '{node.name}' ({node.op} {where}): {why}")

    def new_source(self, length: int, fixed: bool = False, producer: str | None = None,
                   reason: str | None = None) -> Desc:
        return (Segment(self.uf.new(length, fixed, producer, reason), length),)

    def get(self, node: torch.fx.Node) -> Desc:
        """The descriptor of ``node`` in terms of the current (unrefined) sources."""
        desc = self.expand(self.desc[node])
        self.desc[node] = desc
        return desc

    def expand(self, desc: Desc) -> Desc:
        """``desc`` with every segment of a refined (cut) source replaced by its pieces."""
        out: list[Segment] = []
        for seg in desc:
            pieces = self.refined.get(self.uf.find(seg.unit))
            if pieces is None:
                out.append(seg)
            else:
                out.extend(self.expand(tuple(Segment(p.unit, p.length, seg.repeat) for p in pieces)))
        return tuple(out)

    def tie(self, node: torch.fx.Node, a: Desc, b: Desc) -> Desc:
        """Give the channels of ``a`` and ``b`` position by position one unit each.

        Where the two are cut into segments at different places, sources are refined first so
        both have the same segments (an add of ``cat([A, B])`` and ``C`` cuts C in two)."""
        if desc_channels(a) != desc_channels(b):
            raise self.fail(node, "combines tensors with different numbers of channels")
        aligned = self.align([a, b])
        if aligned is None or [(s.length, s.repeat) for s in aligned[0]] != [(s.length, s.repeat) for s in aligned[1]]:
            raise self.fail(node, "combines tensors whose channels are laid out differently "
                                  "(e.g. a flattened or interleaved channel against a plain one)")
        for sa, sb in zip(*aligned):
            self.uf.union(self.collapse(sa.unit), self.collapse(sb.unit))
        return self.expand(aligned[0])

    def collapse(self, source: int) -> int:
        """A join that must be tied after all (e.g. multiplied): tie its members into one unit."""
        root = self.uf.find(source)
        members = self.joins.pop(root, None)
        for member in members or ():
            root = self.uf.union(root, member)
        return root

    def collapse_joins_of(self, source: int) -> int:
        """Tie every join that holds ``source`` (before cutting it: a join's members share one length)."""
        root = self.uf.find(source)
        while True:
            touching = [j for j, members in self.joins.items()
                        if self.uf.find(j) == root or any(self.uf.find(m) == root for m in members)]
            if not touching:
                return root
            root = self.uf.find(self.collapse(touching[0]))

    def join(self, a: Segment, b: Segment) -> Desc:
        """The sum of two single-source tensors under zero padding: a join of their sources."""
        members: set[int] = set()
        for seg in (a, b):
            root = self.uf.find(seg.unit)
            members |= self.joins.get(root, {root})
        jid = self.uf.new(a.length)
        self.joins[jid] = members
        return (Segment(jid, a.length),)

    def fix(self, desc: Desc, reason: str) -> None:
        for seg in self.expand(desc):
            root = self.uf.find(seg.unit)
            for member in self.joins.get(root, {root}):
                self.uf.mark_fixed(member, reason)

    def input_desc(self, node: torch.fx.Node) -> Desc:
        for arg in node.args[:1]:
            if isinstance(arg, torch.fx.Node) and arg in self.desc:
                return self.get(arg)
            if isinstance(arg, torch.fx.Node) and arg in self.views:
                raise self.fail(node, f"works on '{arg.name}', a channel tensor viewed as groups; only "
                                      "transpose(1, 2) and a view back to (N, C, ...) are supported there")
        raise self.fail(node, "its input has no channel dimension")

    def passthrough(self, node: torch.fx.Node) -> Desc:
        desc = self.input_desc(node)
        out = _shape(node)
        if out is None or len(out) < 2 or out[1] != desc_channels(desc):
            raise self.fail(node, "expected it to keep the channel dimension (dim 1)")
        return desc

    # ---- cutting sources -------------------------------------------------------------------
    def refine(self, source: int, cut: int) -> None:
        """Cut a unit in two at channel ``cut``: every tied source alike (a cut inside a producer's
        output gives the producer two units). The old root retires; descriptors naming it are
        expanded into the two pieces wherever they are read."""
        root = self.collapse_joins_of(source)
        length = self.uf.length[root]
        parts = []
        for size in (cut, length - cut):
            piece = self.uf.new(size, self.uf.fixed[root])
            self.uf.producers[piece] = list(self.uf.producers[root])
            self.uf.reasons[piece] = list(self.uf.reasons[root])
            parts.append(Segment(piece, size))
        self.refined[root] = tuple(parts)

    def cut(self, desc: Desc, offsets: set[int]) -> Desc | None:
        """``desc`` refined so that a segment boundary falls at every feature offset in ``offsets``;
        None when an offset falls inside one channel's features (a flattened or interleaved channel)."""
        while True:
            desc = self.expand(desc)
            inside = None
            pos = 0
            for seg in desc:
                size = seg.length * seg.repeat
                inner = [off - pos for off in offsets if pos < off < pos + size]
                if inner:
                    inside = (seg, min(inner))
                    break
                pos += size
            if inside is None:
                return desc
            seg, offset = inside
            if offset % seg.repeat:
                return None
            self.refine(seg.unit, offset // seg.repeat)

    def pieces_of(self, desc: Desc, sizes: list[int]) -> list[Desc] | None:
        """``desc`` cut into consecutive pieces of ``sizes`` features (None: a cut inside a channel)."""
        offsets = {sum(sizes[:i]) for i in range(1, len(sizes))}
        desc = self.cut(desc, offsets)
        if desc is None:
            return None
        pieces: list[Desc] = []
        pos = 0
        for size in sizes:
            piece, taken = [], 0
            while taken < size:
                seg = desc[pos]
                piece.append(seg)
                taken += seg.length * seg.repeat
                pos += 1
            pieces.append(tuple(piece))
        return pieces

    def align(self, descs: list[Desc]) -> list[Desc] | None:
        """Descriptors of equal size refined until all have their segment boundaries at the same offsets."""
        while True:
            descs = [self.expand(d) for d in descs]
            offsets = set().union(*(_bounds(d) for d in descs))
            if all(_bounds(d) == offsets for d in descs):
                return descs
            for d in descs:
                if self.cut(d, offsets) is None:
                    return None

    def tie_groups(self, desc: Desc, groups: int) -> list[Desc] | None:
        """Cut ``desc`` into ``groups`` equal pieces and tie them (one layout, equal widths).

        None when the pieces cannot get one layout (a cut inside a channel, or different repeats)."""
        total = desc_channels(desc)
        pieces = self.pieces_of(desc, [total // groups] * groups)
        aligned = None if pieces is None else self.align(pieces)
        if aligned is None:
            return None
        layouts = {tuple((s.length, s.repeat) for s in piece) for piece in aligned}
        if len(layouts) != 1:
            return None
        for piece in aligned[1:]:
            for sa, sb in zip(aligned[0], piece):
                self.uf.union(self.collapse(sa.unit), self.collapse(sb.unit))
        return [self.expand(piece) for piece in aligned]

    # ---- ops ------------------------------------------------------------------------------
    def run(self) -> Analysis:
        for node in self.gm.graph.nodes:
            desc = self.visit(node)
            if desc is not None:
                self.desc[node] = desc
        return self.finish()

    def visit(self, node: torch.fx.Node) -> Desc | None:
        shape = _shape(node)
        if node.op == "placeholder":
            if shape is None or len(shape) < 2:
                return None
            desc = self.new_source(shape[1], fixed=True, reason="network input channels")
            self.inputs.append((node.name, desc))
            return desc
        if node.op == "get_attr":
            return None  # constants: checked where they meet channel tensors
        if node.op == "output":
            for arg in _iter_nodes(node.args):
                if arg in self.desc:
                    self.fix(self.desc[arg], "feeds the network output")
                elif arg in self.views or arg in self.pieces:
                    raise self.fail(node, f"returns '{arg.name}', channels viewed as groups or split pieces")
            return None
        if node.op == "call_module":
            return self.visit_module(node, self.modules[node.target])
        if node.target in _SPLITS or (node.op == "call_method" and node.target in _SPLIT_METHODS):
            return self.split(node)
        if shape is None and node.target is not operator.getitem:
            return None  # sizes, shapes and other non-tensor values
        return self.visit_function(node, shape)

    def visit_module(self, node: torch.fx.Node, module: nn.Module) -> Desc | None:
        name = str(node.target)
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            return self.visit_conv(node, name, module)
        if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
            desc = self.passthrough(node)
            self.record(node, name, "bn", module, desc, desc)
            return desc
        if isinstance(module, nn.Linear):
            return self.visit_linear(node, name, module)
        if isinstance(module, nn.Flatten):
            return self.reshape(node)
        if isinstance(module, _ACTIVATION_MODULES):
            if isinstance(module, (nn.Softmax, nn.LogSoftmax)) and module.dim not in (1, -1, None):
                raise self.fail(node, "softmax over a non-channel dimension")
            return self.passthrough(node)
        if isinstance(module, nn.PReLU) and module.num_parameters == 1:
            return self.passthrough(node)
        if type(module).__name__ == "PadAdd":
            return self.frozen_pad_add(node)
        if type(module).__name__ == "ChannelSplit":
            return self.split(node, dim=1)
        raise self.fail(
            node,
            f"layer type {type(module).__name__} is not supported for channel search "
            "(supported: Conv2d, ConvTranspose2d, BatchNorm1d/2d, Linear, activations, pooling, dropout)",
        )

    def visit_conv(self, node: torch.fx.Node, name: str, conv: nn.Conv2d | nn.ConvTranspose2d) -> Desc:
        in_desc = self.input_desc(node)
        if conv.groups == 1:
            out = self.layers[name].out_desc if name in self.layers else None
            out = out or self.new_source(conv.out_channels, producer=name)
            self.record(node, name, "conv", conv, in_desc, out)
            return out
        if conv.groups == conv.in_channels == conv.out_channels:
            self.record(node, name, "depthwise", conv, in_desc, in_desc)
            return in_desc
        return self.visit_grouped(node, name, conv, in_desc)

    def visit_grouped(self, node: torch.fx.Node, name: str, conv: nn.Conv2d | nn.ConvTranspose2d, in_desc: Desc) -> Desc:
        """A grouped conv: every group gets the same input layout and the same output width, so
        the input unit(s) and the output unit change in multiples of the groups."""
        groups = conv.groups
        where = f"grouped conv '{name}' (groups={groups})"
        if conv.in_channels == groups:
            self.fix(in_desc, f"input of {where}, which has one input channel per group")
        elif self.tie_groups(in_desc, groups) is None:
            self.fix(in_desc, f"input of {where}: its {groups} groups of input channels cannot share one layout")
        in_desc = self.expand(in_desc)
        if name in self.layers:
            out = self.layers[name].out_desc
        else:
            per_group = conv.out_channels // groups
            reason = f"output of {where}, which has one output channel per group" if per_group == 1 else None
            source = self.uf.new(per_group, reason is not None, name, reason)
            out = (Segment(source, per_group),) * groups
        self.record(node, name, "grouped", conv, in_desc, out)
        return self.expand(out)

    def visit_linear(self, node: torch.fx.Node, name: str, linear: nn.Linear) -> Desc:
        in_desc = self.input_desc(node)
        in_shape = _shape(node.args[0])
        if in_shape is None or len(in_shape) != 2:
            # a linear over a non-channel dim: leave its channels alone
            why = f"linear '{name}' is applied over a non-channel dimension"
            self.fix(in_desc, f"input of {why}")
            out = self.layers[name].out_desc if name in self.layers else self.new_source(
                linear.out_features, True, reason=f"output of {why}")
            self.record(node, name, "fixed", linear, in_desc, out)
            return out
        out = self.layers[name].out_desc if name in self.layers else None
        out = out or self.new_source(linear.out_features, producer=name)
        self.record(node, name, "linear", linear, in_desc, out)
        return out

    def record(self, node: torch.fx.Node, name: str, kind: str, module: nn.Module, in_desc: Desc, out_desc: Desc) -> None:
        shape = _shape(node.args[0]) if isinstance(module, nn.ConvTranspose2d) else _shape(node)
        if shape is None:
            spatial = 1
        elif isinstance(module, nn.Linear):
            spatial = math.prod(shape[1:-1])  # positions the linear is applied at, per sample
        else:
            spatial = math.prod(shape[2:])
        if name in self.layers:  # a module called again: its channels are tied across calls
            rec = self.layers[name]
            self.tie(node, rec.in_desc, in_desc)
            if kind in ("bn", "depthwise"):
                self.tie(node, rec.out_desc, out_desc)
            rec.spatial.append(spatial)
            return
        self.layers[name] = LayerRecord(name, kind, module, in_desc, out_desc, [spatial])

    # ---- reshapes, channel shuffles, splits ------------------------------------------------
    def reshape(self, node: torch.fx.Node) -> Desc | None:
        """flatten(x, 1), a no-op view, or the views of a channel shuffle (see :meth:`group_view`)."""
        source = node.args[0]
        if source in self.views:
            return self.merge_view(node)
        desc = self.input_desc(node)
        in_shape, out_shape = _shape(source), _shape(node)
        if in_shape is None or out_shape is None:
            raise self.fail(node, "unknown shapes")
        if out_shape == in_shape:
            self.check_dynamic_size(node, 1, desc)
            return desc
        if len(out_shape) == 2 and out_shape[0] == in_shape[0] and out_shape[1] == math.prod(in_shape[1:]):
            self.check_dynamic_size(node, 1, desc)
            factor = math.prod(in_shape[2:])
            return tuple(Segment(s.unit, s.length, s.repeat * factor) for s in desc)
        if (len(out_shape) == len(in_shape) + 1 and out_shape[0] == in_shape[0]
                and out_shape[1] * out_shape[2] == in_shape[1] and out_shape[3:] == in_shape[2:]):
            return self.group_view(node, desc, out_shape[1])
        raise self.fail(node, f"reshapes {list(in_shape)} to {list(out_shape)}; only flatten(x, 1) and "
                              "the views of a channel shuffle are supported")

    def check_dynamic_size(self, node: torch.fx.Node, position: int, desc: Desc) -> None:
        """A view/reshape whose size at ``position`` is a literal cannot follow a narrower input:
        fix the channels it holds (sizes computed from ``x.size()`` or -1 follow the input)."""
        sizes = _size_args(node)
        if sizes is None or position >= len(sizes):
            return
        size = sizes[position]
        if not isinstance(size, torch.fx.Node) and size != -1:
            self.fix(desc, f"'{node.name}' reshapes to a constant size {size} along the channels")

    def group_view(self, node: torch.fx.Node, desc: Desc, groups: int) -> None:
        """``x.view(N, g, C/g, ...)``: the g pieces are tied (the view needs equal widths; the
        shuffle after it interleaves them position by position)."""
        self.check_dynamic_size(node, 2, desc)
        pieces = self.tie_groups(desc, groups)
        if pieces is None:
            self.fix(desc, f"channel shuffle '{node.name}': its {groups} groups of channels cannot keep equal "
                           "widths with one layout (e.g. one group was interleaved by an earlier shuffle)")
            source = self.uf.new(desc_channels(desc) // groups, True, reason=f"groups of '{node.name}'")
            pieces = [(Segment(source, desc_channels(desc) // groups),)] * groups
        self.views[node] = _GroupView(tuple(pieces))
        return None

    def transpose_view(self, node: torch.fx.Node) -> None:
        source = node.args[0]
        view = self.views[source]  # type: ignore[index]
        rank = len(_shape(source) or ())
        if node.target in (torch.permute, "permute"):
            dims = node.args[1] if len(node.args) == 2 and isinstance(node.args[1], (list, tuple)) else node.args[1:]
            order = [int(d) % rank for d in dims]  # type: ignore[arg-type]
            swapped = [i for i, d in enumerate(order) if d != i]
            pair = tuple(swapped) if sorted(order[i] for i in swapped) == swapped else ()
        else:
            pair = tuple(sorted(int(d) % rank for d in node.args[1:3]))  # type: ignore[arg-type]
        if pair == (1, 2):
            self.views[node] = _GroupView(view.pieces, not view.transposed)
        elif 1 in pair or 2 in pair:
            raise self.fail(node, "moves the dimensions of a channel shuffle in an unsupported way")
        else:
            self.views[node] = view

    def merge_view(self, node: torch.fx.Node) -> Desc:
        """``view(N, C, ...)`` after a group view: the pieces again, concatenated or interleaved."""
        source = node.args[0]
        view = self.views[source]  # type: ignore[index]
        in_shape, out_shape = _shape(source), _shape(node)
        if (in_shape is None or out_shape is None or len(out_shape) != len(in_shape) - 1
                or out_shape[1] != in_shape[1] * in_shape[2] or out_shape[2:] != in_shape[3:]):
            raise self.fail(node, "reshapes a channel tensor viewed as groups other than back to (N, C, ...)")
        pieces = [self.expand(p) for p in view.pieces]
        if view.transposed:  # channel j of piece i lands at j*g + i: each channel spans g features
            desc = tuple(Segment(s.unit, s.length, s.repeat * len(pieces)) for s in pieces[0])
        else:
            desc = tuple(seg for piece in pieces for seg in piece)
        self.check_dynamic_size(node, 1, desc)
        return desc

    def split(self, node: torch.fx.Node, dim: int | None = None) -> None:
        """chunk/split: along channels the pieces of the descriptor (refining sources cut inside);
        along any other dimension every piece keeps the channels."""
        if node.args and node.args[0] not in self.desc and node.args[0] not in self.views:
            return None  # splits a constant or a size, not a channel tensor
        desc = self.input_desc(node)
        metas = node.meta.get("tensor_meta")
        if not isinstance(metas, (tuple, list)) or not all(hasattr(m, "shape") for m in metas):
            raise self.fail(node, "unknown output shapes")
        in_shape = _shape(node.args[0]) or ()
        if dim is None:
            dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
        if (int(dim) % len(in_shape)) != 1:  # type: ignore[arg-type]
            self.pieces[node] = [desc] * len(metas)
            return None
        sizes = [int(m.shape[1]) for m in metas]
        pieces = self.pieces_of(desc, sizes)
        if pieces is None:
            reason = f"'{node.name}' splits the channels inside a flattened or interleaved channel"
            self.fix(desc, reason)
            pieces = [self.new_source(size, True, reason=reason) for size in sizes]
        self.pieces[node] = pieces
        self.splits.append(SplitRecord(node.name, tuple(pieces)))
        return None

    def visit_function(self, node: torch.fx.Node, shape: tuple[int, ...] | None) -> Desc | None:
        target = node.target
        method = node.op == "call_method"
        first = node.args[0] if node.args else None
        if isinstance(first, torch.fx.Node) and first in self.views:
            return self.on_view(node)
        if target is operator.getitem:
            return self.getitem(node, shape)
        if target in _BINARY or (method and target in _BINARY_METHODS):
            return self.binary(node, shape)
        if target in _CONCATS or (method and target == "cat"):
            return self.concat(node, shape)
        if target in _RESHAPES or (method and target in _RESHAPE_METHODS):
            return self.reshape(node)
        if target in _REDUCTIONS or (method and target in _REDUCTION_METHODS):
            return self.reduction(node, shape)
        if target in _ACTIVATION_FUNCTIONS or (method and target in _PASSTHROUGH_METHODS):
            if not any(arg in self.desc for arg in _iter_nodes(node.args[:1])):
                return None
            return self.passthrough(node)
        if not any(arg in self.desc or arg in self.views or arg in self.pieces
                   for arg in _iter_nodes((node.args, node.kwargs))):
            return None  # computes on constants only
        raise self.fail(node, "unknown operation on a tensor with channels; rewrite it with supported ops")

    def on_view(self, node: torch.fx.Node) -> Desc | None:
        """An op on a channel tensor viewed as groups: transposes, copies and the view back."""
        target, method = node.target, node.op == "call_method"
        if target in _TRANSPOSES or (method and target in _TRANSPOSE_METHODS):
            self.transpose_view(node)
            return None
        if target in _RESHAPES or (method and target in _RESHAPE_METHODS):
            return self.reshape(node)
        if target in _ACTIVATION_FUNCTIONS or (method and target in _PASSTHROUGH_METHODS):
            self.views[node] = self.views[node.args[0]]  # type: ignore[index]
            return None
        raise self.fail(node, f"works on '{node.args[0]}', a channel tensor viewed as groups; only "
                              "transpose(1, 2) and a view back to (N, C, ...) are supported there")

    def getitem(self, node: torch.fx.Node, shape: tuple[int, ...] | None) -> Desc | None:
        source = node.args[0]
        if isinstance(source, torch.fx.Node) and source in self.pieces:
            index = node.args[1]
            if not isinstance(index, int):
                raise self.fail(node, "takes a slice of the pieces of a split; take them one by one")
            return self.expand(self.pieces[source][index])
        if not isinstance(source, torch.fx.Node) or source not in self.desc:
            return None  # indexing a tuple/size, not a channel tensor
        in_shape = _shape(source)
        if shape is not None and in_shape is not None and len(shape) == len(in_shape) and shape[1] == in_shape[1]:
            return self.get(source)
        raise self.fail(node, "indexes a tensor along its channel dimension (use torch.split or chunk)")

    def binary(self, node: torch.fx.Node, shape: tuple[int, ...] | None) -> Desc | None:
        tensors = [a for a in node.args[:2] if isinstance(a, torch.fx.Node)]
        with_desc = [a for a in tensors if a in self.desc]
        if not with_desc:
            return None
        if shape is None or len(shape) < 2:
            raise self.fail(node, "result has no channel dimension")
        channels = shape[1]
        wide = [a for a in with_desc if desc_channels(self.get(a)) == channels]
        if not wide:
            raise self.fail(node, "broadcasts channels in an unsupported way")
        if self.residual == "pad" and self.joinable(node, wide):
            result = self.join(self.get(wide[0])[0], self.get(wide[1])[0])
            self.pad_adds.append(PadAddRecord(
                node.name, tuple(self.get(a) if isinstance(a, torch.fx.Node) and a in self.desc else None
                                 for a in node.args), result,
            ))
            return result
        result = self.get(wide[0])
        for other in wide[1:]:
            result = self.tie(node, result, self.get(other))
        for arg in tensors:
            if arg in wide:
                continue
            arg_shape = _shape(arg) or ()
            offset = len(shape) - len(arg_shape)
            if 1 - offset >= 0 and arg_shape[1 - offset] != 1:
                raise self.fail(node, f"'{arg.name}' varies along channels but is not traced to a layer")
        return result

    def frozen_pad_add(self, node: torch.fx.Node) -> Desc:
        """A zero-padded sum inside an already exported net: its operands and result keep their
        widths (they were chosen when it was exported), so all of them are fixed."""
        reason = f"operand of '{node.name}', a zero-padded sum frozen in an exported net"
        for arg in _iter_nodes(node.args):
            if arg in self.desc:
                self.fix(self.desc[arg], reason)
        shape = _shape(node)
        if shape is None or len(shape) < 2:
            raise self.fail(node, "result has no channel dimension")
        return self.new_source(shape[1], fixed=True, reason=f"result of '{node.name}', a frozen zero-padded sum")

    def joinable(self, node: torch.fx.Node, wide: list[torch.fx.Node]) -> bool:
        """An add/sub of two single-source tensors of different sources (else it is tied)."""
        additive = node.target in _ADDITIVE or (node.op == "call_method" and node.target in _ADDITIVE_METHODS)
        if not additive or len(wide) != 2 or len(node.args) < 2 or any(a not in wide for a in node.args[:2]):
            return False
        descs = [self.get(a) for a in wide]
        if any(len(d) != 1 or d[0].repeat != 1 for d in descs):
            return False
        return self.uf.find(descs[0][0].unit) != self.uf.find(descs[1][0].unit)

    def concat(self, node: torch.fx.Node, shape: tuple[int, ...] | None) -> Desc:
        inputs = node.args[0] if node.args else node.kwargs.get("tensors", [])
        if isinstance(inputs, torch.fx.Node):  # torch.cat(x.chunk(2, 1), 1): all pieces of a split
            if inputs not in self.pieces:
                raise self.fail(node, f"concatenates '{inputs.name}', which has no traced channels")
            pieces = [self.expand(p) for p in self.pieces[inputs]]
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            if shape is None or dim % len(shape) != 1:
                raise self.fail(node, "concatenates the pieces of a split along a non-channel dimension")
            return tuple(seg for piece in pieces for seg in piece)
        inputs = list(inputs)
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if shape is None:
            raise self.fail(node, "unknown output shape")
        dim = dim % len(shape)
        for arg in inputs:
            if arg not in self.desc:
                raise self.fail(node, f"concatenates '{getattr(arg, 'name', arg)}', which has no traced channels")
        if dim == 1:
            return tuple(seg for arg in inputs for seg in self.get(arg))
        result = self.get(inputs[0])
        for arg in inputs[1:]:
            result = self.tie(node, result, self.get(arg))
        return result

    def reduction(self, node: torch.fx.Node, shape: tuple[int, ...] | None) -> Desc | None:
        source = node.args[0]
        in_shape = _shape(source)
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if dims is None or in_shape is None:
            return None  # a full reduction leaves no channels
        dims = [d % len(in_shape) for d in (dims if isinstance(dims, (list, tuple)) else [dims])]
        if 1 in dims:
            raise self.fail(node, "reduces over the channel dimension")
        if shape is None or len(shape) < 2 or shape[1] != in_shape[1]:
            raise self.fail(node, "moves the channel dimension")
        return self.get(source)

    # ---- result ----------------------------------------------------------------------------
    def finish(self) -> Analysis:
        uf = self.uf

        def canon(desc: Desc) -> Desc:
            return tuple(Segment(uf.find(s.unit), s.length, s.repeat) for s in self.expand(desc))

        for rec in self.layers.values():
            rec.in_desc, rec.out_desc = canon(rec.in_desc), canon(rec.out_desc)
        for record in self.pad_adds:
            record.operands = tuple(None if d is None else canon(d) for d in record.operands)
            record.out_desc = canon(record.out_desc)
        for split in self.splits:
            split.pieces = tuple(canon(p) for p in split.pieces)
        joins = {uf.find(j): tuple(sorted({uf.find(m) for m in members})) for j, members in self.joins.items()}
        retired = set(self.refined)
        roots = {uf.find(u) for u in range(len(uf.parent))} - retired
        analysed = {id(p) for rec in self.layers.values() for p in rec.module.parameters(recurse=False)}
        other = sum(p.numel() for p in self.model.parameters() if id(p) not in analysed)
        names, copies, order = self.names(roots, canon)
        return Analysis(
            layers=self.layers,
            unit_length={r: uf.length[r] for r in roots},
            unit_fixed={r: uf.fixed[r] for r in roots},
            unit_producers={r: uf.producers[r] for r in roots},
            other_params=other,
            residual=self.residual,
            joins=joins,
            pad_adds=self.pad_adds,
            graph=self.gm,
            splits=self.splits,
            unit_reasons={r: tuple(uf.reasons[r]) for r in roots if uf.reasons[r]},
            unit_names=names,
            unit_copies=copies,
            unit_order=order,
        )

    def names(self, roots: set[int], canon: Any) -> tuple[dict[int, str], dict[int, int], dict[int, tuple[int, int]]]:
        """Name every root after the first layer (in graph order) that produces it: the layer's
        name when the root is all of its output, else ``layer[start:stop]`` (the channel range of
        the root's first occurrence in that output). Network inputs are ``input:<argument>``."""
        position = {name: i for i, name in enumerate(self.layers)}
        names: dict[int, str] = {}
        copies: dict[int, int] = {}
        order: dict[int, tuple[int, int]] = {}
        for root in roots:
            producers = [p for p in self.uf.producers[root] if p in position]
            if not producers:
                continue
            first = min(producers, key=position.__getitem__)
            out = self.layers[first].out_desc
            ranges, pos = [], 0
            for seg in out:
                size = seg.length * seg.repeat
                if seg.unit == root:
                    ranges.append((pos, pos + size))
                pos += size
            if not ranges:  # cannot happen: a producer's output holds its own source
                raise AssertionError(f"unit of {first} is not in its output")
            whole = sum(b - a for a, b in ranges) == pos
            names[root] = first if whole else f"{first}[{ranges[0][0]}:{ranges[0][1]}]"
            copies[root] = len(ranges)
            order[root] = (position[first], ranges[0][0])
        for placeholder, desc in self.inputs:
            desc = canon(desc)
            pos = 0
            for seg in desc:
                if seg.unit not in names:
                    size = seg.length * seg.repeat
                    whole = len(desc) == 1
                    names[seg.unit] = f"input:{placeholder}" + ("" if whole else f"[{pos}:{pos + size}]")
                    copies[seg.unit] = 1
                    order[seg.unit] = (-1, pos)
                pos += seg.length * seg.repeat
        return names, copies, order


def _size_args(node: torch.fx.Node) -> list[Any] | None:
    """The target sizes of a view/reshape node (None for flatten, which has none)."""
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    if name not in ("view", "reshape"):
        return None
    sizes = node.args[1:] if len(node.args) > 2 else node.args[1:2]
    if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
        return list(sizes[0])
    return list(sizes) if sizes else list(node.kwargs.get("shape", ()) or ())


def analyse(model: nn.Module, example_input: torch.Tensor | tuple[torch.Tensor, ...], residual: str = "tie") -> Analysis:
    """Trace ``model`` on ``example_input`` and return its channel structure.

    ``residual``: ``"tie"`` gives the operands of every elementwise add one unit; ``"pad"`` keeps
    them apart and joins them by zero padding (see the module docstring).

    The model is run once in eval mode without gradients (so batch-norm statistics are not
    touched) and its training flags are restored afterwards.
    """
    gm = trace(model)
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    was_training = {name: m.training for name, m in model.named_modules()}
    gm.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*inputs)
    except Exception as exc:
        raise AnalysisError(f"running {type(model).__name__} on the example input failed: {exc}") from exc
    finally:
        for name, module in model.named_modules():
            module.training = was_training.get(name, module.training)
    if residual not in RESIDUAL_POLICIES:
        raise AnalysisError(f"residual policy must be one of {', '.join(RESIDUAL_POLICIES)}, got {residual!r}")
    # fx copies submodules by reference, so records point at the user's own modules
    return _Analyser(gm, model, residual).run()
