"""Core v2: Subnet values, the pad residual policy, unit views (members, masks), physical widths
apart from choices, and the space spec."""
import copy
import random

import pytest
import torch
import yaml

from toy_models import ResidualConcatDepthwise, randomise_batch_norms
from widthsearch.errors import ConfigError, UserError
from widthsearch.models import build_model
from widthsearch.space import ChannelSpace, SpaceSpec, Subnet, Supernet, build_supernet, make_choices
from widthsearch.space.config import load_config, save_config
from widthsearch.space.dynamic import PadAdd


# ---- Subnet -------------------------------------------------------------------------------------
def test_subnet_is_a_mapping_of_widths_with_selectors():
    sub = Subnet({"a": 4, "b": 8}, {"b": "right"})
    assert dict(sub) == {"a": 4, "b": 8} and sub["b"] == 8
    assert sub.selector("a") == "left" and sub.selector("b") == "right"
    assert sub.alignment is None and Subnet({"a": 4}).alignment == "left" and Subnet({"a": 4}, "right").alignment == "right"
    assert Subnet({"a": 4}) == {"a": 4}  # a plain config is a left-aligned subnet
    assert sub != {"a": 4, "b": 8}
    assert hash(Subnet({"a": 4}, {"a": "left"})) == hash(Subnet({"a": 4}))
    assert sub.with_widths({"a": 2}).selector("b") == "right"
    assert Subnet.from_doc(sub.to_doc()) == sub


@pytest.mark.parametrize("bad", [{"a": "middle"}, {"a": [0, 0, 1]}, {"zz": "right"}, {"a": 3.5}])
def test_subnet_rejects_bad_selectors(bad):
    with pytest.raises(ConfigError):
        Subnet({"a": 3}, bad)


def test_yaml_round_trip_keeps_selectors_and_old_files_load(tmp_path):
    x = torch.randn(1, 3, 8, 8)
    net = Supernet(ResidualConcatDepthwise(), x, groups=4)
    space = net.space
    ranking = list(reversed(range(space.units[1].max)))
    sub = Subnet(space.min_config(), {space.units[0].name: "right", space.units[1].name: ranking})
    save_config(tmp_path / "s.yaml", space, sub, model="toy")
    loaded, _ = load_config(tmp_path / "s.yaml", space)
    assert isinstance(loaded, Subnet) and loaded == sub
    # a width-only file (as written before selectors existed) loads as plain widths
    (tmp_path / "old.yaml").write_text(yaml.safe_dump({"model": "toy", "channels": dict(space.min_config())}))
    old, _ = load_config(tmp_path / "old.yaml", space)
    assert old == space.min_config() and Subnet(old).alignment == "left"
    # a ranking of the wrong length is a one-line error
    with pytest.raises(ConfigError, match="ranking"):
        space.validate(Subnet(space.min_config(), {space.units[1].name: [1, 0]}))


# ---- residual policy pad -------------------------------------------------------------------------
def test_pad_unit_counts_of_resnets():
    counts = {}
    for name, shape in (("resnet20", (1, 3, 32, 32)), ("resnet50", (1, 3, 64, 64))):
        for residual in ("tie", "pad"):
            space = ChannelSpace.from_model(build_model(name), torch.randn(*shape), residual=residual)
            counts[name, residual] = len(space.units)
    # resnet20: stem+stage streams tied = 12 units; padded: stem, 9 block ends, 2 shortcuts, 9 conv1 = 21
    assert counts == {("resnet20", "tie"): 12, ("resnet20", "pad"): 21, ("resnet50", "tie"): 37, ("resnet50", "pad"): 53}


def test_pad_sum_zero_pads_the_narrower_operand():
    x = torch.randn(2, 3, 8, 8)
    model = ResidualConcatDepthwise()
    randomise_batch_norms(model)
    net = Supernet(model, x, groups=4, residual="pad")
    names = [u.name for u in net.space.units]
    assert "stem.0" in names and "body" in names  # the add no longer ties them
    pads = [m for m in net.model.modules() if isinstance(m, PadAdd)]
    assert len(pads) == 1
    config = {**net.space.max_config(), "stem.0": 4, "body": 12}
    net.set_config(config)
    assert pads[0].channels == 12 and pads[0].places[0] == slice(0, 4) and pads[0].places[1] is None
    net.set_config(config, align="right")
    assert pads[0].places[0] == slice(8, 12)  # suffixes: the 4 last of the 12 last channels
    net.model.eval()
    assert set(net.model.state_dict()) == set(build_model_state_keys())


