"""Channel dropout while training a static network, ramped over epochs and depth (Network Adjustment).

Network Adjustment (Chen et al., CVPR 2020; official code danczs/NetworkAdjustment) trains every
round's network with channel dropout: one Bernoulli mask per sample and channel, kept channels
scaled by ``1/(1-p)``, at the rate ``p * e/E * (i+1)/L`` in epoch ``e`` (0-based) of ``E`` for the
``i``-th of ``L`` dropped layers -- zero in the first epoch and at the shallowest layers, growing
linearly with both (see :func:`ramped_rates`).

:class:`TrainingChannelDropout` puts this on a plain network from the outside, with forward hooks:
the model's ``forward``, its layers and its ``state_dict`` stay untouched, so a checkpoint or an
export of the trained network carries no trace of it. The training loop sets each epoch's rates
and reseeds the masks' own generator through :meth:`TrainingChannelDropout.start_epoch`; both
derive from the epoch index alone, so a resumed run draws exactly the masks of an uninterrupted
one. The masks act only in training mode: evaluation runs the network as it is.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from widthsearch.data import mix_seed
from widthsearch.errors import UserError

__all__ = ["ramped_rates", "check_drop_rate", "TrainingChannelDropout"]

#: tag of the masks' generator stream in ``mix_seed(seed, epoch, rank, tag)`` (the loop uses 2 and 3)
_SEED_TAG = 23


def check_drop_rate(rate: float) -> float:
    """``rate`` as a float in ``[0, 1)``, else a one-line error."""
    value = float(rate)
    if not 0.0 <= value < 1.0:
        raise UserError(f"--train-drop must be in [0, 1), got {rate}")
    return value


def ramped_rates(rate: float, epoch: int, epochs: int, layers: int) -> list[float]:
    """The drop rate of each of ``layers`` dropped layers (network order) in epoch ``epoch`` (0-based).

    ``rate * epoch/epochs * (i+1)/layers`` for layer ``i``: the official code's epoch ramp
    (``--epd``, ``drop_rate * epoch / epochs``) times its depth ramp (``--layerd``,
    ``(i + 1) / drop_layers``), both on by default there. The first epoch trains without dropout
    and the last one reaches ``rate * (epochs-1)/epochs`` at the deepest layer.
    """
    if epochs < 1 or layers < 0 or not 0 <= epoch:
        raise ValueError(f"bad ramp arguments: epoch {epoch}, epochs {epochs}, layers {layers}")
    at_epoch = rate * epoch / epochs
    return [at_epoch * (i + 1) / layers for i in range(layers)]


class TrainingChannelDropout:
    """Channel dropout on a static network's unit outputs, in training mode only.

    ``units`` maps each dropped unit, in network order (the order of the depth ramp), to the
    module paths of ``model`` whose outputs carry its channels (``Supernet.output_layers``). Per
    forward of ``model`` in training mode, every unit with a positive rate gets one mask of shape
    ``(batch, channels)``, shared by all of its output layers in that forward (a unit is one set
    of channels, as in the FUR probe). :meth:`start_epoch` must be called before each epoch;
    :meth:`remove` takes the hooks off.
    """

    def __init__(self, model: nn.Module, units: Mapping[str, Sequence[str]], rate: float, epochs: int,
                 seed: int, rank: int = 0) -> None:
        self.rate = check_drop_rate(rate)
        self.epochs, self.seed, self.rank = int(epochs), int(seed), int(rank)
        self.units = {name: list(paths) for name, paths in units.items()}
        self.rates = {name: 0.0 for name in self.units}
        self.generator = torch.Generator()
        self.widths = {name: _unit_width(model, name, paths) for name, paths in self.units.items()}
        self._masks: dict[str, Tensor] = {}
        self._handles = [model.register_forward_pre_hook(self._draw)]
        for name, paths in self.units.items():
            for path in paths:
                self._handles.append(model.get_submodule(path).register_forward_hook(self._applier(name)))

    def start_epoch(self, epoch: int) -> dict:
        """Set epoch ``epoch``'s rates and reseed the masks; returns the log entry ``{"train_drop": top rate}``."""
        ramp = ramped_rates(self.rate, epoch, self.epochs, len(self.units))
        self.rates = dict(zip(self.units, ramp))
        self.generator.manual_seed(mix_seed(self.seed, epoch, self.rank, _SEED_TAG))
        return {"train_drop": max(ramp, default=0.0)}

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._masks.clear()

    def _draw(self, module: nn.Module, inputs: tuple) -> None:
        # masks of the previous forward must never leak into this one (e.g. an evaluation pass)
        self._masks.clear()
        x = inputs[0] if inputs else None
        if not module.training or not isinstance(x, Tensor):
            return
        for name, rate in self.rates.items():
            if rate > 0:
                keep = torch.rand(int(x.shape[0]), self.widths[name], generator=self.generator) >= rate
                self._masks[name] = (keep.float() / (1.0 - rate)).to(x.device)

    def _applier(self, name: str) -> Callable[[nn.Module, tuple, Tensor], Tensor | None]:
        def hook(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor | None:
            mask = self._masks.get(name)
            if mask is None:
                return None
            if mask.shape[1] != output.shape[1]:
                raise RuntimeError(f"unit {name!r}: a mask of {mask.shape[1]} channels for an output of {output.shape[1]}")
            shape = [mask.shape[0], mask.shape[1]] + [1] * (output.dim() - 2)
            return output * mask.to(output.dtype).reshape(shape)
        return hook


def _unit_width(model: nn.Module, name: str, paths: Sequence[str]) -> int:
    """The channels of a unit in ``model``: the output size of its (plain) output layers, which agree."""
    sizes = set()
    for path in paths:
        layer = model.get_submodule(path)
        size = getattr(layer, "num_features", None) or getattr(layer, "out_channels", None) \
            or getattr(layer, "out_features", None)
        if size is None:
            raise TypeError(f"unit {name!r}: {path} is a {type(layer).__name__}, not a batch norm, conv or linear layer")
        sizes.add(int(size))
    if len(sizes) != 1:
        raise ValueError(f"unit {name!r}: its output layers {list(paths)} disagree on its width ({sorted(sizes)})")
    return sizes.pop()
