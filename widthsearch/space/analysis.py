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
  into ``repeat`` features.

Sources tied together form a *unit*; sources reaching the network input or output are fixed.
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
    return sum(seg.length for seg in desc)


@dataclass
class LayerRecord:
    """A conv / batch norm / linear layer and how its channels map to sources."""

    name: str
    kind: str  # "conv", "depthwise", "fixed", "bn", "linear"
    module: nn.Module
    in_desc: Desc
    out_desc: Desc
    spatial: list[int] = field(default_factory=list)  # output H*W per call (1 for linear)


@dataclass
class PadAddRecord:
    """An add/sub of tensors with separate units, run as a zero-padded sum (residual policy pad)."""

    node: str  # fx node name in the traced graph
    operands: tuple[Desc | None, ...]  # channel descriptor of each positional argument (None: not a channel tensor)
    out_desc: Desc


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
        roots = [
            root
            for root, producers in self.unit_producers.items()
            if producers and not self.unit_fixed[root] and self.unit_length[root] > 1
        ]
        order = {name: i for i, name in enumerate(self.layers)}
        return sorted(roots, key=lambda r: order[self.unit_producers[r][0]])


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


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []
        self.length: list[int] = []
        self.fixed: list[bool] = []
        self.producers: list[list[str]] = []

    def new(self, length: int, fixed: bool = False, producer: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.length.append(length)
        self.fixed.append(fixed)
        self.producers.append([producer] if producer else [])
        return len(self.parent) - 1

    def find(self, unit: int) -> int:
        while self.parent[unit] != unit:
            self.parent[unit] = self.parent[self.parent[unit]]
            unit = self.parent[unit]
        return unit

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if self.length[ra] != self.length[rb]:
            raise AssertionError("union of sources of different lengths")
        # keep the older source as root so the unit is named after its first producer
        root, child = (ra, rb) if ra < rb else (rb, ra)
        self.parent[child] = root
        self.fixed[root] = self.fixed[root] or self.fixed[child]
        self.producers[root] = self.producers[root] + self.producers[child]
        return root


class _Tracer(torch.fx.Tracer):
    """fx's tracer, with widthsearch's dynamic layers as leaves (a converted model traces again)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        from widthsearch.space.dynamic import DYNAMIC_TYPES, PadAdd

        return isinstance(m, (*DYNAMIC_TYPES, PadAdd)) or super().is_leaf_module(m, module_qualified_name)


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

    # ---- helpers -------------------------------------------------------------------------
    def fail(self, node: torch.fx.Node, why: str) -> AnalysisError:
        where = node.target if node.op == "call_module" else getattr(node.target, "__name__", node.target)
        return AnalysisError(f"cannot analyse op '{node.name}' ({node.op} {where}): {why}")

    def new_source(self, length: int, fixed: bool = False, producer: str | None = None) -> Desc:
        return (Segment(self.uf.new(length, fixed, producer), length),)

    def tie(self, node: torch.fx.Node, a: Desc, b: Desc) -> Desc:
        if [s.length for s in a] != [s.length for s in b] or [s.repeat for s in a] != [s.repeat for s in b]:
            raise self.fail(node, "combines tensors whose channels are concatenated differently")
        for sa, sb in zip(a, b):
            self.uf.union(self.collapse(sa.unit), self.collapse(sb.unit))
        return a

    def collapse(self, source: int) -> int:
        """A join that must be tied after all (e.g. multiplied): tie its members into one unit."""
        root = self.uf.find(source)
        members = self.joins.pop(root, None)
        for member in members or ():
            root = self.uf.union(root, member)
        return root

    def join(self, a: Segment, b: Segment) -> Desc:
        """The sum of two single-source tensors under zero padding: a join of their sources."""
        members: set[int] = set()
        for seg in (a, b):
            root = self.uf.find(seg.unit)
            members |= self.joins.get(root, {root})
        jid = self.uf.new(a.length)
        self.joins[jid] = members
        return (Segment(jid, a.length),)

    def fix(self, desc: Desc) -> None:
        for seg in desc:
            root = self.uf.find(seg.unit)
            for member in self.joins.get(root, {root}):
                self.uf.fixed[self.uf.find(member)] = True

    def input_desc(self, node: torch.fx.Node) -> Desc:
        for arg in node.args[:1]:
            if isinstance(arg, torch.fx.Node) and arg in self.desc:
                return self.desc[arg]
        raise self.fail(node, "its input has no channel dimension")

    def passthrough(self, node: torch.fx.Node) -> Desc:
        desc = self.input_desc(node)
        out = _shape(node)
        if out is None or len(out) < 2 or out[1] != desc_channels(desc):
            raise self.fail(node, "expected it to keep the channel dimension (dim 1)")
        return desc

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
            return self.new_source(shape[1], fixed=True)
        if node.op == "get_attr":
            return None  # constants: checked where they meet channel tensors
        if node.op == "output":
            for arg in _iter_nodes(node.args):
                if arg in self.desc:
                    self.fix(self.desc[arg])
            return None
        if node.op == "call_module":
            return self.visit_module(node, self.modules[node.target])
        if shape is None and node.target is not operator.getitem:
            return None  # sizes, shapes and other non-tensor values
        return self.visit_function(node, shape)

    def visit_module(self, node: torch.fx.Node, module: nn.Module) -> Desc | None:
        name = str(node.target)
        if isinstance(module, nn.Conv2d):
            return self.visit_conv(node, name, module)
        if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
            desc = self.passthrough(node)
            self.record(node, name, "bn", module, desc, desc)
            return desc
        if isinstance(module, nn.Linear):
            return self.visit_linear(node, name, module)
        if isinstance(module, nn.Flatten):
            return self.flatten(node)
        if isinstance(module, _ACTIVATION_MODULES):
            if isinstance(module, (nn.Softmax, nn.LogSoftmax)) and module.dim not in (1, -1, None):
                raise self.fail(node, "softmax over a non-channel dimension")
            return self.passthrough(node)
        if isinstance(module, nn.PReLU) and module.num_parameters == 1:
            return self.passthrough(node)
        if type(module).__name__ == "PadAdd":
            return self.frozen_pad_add(node)
        raise self.fail(
            node,
            f"layer type {type(module).__name__} is not supported for channel search "
            "(supported: Conv2d, BatchNorm1d/2d, Linear, activations, pooling, dropout)",
        )

    def visit_conv(self, node: torch.fx.Node, name: str, conv: nn.Conv2d) -> Desc:
        in_desc = self.input_desc(node)
        if conv.groups == 1:
            out = self.layers[name].out_desc if name in self.layers else None
            out = out or self.new_source(conv.out_channels, producer=name)
            self.record(node, name, "conv", conv, in_desc, out)
            return out
        if conv.groups == conv.in_channels == conv.out_channels:
            self.record(node, name, "depthwise", conv, in_desc, in_desc)
            return in_desc
        # grouped convs (other than depthwise) tie channels across groups: keep them fixed
        self.fix(in_desc)
        out = self.layers[name].out_desc if name in self.layers else self.new_source(conv.out_channels, True)
        self.record(node, name, "fixed", conv, in_desc, out)
        return out

    def visit_linear(self, node: torch.fx.Node, name: str, linear: nn.Linear) -> Desc:
        in_desc = self.input_desc(node)
        in_shape = _shape(node.args[0])
        if in_shape is None or len(in_shape) != 2:
            self.fix(in_desc)  # a linear over a non-channel dim: leave its channels alone
            out = self.layers[name].out_desc if name in self.layers else self.new_source(linear.out_features, True)
            self.record(node, name, "fixed", linear, in_desc, out)
            return out
        out = self.layers[name].out_desc if name in self.layers else None
        out = out or self.new_source(linear.out_features, producer=name)
        self.record(node, name, "linear", linear, in_desc, out)
        return out

    def record(self, node: torch.fx.Node, name: str, kind: str, module: nn.Module, in_desc: Desc, out_desc: Desc) -> None:
        shape = _shape(node)
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

    def flatten(self, node: torch.fx.Node) -> Desc:
        desc = self.input_desc(node)
        in_shape, out_shape = _shape(node.args[0]), _shape(node)
        if in_shape is None or out_shape is None:
            raise self.fail(node, "unknown shapes")
        if out_shape == in_shape:
            return desc
        if len(out_shape) == 2 and out_shape[0] == in_shape[0] and out_shape[1] == math.prod(in_shape[1:]):
            factor = math.prod(in_shape[2:])
            return tuple(Segment(s.unit, s.length, s.repeat * factor) for s in desc)
        raise self.fail(node, f"reshapes {list(in_shape)} to {list(out_shape)}; only flatten(x, 1) is supported")

    def visit_function(self, node: torch.fx.Node, shape: tuple[int, ...] | None) -> Desc | None:
        target = node.target
        if target is operator.getitem:
            return self.getitem(node, shape)
        if target in _BINARY or (node.op == "call_method" and target in _BINARY_METHODS):
            return self.binary(node, shape)
        if target in _CONCATS or (node.op == "call_method" and target == "cat"):
            return self.concat(node, shape)
        if target in _RESHAPES or (node.op == "call_method" and target in _RESHAPE_METHODS):
            return self.flatten(node)
        if target in _REDUCTIONS or (node.op == "call_method" and target in _REDUCTION_METHODS):
            return self.reduction(node, shape)
        if target in _ACTIVATION_FUNCTIONS or (node.op == "call_method" and target in _PASSTHROUGH_METHODS):
            if not any(arg in self.desc for arg in _iter_nodes(node.args[:1])):
                return None
            return self.passthrough(node)
        if not any(arg in self.desc for arg in _iter_nodes((node.args, node.kwargs))):
            return None  # computes on constants only
        raise self.fail(node, "unknown operation on a tensor with channels; rewrite it with supported ops")

    def getitem(self, node: torch.fx.Node, shape: tuple[int, ...] | None) -> Desc | None:
        source = node.args[0]
        if not isinstance(source, torch.fx.Node) or source not in self.desc:
            return None  # indexing a tuple/size, not a channel tensor
        in_shape = _shape(source)
        if shape is not None and in_shape is not None and len(shape) == len(in_shape) and shape[1] == in_shape[1]:
            return self.desc[source]
        raise self.fail(node, "indexes a tensor along its channel dimension")

    def binary(self, node: torch.fx.Node, shape: tuple[int, ...] | None) -> Desc | None:
        tensors = [a for a in node.args[:2] if isinstance(a, torch.fx.Node)]
        with_desc = [a for a in tensors if a in self.desc]
        if not with_desc:
            return None
        if shape is None or len(shape) < 2:
            raise self.fail(node, "result has no channel dimension")
        channels = shape[1]
        wide = [a for a in with_desc if desc_channels(self.desc[a]) == channels]
        if not wide:
            raise self.fail(node, "broadcasts channels in an unsupported way")
        if self.residual == "pad" and self.joinable(node, wide):
            result = self.join(self.desc[wide[0]][0], self.desc[wide[1]][0])
            self.pad_adds.append(PadAddRecord(
                node.name, tuple(self.desc.get(a) if isinstance(a, torch.fx.Node) else None for a in node.args), result,
            ))
            return result
        result = self.desc[wide[0]]
        for other in wide[1:]:
            result = self.tie(node, result, self.desc[other])
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
        for arg in _iter_nodes(node.args):
            if arg in self.desc:
                self.fix(self.desc[arg])
        shape = _shape(node)
        if shape is None or len(shape) < 2:
            raise self.fail(node, "result has no channel dimension")
        return self.new_source(shape[1], fixed=True)

    def joinable(self, node: torch.fx.Node, wide: list[torch.fx.Node]) -> bool:
        """An add/sub of two single-source tensors of different sources (else it is tied)."""
        additive = node.target in _ADDITIVE or (node.op == "call_method" and node.target in _ADDITIVE_METHODS)
        if not additive or len(wide) != 2 or len(node.args) < 2 or any(a not in wide for a in node.args[:2]):
            return False
        descs = [self.desc[a] for a in wide]
        if any(len(d) != 1 or d[0].repeat != 1 for d in descs):
            return False
        return self.uf.find(descs[0][0].unit) != self.uf.find(descs[1][0].unit)

    def concat(self, node: torch.fx.Node, shape: tuple[int, ...] | None) -> Desc:
        inputs = list(node.args[0]) if node.args else list(node.kwargs.get("tensors", []))
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if shape is None:
            raise self.fail(node, "unknown output shape")
        dim = dim % len(shape)
        descs = []
        for arg in inputs:
            if arg not in self.desc:
                raise self.fail(node, f"concatenates '{getattr(arg, 'name', arg)}', which has no traced channels")
            descs.append(self.desc[arg])
        if dim == 1:
            return tuple(seg for desc in descs for seg in desc)
        result = descs[0]
        for desc in descs[1:]:
            result = self.tie(node, result, desc)
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
        return self.desc[source]

    # ---- result ----------------------------------------------------------------------------
    def finish(self) -> Analysis:
        uf = self.uf

        def canon(desc: Desc) -> Desc:
            return tuple(Segment(uf.find(s.unit), s.length, s.repeat) for s in desc)

        for rec in self.layers.values():
            rec.in_desc, rec.out_desc = canon(rec.in_desc), canon(rec.out_desc)
        for record in self.pad_adds:
            record.operands = tuple(None if d is None else canon(d) for d in record.operands)
            record.out_desc = canon(record.out_desc)
        joins = {uf.find(j): tuple(sorted({uf.find(m) for m in members})) for j, members in self.joins.items()}
        roots = {uf.find(u) for u in range(len(uf.parent))}
        analysed = {id(p) for rec in self.layers.values() for p in rec.module.parameters(recurse=False)}
        other = sum(p.numel() for p in self.model.parameters() if id(p) not in analysed)
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
        )


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
