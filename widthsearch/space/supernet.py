"""Supernet: run one model at any channel configuration, calibrate BN, export static nets."""
from __future__ import annotations

import contextlib
import copy
from typing import Iterable, Iterator, Mapping

import torch
import torch.nn as nn

from widthsearch.errors import ConfigError
from widthsearch.space.analysis import Desc
from widthsearch.space.channel_space import ChannelSpace, Config
from widthsearch.space.dynamic import (
    DynamicBatchNorm1d,
    DynamicBatchNorm2d,
    DynamicConv2d,
    Selection,
    make_dynamic,
    static_copy,
)
from widthsearch.space.units import Cost

ALIGNMENTS = ("left", "right")


class Supernet:
    """Controls a model whose Conv2d/BatchNorm/Linear layers run on a subset of channels.

    ``Supernet(model, x)`` converts the analysed layers of ``model`` *in place*; ``self.model`` stays
    a plain ``nn.Module`` with the same ``state_dict`` keys, ready for optimizers, DDP and
    ``torch.save``. The active configuration is pushed into each layer by :meth:`set_config`.
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: torch.Tensor | tuple[torch.Tensor, ...] | None = None,
        groups: int | None = 10,
        divisor: int | None = None,
        round_to: int | None = None,
        space: ChannelSpace | None = None,
    ) -> None:
        if space is None:
            if example_input is None:
                raise ValueError("Supernet needs an example input or a ChannelSpace")
            space = ChannelSpace.from_model(model, example_input, groups, divisor, round_to)
        self.model = model
        self.space = space
        self._layers = {
            name: rec
            for name, rec in space.analysis.layers.items()
            if rec.kind in ("conv", "depthwise", "bn", "linear")
        }
        for rec in self._layers.values():
            make_dynamic(rec.module)
            if isinstance(rec.module, DynamicConv2d):
                rec.module.depthwise = rec.kind == "depthwise"
        self.config: Config = {}
        self.align = "left"
        self.orders: dict[str, torch.Tensor] = {}
        self.set_config(space.max_config())

    # ---- configuration -------------------------------------------------------------------------
    def set_config(
        self,
        config: Mapping[str, int],
        align: str = "left",
        orders: Mapping[str, torch.Tensor] | None = None,
        strict: bool = False,
    ) -> None:
        """Run at ``config`` from now on.

        ``align="left"`` keeps the first c channels of every unit, ``"right"`` the last c (BCNet's
        right-aligned sub-network). ``orders`` gives a unit a channel ranking (a permutation of its
        channels): the c best-ranked channels are kept (SP-Net's sorted channels). ``strict``
        additionally requires every width to be one of the unit's choices.
        """
        if align not in ALIGNMENTS:
            raise ConfigError(f"align must be one of {ALIGNMENTS}, got {align!r}")
        config = self.space.validate(config, strict=strict)
        orders = dict(orders or {})
        for name, order in orders.items():
            unit = self.space.unit(name)
            if sorted(order.tolist()) != list(range(unit.max)):
                raise ConfigError(f"order of unit {name!r} must be a permutation of 0..{unit.max - 1}")
        unit_sel = self._unit_selections(config, align, orders)
        for rec in self._layers.values():
            module = rec.module
            if isinstance(module, (DynamicBatchNorm2d, DynamicBatchNorm1d)):
                module.sel = _desc_selection(rec.out_desc, unit_sel)
            elif isinstance(module, DynamicConv2d) and module.depthwise:
                module.out_sel = _desc_selection(rec.out_desc, unit_sel)
                module.in_sel = None
            else:
                module.in_sel = _desc_selection(rec.in_desc, unit_sel)
                module.out_sel = _desc_selection(rec.out_desc, unit_sel)
        self.config, self.align, self.orders = config, align, orders

    def _unit_selections(
        self, config: Config, align: str, orders: Mapping[str, torch.Tensor]
    ) -> dict[int, tuple[int, Selection]]:
        """Per source root: (full length, selection); fixed roots are absent (full)."""
        selections: dict[int, tuple[int, Selection]] = {}
        for unit in self.space.units:
            width = config[unit.name]
            root = self.space.root_of(unit.name)
            if unit.name in orders:
                sel: Selection = torch.sort(orders[unit.name][:width].long()).values
            elif width == unit.max:
                sel = None
            elif align == "left":
                sel = slice(0, width)
            else:
                sel = slice(unit.max - width, unit.max)
            selections[root] = (unit.max, sel)
        return selections

    @contextlib.contextmanager
    def using(self, config: Mapping[str, int], align: str = "left",
              orders: Mapping[str, torch.Tensor] | None = None) -> Iterator["Supernet"]:
        """Temporarily run at ``config``; the previous configuration is restored afterwards."""
        previous = (self.config, self.align, self.orders)
        self.set_config(config, align, orders)
        try:
            yield self
        finally:
            self.set_config(previous[0], previous[1], previous[2])

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
    ) -> int:
        """Set BN running statistics of the active channels to the exact statistics of ``batches``.

        Each batch is normalised with its own statistics (as in training) while every BN layer
        accumulates per-channel sums of its input; afterwards ``running_mean`` is the mean and
        ``running_var`` the unbiased variance over all calibration samples and positions. With
        equal batches, the mean equals PyTorch's cumulative average (``momentum=None``); the variance
        is the exact pooled variance rather than an average of per-batch variances. Only channels
        of ``config`` are touched. The model is left in eval mode. Returns the number of batches used.
        """
        if config is not None:
            self.set_config(config, self.align, self.orders)
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
        for bn, (total, total_sq, count) in sums.items():
            mean = total / count
            var = (total_sq - count * mean * mean) / max(count - 1, 1)
            _write_selected(bn.running_mean, bn.sel, mean)
            _write_selected(bn.running_var, bn.sel, var.clamp_min(0))
        return used

    # ---- export and costs --------------------------------------------------------------------------
    def export(self, config: Mapping[str, int] | None = None, align: str | None = None,
               orders: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
        """A plain static copy of the model at ``config`` (default: the active one).

        Every dynamic layer becomes an ordinary Conv2d/BatchNorm/Linear holding copies of the
        selected weights and running statistics; the rest of the model is deep-copied, so the
        export computes exactly what the supernet computes at that config in eval mode.
        """
        context = (
            self.using(config, align or self.align, orders if orders is not None else self.orders)
            if config is not None else contextlib.nullcontext()
        )
        with context:
            memo = {id(rec.module): static_copy(rec.module) for rec in self._layers.values()}
            return copy.deepcopy(self.model, memo)

    def cost(self, config: Mapping[str, int] | None = None) -> Cost:
        return self.space.cost(config if config is not None else self.config)


def _write_selected(buffer: torch.Tensor, sel: Selection, values: torch.Tensor) -> None:
    values = values.to(buffer.dtype)
    if sel is None:
        buffer.copy_(values)
    elif isinstance(sel, slice):
        buffer[sel].copy_(values)
    else:
        buffer.index_copy_(0, sel.to(buffer.device), values)


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
