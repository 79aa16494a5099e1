"""Published channel configurations as presets: ``--channels preset:NAME``.

A preset is a channel list published with a paper, mapped onto the units of one of our zoo
models. The AutoSlim networks (Yu & Huang 2019, arXiv:1903.11728) come from the official
repository JiahuiYu/slimmable_networks at commit :data:`SOURCE_COMMIT`: the ``channel_num_list``
entries of ``apps/autoslim_mobilenet_v2_train_val.yml`` and ``apps/autoslim_resnet_train_val.yml``,
read in the order the repository's ``models/autoslim_mobilenet_v2.py`` and
``models/autoslim_resnet.py`` consume them. The lists are data; each preset keeps the list exactly
as published (its last entry is the 1000 ImageNet classes) and :meth:`Preset.layer_widths` says
which of our layers each entry sets.

Every published width is a multiple of 8, so a preset lives in the space of its model with
``divisor=8`` (every multiple of 8 up to a unit's width), where it is a valid config.
AutoSlim searched MobileNetV2 from a 1.5x supernet, so those presets are configs of
``mobilenet_v2`` at ``width_mult=1.5``; ResNet-50 was searched at 1.0x.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from widthsearch.errors import ConfigError, lookup
from widthsearch.space.channel_space import ChannelSpace, Config
from widthsearch.space.spec import SpaceSpec

__all__ = ["PRESETS", "PRESET_PREFIX", "Preset", "get_preset", "preset_name", "SOURCE_REPO", "SOURCE_COMMIT"]

PRESET_PREFIX = "preset:"
SOURCE_REPO = "JiahuiYu/slimmable_networks"
SOURCE_COMMIT = "5dc14d0357ccfc596d706281acdc8a5b0b66c6d6"
#: the width granularity of every published list (each entry is a multiple of 8)
PRESET_DIVISOR = 8
IMAGENET_CLASSES = 1000


def _mobilenet_v2_layers(widths: Sequence[int]) -> dict[str, int]:
    """Layer widths of our ``mobilenet_v2`` from a list in the source's order.

    The source pops: the stem; block 0's output (block 0 has no expansion, its depthwise conv
    runs on the stem's channels); then for blocks 1..16 the expansion (hidden) width and the
    output width; then the last 1x1 conv; then the classes.
    """
    if len(widths) != 36:
        raise ValueError(f"a MobileNetV2 list has 36 entries, got {len(widths)}")
    layers = {"stem.0": widths[0], "blocks.0.project.0": widths[1]}
    for block in range(1, 17):
        layers[f"blocks.{block}.expand.0"] = widths[2 * block]
        layers[f"blocks.{block}.project.0"] = widths[2 * block + 1]
    layers["head.0"] = widths[34]
    return layers


_RESNET50_STAGES = (3, 4, 6, 3)


def _resnet50_layers(widths: Sequence[int]) -> dict[str, int]:
    """Layer widths of our ``resnet50`` from a list in the source's order.

    The source pops: the stem; then per stage the stage's output width, followed by
    (conv1, conv2, conv3) widths of each bottleneck; then the classes. The leading stage width
    is overwritten by the first block's conv3 in the source, so it must equal it (and every
    block's conv3: the residual adds tie them); the projection shortcut of a stage's first block
    has that block's output width.
    """
    expected = 1 + sum(1 + 3 * n for n in _RESNET50_STAGES) + 1
    if len(widths) != expected:
        raise ValueError(f"a ResNet-50 list has {expected} entries, got {len(widths)}")
    layers = {"stem.0": widths[0]}
    pos = 1
    for stage, blocks in enumerate(_RESNET50_STAGES, start=1):
        stage_width = widths[pos]
        pos += 1
        for block in range(blocks):
            prefix = f"layer{stage}.{block}"
            layers[f"{prefix}.conv1"], layers[f"{prefix}.conv2"], layers[f"{prefix}.conv3"] = widths[pos:pos + 3]
            pos += 3
        if layers[f"layer{stage}.0.conv3"] != stage_width:
            raise ValueError(f"stage {stage}: listed width {stage_width} differs from its first block's output")
        layers[f"layer{stage}.0.shortcut.0"] = stage_width
    return layers


_LAYOUTS: dict[str, Callable[[Sequence[int]], dict[str, int]]] = {
    "mobilenet_v2": _mobilenet_v2_layers,
    "resnet50": _resnet50_layers,
}


@dataclass(frozen=True)
class Preset:
    """One published network: a channel list of a zoo model at ``width_mult``.

    ``widths`` is the list exactly as published (the last entry is the number of classes),
    ``published_flops`` the FLOPs (MACs) the authors state for it and ``top1`` the ImageNet
    top-1 accuracy (%) they report; ``source`` the file of :data:`SOURCE_REPO` it comes from.
    """

    name: str
    model: str
    width_mult: float
    widths: tuple[int, ...]
    published_flops: int
    top1: float
    source: str

    def layer_widths(self) -> dict[str, int]:
        """Output channels of each of our model's conv layers that the list sets."""
        if self.widths[-1] != IMAGENET_CLASSES:
            raise ValueError(f"{self.name}: the list should end with the {IMAGENET_CLASSES} classes")
        return _LAYOUTS[self.model](self.widths)

    def spec(self) -> SpaceSpec:
        """The space the preset is a config of (ImageNet input and classes, the model's defaults)."""
        return SpaceSpec(self.model, self.width_mult, groups=None, divisor=PRESET_DIVISOR)

    def config(self, space: ChannelSpace) -> Config:
        """The preset as a config of ``space`` (built from :meth:`spec`): one width per unit.

        Every producer layer of a unit must get the same width from the list (the published
        lists respect the residual ties) and every unit must be covered; a mismatch means the
        model code and the layout disagree and is an error, never a silent guess.
        """
        layers = self.layer_widths()
        config: Config = {}
        used: set[str] = set()
        for unit in space.units:
            producers = space.analysis.unit_producers[space.root_of(unit.name)]
            listed = {p: layers[p] for p in producers if p in layers}
            missing = [p for p in producers if p not in layers]
            if missing:
                raise ConfigError(f"preset {self.name}: no published width for layer {missing[0]!r}")
            if len(set(listed.values())) != 1:
                raise ConfigError(f"preset {self.name}: tied layers get different widths {listed}")
            config[unit.name] = next(iter(listed.values()))
            used.update(listed)
        unused = sorted(set(layers) - used)
        if unused:
            raise ConfigError(f"preset {self.name}: layer {unused[0]!r} is not a unit producer of {self.model}")
        return space.validate(config, strict=True)