def build_model_state_keys():
    return ResidualConcatDepthwise().state_dict().keys()


def test_pad_cost_of_mixed_selectors_counts_the_union():
    x = torch.randn(1, 3, 8, 8)
    net = Supernet(ResidualConcatDepthwise(), x, groups=4, residual="pad")
    base = {**net.space.max_config(), "stem.0": 8, "body": 8}
    left = net.space.cost(Subnet(base))
    mixed = net.space.cost(Subnet(base, {"stem.0": "left", "body": "right"}))
    assert mixed.flops > left.flops  # the sum now spans 16 channels, not 8
    net.set_config(Subnet(base, {"stem.0": "left", "body": "right"}))
    pad = next(m for m in net.model.modules() if isinstance(m, PadAdd))
    assert pad.channels == 16 and pad.places == [slice(0, 8), slice(8, 16)]


# ---- members, masks ----------------------------------------------------------------------------
def test_members_name_every_slice_of_a_unit():
    net = Supernet(build_model("resnet20"), torch.randn(1, 3, 32, 32), groups=4)
    members = net.members("layer1.0.conv1")
    assert ("layer1.0.conv1", 0, range(0, 16)) in members
    assert ("layer1.0.bn1", 0, range(0, 16)) in members
    assert ("layer1.0.conv2", 1, range(0, 16)) in members
    assert all(dim in (0, 1) for _, dim, _ in members)
    fc = [m for m in net.members("layer3.0.conv2") if m[0] == "fc"]
    assert fc == [("fc", 1, range(0, 64))]


@pytest.mark.parametrize("residual", ["tie", "pad"])
def test_mask_hook_zeroes_exactly_the_chosen_channels(residual):
    net = Supernet(build_model("resnet20"), torch.randn(1, 3, 32, 32), groups=4, residual=residual)
    unit = "layer2.0.conv1"
    consumer = net._layers["layer2.0.conv2"].module  # reads relu(bn1(conv1)): the unit's output
    seen = {}
    consumer.register_forward_pre_hook(lambda m, i: seen.__setitem__("out", i[0].detach()))
    x = torch.randn(3, 3, 32, 32)
    width = net.space.unit(unit).max
    mask = torch.ones(3, width)
    dropped = [1, 5, 17]
    mask[:, dropped] = 0
    mask[1, 2] = 0  # per-sample masks too
    for mode in ("train", "eval"):
        getattr(net.model, mode)()
        net.model(x)
        clean = seen["out"]
        with net.masked({unit: mask}):
            net.model(x)
        assert torch.equal(seen["out"], clean * mask[:, :, None, None])
        net.model(x)  # the hook is gone after the block
        assert torch.equal(seen["out"], clean)


def test_mask_callable_is_drawn_once_per_forward():
    net = Supernet(build_model("resnet20"), torch.randn(1, 3, 32, 32), groups=4)
    calls = []

    def draw(batch, width, device):
        calls.append((batch, width))
        return torch.ones(batch, width)

    unit = net.space.units[0].name  # the stem stream: batch norms in many blocks
    net.set_config({**net.space.max_config(), unit: 8})
    with net.masked({unit: draw}):
        net.model(torch.randn(2, 3, 32, 32))
    assert calls == [(2, 8)]
    assert len(net._mask_points(unit)) > 1


# ---- physical widths apart from choices ------------------------------------------------------------
def test_bins_choose_among_groups():
    assert make_choices(60, groups=6, bins=(2, 4)) == (20, 30, 40)
    assert make_choices(60, groups=4) == (15, 30, 45, 60)
    with pytest.raises(UserError):
        make_choices(60, groups=4, bins=(0, 4))


def test_enlarged_supernet_bcnetv2_style_is_fair_under_left_right_pairs():
    # B=4 bins, m=2: the supernet has 6 bins and sub-networks use 2..4 of them
    spec = SpaceSpec("cbm_mobilenet", groups=6, bins=(2, 4), widen=1.5)
    net, spec = build_supernet(spec)
    for u in net.space.units:
        assert u.top == u.default < u.max and len(u.choices) == 3
    # under uniform c with the complement m+B-c, every one of the B+m bins is used equally often
    usage = [0] * 6
    for c in (2, 3, 4):
        for width, side in ((c, "left"), (6 - c, "right")):
            bins = range(width) if side == "left" else range(6 - width, 6)
            for b in bins:
                usage[b] += 1
    assert len(set(usage)) == 1


