"""Dynamic layers: Conv2d / ConvTranspose2d / BatchNorm / Linear that run on a selection of their channels.

A selection is ``None`` (all channels), a ``slice`` (contiguous: prefix or suffix, a free view of
the weight) or a ``LongTensor`` of indices. Layers are converted *in place* by swapping
``__class__``, so parameters, buffers and ``state_dict`` keys stay exactly those of the model.
The selections are ordinary per-layer attributes set by :class:`~widthsearch.space.Supernet`.
"""
from __future__ import annotations

from typing import Union

import torch
import torch.nn as nn
import torch.nn.functional as F


def module_device(module: nn.Module) -> torch.device:
    """Where a module's parameters are (the CPU for one without parameters)."""
    return next((p.device for p in module.parameters()), torch.device("cpu"))


Selection = Union[None, slice, torch.Tensor]


def take(tensor: torch.Tensor, dim: int, sel: Selection) -> torch.Tensor:
    """Select channels ``sel`` of ``tensor`` along ``dim`` (a view for slices)."""
    if sel is None:
        return tensor
    if isinstance(sel, slice):
        return tensor.narrow(dim, sel.start, sel.stop - sel.start)
    return tensor.index_select(dim, sel.to(tensor.device))


def per_group(sel: Selection, groups: int) -> Selection:
    """The selection inside one group of a grouped layer, given its selection over all groups.

    The analysis gives every group the same layout, so the first ``1/groups`` of the selected
    channels (all inside group 0) say which channels of each group run: the columns of the
    grouped weight, which holds one group's channels."""
    if sel is None or groups == 1:
        return sel
    index = torch.arange(sel.start, sel.stop) if isinstance(sel, slice) else sel
    first = index[: index.numel() // groups]
    if first.numel() and int(first[-1] - first[0]) + 1 == first.numel():
        return slice(int(first[0]), int(first[-1]) + 1)
    return first


def selection_size(sel: Selection, full: int) -> int:
    if sel is None:
        return full
    if isinstance(sel, slice):
        return sel.stop - sel.start
    return int(sel.numel())


class _SlicedWeight:
    """The active weight, bias and groups of a (transposed) conv whose ``weight_selections`` give
    the selections along weight dims 0 and 1; shared by both conv kinds, which lay weights out differently."""

    in_sel: Selection = None
    out_sel: Selection = None
    depthwise: bool = False

    def active_weight(self) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        rows, cols = self.weight_selections()
        weight = take(take(self.weight, 0, rows), 1, cols)
        bias = take(self.bias, 0, self.out_sel) if self.bias is not None else None
        groups = weight.shape[0] if self.depthwise else self.groups
        return weight, bias, groups


class DynamicConv2d(_SlicedWeight, nn.Conv2d):
    """Conv2d on selected input/output channels; a depthwise conv follows its channel selection.

    ``in_sel``/``out_sel`` select among all input/output channels; a grouped conv keeps its groups
    and slices every group alike (its weight's columns are one group's input channels).
    """

    def weight_selections(self) -> tuple[Selection, Selection]:
        """Selections along weight dims 0 and 1."""
        if self.depthwise:
            return self.out_sel, None
        return self.out_sel, per_group(self.in_sel, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_sel is None and self.out_sel is None:
            return super().forward(x)
        weight, bias, groups = self.active_weight()
        padding = self.padding
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        return F.conv2d(x, weight, bias, self.stride, padding, self.dilation, groups)


class DynamicConvTranspose2d(_SlicedWeight, nn.ConvTranspose2d):
    """ConvTranspose2d on selected channels. Its weight is laid out (in, out/groups, kH, kW):
    rows are input channels, columns one group's output channels."""

    def weight_selections(self) -> tuple[Selection, Selection]:
        """Selections along weight dims 0 and 1."""
        if self.depthwise:
            return self.out_sel, None
        return self.in_sel, per_group(self.out_sel, self.groups)

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:  # type: ignore[override]
        if self.in_sel is None and self.out_sel is None:
            return super().forward(x, output_size)
        weight, bias, groups = self.active_weight()
        output_padding = self._output_padding(
            x, output_size, self.stride, self.padding, self.kernel_size, 2, self.dilation,  # type: ignore[arg-type]
        )
        return F.conv_transpose2d(x, weight, bias, self.stride, self.padding, output_padding, groups, self.dilation)


class DynamicLinear(nn.Linear):
    """Linear on selected input features and output features."""

    in_sel: Selection = None
    out_sel: Selection = None

    def active_weight(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        weight = take(take(self.weight, 0, self.out_sel), 1, self.in_sel)
        bias = take(self.bias, 0, self.out_sel) if self.bias is not None else None
        return weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_sel is None and self.out_sel is None:
            return super().forward(x)
        weight, bias = self.active_weight()
        return F.linear(x, weight, bias)


class _DynamicBatchNorm:
    """Batch norm with shared affine parameters and running statistics sliced per selection.

    ``use_batch_stats`` makes it normalise with the batch's own statistics even in eval mode
    (AutoSlim's greedy search); it never updates the running statistics then.
    """

    sel: Selection = None
    use_batch_stats: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self.sel is None and not self.use_batch_stats:
            return super().forward(x)  # type: ignore[misc]
        self._check_input_dim(x)  # type: ignore[attr-defined]
        weight = take(self.weight, 0, self.sel) if self.affine else None  # type: ignore[attr-defined]
        bias = take(self.bias, 0, self.sel) if self.affine else None  # type: ignore[attr-defined]
        if self.use_batch_stats:
            return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)  # type: ignore[attr-defined]
        tracking = self.track_running_stats and self.running_mean is not None  # type: ignore[attr-defined]
        if not tracking:
            return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)  # type: ignore[attr-defined]
        mean = take(self.running_mean, 0, self.sel)  # type: ignore[attr-defined]
        var = take(self.running_var, 0, self.sel)  # type: ignore[attr-defined]
        if not self.training:  # type: ignore[attr-defined]
            return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)  # type: ignore[attr-defined]
        self.num_batches_tracked.add_(1)  # type: ignore[attr-defined]
        momentum = self.momentum  # type: ignore[attr-defined]
        factor = 1.0 / float(self.num_batches_tracked) if momentum is None else momentum  # type: ignore[attr-defined]
        out = F.batch_norm(x, mean, var, weight, bias, True, factor, self.eps)  # type: ignore[attr-defined]
        if isinstance(self.sel, torch.Tensor):  # index_select made copies: write the update back
            with torch.no_grad():
                index = self.sel.to(mean.device)
                self.running_mean.index_copy_(0, index, mean)  # type: ignore[attr-defined]
                self.running_var.index_copy_(0, index, var)  # type: ignore[attr-defined]
        return out


