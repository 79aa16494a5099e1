"""The space spec: everything needed to rebuild a supernet, saved with every artifact.

A checkpoint, a search folder and a channel-config YAML each carry the spec of the space their
widths refer to, and :func:`build_supernet` rebuilds exactly that supernet from it: no call site
re-traces a model with loose keyword arguments. ``physical`` (each unit's physical width,
recorded when the spec is first built) lets a rebuild detect a model whose code has changed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

import torch

from widthsearch.errors import UserError
from widthsearch.space.analysis import RESIDUAL_POLICIES, analyse

__all__ = ["SpaceSpec", "build_supernet", "build_space_model"]


@dataclass(frozen=True)
class SpaceSpec:
    """How a channel space is built from a model.

    ``model`` is a zoo name, a user's import spec (``package.module:factory``, ``file.py:factory``;
    ``model_kwargs`` are then the factory's keyword arguments) or ``"<module.Class instance>"`` for
    a space built from an ``nn.Module`` instance, which rebuilds only when that module is given
    again (:mod:`widthsearch.models.user`).

    ``width_mult`` is the model as the user means it; ``widen`` builds the supernet that much wider
    (Network Adjustment grows layers beyond the default; BCNetV2's enlarged supernet) and the units'
    ``default`` widths are those of the model at ``width_mult``. ``groups``/``divisor``/``round_to``
    and ``bins`` give the width choices (:func:`~widthsearch.space.units.make_choices`), ``fixed``
    the units kept at full width, ``residual`` the policy of residual adds ("tie" or "pad").
    """

    model: str
    width_mult: float = 1.0
    num_classes: int | None = None
    input_shape: tuple[int, ...] | None = None
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    groups: int | None = 10
    divisor: int | None = None
    round_to: int | None = None
    fixed: tuple[str, ...] = ()
    residual: str = "tie"
    widen: float = 1.0
    bins: tuple[int, int] | None = None
    physical: Mapping[str, int] | None = None

    def __post_init__(self) -> None:
        if self.residual not in RESIDUAL_POLICIES:
            raise UserError(f"--residual must be one of {', '.join(RESIDUAL_POLICIES)}, got {self.residual!r}")
        if not self.widen >= 1.0:
            raise UserError(f"widen must be at least 1, got {self.widen}")
        if self.groups is not None and self.groups < 1:
            raise UserError(f"--groups must be a positive integer, got {self.groups}")
        if self.divisor is not None and self.divisor < 1:
            raise UserError(f"--divisor must be a positive integer, got {self.divisor}")
        if self.round_to is not None and self.round_to < 1:
            raise UserError(f"--round-to must be a positive integer, got {self.round_to}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for checkpoints (``weights_only`` loads it), JSON and YAML."""
        d = asdict(self)
        d["input_shape"] = None if self.input_shape is None else [int(s) for s in self.input_shape]
        d["model_kwargs"] = dict(self.model_kwargs)
        d["fixed"] = list(self.fixed)
        d["bins"] = None if self.bins is None else [int(b) for b in self.bins]
        d["physical"] = None if self.physical is None else {k: int(v) for k, v in self.physical.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SpaceSpec":
        """The spec of a saved artifact; older ones (model/width_mult/groups at top level) load too."""
        if "space" in d and isinstance(d["space"], Mapping):
            d = d["space"]
        if not d.get("model"):
            raise UserError("the saved space names no model")
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in d.items() if k in known}
        if values.get("input_shape") is not None:
            values["input_shape"] = tuple(int(s) for s in values["input_shape"])
        values["fixed"] = tuple(values.get("fixed") or ())
        if values.get("bins") is not None:
            values["bins"] = tuple(int(b) for b in values["bins"])
        values["model_kwargs"] = dict(values.get("model_kwargs") or {})
        for key in ("width_mult", "widen"):
            if values.get(key) is not None:
                values[key] = float(values[key])
            else:
                values.pop(key, None)
        return cls(**values)

    def with_physical(self, physical: Mapping[str, int]) -> "SpaceSpec":
        return replace(self, physical=dict(physical))

    def example_input(self, batch: int = 2) -> torch.Tensor:
        if self.input_shape is None:
            from widthsearch.models import model_info
            from widthsearch.models.user import is_zoo_model

            if not is_zoo_model(self.model):
                raise UserError(f"--input CxHxW is required for {self.model}: only zoo models have a default "
                                "input shape")
            shape = tuple(model_info(self.model)["input_shape"])
        else:
            shape = tuple(self.input_shape)
        return torch.zeros(batch, *shape)


def build_space_model(spec: SpaceSpec, width_mult: float | None = None):
    """The model of ``spec`` at ``width_mult`` (default: the physical ``width_mult * widen``).

    A zoo name is built by :func:`~widthsearch.models.build_model`; an import spec by calling the
    user's factory, then run once on the spec's input to check it (see :mod:`widthsearch.models.user`).
    """
    return _build_model(spec, width_mult)[0]


def _build_model(spec: SpaceSpec, width_mult: float | None = None, model=None):
    """``(model, outputs per image or None)``; a user's model (``model``, or its factory's) is checked."""
    from widthsearch.models import build_model
    from widthsearch.models.user import build_user_model, check_output, instance_name, is_instance_name, is_zoo_model

    width = spec.width_mult * spec.widen if width_mult is None else width_mult
    if is_zoo_model(spec.model):
        if model is None:
            model = build_model(spec.model, num_classes=spec.num_classes, width_mult=width, **dict(spec.model_kwargs))
        return model, None
    if model is None:
        model = build_user_model(spec.model, num_classes=spec.num_classes, width_mult=width, kwargs=spec.model_kwargs)
    elif is_instance_name(spec.model):
        if instance_name(model) != spec.model:
            raise UserError(f"this space was built from a {spec.model[1:]}, not from a {instance_name(model)[1:]}")
        if width != 1.0:
            raise UserError(f"an nn.Module instance is used as it is: width x{width:g} needs an import spec of a "
                            "factory taking width_mult")
    return model, check_output(model, spec.example_input(1), spec.model, spec.num_classes)


def _default_widths(spec: SpaceSpec) -> dict[str, int] | None:
    """Unit widths of the model at ``width_mult`` when the supernet is widened (else None)."""
    if spec.widen == 1.0:
        return None
    base = analyse(build_space_model(spec, spec.width_mult), spec.example_input(), spec.residual)
    return {base.unit_name(r): base.unit_length[r] for r in base.searchable_roots()}


def build_supernet(spec: SpaceSpec, model=None):
    """The supernet of ``spec`` (a freshly built model unless ``model`` is given); returns ``(net, spec)``.

    The returned spec records the units' physical widths; when ``spec`` already holds them, a
    mismatch (the model code changed since the artifact was written) is a one-line error.
    """
    from widthsearch.space.channel_space import ChannelSpace
    from widthsearch.space.supernet import Supernet

    model, classes = _build_model(spec, model=model)
    if spec.num_classes is None and classes is not None:
        spec = replace(spec, num_classes=classes)  # a user's model has no zoo default to fall back on
    space = ChannelSpace.from_model(
        model, spec.example_input(), spec.groups, spec.divisor, spec.round_to, spec.fixed,
        residual=spec.residual, bins=spec.bins, defaults=_default_widths(spec),
    )
    physical = {u.name: u.max for u in space.units}
    if spec.physical is not None and dict(spec.physical) != physical:
        raise UserError(
            f"the saved channel units of {spec.model} do not match this model's "
            "(was the model code changed, or a flag such as --residual given differently?)"
        )
    return Supernet(model, space=space), spec.with_physical(physical)