def test_widened_space_marks_the_default_config():
    net, spec = build_supernet(SpaceSpec("resnet20", widen=2.0, divisor=1))
    default = net.space.default_config()
    assert all(default[u.name] * 2 == u.max for u in net.space.units)
    assert net.space.cost(default).flops == 40_813_184  # the original ResNet-20
    assert net.space.validate({**default, net.space.units[0].name: 30})  # grows past the default


# ---- space spec -----------------------------------------------------------------------------------
def test_spec_round_trips_and_rebuilds_the_same_space():
    spec = SpaceSpec("resnet20", groups=4, residual="pad")
    net, recorded = build_supernet(spec)
    again = SpaceSpec.from_dict(recorded.to_dict())
    assert again == recorded
    net2, _ = build_supernet(again)
    assert [u.name for u in net2.space.units] == [u.name for u in net.space.units]
    # old checkpoints' args (no "space" entry) still give a spec
    old = SpaceSpec.from_dict({"model": "resnet20", "width_mult": 1.0, "groups": 10, "input_shape": [3, 32, 32], "lr": 0.1})
    assert old.residual == "tie" and old.groups == 10


def test_spec_refuses_a_changed_model():
    net, spec = build_supernet(SpaceSpec("resnet20", groups=4))
    changed = SpaceSpec.from_dict({**spec.to_dict(), "residual": "pad"})
    with pytest.raises(UserError, match="do not match"):
        build_supernet(changed)
    with pytest.raises(UserError, match="residual"):
        SpaceSpec("resnet20", residual="sum")


@pytest.mark.parametrize("residual", ["tie", "pad"])
def test_flops_gradient_matches_the_cost_of_one_more_channel(residual):
    # FLOPs are linear in each unit's width (no layer reads and writes the same unit), so the
    # derivative of widening equals the exact cost of one more channel, joined sums included
    net, _ = build_supernet(SpaceSpec("resnet20", widen=2.0, divisor=1, residual=residual))
    space = net.space
    rng = random.Random(3)
    for config in (space.default_config(), {u.name: rng.randrange(3, u.max - 2) for u in space.units}):
        gradient = space.flops_gradient(config)
        base = space.cost(config).flops
        for u in space.units:
            assert gradient[u.name] == space.cost({**config, u.name: config[u.name] + 1}).flops - base, u.name


@pytest.mark.parametrize("residual", ["tie", "pad"])
def test_load_static_is_the_inverse_of_export(residual):
    x = torch.randn(2, 3, 32, 32)
    net = Supernet(build_model("resnet20"), x[:1], groups=4, residual=residual)
    rng = random.Random(0)
    subnet = Subnet(net.space.random_config(rng), {u.name: rng.sample(range(u.max), u.max) for u in net.space.units[::2]})
    static = net.export(subnet)
    randomise_batch_norms(static, seed=9)
    with torch.no_grad():
        for p in static.parameters():
            p.add_(torch.randn_like(p))  # "trained" weights
    untouched = net.export(net.space.max_config())
    net.set_config(subnet)
    net.load_static(static)
    net.model.eval()
    static.eval()
    assert torch.equal(net.model(x), static(x))
    # channels outside the sub-network keep their values: the max config differs only where selected
    changed = net.export(net.space.max_config())
    first = net.space.units[1].name  # a left-aligned unit
    w_new, w_old = changed.get_submodule(first).weight, untouched.get_submodule(first).weight
    assert torch.equal(w_new[subnet[first]:], w_old[subnet[first]:]) and not torch.equal(w_new, w_old)


