import random

import pytest
import torch

from toy_models import DataDependent, ResidualConcatDepthwise, SqueezeExcite, WithGroupNorm, randomise_batch_norms
from widthsearch.costs import count_flops, count_params
from widthsearch.errors import AnalysisError, ConfigError
from widthsearch.models import build_model
from widthsearch.space import ChannelSpace, Supernet, make_choices


def test_units_of_a_model_written_in_the_test():
    model = ResidualConcatDepthwise()
    space = ChannelSpace.from_model(model, torch.randn(1, 3, 8, 8), groups=4)
    by_name = {u.name: u for u in space.units}
    assert list(by_name) == ["stem.0", "left", "right", "pw"]
    # the residual add ties the stem with the body conv, the concat keeps both branches apart
    assert set(by_name["stem.0"].members) >= {"stem.0", "stem.1", "body", "body_bn", "left", "right"}
    assert by_name["stem.0"].max == 16
    # the depthwise conv and its BN follow both concatenated branches
    assert {"dw", "dw_bn", "pw"} <= set(by_name["left"].members)
    assert {"dw", "dw_bn", "pw"} <= set(by_name["right"].members)
    assert by_name["pw"].choices == (6, 12, 18, 24)
    assert "fc" in by_name["pw"].members
    assert space.size == 4**4


def test_squeeze_excite_multiplication_ties_expand_to_the_block():
    space = ChannelSpace.from_model(SqueezeExcite(), torch.randn(1, 3, 8, 8), groups=4)
    names = [u.name for u in space.units]
    assert names == ["conv", "reduce"]
    assert "expand" in space.unit("conv").members


@pytest.mark.parametrize("align", ["left", "right"])
def test_toy_export_equals_supernet_and_costs_match(align):
    model = ResidualConcatDepthwise()
    randomise_batch_norms(model)
    x = torch.randn(2, 3, 8, 8)
    net = Supernet(model, x, groups=4)
    rng = random.Random(1)
    for _ in range(30):
        config = net.space.random_config(rng)
        net.set_config(config, align=align)
        net.model.eval()
        static = net.export()
        assert torch.allclose(net.model(x), static(x), atol=1e-5)
        cost = net.space.cost(config)
        assert cost.flops == count_flops(static, x[:1])
        assert cost.params == count_params(static)
        assert not any(type(m).__name__.startswith("Dynamic") for m in static.modules())


def test_channel_orders_select_ranked_channels():
    model = ResidualConcatDepthwise()
    randomise_batch_norms(model)
    x = torch.randn(2, 3, 8, 8)
    net = Supernet(model, x, groups=4)
    order = torch.randperm(16)
    config = {**net.space.max_config(), "stem.0": 8}
    net.set_config(config, orders={"stem.0": order})
    net.model.eval()
    static = net.export()
    assert torch.allclose(net.model(x), static(x), atol=1e-5)
    kept = torch.sort(order[:8]).values
    assert torch.equal(static.stem[0].weight, model.stem[0].weight[kept])
    with pytest.raises(ConfigError):
        net.set_config(config, orders={"stem.0": torch.arange(15)})


def test_right_alignment_uses_the_last_channels():
    model = ResidualConcatDepthwise()
    net = Supernet(model, torch.randn(1, 3, 8, 8), groups=4)
    net.set_config({**net.space.max_config(), "stem.0": 4}, align="right")
    static = net.export()
    assert torch.equal(static.stem[0].weight, model.stem[0].weight[12:])
    assert torch.equal(static.body.weight, model.body.weight[12:, 12:])


def test_state_dict_keys_unchanged_by_conversion():
    model = build_model("tiny_cnn")
    keys = list(model.state_dict())
    Supernet(model, torch.randn(1, 1, 8, 8), groups=4)
    assert list(model.state_dict()) == keys