class DynamicBatchNorm2d(_DynamicBatchNorm, nn.BatchNorm2d):
    pass


class DynamicBatchNorm1d(_DynamicBatchNorm, nn.BatchNorm1d):
    pass


_DYNAMIC = {
    nn.Conv2d: DynamicConv2d,
    nn.ConvTranspose2d: DynamicConvTranspose2d,
    nn.Linear: DynamicLinear,
    nn.BatchNorm2d: DynamicBatchNorm2d,
    nn.BatchNorm1d: DynamicBatchNorm1d,
}
DYNAMIC_TYPES = tuple(_DYNAMIC.values())


def make_dynamic(module: nn.Module) -> nn.Module:
    """Turn a plain Conv2d/Linear/BatchNorm module into its dynamic class, in place."""
    if isinstance(module, DYNAMIC_TYPES):
        return module
    dynamic = _DYNAMIC.get(type(module))
    if dynamic is None:
        raise TypeError(f"no dynamic version of {type(module).__name__}")
    module.__class__ = dynamic
    return module


def static_copy(module: nn.Module) -> nn.Module:
    """A plain module holding copies of the selected channels of a dynamic layer."""
    with torch.no_grad():
        if isinstance(module, DynamicConv2d):
            weight, bias, groups = module.active_weight()
            out = nn.Conv2d(
                weight.shape[1] * groups, weight.shape[0], module.kernel_size, module.stride,
                module.padding, module.dilation, groups, bias is not None, module.padding_mode,
                device="meta",
            )
            return _fill(out, {"weight": weight, "bias": bias}, module.training)
        if isinstance(module, DynamicConvTranspose2d):
            weight, bias, groups = module.active_weight()
            out = nn.ConvTranspose2d(
                weight.shape[0], weight.shape[1] * groups, module.kernel_size, module.stride, module.padding,
                module.output_padding, groups, bias is not None, module.dilation, module.padding_mode,
                device="meta",
            )
            return _fill(out, {"weight": weight, "bias": bias}, module.training)
        if isinstance(module, DynamicLinear):
            weight, bias = module.active_weight()
            out = nn.Linear(weight.shape[1], weight.shape[0], bias is not None, device="meta")
            return _fill(out, {"weight": weight, "bias": bias}, module.training)
        if isinstance(module, _DynamicBatchNorm):
            plain = nn.BatchNorm2d if isinstance(module, nn.BatchNorm2d) else nn.BatchNorm1d
            size = selection_size(module.sel, module.num_features)
            out = plain(size, module.eps, module.momentum, module.affine, module.track_running_stats, device="meta")
            tensors = {name: take(t, 0, module.sel) for name, t in module.named_parameters(recurse=False)}
            for name, buf in module.named_buffers(recurse=False):
                tensors[name] = buf if name == "num_batches_tracked" else take(buf, 0, module.sel)
            return _fill(out, tensors, module.training)
    raise TypeError(f"{type(module).__name__} is not a dynamic layer")