def test_bilateral_score_is_the_mean_of_both_sides_each_calibrated():
    from widthsearch.training.evaluate import make_supernet_evaluator

    torch.manual_seed(0)
    net = Supernet(build_model("tiny_cnn", num_classes=10), torch.randn(1, 1, 8, 8), groups=4)
    randomise_batch_norms(net.model, seed=2)
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    config = net.space.min_config()
    scores = {side: make_supernet_evaluator(net, x, y, align=side, metric="loss")(config) for side in ("left", "right", "both")}
    assert scores["left"] != scores["right"]
    assert scores["both"] == pytest.approx((scores["left"] + scores["right"]) / 2)
    with pytest.raises(UserError):
        make_supernet_evaluator(net, x, y, align="middle")


@pytest.mark.parametrize("name,residual", [("cbm_mobilenet", "tie"), ("resnet20", "pad"), ("resnet20", "tie")])
def test_expected_flops_matches_monte_carlo(name, residual):
    net, _ = build_supernet(SpaceSpec(name, groups=4, residual=residual))
    space = net.space
    gen = torch.Generator().manual_seed(0)
    probs = {u.name: torch.softmax(torch.randn(len(u.choices), generator=gen), 0) for u in space.units}
    exact = float(space.expected_flops(probs))
    rng = random.Random(0)
    samples = []
    for _ in range(4000):
        config = {u.name: rng.choices(u.choices, weights=probs[u.name].tolist())[0] for u in space.units}
        samples.append(space.cost(config).flops)
    mean = sum(samples) / len(samples)
    std = (sum((s - mean) ** 2 for s in samples) / len(samples)) ** 0.5
    assert abs(exact - mean) < 4 * std / len(samples) ** 0.5, (exact, mean)
    # a point mass gives the cost of that config exactly
    point = {u.name: torch.nn.functional.one_hot(torch.tensor(1), len(u.choices)).double() for u in space.units}
    assert float(space.expected_flops(point)) == pytest.approx(space.cost({u.name: u.choices[1] for u in space.units}).flops)


def _enumerated_expected_flops(space: ChannelSpace, probs: dict) -> float:
    """E[FLOPs] by brute force: every config of the space, weighted by its probability."""
    import itertools

    total = 0.0
    for picks in itertools.product(*(range(len(u.choices)) for u in space.units)):
        weight = 1.0
        for unit, i in zip(space.units, picks):
            weight *= float(probs[unit.name][i])
        total += weight * space.cost({u.name: u.choices[i] for u, i in zip(space.units, picks)}).flops
    return total


@pytest.mark.parametrize("build", [
    lambda: ChannelSpace.from_model(ResidualConcatDepthwise(), torch.randn(1, 3, 8, 8), groups=3),
    lambda: ChannelSpace.from_model(ResidualConcatDepthwise(), torch.randn(1, 3, 8, 8), groups=3, residual="pad"),
    lambda: build_supernet(SpaceSpec("cbm_resnet", groups=2, residual="pad"))[0].space,
    # a fixed unit inside zero-padded sums: the joins' maxima include a constant width
    lambda: build_supernet(SpaceSpec("cbm_resnet", groups=2, residual="pad", fixed=("stem.0",)))[0].space,
], ids=["toy-tie", "toy-pad", "cbm_resnet-pad", "cbm_resnet-pad-fixed-stem"])
def test_expected_flops_is_exact_on_every_config(build):
    space = build()
    gen = torch.Generator().manual_seed(1)
    probs = {u.name: torch.softmax(torch.randn(len(u.choices), generator=gen, dtype=torch.float64), 0)
             for u in space.units}
    exact = _enumerated_expected_flops(space, probs)
    assert float(space.expected_flops(probs)) == pytest.approx(exact, rel=1e-12)
    quadratic = space.expected_flops_quadratic()
    assert (quadratic is None) == bool(space.analysis.joins)  # a maximum of widths is not quadratic
    if quadratic is not None:
        flat = torch.cat([probs[u.name] for u in space.units]).requires_grad_(True)
        value = quadratic(flat)
        assert value.item() == pytest.approx(exact, rel=1e-12)
        (autograd,) = torch.autograd.grad(value, flat)
        assert torch.allclose(quadratic.gradient(flat.detach()), autograd, rtol=1e-12, atol=0)
    with pytest.raises(ConfigError, match="probabilities expected"):
        space.expected_flops({**probs, space.units[0].name: torch.ones(len(space.units[0].choices) + 1)})


