"""Tests of the model zoo: exact MACs/params, forward passes, fx tracing, options and errors."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
import torch.fx
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from widthsearch.errors import UserError
from widthsearch.models import (
    CBM_MAX_WIDTHS,
    MODEL_NAMES,
    build_model,
    cbm_key,
    cbm_widths,
    make_divisible,
    model_info,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
CBM_DIR = SHARED / "channel_bench_macro"

IMAGENET_MODELS = ("mobilenet_v1", "mobilenet_v2", "mnasnet", "resnet18", "resnet50")

# (MACs of conv + linear, parameters) at width 1.0, batch 1, the model's default input shape.
EXPECTED = {
    "tiny_cnn": (1_493_632, 93_546),
    "mobilenet_v1": (568_740_352, 4_231_976),
    "mobilenet_v2": (300_774_272, 3_504_872),
    "mnasnet": (314_415_872, 4_383_312),
    "resnet18": (1_814_073_344, 11_689_512),
    "resnet50": (4_089_184_256, 25_557_032),
    "resnet20": (40_813_184, 272_474),
    "resnet56": (125_747_840, 855_770),
    "vgg16": (313_201_664, 14_724_042),
    "cbm_mobilenet": (211_281_920, 1_804_170),
    "cbm_resnet": (1_436_226_560, 15_356_170),
}


def count_macs(model: nn.Module, shape: tuple[int, ...], device: str = "cpu") -> int:
    """MACs of conv and matmul ops (FlopCounterMode reports 2 FLOPs per MAC)."""
    model.eval()
    x = torch.zeros(1, *shape, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    total = 0
    for op, flops in counter.get_flop_counts()["Global"].items():
        if str(op).split(".")[-1] in ("convolution", "mm", "addmm"):
            total += flops
    assert total % 2 == 0
    return total // 2


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def small_shape(name: str) -> tuple[int, int, int]:
    c, h, w = model_info(name)["input_shape"]
    return (c, 64, 64) if name in IMAGENET_MODELS else (c, h, w)


def test_names_and_info():
    assert set(MODEL_NAMES) == set(EXPECTED)
    assert model_info("mobilenet_v2")["input_shape"] == (3, 224, 224)
    assert model_info("resnet50")["num_classes"] == 1000
    assert model_info("vgg16")["input_shape"] == (3, 32, 32)
    assert model_info("cbm_resnet")["num_classes"] == 10
    assert model_info("tiny_cnn")["input_shape"] == (1, 8, 8)
    for name in MODEL_NAMES:
        info = model_info(name)
        assert len(info["input_shape"]) == 3
        assert isinstance(info["num_classes"], int)
        assert isinstance(info["description"], str) and info["description"]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_exact_macs_and_params(name):
    torch.manual_seed(0)
    model = build_model(name)
    shape = model_info(name)["input_shape"]
    assert (count_macs(model, shape), count_params(model)) == EXPECTED[name]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_and_fx_trace(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    shape = small_shape(name)
    x = torch.randn(1, *shape)
    with torch.no_grad():
        y = model(x)
        traced = torch.fx.symbolic_trace(model)
        y_traced = traced(x)
    assert y.shape == (1, model_info(name)["num_classes"])
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y_traced, y)
    # the core relies on leaf layers being called as modules (no functional weights)
    called = {node.target for node in traced.graph.nodes if node.op == "call_module"}
    layers = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))}
    assert layers <= called
    assert not any(node.op == "get_attr" for node in traced.graph.nodes)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_layers_are_standard(name):
    model = build_model(name)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            assert module.bias is None
        if isinstance(module, (nn.ReLU, nn.ReLU6)):
            assert not module.inplace
        if isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)
        if isinstance(module, nn.Linear):
            assert module.bias is not None


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_num_classes_and_width_mult(name):
    shape = small_shape(name)
    x = torch.randn(2, *shape)
    model = build_model(name, num_classes=7, width_mult=0.5).eval()
    with torch.no_grad():
        assert model(x).shape == (2, 7)
    assert count_params(model) < count_params(build_model(name, num_classes=7))


def test_module_names():
    names = dict(build_model("mobilenet_v2").named_modules())
    assert isinstance(names["stem.0"], nn.Conv2d)
    assert isinstance(names["blocks.3.expand.0"], nn.Conv2d)
    assert isinstance(names["blocks.3.dw.0"], nn.Conv2d) and names["blocks.3.dw.0"].groups > 1
    assert isinstance(names["classifier"], nn.Linear)
    names = dict(build_model("resnet20").named_modules())
    assert isinstance(names["layer2.0.shortcut.0"], nn.Conv2d)  # option B projection
    assert "layer1.0.shortcut" not in names
    names = dict(build_model("cbm_mobilenet").named_modules())
    assert isinstance(names["blocks.2.project.0"], nn.Conv2d)
    assert isinstance(names["head.0"], nn.Conv2d)


def test_width_rules():
    assert make_divisible(32 * 0.5) == 16
    assert make_divisible(24 * 0.75) == 24  # 18 -> 16 would lose more than 10 %
    assert make_divisible(1) == 8
    v2 = dict(build_model("mobilenet_v2", width_mult=0.35).named_modules())
    assert v2["stem.0"].out_channels == 16
    assert v2["head.0"].out_channels == 1280  # the last conv only grows
    assert dict(build_model("mobilenet_v1", width_mult=0.25).named_modules())["classifier"].in_features == 256
    r18 = dict(build_model("resnet18", width_mult=0.3).named_modules())
    assert r18["stem.0"].out_channels == 19  # plain rounding of 19.2
    assert r18["fc"].in_features == 154
    r50 = dict(build_model("resnet50", width_mult=0.5).named_modules())
    assert r50["fc"].in_features == 1024
    tiny = build_model("tiny_cnn", width_mult=2.0)
    assert tiny.fc.in_features == 128


def test_build_model_errors():
    with pytest.raises(UserError, match="unknown model 'resnet99'.*known models: .*tiny_cnn"):
        build_model("resnet99")
    with pytest.raises(UserError, match="unknown model"):
        model_info("nope")
    for bad in (0, -1.0, math.nan, math.inf, "1.0", None, True):
        with pytest.raises(UserError, match="width_mult"):
            build_model("tiny_cnn", width_mult=bad)
    for bad in (0, -3, 2.5, "10"):
        with pytest.raises(UserError, match="num_classes"):
            build_model("tiny_cnn", num_classes=bad)
    with pytest.raises(UserError, match="does not take widths"):
        build_model("resnet18", widths=(1, 2, 3))
    with pytest.raises(UserError, match="widths"):
        build_model("cbm_resnet", widths=(64, 64))
    with pytest.raises(UserError, match="widths"):
        build_model("cbm_resnet", widths=(64, 64, 64, 128, 128, 128, 0))
    with pytest.raises(UserError, match="not both"):
        build_model("cbm_resnet", width_mult=0.5, widths=(64,) * 7)
    for call in (lambda: build_model("x"), lambda: build_model("vgg16", width_mult=-1)):
        with pytest.raises(UserError) as err:
            call()
        assert "\n" not in str(err.value)


def test_cbm_key_helpers():
    assert cbm_widths("mobilenet", "4444444") == CBM_MAX_WIDTHS["mobilenet"]
    assert cbm_widths("cbm_resnet", "1111111") == (64, 64, 64, 128, 128, 128, 128)
    assert cbm_widths("mobilenet", "2344241") == (64, 576, 768, 768, 128, 1536, 256)
    assert cbm_key("resnet", (192, 128, 256, 512, 256, 256, 128)) == "3244221"
    with pytest.raises(UserError):
        cbm_widths("resnet", "1234")
    with pytest.raises(UserError):
        cbm_widths("resnet", "1234560")
    with pytest.raises(UserError):
        cbm_key("resnet", (100, 64, 64, 128, 128, 128, 128))
    model = build_model("cbm_mobilenet", widths=cbm_widths("mobilenet", "2344241"))
    assert model.head[0].out_channels == 256
    assert model.blocks[2].project[0].out_channels == 128


def _cbm_table(space: str) -> dict:
    path = CBM_DIR / f"Results_{'MobileNet' if space == 'mobilenet' else 'ResNet'}.json"
    if not path.is_file():
        pytest.skip(f"Channel-Bench-Macro table not found at {path} (../shared beside the repository)")
    with path.open() as f:
        return json.load(f)


@pytest.mark.parametrize("space", ["mobilenet", "resnet"])
def test_cbm_matches_table(space):
    """A seeded sample of table entries: MACs at 1x3x32x32 and params equal ``flops``/``params``.

    Built on the meta device (shapes only) so the sample stays fast; every one of the 16,384
    entries of both tables was checked the same way once, outside the test suite.
    """
    table = _cbm_table(space)
    assert len(table) == 4**7
    keys = sorted(table)
    sample = ["1111111", "4444444"] + random.Random(1234).sample(keys, 48)
    for key in sample:
        with torch.device("meta"):
            model = build_model(f"cbm_{space}", widths=cbm_widths(space, key))
        got = (count_macs(model, (3, 32, 32), device="meta"), count_params(model))
        assert got == (table[key]["flops"], table[key]["params"]), key
