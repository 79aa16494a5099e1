"""Property tests: for random configs of every zoo model, the export equals the supernet and the
fast cost equals the counted cost of the export."""
import random

import pytest
import torch

from toy_models import ResidualConcatDepthwise, randomise_batch_norms
from widthsearch.costs import count_flops, count_params
from widthsearch.models import MODEL_NAMES, build_model, model_info
from widthsearch.space import Subnet, Supernet

CONFIGS_PER_MODEL = 200
#: models with residual adds, checked under residual="pad" too (zero-padded sums)
PAD_MODELS = ("resnet20", "resnet50", "mobilenet_v2", "cbm_resnet")
PAD_CONFIGS = 40


def small_input(name: str) -> torch.Tensor:
    channels, height, width = model_info(name)["input_shape"]
    side = height if height <= 32 else 16  # ImageNet nets pool adaptively: 16x16 still reaches every layer
    return torch.randn(2, channels, side, side)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_export_equals_supernet_and_cost_equals_count(name):
    model = build_model(name)
    randomise_batch_norms(model, seed=len(name))
    x = small_input(name)
    groups = 4 if name.startswith("cbm") else 10
    net = Supernet(model, x[:1], groups=groups)
    model.eval()
    rng = random.Random(name)
    configs = [net.space.max_config(), net.space.min_config()]
    configs += [net.space.random_config(rng) for _ in range(CONFIGS_PER_MODEL - 2)]
    for i, config in enumerate(configs):
        align = "right" if i % 4 == 3 else "left"
        net.set_config(config, align=align)
        static = net.export()
        with torch.no_grad():
            expected = net.model(x)
            got = static(x)
        assert torch.allclose(expected, got, atol=1e-5, rtol=1e-4), (config, (expected - got).abs().max())
        cost = net.space.cost(config)
        assert cost.params == count_params(static), config
        if i % 4 == 0:  # counting FLOPs is the slow part: 50 configs per model
            assert cost.flops == count_flops(static, x[:1]), config


def _selector(i: int, net: Supernet, rng: random.Random):
    """Left, right or a random ranking per unit: every kind of selection, mixed within a net."""
    kinds = ("left", "right", "ranked")
    select = {}
    for u in net.space.units:
        kind = kinds[(i + rng.randrange(3)) % 3] if i % 2 else kinds[i % 3]
        select[u.name] = rng.sample(range(u.max), u.max) if kind == "ranked" else kind
    return select


@pytest.mark.parametrize("name", PAD_MODELS + ("toy",))
def test_pad_export_equals_supernet_and_cost_equals_count(name):
    if name == "toy":
        model, x = ResidualConcatDepthwise(), torch.randn(2, 3, 8, 8)
    else:
        model, x = build_model(name), small_input(name)
    randomise_batch_norms(model, seed=len(name))
    net = Supernet(model, x[:1], groups=4 if name.startswith("cbm") else 10, residual="pad")
    assert net.space.analysis.joins, "a residual model has zero-padded sums under pad"
    net.model.eval()
    rng = random.Random(name)
    for i in range(PAD_CONFIGS):
        subnet = Subnet(net.space.random_config(rng), _selector(i, net, rng))
        net.set_config(subnet)
        static = net.export()
        with torch.no_grad():
            expected = net.model(x)
            got = static(x)
        assert torch.allclose(expected, got, atol=1e-5, rtol=1e-4), (subnet, (expected - got).abs().max())
        cost = net.space.cost(subnet)
        assert cost.params == count_params(static), subnet
        if i % 4 == 0:
            assert cost.flops == count_flops(static, x[:1]), subnet


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_permute_keeps_the_function_at_full_width(name):
    model = build_model(name)
    randomise_batch_norms(model, seed=3)
    x = small_input(name)
    for residual in ("tie", "pad"):
        net = Supernet(model, x[:1], groups=4, residual=residual)
        net.model.eval()
        weights = {k: v.clone() for k, v in net.model.state_dict().items()}
        with torch.no_grad():
            before = net.model(x)
            for unit in net.space.units:
                net.permute(unit.name, torch.randperm(unit.max))
            after = net.model(x)
        # summation order changes with the channel order: compare against the output's scale
        # (randomised BN statistics make deep nets' logits large)
        error = float((before - after).abs().max())
        assert error <= 1e-5 * float(before.abs().max()) + 1e-5, (residual, error)
        moved = [k for k, v in net.model.state_dict().items() if not torch.equal(v, weights[k])]
        assert moved, "the permutation reordered no weights"


def test_exported_state_dict_round_trips(tmp_path):
    model = build_model("resnet20")
    x = torch.randn(1, 3, 32, 32)
    net = Supernet(model, x, groups=4)
    config = net.space.random_config(random.Random(5))
    static = net.export(config).eval()
    path = tmp_path / "net.pt"
    torch.save(static.state_dict(), path)
    fresh = Supernet(build_model("resnet20"), x, groups=4).export(config).eval()
    fresh.load_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(fresh(x), static(x))