def test_an_exported_pad_net_can_be_costed_and_rewrapped():
    x = torch.randn(1, 3, 32, 32)
    net = Supernet(build_model("resnet20"), x, groups=4, residual="pad")
    config = net.space.random_config(random.Random(4))
    static = net.export(config)
    counted = ChannelSpace.from_model(static, x, groups=1).cost()
    assert counted == net.space.cost(config)
    again = Supernet(net.model, x, groups=4, residual="tie")  # a converted model traces again
    assert again.space.units


def test_space_json_marks_each_units_default(capsys):
    import json

    from widthsearch.cli.main import main

    assert main(["space", "--model", "resnet20", "--residual", "pad", "--widen", "2", "--divisor", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["residual"] == "pad" and len(doc["units"]) == 21
    assert all(u["default"] * 2 == u["max"] for u in doc["units"])
    assert main(["space", "--model", "resnet20", "--widen", "0.5"]) == 2


def test_index_selections_are_kept_on_the_models_device():
    # moved once per sub-network rather than at every forward (a host-to-GPU copy waits for the
    # GPU); the "meta" device stands in for a GPU on a CPU-only machine
    net = Supernet(ResidualConcatDepthwise(), torch.randn(2, 3, 8, 8), groups=4, residual="pad")
    full = net.space.max_config()
    ranking = list(range(0, full["stem.0"], 2)) + list(range(1, full["stem.0"], 2))  # 4 first: 0, 2, 4, 6
    net.set_config(Subnet({**full, "stem.0": 4, "body": 12}, {"stem.0": ranking}))
    net.to("meta")  # the model and the active sub-network's selections
    layers = [getattr(m, a, None) for m in net.model.modules() for a in ("sel", "in_sel", "out_sel")]
    places = [p for m in net.model.modules() if isinstance(m, PadAdd) for p in m.places]
    indices = [s for s in layers + places if isinstance(s, torch.Tensor)]
    assert indices and all(s.device.type == "meta" for s in indices)
    assert any(isinstance(p, torch.Tensor) for p in places)  # the zero-padded sum's place too


def test_a_remembered_sub_network_runs_as_one_worked_out_afresh():
    x = torch.randn(2, 3, 8, 8)
    model = ResidualConcatDepthwise()
    randomise_batch_norms(model)
    net = Supernet(model, x, groups=4, residual="pad")
    fresh = Supernet(copy.deepcopy(model), x, groups=4, residual="pad")
    full = net.space.max_config()
    ranked = Subnet({**full, "stem.0": 4, "body": 12},
                    {"stem.0": list(range(0, full["stem.0"], 2)) + list(range(1, full["stem.0"], 2))})
    right = Subnet({**full, "body": 8}, "right")

    def state(n: Supernet) -> list:
        def plain(sel):
            return sel.tolist() if isinstance(sel, torch.Tensor) else sel
        return [(name, plain(getattr(m, a))) for name, m in n.model.named_modules()
                for a in ("sel", "in_sel", "out_sel", "channels", "sizes") if hasattr(m, a)] + \
               [[plain(p) for p in m.places] for m in n.model.modules() if isinstance(m, PadAdd)]

    for subnet in (ranked, right, ranked, full, right):  # the second ranked and right come from the cache
        net.set_config(subnet)
        fresh._selection_cache.clear()
        fresh.set_config(subnet)
        assert state(net) == state(fresh)
        net.model.eval(), fresh.model.eval()
        assert torch.equal(net.model(x), fresh.model(x))
    assert len(net._selection_cache) == 3


def test_a_checked_ranking_is_not_checked_again_but_its_length_is():
    net = Supernet(ResidualConcatDepthwise(), torch.randn(2, 3, 8, 8), groups=4, residual="pad")
    full = net.space.max_config()
    ranking = list(range(full["stem.0"]))[::-1]
    subnet = net.space.validate(Subnet(full, {"stem.0": ranking}), strict=False)
    assert subnet.selector("stem.0") == tuple(ranking) and subnet == Subnet(full, {"stem.0": ranking})
    assert subnet.with_widths({"stem.0": 4}).selector("stem.0") == tuple(ranking)
    with pytest.raises(ConfigError, match="permutation"):
        Subnet(full, {"stem.0": [0] * full["stem.0"]})  # made: checked
    with pytest.raises(ConfigError, match="entries"):
        net.space.validate(Subnet(full, {"stem.0": list(range(full["stem.0"] - 1))}), strict=False)