def test_cbm_spaces_have_the_benchmark_units():
    expected = {
        "cbm_mobilenet": [128, 768, 768, 768, 256, 1536, 1024],
        "cbm_resnet": [256, 256, 256, 512, 512, 512, 512],
    }
    for name, widths in expected.items():
        space = ChannelSpace.from_model(build_model(name), torch.randn(1, 3, 32, 32), groups=4)
        assert [u.max for u in space.units] == widths
        for u in space.units:
            assert u.choices == tuple(u.max * d // 4 for d in (1, 2, 3, 4))
        assert space.size == 16384


def test_calibrated_statistics_equal_the_data_statistics():
    model = build_model("tiny_cnn")
    net = Supernet(model, torch.randn(1, 1, 8, 8), groups=4)
    config = net.space.random_config(random.Random(3))
    batches = [torch.randn(16, 1, 8, 8) * 2 + 1 for _ in range(5)]
    net.calibrate_bn(batches, config)
    first = net.space.analysis.layers
    conv_name, bn_name = list(first)[0], list(first)[1]
    conv, bn = first[conv_name].module, first[bn_name].module
    assert first[bn_name].kind == "bn"
    with torch.no_grad():
        features = torch.cat([conv(b) for b in batches])  # input of the first BN at this width
    dims = (0, 2, 3)
    k = features.shape[1]
    assert torch.allclose(bn.running_mean[bn.sel or slice(0, k)], features.mean(dims), atol=1e-5)
    assert torch.allclose(bn.running_var[bn.sel or slice(0, k)], features.var(dims, unbiased=True), atol=1e-4)
    assert not model.training


def test_calibration_on_one_batch_equals_that_batch_statistics_everywhere():
    model = build_model("tiny_cnn")
    randomise_batch_norms(model)
    x = torch.randn(1, 1, 8, 8)
    net = Supernet(model, x, groups=4)
    config = net.space.random_config(random.Random(4))
    batch = torch.randn(64, 1, 8, 8)
    net.calibrate_bn([batch], config)
    seen = {}
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    hooks = [bn.register_forward_pre_hook(lambda m, i: seen.__setitem__(m, i[0].detach())) for bn in norms]
    with net.batch_stats():
        model(batch)
    for hook in hooks:
        hook.remove()
    assert len(seen) == len(norms) > 1
    for bn, features in seen.items():
        k = features.shape[1]
        sel = bn.sel if bn.sel is not None else slice(0, k)
        assert torch.allclose(bn.running_mean[sel], features.mean((0, 2, 3)), atol=1e-5)
        assert torch.allclose(bn.running_var[sel], features.var((0, 2, 3)), atol=1e-4)


def test_batch_stats_mode_does_not_touch_running_stats():
    model = build_model("tiny_cnn")
    net = Supernet(model, torch.randn(1, 1, 8, 8), groups=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    with net.batch_stats():
        model(torch.randn(8, 1, 8, 8))
    for key, value in model.state_dict().items():
        assert torch.equal(before[key], value), key


def test_training_forward_updates_only_selected_running_stats():
    model = build_model("tiny_cnn")
    net = Supernet(model, torch.randn(1, 1, 8, 8), groups=4)
    unit = net.space.units[0]
    net.set_config({**net.space.max_config(), unit.name: unit.choices[0]}, align="right")
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model.train()
    model(torch.randn(8, 1, 8, 8) + 3)
    changed = (bn.running_mean != before).nonzero().flatten().tolist()
    assert changed == list(range(unit.max - unit.choices[0], unit.max))


def test_untraceable_model_error_names_the_model():
    with pytest.raises(AnalysisError, match="DataDependent"):
        ChannelSpace.from_model(DataDependent(), torch.randn(1, 3, 8, 8))


def test_unsupported_layer_error_names_the_layer():
    with pytest.raises(AnalysisError, match="norm.*GroupNorm"):
        ChannelSpace.from_model(WithGroupNorm(), torch.randn(1, 3, 8, 8))


def test_make_choices():
    assert make_choices(128, groups=4) == (32, 64, 96, 128)
    assert make_choices(30, groups=10) == tuple(range(3, 31, 3))
    assert make_choices(20, divisor=8) == (8, 16, 20)
    assert make_choices(100, groups=3, round_to=8) == (32, 64, 100)


def test_config_validation_messages():
    space = ChannelSpace.from_model(build_model("tiny_cnn"), torch.randn(1, 1, 8, 8), groups=4)
    good = space.max_config()
    name = space.units[0].name
    cases = {
        "unknown unit": {**good, "nope": 3},
        "missing unit": {k: v for k, v in good.items() if k != name},
        "above its maximum": {**good, name: space.units[0].max + 1},
        "not an allowed choice": {**good, name: space.units[0].choices[0] + 1},
        "whole number": {**good, name: 2.5},
        "at least 1": {**good, name: -4},
    }
    for message, config in cases.items():
        with pytest.raises(ConfigError, match=message):
            space.validate(config)
    assert space.validate(good) == good
