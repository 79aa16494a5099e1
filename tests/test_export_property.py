"""Property tests: for random configs of every zoo model, the export equals the supernet and the
fast cost equals the counted cost of the export."""
import random

import pytest
import torch

from toy_models import randomise_batch_norms
from widthsearch.costs import count_flops, count_params
from widthsearch.models import MODEL_NAMES, build_model, model_info
from widthsearch.space import Supernet

CONFIGS_PER_MODEL = 200


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