def _mbv2(name: str, widths: Sequence[int], flops: int, top1: float) -> Preset:
    return Preset(name, "mobilenet_v2", 1.5, tuple(widths), flops, top1, "apps/autoslim_mobilenet_v2_train_val.yml")


def _r50(name: str, widths: Sequence[int], flops: int, top1: float) -> Preset:
    return Preset(name, "resnet50", 1.0, tuple(widths), flops, top1, "apps/autoslim_resnet_train_val.yml")


# Channel lists: `channel_num_list` of the source files (data, transcribed entry by entry).
# FLOPs: the comments beside the lists and the README's model zoo table; top-1: 100 - the README's
# top-1 error (the paper's abstract gives 74.2 % for the 305M MobileNetV2 too).
PRESETS: dict[str, Preset] = {p.name: p for p in (
    _mbv2("autoslim-mbv2-207m",
          [8, 8, 96, 16, 96, 16, 96, 24, 144, 24, 144, 24, 144, 48, 288, 48, 288, 48, 288, 48, 288, 64, 432, 64,
           432, 64, 648, 176, 720, 176, 720, 176, 1440, 280, 1920, 1000], 207_000_000, 73.0),
    _mbv2("autoslim-mbv2-305m",
          [8, 8, 96, 16, 96, 16, 96, 24, 144, 24, 144, 24, 144, 56, 288, 56, 288, 56, 288, 56, 288, 96, 432, 96,
           432, 96, 864, 240, 1440, 240, 960, 240, 1440, 480, 1920, 1000], 305_000_000, 74.2),
    _mbv2("autoslim-mbv2-505m",
          [32, 16, 144, 24, 176, 24, 192, 48, 240, 48, 144, 48, 264, 88, 288, 88, 336, 88, 432, 88, 576, 144, 576,
           144, 648, 144, 864, 240, 1440, 240, 1440, 240, 1440, 480, 1920, 1000], 505_000_000, 75.4),
    _r50("autoslim-r50-570m",
         [24, 72, 8, 16, 72, 16, 16, 72, 8, 8, 72, 240, 16, 24, 240, 16, 24, 240, 16, 16, 240, 16, 24, 240, 704, 72,
          72, 704, 48, 72, 704, 48, 72, 704, 72, 72, 704, 48, 48, 704, 48, 48, 704, 1680, 280, 240, 1680, 120, 200,
          1680, 280, 280, 1680, 1000], 570_000_000, 72.2),
    _r50("autoslim-r50-1g",
         [32, 72, 16, 16, 72, 16, 16, 72, 8, 8, 72, 280, 24, 40, 280, 16, 24, 280, 16, 24, 280, 24, 40, 280, 880, 72,
          72, 880, 72, 96, 880, 72, 72, 880, 72, 72, 880, 48, 72, 880, 168, 96, 880, 2016, 360, 280, 2016, 320, 360,
          2016, 480, 440, 2016, 1000], 1_000_000_000, 74.0),
    _r50("autoslim-r50-2g",
         [40, 120, 16, 16, 120, 24, 24, 120, 16, 24, 120, 440, 48, 72, 440, 32, 48, 440, 40, 56, 440, 64, 72, 440,
          1024, 168, 168, 1024, 96, 144, 1024, 120, 168, 1024, 120, 144, 1024, 120, 144, 1024, 256, 256, 1024, 2016,
          512, 512, 2016, 480, 480, 2016, 512, 512, 2016, 1000], 2_006_000_000, 75.6),
    _r50("autoslim-r50-3g",
         [48, 192, 16, 16, 192, 56, 56, 192, 24, 40, 192, 512, 88, 112, 512, 64, 104, 512, 104, 112, 512, 80, 128,
          512, 1024, 240, 216, 1024, 144, 216, 1024, 192, 192, 1024, 144, 240, 1024, 240, 256, 1024, 256, 256, 1024,
          2016, 512, 512, 2016, 480, 512, 2016, 512, 512, 2016, 1000], 3_005_000_000, 76.0),
)}


def preset_name(ref: object) -> str | None:
    """``NAME`` when ``ref`` is a ``preset:NAME`` reference (a string or path), else None."""
    text = str(ref)
    return text[len(PRESET_PREFIX):] if text.startswith(PRESET_PREFIX) else None


def get_preset(name: str) -> Preset:
    """The preset ``name`` (with or without the ``preset:`` prefix); one-line error listing the known ones."""
    return lookup(PRESETS, preset_name(name) or name, "preset")
