"""The channel space of a model: its units, their choices, validation and fast costs."""
from __future__ import annotations

import math
import random
from typing import Iterable, Mapping, Sequence

import torch
import torch.nn as nn

from widthsearch.errors import ConfigError
from widthsearch.space.analysis import Analysis, Desc, analyse
from widthsearch.space.subnet import Subnet
from widthsearch.space.units import Cost, FixedUnit, Unit, make_choices

Config = dict[str, int]


class ChannelSpace:
    """Units of a model (channels that change width together) and the cost of any config.

    Build it with :meth:`from_model`; it never modifies the model.
    """

    def __init__(self, analysis: Analysis, units: Sequence[Unit], roots: Sequence[int],
                 fixed_units: Sequence[FixedUnit] = ()) -> None:
        self.analysis = analysis
        self.units: list[Unit] = list(units)
        #: channels that cannot (or were asked not to) change width, each with its reason
        self.fixed_units: list[FixedUnit] = list(fixed_units)
        self._root_of = {u.name: r for u, r in zip(units, roots)}
        self._unit_of_root = {r: u for u, r in zip(units, roots)}
        self._by_name = {u.name: u for u in units}
        self._cost_terms = _compile_cost_terms(analysis)
        self._moment_form: _MomentForm | None = None  # built on the first expected_flops call

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        example_input: torch.Tensor | tuple[torch.Tensor, ...],
        groups: int | None = 10,
        divisor: int | None = None,
        round_to: int | None = None,
        fixed: Iterable[str] = (),
        residual: str = "tie",
        bins: tuple[int, int] | None = None,
        defaults: Mapping[str, int] | None = None,
    ) -> "ChannelSpace":
        """Analyse ``model``: ``groups`` evenly spaced widths per unit, or every multiple of ``divisor``.

        ``fixed`` lists unit names to keep at full width. ``residual``: ``"tie"`` (operands of an
        add share a unit) or ``"pad"`` (separate units joined by zero padding). ``bins=(lo, hi)``
        keeps group widths lo..hi only. ``defaults`` gives units a default width below their
        physical one (a space built on a widened model).
        """
        if divisor is not None:
            groups = None
        analysis = analyse(model, example_input, residual)
        fixed = set(fixed)
        searchable = analysis.searchable_roots()
        unknown = fixed - {analysis.unit_name(r) for r in searchable}
        if unknown:
            raise ConfigError(f"cannot fix unknown unit(s): {', '.join(sorted(unknown))}")
        units, roots, kept = [], [], []
        for root in searchable:
            name = analysis.unit_name(root)
            length = analysis.unit_length[root]
            if name in fixed:
                kept.append(FixedUnit(name, length, "fixed on request (the space's fixed units)", _members(analysis, root)))
                continue
            choices = make_choices(length, groups, divisor, round_to, bins)
            default = (defaults or {}).get(name)
            units.append(Unit(name, length, choices, _members(analysis, root), default, analysis.unit_copies[root]))
            roots.append(root)
        for root in analysis.fixed_roots():
            kept.append(FixedUnit(analysis.unit_name(root), analysis.unit_length[root],
                                  analysis.fixed_reason(root), _members(analysis, root)))
        order = {name: i for i, name in enumerate(analysis.layers)}
        kept.sort(key=lambda f: (order.get(f.name.split("[", 1)[0], -1), f.name))
        return cls(analysis, units, roots, kept)

    # ---- units and configs --------------------------------------------------------------------
    @property
    def size(self) -> int:
        return math.prod(len(u.choices) for u in self.units)

    def unit(self, name: str) -> Unit:
        try:
            return self._by_name[name]
        except KeyError:
            raise ConfigError(f"unknown unit {name!r}; units are: {', '.join(self._by_name)}") from None

    def root_of(self, name: str) -> int:
        return self._root_of[self.unit(name).name]

    @property
    def residual(self) -> str:
        return self.analysis.residual

    def max_config(self) -> Config:
        """Every unit at its largest allowed width."""
        return {u.name: u.top for u in self.units}

    def physical_config(self) -> Config:
        """Every unit at its physical width (above the top choice in an enlarged supernet)."""
        return {u.name: u.max for u in self.units}

    def default_config(self) -> Config:
        """Every unit at the width of the model as built (see :class:`Unit`)."""
        return {u.name: int(u.default) for u in self.units}

    def min_config(self) -> Config:
        return {u.name: u.min for u in self.units}

    def random_config(self, rng: random.Random) -> Config:
        return {u.name: rng.choice(u.choices) for u in self.units}

    def uniform_config(self, width_ratio: float) -> Config:
        """Every unit at ``width_ratio`` of its top choice, snapped to the nearest allowed choice."""
        config = {}
        for u in self.units:
            target = width_ratio * u.top
            config[u.name] = min(u.choices, key=lambda c: (abs(c - target), c))
        return config

    def uniform_config_for_flops(self, flops: float) -> Config:
        """The widest uniform-ratio config (each unit ``round(r*top)``, any integer width) within ``flops``.

        This is the fair baseline of a searched config: every unit scaled by one common factor.
        """
        def at(ratio: float) -> Config:
            return {u.name: max(1, min(u.top, round(ratio * u.top))) for u in self.units}

        low, high = 0.0, 1.0
        for _ in range(50):
            mid = (low + high) / 2
            if self.cost(at(mid)).flops <= flops:
                low = mid
            else:
                high = mid
        return at(low)

    def shrink(self, config: Mapping[str, int], unit_name: str) -> Config | None:
        """``config`` with ``unit_name`` moved one choice down, or None at its minimum."""
        choices = self.unit(unit_name).choices
        smaller = [c for c in choices if c < config[unit_name]]
        if not smaller:
            return None
        return {**config, unit_name: smaller[-1]}

    def validate(self, config: Mapping[str, object], strict: bool = True) -> Config:
        """Check ``config`` against the units; ``strict`` also requires an allowed choice.

        Returns a clean plain config, or a clean :class:`Subnet` when given one (its channel
        rankings are checked against the units' physical widths). Raises :class:`ConfigError`
        with one line naming the first problem.
        """
        if not isinstance(config, Mapping):
            raise ConfigError(f"a channel config must map unit names to widths, got {type(config).__name__}")
        unknown = [name for name in config if name not in self._by_name]
        if unknown:
            raise ConfigError(f"unknown unit {unknown[0]!r} (this model's units: {', '.join(self._by_name)})")
        missing = [u.name for u in self.units if u.name not in config]
        if missing:
            raise ConfigError(f"missing unit {missing[0]!r} ({len(missing)} of {len(self.units)} units missing)")
        clean: Config = {}
        for u in self.units:
            value = config[u.name]
            if isinstance(value, bool) or not isinstance(value, (int,)) and not (
                isinstance(value, float) and value.is_integer()
            ):
                raise ConfigError(f"unit {u.name!r}: width must be a whole number, got {value!r}")
            width = int(value)  # type: ignore[arg-type]
            if width < 1:
                raise ConfigError(f"unit {u.name!r}: width must be at least 1, got {width}")
            if width > u.max:
                raise ConfigError(f"unit {u.name!r}: width {width} is above its maximum {u.max}")
            if strict and width not in u.choices:
                raise ConfigError(f"unit {u.name!r}: width {width} is not an allowed choice {list(u.choices)}")
            clean[u.name] = width
        if not isinstance(config, Subnet):
            return clean
        for name, selector in config.selectors.items():
            if not isinstance(selector, str) and len(selector) != self._by_name[name].max:
                raise ConfigError(
                    f"unit {name!r}: its channel ranking has {len(selector)} entries, the unit {self._by_name[name].max} channels"
                )
        return Subnet._from_clean(clean, config.selectors)  # type: ignore[return-value]

    def widths_by_root(self, config: Mapping[str, int]) -> dict[int, int]:
        """Active channels of every source root (fixed and unsearched ones at full length).

        A join (a zero-padded sum under ``residual="pad"``) has the size of the union of its
        members' active channels: the widest member when they all keep the same side.
        """
        widths = dict(self.analysis.unit_length)
        for name, width in config.items():
            widths[self._root_of[name]] = width
        selectors = config.selectors if isinstance(config, Subnet) else {}
        for join, members in self.analysis.joins.items():
            widths[join] = self._join_width(members, widths, selectors)
        return widths

    def _join_width(self, members: Sequence[int], widths: Mapping[int, int], selectors: Mapping[str, object]) -> int:
        units = [self._unit_of_root.get(m) for m in members]
        if any(u is None for u in units):  # a fixed member is always full: so is the sum
            return self.analysis.unit_length[members[0]]
        sides = {selectors.get(u.name, "left") for u in units}  # type: ignore[union-attr]
        if sides in ({"left"}, {"right"}):
            return max(widths[m] for m in members)
        active: set[int] = set()
        for root, unit in zip(members, units):
            width, side = widths[root], selectors.get(unit.name, "left")  # type: ignore[union-attr]
            full = unit.max  # type: ignore[union-attr]
            if side == "left":
                active.update(range(width))
            elif side == "right":
                active.update(range(full - width, full))
            else:
                active.update(side[:width])  # type: ignore[index]
        return len(active)

    # ---- costs ------------------------------------------------------------------------------------
    def cost(self, config: Mapping[str, int] | None = None) -> Cost:
        """FLOPs (MACs of conv + linear) and params of ``config``, without building a module."""
        widths = self.widths_by_root(config if config is not None else self.max_config())
        flops = 0.0
        params = float(self.analysis.other_params)
        for cin_spec, cout_spec, flops_per_pair, params_per_pair, params_per_out in self._cost_terms:
            cin = _active(cin_spec, widths)
            cout = _active(cout_spec, widths)
            flops += cin * cout * flops_per_pair
            params += cin * cout * params_per_pair + cout * params_per_out
        return Cost(flops=round(flops), params=round(params))

    def flops_gradient(self, config: Mapping[str, int]) -> dict[str, float]:
        """``dFLOPs/dc_u`` of every unit at ``config``, exact from the cost terms.

        FLOPs are a sum of ``k * c_in * c_out`` over layers, where each side is a sum of unit
        widths (times a flatten repeat), so the derivative is exact and cheap. A zero-padded sum
        is as wide as its widest member: it grows with a unit that is (one of) the widest and not
        with the others -- the derivative of widening, which is what Network Adjustment asks.
        Left-aligned selectors are assumed (prefix widths).
        """
        widths = self.widths_by_root(config)
        units_of_join = {j: set(members) for j, members in self.analysis.joins.items()}

        def d_active(spec: "Desc | int", root: int) -> float:
            if isinstance(spec, int):
                return 0.0
            total = 0.0
            for seg in spec:
                if seg.unit == root:
                    total += seg.repeat
                elif root in units_of_join.get(seg.unit, ()) and widths[root] == widths[seg.unit]:
                    total += seg.repeat
            return total

        gradient = {}
        for unit in self.units:
            root = self._root_of[unit.name]
            g = 0.0
            for cin_spec, cout_spec, flops_per_pair, _params, _per_out in self._cost_terms:
                if flops_per_pair:
                    g += flops_per_pair * (d_active(cin_spec, root) * _active(cout_spec, widths)
                                           + _active(cin_spec, widths) * d_active(cout_spec, root))
            gradient[unit.name] = g
        return gradient

    def expected_flops(self, probs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """E[FLOPs] when every unit draws its width independently: ``probs[u]`` over ``u.choices``.

        Exact and differentiable (BCNetV2's prior fit): each layer contributes ``k * c_in * c_out``,
        and the two sides are independent unless they hold the same unit, where ``E[c^2]`` enters.
        A zero-padded sum is the maximum of its members, whose distribution is exact too. Left-
        aligned widths are assumed.

        The layers are summed once into a quadratic form of the widths' means (:class:`_MomentForm`),
        so a call is a dozen tensor ops whatever the depth of the model: the prior fit calls it
        2,000 times.
        """
        return self._moments().expected_flops(self, probs)

    def expected_flops_quadratic(self) -> "QuadraticFlops | None":
        """E[FLOPs] as a quadratic function of all units' probabilities concatenated in unit order
        (see :class:`QuadraticFlops`): three tensor ops a call, for the prior fit's 2,000 steps.
        ``None`` when the space has zero-padded sums, whose maximum of widths is not quadratic."""
        return self._moments().quadratic()

    def _moments(self) -> "_MomentForm":
        if self._moment_form is None:
            self._moment_form = _MomentForm(self)
        return self._moment_form

    def key(self, config: Mapping[str, int]) -> tuple[int, ...]:
        """A hashable form of a config, in unit order."""
        return tuple(config[u.name] for u in self.units)


def _members(analysis: Analysis, root: int) -> tuple[str, ...]:
    """The layers whose weights hold channels of ``root``."""
    return tuple(
        name for name, rec in analysis.layers.items() if any(seg.unit == root for seg in rec.in_desc + rec.out_desc)
    )


def _active(spec: Desc | int, widths: Mapping[int, int]) -> int:
    if isinstance(spec, int):
        return spec
    return sum(widths[seg.unit] * seg.repeat for seg in spec)


CostTerm = tuple["Desc | int", "Desc | int", float, float, int]


def _compile_cost_terms(analysis: Analysis) -> list[CostTerm]:
    """Per layer: (input channels, output channels, FLOPs per in*out pair, params per pair, params per out).

    Channels are a descriptor (active width depends on the config) or a constant. A conv holds
    ``cin*cout*k/groups`` weights and applies them at every output position of every call (a
    transposed conv at every *input* position: it scatters each input pixel through the whole
    kernel, as ``torch.utils.flop_counter`` counts it); a depthwise conv is ``cout`` channels times
    ``k`` weights; a batch norm has 2 parameters per channel.
    """
    terms: list[CostTerm] = []
    for rec in analysis.layers.values():
        module = rec.module
        positions = sum(rec.spatial)
        bias = int(getattr(module, "bias", None) is not None)
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            kernel = math.prod(module.kernel_size)
            if rec.kind == "depthwise":
                terms.append((1, rec.out_desc, kernel * positions, kernel, bias))
            elif rec.kind == "fixed":
                per_pair = kernel / module.groups
                terms.append((module.in_channels, module.out_channels, per_pair * positions, per_pair, bias))
            else:
                per_pair = kernel / module.groups
                terms.append((rec.in_desc, rec.out_desc, per_pair * positions, per_pair, bias))
        elif isinstance(module, nn.Linear):
            if rec.kind == "fixed":
                terms.append((module.in_features, module.out_features, positions, 1, bias))
            else:
                terms.append((rec.in_desc, rec.out_desc, positions, 1, bias))
        elif rec.kind == "bn":
            terms.append((0, rec.out_desc, 0, 0, 2 if getattr(module, "affine", False) else 0))
    return terms


class QuadraticFlops:
    """``E[FLOPs] = p' matrix p + vector' p + constant``, where ``p`` concatenates every unit's
    probabilities over its choices, in unit order (float64)."""

    def __init__(self, matrix: torch.Tensor, vector: torch.Tensor, constant: float) -> None:
        self.matrix, self.vector, self.constant = matrix, vector, constant
        self._symmetric = matrix + matrix.T

    def __call__(self, probs: torch.Tensor) -> torch.Tensor:
        return probs @ (self.matrix @ probs) + self.vector @ probs + self.constant

    def gradient(self, probs: torch.Tensor) -> torch.Tensor:
        """``dE[FLOPs]/dp`` at ``probs``."""
        return self._symmetric @ probs + self.vector


class _MomentForm:
    """E[FLOPs] of a space as a quadratic form of the widths' first moments.

    With the widths of the searchable units and of the zero-padded sums ("joins") stacked as
    ``x = (E[w_1], ..., E[w_n], 1)``, a layer's expected active input and output widths are linear,
    ``a.x`` and ``b.x`` (fixed channels go to the constant), and the layers' FLOPs sum to
    ``x' Q x + sum_r v_r Var(w_r)``, where ``Q = sum of flops_per_pair * a b'`` and the variance
    terms come from a unit that is on both sides of one layer. ``Q`` and ``v`` are summed once.
    """

    def __init__(self, space: ChannelSpace) -> None:
        analysis = space.analysis
        roots = [space._root_of[u.name] for u in space.units] + list(analysis.joins)
        self.index = {root: i for i, root in enumerate(roots)}
        n = len(roots)
        quad = torch.zeros(n + 1, n + 1, dtype=torch.float64)
        var_weight = torch.zeros(n, dtype=torch.float64)
        for cin_spec, cout_spec, flops_per_pair, _params, _per_out in space._cost_terms:
            if not flops_per_pair:
                continue
            quad += flops_per_pair * torch.outer(self._coefficients(cin_spec, analysis),
                                                 self._coefficients(cout_spec, analysis))
            if isinstance(cin_spec, int) or isinstance(cout_spec, int):
                continue
            for a in cin_spec:  # a unit on both sides: E[c*c] = E[c]^2 + Var(c)
                for b in cout_spec:
                    if a.unit == b.unit and a.unit in self.index:
                        var_weight[self.index[a.unit]] += flops_per_pair * a.repeat * b.repeat
        self.quad, self.var_weight = quad, var_weight
        self.sizes = [len(u.choices) for u in space.units]
        self.widths = torch.tensor([w for u in space.units for w in u.choices], dtype=torch.float64)
        self.owner = torch.tensor([i for i, size in enumerate(self.sizes) for _ in range(size)], dtype=torch.long)
        # a join's members that are no unit (fixed channels) have one width with probability one
        self.constant = {root: float(length) for root, length in analysis.unit_length.items()}

    def quadratic(self) -> QuadraticFlops | None:
        """The form as a function of the probabilities themselves: a unit's moments are linear in
        them (``E[w] = sum_k p_k w_k``, ``E[w^2] = sum_k p_k w_k^2``), so ``x' Q x`` and the
        variance terms are quadratic. Not with joins: the distribution of a maximum is a product."""
        units = len(self.sizes)
        if len(self.index) != units:
            return None
        choices = torch.arange(len(self.widths))
        first = torch.zeros(units, len(self.widths), dtype=torch.float64)  # E[w] = first @ p
        first[self.owner, choices] = self.widths
        second = first * self.widths  # E[w^2] = second @ p
        quad = self.quad
        matrix = first.T @ (quad[:units, :units] - torch.diag(self.var_weight)) @ first
        vector = first.T @ (quad[:units, units] + quad[units, :units]) + second.T @ self.var_weight
        return QuadraticFlops(matrix, vector, float(quad[units, units]))

    def _coefficients(self, spec: "Desc | int", analysis: Analysis) -> torch.Tensor:
        """``c`` with ``c.x`` the expected active width of ``spec``: units and joins by their mean,
        fixed channels and constants in the last entry."""
        coefficients = torch.zeros(len(self.index) + 1, dtype=torch.float64)
        if isinstance(spec, int):
            coefficients[-1] = spec
            return coefficients
        for seg in spec:
            if seg.unit in self.index:
                coefficients[self.index[seg.unit]] += seg.repeat
            else:
                coefficients[-1] += seg.repeat * analysis.unit_length[seg.unit]
        return coefficients

    def expected_flops(self, space: ChannelSpace, probs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        per_unit = []
        for unit, size in zip(space.units, self.sizes):
            p = probs[unit.name].to(torch.float64)
            if p.shape != (size,):
                raise ConfigError(f"unit {unit.name!r}: {size} probabilities expected, got {tuple(p.shape)}")
            per_unit.append(p)
        flat = torch.cat(per_unit) if per_unit else torch.zeros(0, dtype=torch.float64)
        empty = torch.zeros(len(self.sizes), dtype=torch.float64)
        first = empty.index_add(0, self.owner, flat * self.widths)
        second = empty.index_add(0, self.owner, flat * self.widths * self.widths)
        if space.analysis.joins:
            join_first, join_second = self._join_moments(space, per_unit)
            first, second = torch.cat([first, join_first]), torch.cat([second, join_second])
        x = torch.cat([first, torch.ones(1, dtype=torch.float64)])
        return x @ (self.quad @ x) + (self.var_weight * (second - first * first)).sum()

    def _join_moments(self, space: ChannelSpace, per_unit: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(E[w], E[w^2]) of every zero-padded sum: the maximum of its members' independent widths."""
        dists = {space._root_of[u.name]: (torch.tensor(u.choices, dtype=torch.float64), p)
                 for u, p in zip(space.units, per_unit)}
        first, second = [], []
        for members in space.analysis.joins.values():
            member_dists = [dists[m] if m in dists else (torch.tensor([self.constant[m]], dtype=torch.float64),
                                                         torch.ones(1, dtype=torch.float64)) for m in members]
            support = torch.unique(torch.cat([values for values, _ in member_dists]))
            below = torch.ones(len(support), dtype=torch.float64)  # P(max <= t) = prod_m P(w_m <= t)
            for values, p in member_dists:
                below = below * (p[None, :] * (values[None, :] <= support[:, None])).sum(1)
            mass = torch.diff(below, prepend=torch.zeros(1, dtype=torch.float64))
            first.append((mass * support).sum())
            second.append((mass * support * support).sum())
        return torch.stack(first), torch.stack(second)
