"""Supernet: run one model at any channel configuration, calibrate BN, export static nets."""
from __future__ import annotations

import collections
import contextlib
import copy
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import torch
import torch.fx
import torch.nn as nn

from widthsearch.errors import ConfigError
from widthsearch.space.analysis import Desc, PadAddRecord, SplitRecord, desc_channels
from widthsearch.space.channel_space import ChannelSpace, Config
from widthsearch.space.dynamic import (
    ChannelSplit,
    DynamicBatchNorm1d,
    DynamicBatchNorm2d,
    DynamicConv2d,
    DynamicConvTranspose2d,
    PadAdd,
    Selection,
    make_dynamic,
    module_device,
    selection_size,
    static_copy,
)
from widthsearch.space.subnet import Subnet, as_subnet
from widthsearch.space.units import Cost

_CONVS = (DynamicConv2d, DynamicConvTranspose2d)


class Supernet:
    """Controls a model whose Conv2d/BatchNorm/Linear layers run on a subset of channels.

    ``Supernet(model, x)`` converts the analysed layers of ``model`` *in place*; ``self.model`` stays
    a plain ``nn.Module`` with the same ``state_dict`` keys, ready for optimizers, DDP and
    ``torch.save``. The active sub-network is pushed into each layer by :meth:`set_config`.

    With ``residual="pad"`` the operands of residual adds keep separate units and the sums become
    zero-padded :class:`PadAdd` modules, and chunks/splits along channels become
    :class:`ChannelSplit` modules whose sizes follow the widths; ``self.model`` is then a
    ``torch.fx.GraphModule`` that shares the user's layers (same ``state_dict`` keys) -- run that
    one, not the original object.
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: torch.Tensor | tuple[torch.Tensor, ...] | None = None,
        groups: int | None = 10,
        divisor: int | None = None,
        round_to: int | None = None,
        space: ChannelSpace | None = None,
        residual: str = "tie",
    ) -> None:
        if space is None:
            if example_input is None:
                raise ValueError("Supernet needs an example input or a ChannelSpace")
            space = ChannelSpace.from_model(model, example_input, groups, divisor, round_to, residual=residual)
        self.space = space
        self._layers = {
            name: rec
            for name, rec in space.analysis.layers.items()
            if rec.kind in ("conv", "grouped", "depthwise", "bn", "linear")
        }
        for rec in self._layers.values():
            make_dynamic(rec.module)
            if isinstance(rec.module, _CONVS):
                rec.module.depthwise = rec.kind == "depthwise"
        self.model, self._pad_adds, self._splits = _rewrite(model, space)
        self._selection_cache: collections.OrderedDict = collections.OrderedDict()
        self.subnet = Subnet({})
        self.set_config(space.max_config())

    # ---- configuration -------------------------------------------------------------------------
    @property
    def config(self) -> Config:
        """The active widths as a plain ``{unit: width}``."""
        return self.subnet.widths

    @property
    def align(self) -> str:
        """The active side when all units share one ("left" when rankings are mixed in)."""
        return self.subnet.alignment or "left"

    def set_config(
        self,
        config: Mapping[str, int],
        align: str | None = None,
        orders: Mapping[str, torch.Tensor | Sequence[int]] | None = None,
        strict: bool = False,
    ) -> None:
        """Run the sub-network ``config`` from now on: a :class:`Subnet`, or plain widths.

        Plain widths keep the first c channels of every unit, ``align="right"`` the last c
        (BCNet's right-aligned sub-network); ``orders`` gives units a channel ranking (a
        permutation of their channels) whose c best-ranked channels run (SP-Net's sorted channels).
        ``strict`` additionally requires every width to be one of the unit's choices.
        """
        subnet = self.space.validate(as_subnet(config, align, orders), strict=strict)
        assert isinstance(subnet, Subnet)
        device = module_device(self.model)
        layers, pads, splits = self._selections(subnet, device)
        for rec, sels in zip(self._layers.values(), layers):
            module = rec.module
            if isinstance(module, (DynamicBatchNorm2d, DynamicBatchNorm1d)):
                module.sel = sels[0]
            else:
                module.in_sel, module.out_sel = sels
        for (_record, pad_add), (channels, places) in zip(self._pad_adds, pads):
            pad_add.channels, pad_add.places = channels, list(places)
        for (_record, split), sizes in zip(self._splits, splits):
            split.sizes = list(sizes)
        self.subnet = subnet

    #: sub-networks whose layer selections are kept (joint training and SP-Net switch among a few
    #: fixed ones every step; working the selections out again costs milliseconds of Python)
    SELECTION_CACHE_SIZE = 16

    def _selections(self, subnet: Subnet, device: torch.device) -> tuple[list, list, list]:
        """Per dynamic layer ``(in_sel, out_sel)`` (``(sel,)`` for BN), per zero-padded sum
        ``(channels, places)``, per channel split its sizes: for ``subnet``, with index selections
        on ``device``. The last :attr:`SELECTION_CACHE_SIZE` sub-networks are remembered; nothing
        writes into a selection, so one can be handed out again."""
        cache, key = self._selection_cache, (subnet.key(), str(device))
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        unit_sel = self._unit_selections(subnet)

        def selection(desc: Desc) -> Selection:
            return _on(_desc_selection(desc, unit_sel), device)

        layers = []
        for rec in self._layers.values():
            module = rec.module
            if isinstance(module, (DynamicBatchNorm2d, DynamicBatchNorm1d)):
                layers.append((selection(rec.out_desc),))
            elif isinstance(module, _CONVS) and module.depthwise:
                layers.append((None, selection(rec.out_desc)))
            else:
                layers.append((selection(rec.in_desc), selection(rec.out_desc)))
        pads = []
        for record, _pad_add in self._pad_adds:
            out_sel = _desc_selection(record.out_desc, unit_sel)
            places = tuple(None if desc is None else _on(_place(_desc_selection(desc, unit_sel), out_sel,
                                                                desc_channels(desc)), device)
                           for desc in record.operands)
            pads.append((selection_size(out_sel, desc_channels(record.out_desc)), places))
        splits = [tuple(selection_size(_desc_selection(piece, unit_sel), desc_channels(piece))
                        for piece in split_record.pieces) for split_record, _split in self._splits]
        cache[key] = (layers, pads, splits)
        if len(cache) > self.SELECTION_CACHE_SIZE:
            cache.popitem(last=False)
        return cache[key]

    def _unit_selections(self, subnet: Subnet) -> dict[int, tuple[int, Selection]]:
        """Per source root: (full length, selection); fixed roots are absent (full)."""
        selections: dict[int, tuple[int, Selection]] = {}
        for unit in self.space.units:
            width = subnet[unit.name]
            side = subnet.selector(unit.name)
            if not isinstance(side, str):
                sel: Selection = None if width == unit.max else torch.sort(torch.tensor(side[:width])).values
            elif width == unit.max:
                sel = None
            elif side == "left":
                sel = slice(0, width)
            else:
                sel = slice(unit.max - width, unit.max)
            selections[self.space.root_of(unit.name)] = (unit.max, sel)
        for join, members in self.space.analysis.joins.items():
            length = self.space.analysis.unit_length[join]
            parts = [selections.get(m, (length, None))[1] for m in members]
            selections[join] = (length, _union(parts, length))
        return selections

    def to(self, device: torch.device | str) -> "Supernet":
        """Move the model to ``device``, and the active sub-network's index selections with it."""
        self.model.to(device)
        self.set_config(self.subnet)
        return self

    @contextlib.contextmanager
    def using(self, config: Mapping[str, int], align: str | None = None,
              orders: Mapping[str, torch.Tensor] | None = None) -> Iterator["Supernet"]:
        """Temporarily run at ``config``; the previous sub-network is restored afterwards."""
        previous = self.subnet
        self.set_config(config, align, orders)
        try:
            yield self
        finally:
            self.set_config(previous)

    def _batch_norms(self) -> list[nn.Module]:
        return [m for m in self.model.modules() if isinstance(m, (DynamicBatchNorm2d, DynamicBatchNorm1d))]

    @contextlib.contextmanager
    def batch_stats(self) -> Iterator["Supernet"]:
        """Normalise with each batch's own statistics (no running-stat updates), even in eval mode."""
        norms = self._batch_norms()
        previous = [bn.use_batch_stats for bn in norms]
        for bn in norms:
            bn.use_batch_stats = True
        try:
            yield self
        finally:
            for bn, flag in zip(norms, previous):
                bn.use_batch_stats = flag

    # ---- batch-norm calibration ------------------------------------------------------------------
    @torch.no_grad()
    def calibrate_bn(
        self,
        batches: Iterable[torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]],
        config: Mapping[str, int] | None = None,
        num_batches: int | None = None,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> int:
        """Set BN running statistics of the active channels to the exact statistics of ``batches``.

        ``reduce``: sums a float64 tensor over the processes of a distributed run (each process
        passing its share of the batches); the statistics are then those of all processes' batches
        together, as one process would compute them from all of them.

        Each batch is normalised with its own statistics (as in training) while every BN layer
        accumulates per-channel sums of its input; afterwards ``running_mean`` is the mean and
        ``running_var`` the unbiased variance over all calibration samples and positions. With
        equal batches, the mean equals PyTorch's cumulative average (``momentum=None``); the variance
        is the exact pooled variance rather than an average of per-batch variances. Only channels
        of ``config`` are touched. The model is left in eval mode. Returns the number of batches used.
        """
        if config is not None:
            self.set_config(config if isinstance(config, Subnet) else self.subnet.with_widths(config))
        norms = self._batch_norms()
        sums: dict[nn.Module, list] = {}

        def accumulate(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach().double()
            dims = [d for d in range(x.dim()) if d != 1]
            entry = sums.setdefault(module, [0.0, 0.0, 0])
            entry[0] = entry[0] + x.sum(dims)
            entry[1] = entry[1] + (x * x).sum(dims)
            entry[2] += x.numel() // x.shape[1]

        handles = [bn.register_forward_pre_hook(accumulate) for bn in norms]
        self.model.eval()
        used = 0
        try:
            with self.batch_stats():
                for batch in batches:
                    if num_batches is not None and used >= num_batches:
                        break
                    inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
                    device = next(self.model.parameters()).device
                    self.model(inputs.to(device))
                    used += 1
        finally:
            for handle in handles:
                handle.remove()
        if used == 0:
            raise ConfigError("BN calibration got no batches")
        if reduce is not None:
            _reduce_sums(sums, norms, reduce)
        for bn, (total, total_sq, count) in sums.items():
            mean = total / count
            var = (total_sq - count * mean * mean) / max(count - 1, 1)
            _write_selected(bn.running_mean, bn.sel, mean)
            _write_selected(bn.running_var, bn.sel, var.clamp_min(0))
        return used

    # ---- export and costs --------------------------------------------------------------------------
    def export(self, config: Mapping[str, int] | None = None, align: str | None = None,
               orders: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
        """A plain static copy of the model at ``config`` (default: the active sub-network).

        Every dynamic layer becomes an ordinary Conv2d/BatchNorm/Linear holding copies of the
        selected weights and running statistics; the rest of the model (zero-padded sums included)
        is deep-copied, so the export computes exactly what the supernet computes at that
        sub-network in eval mode.
        """
        context = self.using(config, align, orders) if config is not None else contextlib.nullcontext()
        with context:
            memo = {id(rec.module): static_copy(rec.module) for rec in self._layers.values()}
            return copy.deepcopy(self.model, memo)

    def cost(self, config: Mapping[str, int] | None = None) -> Cost:
        return self.space.cost(config if config is not None else self.subnet)

    @torch.no_grad()
    def load_static(self, static: nn.Module) -> None:
        """Write a static net's weights into the active sub-network's channels (the inverse of export).

        ``static`` must be an export of this supernet at the active sub-network (e.g. one trained
        from scratch afterwards); every other channel keeps its value.
        """
        for name, rec in self._layers.items():
            try:
                source = static.get_submodule(name)
            except AttributeError:
                raise ConfigError(f"the static net has no layer {name!r}: not an export of this supernet") from None
            module = rec.module
            if isinstance(module, (DynamicBatchNorm2d, DynamicBatchNorm1d)):
                sels = {"weight": [module.sel], "bias": [module.sel], "running_mean": [module.sel],
                        "running_var": [module.sel], "num_batches_tracked": []}
            elif isinstance(module, _CONVS):
                sels = {"weight": list(module.weight_selections()), "bias": [module.out_sel]}
            else:
                sels = {"weight": [module.out_sel, module.in_sel], "bias": [module.out_sel]}
            for attr, dims in sels.items():
                target, value = getattr(module, attr, None), getattr(source, attr, None)
                if target is None or value is None:
                    continue
                _write_into(target, dims, value)

    # ---- unit views: members, permutation, channel masks ------------------------------------------
    def members(self, unit: str) -> list[tuple[str, int, range]]:
        """Where a unit's channels live: ``[(layer name, weight dim, index range)]``.

        Dim 0 is a layer's output channels (conv/linear weight rows, bias, BN parameters and
        statistics, depthwise filters); dim 1 its input channels (conv/linear weight columns; a
        flattened or interleaved channel spans ``repeat`` consecutive features). The dims are the
        layer's outputs and inputs, not its weight's axes: a ConvTranspose2d holds its inputs in
        weight rows, and a grouped conv holds one group's input channels in its weight columns
        (the ranges here index all of its input channels). Consumers of a zero-padded sum that
        holds the unit read the unit's channels at the same positions, and are listed too.
        """
        roots = {self.space.root_of(unit)}
        roots |= {j for j, members in self.space.analysis.joins.items() if roots & set(members)}
        return [(name, dim, span) for name, dim, span, root in self._spans() if root in roots and
                (dim == 1 or root == self.space.root_of(unit))]

    def _spans(self) -> Iterator[tuple[str, int, range, int]]:
        """(layer, dim, index range, root) for every segment of every dynamic layer."""
        for name, rec in self._layers.items():
            descs = [(0, rec.out_desc)]
            if rec.kind in ("conv", "grouped", "linear"):
                descs.append((1, rec.in_desc))
            for dim, desc in descs:
                offset = 0
                for seg in desc:
                    size = seg.length * seg.repeat
                    yield name, dim, range(offset, offset + size), seg.unit
                    offset += size

    @torch.no_grad()
    def permute(self, unit: str, perm: torch.Tensor | Sequence[int]) -> None:
        """Reorder a unit's channels physically: new channel i is old channel ``perm[i]``.

        Every member layer's weights, biases, BN affine parameters and running statistics and every
        consumer's input channels move together, so the network computes the same function. Under
        ``residual="pad"`` channels of a zero-padded sum are added position by position, so the
        whole group of units joined with this one is permuted alike. Parameters are changed in
        place (optimizer states are not: permute before building the optimizer).
        """
        root = self.space.root_of(unit)
        length = self.space.unit(unit).max
        perm = torch.as_tensor(perm, dtype=torch.long).reshape(-1)
        if perm.numel() != length or not torch.equal(torch.sort(perm).values, torch.arange(length)):
            raise ConfigError(f"perm of unit {unit!r} must be a permutation of 0..{length - 1}")
        group = next((g for g in self.space.analysis.join_groups() if root in g), {root})
        searchable = {self.space.root_of(u.name) for u in self.space.units}
        frozen = [r for r in group if r not in searchable and r not in self.space.analysis.joins]
        if frozen:
            raise ConfigError(f"unit {unit!r} is added to channels that are fixed (network input or output); "
                              "they cannot be reordered")
        by_layer: dict[tuple[str, int], list[range]] = {}
        for name, dim, span, seg_root in self._spans():
            if seg_root in group:
                by_layer.setdefault((name, dim), []).append(span)
        for (name, dim), spans in by_layer.items():
            _permute_layer(self._layers[name].module, dim, spans, perm)

    @contextlib.contextmanager
    def masked(self, masks: Mapping[str, torch.Tensor | Callable[[int, int, torch.device], torch.Tensor]]
               ) -> Iterator["Supernet"]:
        """Multiply units' active channels by masks at the units' outputs, in train and eval mode.

        ``masks[unit]`` is a tensor of shape ``(C,)`` or ``(N, C)`` (C = the unit's active width) or
        a callable ``(batch size, C, device) -> tensor`` that is called once per forward of the
        model, so every output of the unit in that forward gets the same mask (Network
        Adjustment's SpatialDropout probe). The outputs of a unit are its batch norms (or its
        producers when it has none), before any residual add; a unit that is only part of its
        producers' outputs (a piece of a split) is masked there, at its own channels.
        """
        current: dict[str, torch.Tensor] = {}
        widths: dict[int, int] = {}

        def draw(module: nn.Module, inputs: tuple) -> None:
            x = inputs[0] if inputs else None
            batch = int(x.shape[0]) if isinstance(x, torch.Tensor) else 1
            current.clear()
            widths.clear()
            widths.update(self.space.widths_by_root(self.subnet))
            for name, mask in masks.items():
                width = self.subnet[name]
                current[name] = mask(batch, width, x.device if isinstance(x, torch.Tensor) else torch.device("cpu")) \
                    if callable(mask) else mask

        def apply(name: str, layer: str) -> Callable:
            root, desc = self.space.root_of(name), self._layers[layer].out_desc

            def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
                mask = _lay_out_mask(current[name].to(output.dtype), root, desc, widths)
                shape = [mask.shape[0] if mask.dim() == 2 else 1, mask.shape[-1]] + [1] * (output.dim() - 2)
                return output * mask.reshape(shape)
            return hook

        for name in masks:
            self.space.unit(name)  # a one-line error for an unknown unit
        handles = [self.model.register_forward_pre_hook(draw)]
        for name in masks:
            handles += [self._layers[layer].module.register_forward_hook(apply(name, layer))
                        for layer in self._mask_points(name)]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def output_layers(self, unit: str) -> list[str]:
        """Names of the layers whose outputs carry ``unit``'s channels: its batch norms (or its
        producers when it has none), before any residual add -- where :meth:`masked` multiplies.
        The names are module paths, valid in an export too (training-time channel dropout)."""
        self.space.unit(unit)  # a one-line error for an unknown unit
        return self._mask_points(unit)

    def _mask_points(self, unit: str) -> list[str]:
        """Layers whose output is the unit alone (once, or once per group of a grouped conv); else
        its producers and the batch norms of their outputs. Batch norms are preferred."""
        root = self.space.root_of(unit)
        own = [name for name, rec in self._layers.items()
               if rec.out_desc and all(seg.unit == root and seg.repeat == 1 for seg in rec.out_desc)]
        if not own:
            producers = set(self.space.analysis.unit_producers[root])
            outputs = [self._layers[p].out_desc for p in producers if p in self._layers]
            own = [name for name, rec in self._layers.items()
                   if rec.out_desc in outputs and (name in producers or rec.kind == "bn")]
        norms = [name for name in own if self._layers[name].kind == "bn"]
        return norms or [name for name in own if self._layers[name].kind in ("conv", "grouped", "linear", "depthwise")]


def _lay_out_mask(mask: torch.Tensor, root: int, desc: Desc, widths: Mapping[int, int]) -> torch.Tensor:
    """A unit's mask ``(..., C)`` placed over all active channels of a layer output ``desc``: at
    every segment of the unit (each channel's ``repeat`` features alike), ones elsewhere."""
    if len(desc) == 1 and desc[0].unit == root and desc[0].repeat == 1:
        return mask
    parts = []
    for seg in desc:
        if seg.unit == root:
            parts.append(mask.repeat_interleave(seg.repeat, dim=-1))
        else:
            parts.append(mask.new_ones(*mask.shape[:-1], widths[seg.unit] * seg.repeat))
    return torch.cat(parts, dim=-1)


def _write_into(target: torch.Tensor, sels: Sequence[Selection], value: torch.Tensor) -> None:
    """``target[sel0, sel1, ...] = value`` for selections along the leading dims (shapes checked)."""
    index = tuple(
        _as_indices(sel, target.shape[d]).to(target.device).reshape([-1] + [1] * (len(sels) - d - 1))
        for d, sel in enumerate(sels)
    )
    if not index:
        target.copy_(value)
        return
    if target[index].shape != value.shape:
        raise ConfigError(f"shape {tuple(value.shape)} does not fit the selected {tuple(target[index].shape)}")
    target[index] = value.to(target.dtype)


def _write_selected(buffer: torch.Tensor, sel: Selection, values: torch.Tensor) -> None:
    values = values.to(buffer.dtype)
    if sel is None:
        buffer.copy_(values)
    elif isinstance(sel, slice):
        buffer[sel].copy_(values)
    else:
        buffer.index_copy_(0, sel.to(buffer.device), values)


def _on(sel: Selection, device: torch.device) -> Selection:
    """An index selection on the layers' device: moved once per sub-network here, not at every
    forward (a host-to-GPU copy waits for the GPU). Layers still move one that is elsewhere (the
    model moved after its sub-network was set), so this is speed, not correctness."""
    return sel.to(device) if isinstance(sel, torch.Tensor) and sel.device != device else sel


def _desc_selection(desc: Desc, unit_sel: Mapping[int, tuple[int, Selection]]) -> Selection:
    """Channel selection of a tensor made of ``desc``'s segments, given each unit's selection."""
    parts = [(seg, unit_sel.get(seg.unit, (seg.length, None))[1]) for seg in desc]
    if all(sel is None for _, sel in parts):
        return None
    if len(parts) == 1 and parts[0][0].repeat == 1:
        return parts[0][1]
    indices, offset = [], 0
    for seg, sel in parts:
        channels = torch.arange(seg.length)
        if sel is not None:
            channels = channels[sel]
        features = (channels[:, None] * seg.repeat + torch.arange(seg.repeat)).reshape(-1)
        indices.append(features + offset)
        offset += seg.length * seg.repeat
    index = torch.cat(indices)
    if int(index[-1] - index[0]) + 1 == index.numel() and bool((index[1:] > index[:-1]).all()):
        return slice(int(index[0]), int(index[-1]) + 1)
    return index


def _as_indices(sel: Selection, length: int) -> torch.Tensor:
    if sel is None:
        return torch.arange(length)
    if isinstance(sel, slice):
        return torch.arange(sel.start, sel.stop)
    return sel


def _as_selection(index: torch.Tensor, length: int) -> Selection:
    """The cheapest form of a sorted index set: None (all), a slice (contiguous) or the indices."""
    if index.numel() == length:
        return None
    if index.numel() and int(index[-1] - index[0]) + 1 == index.numel():
        return slice(int(index[0]), int(index[-1]) + 1)
    return index


def _union(parts: Sequence[Selection], length: int) -> Selection:
    """The union of channel selections of one length (the active channels of a padded sum)."""
    if any(p is None for p in parts):
        return None
    if all(isinstance(p, slice) and p.start == 0 for p in parts):
        return slice(0, max(p.stop for p in parts))  # type: ignore[union-attr]
    if all(isinstance(p, slice) and p.stop == length for p in parts):
        return slice(min(p.start for p in parts), length)  # type: ignore[union-attr]
    return _as_selection(torch.unique(torch.cat([_as_indices(p, length) for p in parts])), length)


def _place(op_sel: Selection, out_sel: Selection, length: int) -> Selection:
    """Where an operand's active channels sit among the sum's active channels (None: the same)."""
    if op_sel is None and out_sel is None:
        return None
    if isinstance(op_sel, slice) and isinstance(out_sel, slice) and (op_sel.start, op_sel.stop) == (out_sel.start, out_sel.stop):
        return None
    out_index = _as_indices(out_sel, length)
    positions = torch.searchsorted(out_index, _as_indices(op_sel, length))
    if positions.numel() == out_index.numel():
        return None
    if positions.numel() and int(positions[-1] - positions[0]) + 1 == positions.numel():
        return slice(int(positions[0]), int(positions[-1]) + 1)
    return positions


def _permute_layer(module: nn.Module, dim: int, spans: Sequence[range], perm: torch.Tensor) -> None:
    """Permute the channels in ``spans`` of ``module``'s outputs (``dim`` 0) or inputs (1) by ``perm``."""
    axes = _channel_axes(module, dim)
    size = _out_size(module) if dim == 0 else module.in_features if isinstance(module, nn.Linear) else module.in_channels
    index = torch.arange(size)
    for span in spans:
        repeat = len(span) // perm.numel()
        features = (perm[:, None] * repeat + torch.arange(repeat)).reshape(-1)
        index[span.start:span.stop] = features + span.start
    for tensor, axis, grouped in axes:
        # a grouped weight holds one group's channels: every group is permuted alike, so the
        # first group's part of the index is the whole story
        part = index[: tensor.shape[axis]] if grouped else index
        tensor.copy_(tensor.index_select(axis, part.to(tensor.device)))


def _channel_axes(module: nn.Module, dim: int) -> list[tuple[torch.Tensor, int, bool]]:
    """``(tensor, axis, holds one group)`` for every tensor of ``module`` along its outputs (0) or inputs (1)."""
    named = [getattr(module, n, None) for n in ("weight", "bias", "running_mean", "running_var")]
    tensors = [t for t in named if isinstance(t, torch.Tensor)]
    if not isinstance(module, _CONVS):
        return [(module.weight, 1, False)] if dim == 1 else [(t, 0, False) for t in tensors]
    grouped = module.groups > 1 and not module.depthwise
    transposed = isinstance(module, DynamicConvTranspose2d) and not module.depthwise
    bias = [(module.bias, 0, False)] if module.bias is not None and dim == 0 else []
    if dim == 0:  # outputs: weight rows (columns of a transposed conv) and the bias
        return [(module.weight, 1, grouped) if transposed else (module.weight, 0, False)] + bias
    return [(module.weight, 0, False) if transposed else (module.weight, 1, grouped)]


def _out_size(module: nn.Module) -> int:
    for attr in ("out_channels", "out_features", "num_features"):
        if hasattr(module, attr):
            return int(getattr(module, attr))
    raise TypeError(f"{type(module).__name__} has no channel count")


Rewrites = tuple[nn.Module, list[tuple[PadAddRecord, PadAdd]], list[tuple[SplitRecord, ChannelSplit]]]


def _rewrite(model: nn.Module, space: ChannelSpace) -> Rewrites:
    """``model`` itself, or an fx rewrite of it whose padded sums are :class:`PadAdd` modules and
    whose chunks/splits along channels are :class:`ChannelSplit` modules."""
    analysis = space.analysis
    if not analysis.pad_adds and not analysis.splits:
        return model, [], []
    graph = copy.deepcopy(analysis.graph.graph)  # type: ignore[union-attr]
    gm = torch.fx.GraphModule(model, graph, class_name=type(model).__name__)
    _keep_unused_modules(gm, model)
    nodes = {node.name: node for node in graph.nodes}
    taken = {name for name, _ in gm.named_modules()}

    def replace(node_name: str, suffix: str, module: nn.Module, args: tuple) -> None:
        node = nodes[node_name]
        name = f"{node.name}_{suffix}"
        while name in taken:
            name += "_"
        taken.add(name)
        gm.add_submodule(name, module)
        with graph.inserting_after(node):
            replacement = graph.call_module(name, args, dict(node.kwargs) if suffix == "pad" else {})
        node.replace_all_uses_with(replacement)
        graph.erase_node(node)

    pads = []
    for record in analysis.pad_adds:
        node = nodes[record.node]
        op = "sub" if str(getattr(node.target, "__name__", node.target)).strip("_").startswith(("sub", "isub")) else "add"
        pads.append((record, PadAdd(op)))
        replace(record.node, "pad", pads[-1][1], node.args)
    splits = []
    for split_record in analysis.splits:
        splits.append((split_record, ChannelSplit()))
        replace(split_record.node, "split", splits[-1][1], nodes[split_record.node].args[:1])
    gm.recompile()
    gm.train(model.training)
    return gm, pads, splits


def _keep_unused_modules(gm: torch.fx.GraphModule, model: nn.Module) -> None:
    """fx keeps only modules the forward calls: put back any others holding weights (same state_dict)."""
    present = set(gm.state_dict())
    for name, module in model.named_modules():
        own = [n for n, _ in module.named_parameters(recurse=False)] + [n for n, _ in module.named_buffers(recurse=False)]
        if name and any(f"{name}.{n}" not in present for n in own):
            gm.add_submodule(name, module)


def _reduce_sums(sums: dict, norms: list, reduce: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Sum every BN layer's (sum, sum of squares, count) over processes in one flat collective."""
    # the same layers run on every process (same model, same config), in the same order
    norms = [bn for bn in norms if bn in sums]
    parts = []
    for bn in norms:
        total, total_sq, count = sums[bn]
        parts += [total.reshape(-1), total_sq.reshape(-1), torch.tensor([float(count)], dtype=torch.float64,
                                                                         device=total.device)]
    flat = reduce(torch.cat(parts))
    offset = 0
    for bn in norms:
        n = sums[bn][0].numel()
        total = flat[offset: offset + n]
        total_sq = flat[offset + n: offset + 2 * n]
        count = int(round(float(flat[offset + 2 * n])))
        sums[bn] = [total.view_as(sums[bn][0]), total_sq.view_as(sums[bn][1]), count]
        offset += 2 * n + 1
