"""Channel configurations as YAML: one entry per unit plus metadata.

```yaml
model: mobilenet_v2
width_mult: 1.5
input_shape: [3, 224, 224]
groups: 10
space: {model: mobilenet_v2, width_mult: 1.5, groups: 10, residual: tie, ...}
flops: 209612800
params: 3981720
channels:
  features.0.0: 48
  features.1.conv.1: 24
  ...
select:                 # only when some unit does not keep its first channels
  features.0.0: right   # or a channel ranking: [5, 0, 3, ...]
```

``space`` is the :class:`~widthsearch.space.spec.SpaceSpec` the widths refer to; files written
before it existed (model/width_mult/groups at the top level only) still load, and so do files
without ``select`` (every unit keeps its first channels).

Wherever a config file is read, ``preset:NAME`` names a published network instead
(:mod:`widthsearch.space.presets`): its document is built in memory, in the same format.
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any, Mapping

import yaml

from widthsearch.errors import ConfigError
from widthsearch.io import read_yaml, write_text_atomic
from widthsearch.space.channel_space import ChannelSpace, Config
from widthsearch.space.presets import PRESETS, SOURCE_COMMIT, SOURCE_REPO, get_preset, preset_name
from widthsearch.space.spec import build_supernet
from widthsearch.space.subnet import Subnet


def config_document(space: ChannelSpace, config: Mapping[str, int], /, **meta: Any) -> dict[str, Any]:
    """The YAML document of ``config``: metadata (model, width_mult, ``space`` spec, ...), costs, then channels."""
    config = space.validate(config, strict=False)
    cost = space.cost(config)
    doc: dict[str, Any] = {key: value for key, value in meta.items() if value is not None}
    if "input_shape" in doc:
        doc["input_shape"] = [int(d) for d in doc["input_shape"]]
    doc["flops"] = cost.flops
    doc["params"] = cost.params
    doc["channels"] = {u.name: int(config[u.name]) for u in space.units}
    if isinstance(config, Subnet) and config.selectors:
        doc["select"] = Subnet(doc["channels"], config.selectors).to_doc()["select"]
    return doc


def save_config(path: str | Path, space: ChannelSpace, config: Mapping[str, int], /, **meta: Any) -> Path:
    """Write ``config`` with its metadata and costs atomically (temp file + rename)."""
    text = yaml.safe_dump(config_document(space, config, **meta), sort_keys=False)
    return write_text_atomic(path, text)


@functools.lru_cache(maxsize=None)
def _preset_documents(model: str, width_mult: float) -> dict[str, dict[str, Any]]:
    """The documents of every preset of ``model`` at ``width_mult``: one trace of the model serves
    them all (ResNet-50 takes seconds), and a command that reads a preset several times traces once."""
    presets = [p for p in PRESETS.values() if (p.model, p.width_mult) == (model, width_mult)]
    net, spec = build_supernet(presets[0].spec())  # the presets of one model and width share their space
    docs = {}
    for preset in presets:
        docs[preset.name] = config_document(
            net.space, preset.config(net.space), model=model, width_mult=width_mult,
            input_shape=spec.example_input(1).shape[1:], space=spec.to_dict(), preset=preset.name,
            source=f"{SOURCE_REPO}@{SOURCE_COMMIT[:7]}:{preset.source}",
            published_flops=preset.published_flops, published_top1=preset.top1,
        )
    return docs


def preset_document(name: str) -> dict[str, Any]:
    """The config document of the preset ``name`` (``preset:`` prefix optional), as a file would hold it."""
    preset = get_preset(name)
    return copy.deepcopy(_preset_documents(preset.model, preset.width_mult)[preset.name])


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a config YAML file (or a ``preset:NAME``) into its document; one-line errors for
    missing or broken files and unknown presets."""
    name = preset_name(path)
    if name is not None:
        return preset_document(name)
    doc = read_yaml(path, "channel config", shape="a mapping with a 'channels' entry", error=ConfigError)
    channels = doc.get("channels")
    if not isinstance(channels, dict):
        raise ConfigError(f"{path}: no 'channels' mapping of unit name -> width")
    return doc


def load_config(
    path: str | Path, space: ChannelSpace, model: str | None = None, strict: bool = True
) -> tuple[Config, dict[str, Any]]:
    """Load and validate a config for ``space``; returns (config, metadata).

    The config is a :class:`Subnet` when the file has a ``select`` entry, else plain widths.
    ``model`` (when given) must match the file's ``model`` entry. ``strict`` requires every width
    to be an allowed choice of its unit.
    """
    doc = read_config_file(path)
    if model is not None and doc.get("model") not in (None, model):
        raise ConfigError(f"{path}: written for model {doc['model']!r}, not {model!r}")
    if doc.get("select") is not None and not isinstance(doc["select"], dict):
        raise ConfigError(f"{path}: 'select' must map unit names to left, right or a channel ranking")
    try:
        wanted = Subnet(doc["channels"], doc["select"]) if doc.get("select") else doc["channels"]
        config = space.validate(wanted, strict=strict)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    meta = {key: value for key, value in doc.items() if key not in ("channels", "select")}
    return config, meta