def _fill(module: nn.Module, tensors: dict[str, torch.Tensor | None], training: bool) -> nn.Module:
    """Give a module built on the meta device real copies of ``tensors``."""
    for name, value in tensors.items():
        if value is None:
            continue
        value = value.detach().clone().contiguous()
        if name in module._parameters:
            module._parameters[name] = nn.Parameter(value, requires_grad=True)
        else:
            module._buffers[name] = value
    module.train(training)
    return module


_ADDITIVE_OPS = {"add": torch.add, "sub": torch.sub}


class PadAdd(nn.Module):
    """A sum (or difference) of tensors whose channels are placed into one common channel set.

    The residual policy ``pad`` keeps the operands of an add in separate units. Each operand's
    active channels sit at ``places[i]`` inside the sum's ``channels`` active channels (``None``:
    the operand already has exactly the sum's channels); the rest is zero, so channel *i* of every
    operand lands at the same position. The places are plain attributes set by the supernet; an
    exported static network keeps a copy of them, so it computes the same sum. No parameters.
    """

    def __init__(self, op: str = "add") -> None:
        super().__init__()
        if op not in _ADDITIVE_OPS:
            raise ValueError(f"PadAdd op must be one of {sorted(_ADDITIVE_OPS)}, got {op!r}")
        self.op = op
        self.places: list[Selection] = []
        self.channels: int | None = None

    def place(self, i: int, x: torch.Tensor) -> torch.Tensor:
        sel = self.places[i] if i < len(self.places) else None
        if sel is None or not isinstance(x, torch.Tensor):
            return x
        if isinstance(sel, slice):
            # F.pad lists (low, high) pairs from the last dimension backwards; channels are dim 1
            pad = [0, 0] * (x.dim() - 2) + [sel.start, self.channels - sel.stop]
            return F.pad(x, pad)
        shape = list(x.shape)
        shape[1] = self.channels
        return x.new_zeros(shape).index_copy(1, sel.to(x.device), x)

    def forward(self, *args, **kwargs):  # type: ignore[override]
        padded = [self.place(i, a) for i, a in enumerate(args)]
        return _ADDITIVE_OPS[self.op](*padded, **kwargs)

    def extra_repr(self) -> str:
        return f"op={self.op}, channels={self.channels}"


class ChannelSplit(nn.Module):
    """``torch.split(x, sizes, dim=1)`` with sizes set by the supernet (a chunk/split along channels).

    The analysis gives every piece of a split along channels its own channel descriptor; when
    their widths change, the sizes of the split change with them. The supernet sets ``sizes`` for
    the active sub-network; an exported static network keeps a copy, so it splits alike.
    """

    def __init__(self, sizes: list[int] | None = None) -> None:
        super().__init__()
        self.sizes: list[int] = list(sizes or [])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.split(x, self.sizes, dim=1)

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}"
