"""Channel analysis of splits along channels (ShuffleNetV2's chunk/split and channel shuffle),
grouped convs (ResNeXt), ConvTranspose2d, and the reason carried by every fixed unit."""
import json
import random

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from toy_models import randomise_batch_norms
from widthsearch.cli.main import main
from widthsearch.costs import count_flops, count_params
from widthsearch.space import ChannelSpace, Subnet, Supernet
from widthsearch.space.dynamic import ChannelSplit


def conv_bn_relu(cin, cout, kernel=1, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


def channel_shuffle(x, groups):
    batch, channels, height, width = x.size()
    x = x.view(batch, groups, channels // groups, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batch, -1, height, width)


class ShuffleUnit(nn.Module):
    """A ShuffleNetV2 unit: stride 2 runs two branches on the input, stride 1 splits the input in
    halves (with chunk, torch.split with sizes, or Tensor.split) and transforms one of them."""

    def __init__(self, cin, cout, stride, split="chunk"):
        super().__init__()
        self.stride, self.split = stride, split
        half = cout // 2
        if stride == 2:
            self.branch1 = nn.Sequential(nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                                         conv_bn_relu(cin, half))
        branch_in = cin if stride == 2 else half
        self.branch2 = nn.Sequential(conv_bn_relu(branch_in, half),
                                     nn.Conv2d(half, half, 3, stride, 1, groups=half, bias=False),
                                     nn.BatchNorm2d(half), conv_bn_relu(half, half))

    def forward(self, x):
        if self.stride == 2:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        else:
            if self.split == "chunk":
                x1, x2 = x.chunk(2, dim=1)
            elif self.split == "sizes":
                x1, x2 = torch.split(x, [x.shape[1] // 2, x.shape[1] // 2], dim=1)
            else:
                x1, x2 = x.split(x.size(1) // 2, 1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        return channel_shuffle(out, 2)


class TinyShuffleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn_relu(3, 12, 3)
        self.blocks = nn.Sequential(ShuffleUnit(12, 32, 2), ShuffleUnit(32, 32, 1, "chunk"),
                                    ShuffleUnit(32, 32, 1, "sizes"), ShuffleUnit(32, 32, 1, "method"))
        self.head = conv_bn_relu(32, 40)
        self.fc = nn.Linear(40, 5)

    def forward(self, x):
        return self.fc(self.head(self.blocks(self.stem(x))).mean((2, 3)))


class TinyResNeXt(nn.Module):
    """A ResNeXt bottleneck (1x1, grouped 3x3 with 4 groups, 1x1, residual add) and a grouped conv
    on the residual stream."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn_relu(3, 16, 3)
        self.conv1 = conv_bn_relu(16, 24)
        self.conv2 = conv_bn_relu(24, 24, 3, groups=4)
        self.conv3 = nn.Sequential(nn.Conv2d(24, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.conv4 = conv_bn_relu(16, 32, 3, groups=2)
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.conv3(self.conv2(self.conv1(x))))
        return self.fc(self.conv4(x).mean((2, 3)))


class Upsampler(nn.Module):
    """ConvTranspose2d plain (output_padding), grouped and depthwise."""

    def __init__(self):
        super().__init__()
        self.down = conv_bn_relu(3, 16, 3, stride=2)
        self.up = nn.ConvTranspose2d(16, 12, 3, stride=2, padding=1, output_padding=1)
        self.bn = nn.BatchNorm2d(12)
        self.up_grouped = nn.ConvTranspose2d(12, 8, 2, stride=2, groups=2, bias=False)
        self.up_depthwise = nn.ConvTranspose2d(8, 8, 3, padding=1, groups=8)
        self.conv = conv_bn_relu(8, 10, 3)
        self.fc = nn.Linear(10, 4)

    def forward(self, x):
        x = torch.relu(self.bn(self.up(self.down(x))))
        x = self.up_depthwise(self.up_grouped(x))
        return self.fc(self.conv(x).mean((2, 3)))


class Splits(nn.Module):
    """An uneven split inside a conv's output, a split of a concat on its boundary whose halves are
    added, and a GLU (chunk, then one half gates the other)."""

    def __init__(self):
        super().__init__()
        self.a = conv_bn_relu(3, 10, 3)
        self.b = conv_bn_relu(3, 6, 3)
        self.p = conv_bn_relu(4, 8)
        self.q = conv_bn_relu(6, 8)
        self.glu = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(18, 3)

    def forward(self, x):
        a = self.a(x)
        a1, a2 = torch.split(a, [4, 6], dim=1)
        left, right = torch.cat([a2, self.b(x)], 1).split([6, 6], 1)
        h = torch.cat([self.p(a1), self.q(left + right)], 1)
        g1, g2 = self.glu(h).chunk(2, 1)
        return self.fc(torch.cat([g1 * torch.sigmoid(g2), a], 1).mean((2, 3)))


class FlatSplit(nn.Module):
    """A split inside a flattened channel: no layout keeps it exact, so its channels stay fixed."""

    def __init__(self):
        super().__init__()
        self.conv = conv_bn_relu(3, 4, 3)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head_a = nn.Linear(6, 2)
        self.head_b = nn.Linear(10, 2)

    def forward(self, x):
        a, b = torch.split(torch.flatten(self.pool(self.conv(x)), 1), [6, 10], dim=1)
        return self.head_a(a) + self.head_b(b)


class ConstantView(nn.Module):
    """Flattens with a literal size: a narrower input would break the view."""

    def __init__(self):
        super().__init__()
        self.conv = conv_bn_relu(3, 6, 3)
        self.mid = conv_bn_relu(6, 8, 3)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(32, 3)

    def forward(self, x):
        return self.fc(self.pool(self.mid(self.conv(x))).view(-1, 32))


MODELS = {"shufflenet": TinyShuffleNet, "resnext": TinyResNeXt, "upsampler": Upsampler, "splits": Splits,
          "flat_split": FlatSplit}
CONFIGS = 24


def _subnet(net, rng, i):
    """A random config; left, right or a random ranking per unit."""
    config = net.space.random_config(rng) if i else net.space.min_config()
    kinds = ("left", "right", "ranked")
    select = {}
    for u in net.space.units:
        kind = kinds[rng.randrange(3)]
        select[u.name] = rng.sample(range(u.max), u.max) if kind == "ranked" else kind
    return Subnet(config, select)


@pytest.mark.parametrize("residual", ["tie", "pad"])
@pytest.mark.parametrize("name", list(MODELS))
def test_export_equals_supernet_and_cost_equals_count(name, residual):
    model = MODELS[name]()
    randomise_batch_norms(model, seed=1)
    x = torch.randn(2, 3, 8, 8)
    net = Supernet(model, x[:1], groups=None, residual=residual)
    net.model.eval()
    rng = random.Random(name + residual)
    for i in range(CONFIGS):
        subnet = _subnet(net, rng, i)
        net.set_config(subnet)
        static = net.export()
        with torch.no_grad():
            expected, got = net.model(x), static(x)
        assert torch.allclose(expected, got, atol=1e-5, rtol=1e-4), (subnet, (expected - got).abs().max())
        cost = net.space.cost(subnet)
        assert cost.params == count_params(static), subnet
        if i % 4 == 0:
            assert cost.flops == count_flops(static, x[:1]), subnet


@pytest.mark.parametrize("name", [n for n in MODELS if n != "flat_split"])  # flat_split has no units
def test_permute_keeps_the_function(name):
    model = MODELS[name]()
    randomise_batch_norms(model, seed=2)
    x = torch.randn(2, 3, 8, 8)
    net = Supernet(model, x[:1], groups=None)
    net.model.eval()
    with torch.no_grad():
        before = net.model(x)
        for unit in net.space.units:
            net.permute(unit.name, torch.randperm(unit.max))
        after = net.model(x)
    assert net.space.units
    assert torch.allclose(before, after, atol=1e-5, rtol=1e-4)


def test_shufflenet_splits_are_searchable_and_shuffles_fixed_with_reasons():
    net = Supernet(TinyShuffleNet(), torch.randn(1, 3, 8, 8), groups=None)
    names = [u.name for u in net.space.units]
    # every unit's inner width (1x1 -> depthwise -> 1x1) is searchable, with chunk, split sizes and Tensor.split
    for block in range(4):
        assert f"blocks.{block}.branch2.0.0" in names
    splits = [m for m in net.model.modules() if isinstance(m, ChannelSplit)]
    assert len(splits) == 3
    # a shuffle whose two halves cannot keep one layout fixes them, and says so
    fixed = {f.name: f.reason for f in net.space.fixed_units}
    assert "blocks.1.branch2.3.0" in fixed and "channel shuffle" in fixed["blocks.1.branch2.3.0"]
    # the split sizes follow the widths: the half that enters branch2 of block 1 is searchable
    cut = next(n for n in names if n.startswith("blocks.0.branch1.2.0["))
    net.set_config({**net.space.max_config(), cut: 3})
    assert splits[0].sizes == [16, 6]


def test_split_pieces_get_their_own_units_and_glu_halves_one():
    space = ChannelSpace.from_model(Splits(), torch.randn(1, 3, 8, 8), groups=None)
    units = {u.name: u for u in space.units}
    # torch.split(a, [4, 6]) cuts conv a's output in two independent units; the right piece is
    # added to b's output, so b joins it; the GLU halves are gated together: one unit, twice
    assert units["a.0[0:4]"].max == 4 and units["a.0[4:10]"].max == 6
    assert "a.0[4:10]" in units and "b.0" not in units and "b.0" in units["a.0[4:10]"].members
    assert (units["glu"].max, units["glu"].copies) == (8, 2)


def test_grouped_conv_is_searchable_in_multiples_of_its_groups():
    model = TinyResNeXt()
    x = torch.randn(1, 3, 8, 8)
    net = Supernet(model, x, groups=None)
    units = {u.name: u for u in net.space.units}
    assert len(units) > 0
    # conv2 (groups=4, 24 -> 24): its input and output units count channels per group
    assert (units["conv1.0"].max, units["conv1.0"].copies) == (6, 4)
    assert (units["conv2.0"].max, units["conv2.0"].copies) == (6, 4)
    static = net.export({**net.space.max_config(), "conv1.0": 2, "conv2.0": 5})
    assert (static.conv2[0].in_channels, static.conv2[0].out_channels, static.conv2[0].groups) == (8, 20, 4)


def test_grouped_conv_with_one_channel_per_group_fixes_its_input_with_a_reason():
    model = nn.Sequential(conv_bn_relu(3, 8), nn.Conv2d(8, 16, 3, groups=8), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(1, 3, 6, 6))
    space = ChannelSpace.from_model(model, torch.randn(1, 3, 6, 6), groups=None)
    fixed = {f.name: f.reason for f in space.fixed_units}
    assert "one input channel per group" in fixed["0.0"]
    assert [(u.name, u.max, u.copies) for u in space.units] == [("1", 2, 8)]  # 2 outputs per group


def test_conv_transpose_flops_are_every_input_pixel_times_the_kernel():
    """The convention of torch.utils.flop_counter (and of the cost model): MACs of a transposed conv
    = C_in * C_out/groups * kH * kW * H_in * W_in. Without padding that is exactly the number of
    products that land in the output, counted directly by scattering ones."""
    cin, cout, groups, kernel, stride, side = 6, 4, 2, 3, 2, 5
    layer = nn.ConvTranspose2d(cin, cout, kernel, stride=stride, groups=groups, bias=False)
    hits = F.conv_transpose2d(torch.ones(1, 1, side, side), torch.ones(1, 1, kernel, kernel), stride=stride)
    direct = int(hits.sum()) * cin * (cout // groups)  # products per output pixel, summed
    assert count_flops(layer, torch.randn(1, cin, side, side)) == direct == cin * cout // groups * kernel ** 2 * side ** 2
    space = ChannelSpace.from_model(nn.Sequential(nn.Conv2d(3, cin, 1), layer), torch.randn(1, 3, side, side), groups=None)
    assert space.cost(space.max_config()).flops == 3 * cin * side ** 2 + direct


def test_split_inside_a_flattened_channel_is_fixed_with_a_reason():
    space = ChannelSpace.from_model(FlatSplit(), torch.randn(1, 3, 8, 8), groups=None)
    fixed = {f.name: f.reason for f in space.fixed_units}
    assert "inside a flattened or interleaved channel" in fixed["conv.0"]
    assert space.units == []


def test_constant_view_fixes_its_channels_with_a_reason():
    space = ChannelSpace.from_model(ConstantView(), torch.randn(1, 3, 8, 8), groups=None)
    fixed = {f.name: f.reason for f in space.fixed_units}
    assert "constant size 32" in fixed["mid.0"]
    assert [u.name for u in space.units] == ["conv.0"]


def test_units_fixed_on_request_carry_a_reason():
    space = ChannelSpace.from_model(TinyResNeXt(), torch.randn(1, 3, 8, 8), groups=None, fixed=["conv1.0"])
    assert "conv1.0" not in [u.name for u in space.units]
    assert {f.name: f.reason for f in space.fixed_units}["conv1.0"].startswith("fixed on request")


def test_space_shows_why_each_fixed_unit_is_fixed(capsys):
    assert main(["space", "--model", "tiny_cnn", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    reasons = {f["name"]: f["fixed_reason"] for f in doc["fixed_units"]}
    assert reasons == {"input:x": "network input channels", "fc": "feeds the network output"}
    assert main(["space", "--model", "tiny_cnn"]) == 0
    text = capsys.readouterr().out
    assert "feeds the network output" in text and "network input channels" in text


@pytest.mark.parametrize("name,unit", [("splits", "a.0[0:4]"), ("resnext", "conv2.0"), ("shufflenet", "blocks.0.branch1.2.0[8:16]")])
def test_masking_a_unit_equals_zeroing_its_channels_in_the_weights(name, unit):
    """masked() on a piece of a split, a grouped conv's output and a shuffled unit: dropping
    channels with a mask computes what zeroing those channels' BN affine parameters computes."""
    model = MODELS[name]()
    randomise_batch_norms(model, seed=3)
    x = torch.randn(2, 3, 8, 8)
    net = Supernet(model, x[:1], groups=None)
    net.model.eval()
    width = net.space.unit(unit).max
    mask = (torch.arange(width) % 2).float()
    with torch.no_grad(), net.masked({unit: mask}):
        masked = net.model(x)
    points = net._mask_points(unit)
    assert points and all(net._layers[p].kind == "bn" for p in points)
    with torch.no_grad():
        for layer in points:
            bn = net._layers[layer].module
            for dim, span in [(d, s) for lyr, d, s in net.members(unit) if lyr == layer]:
                drop = torch.tensor([span.start + i for i in range(len(span)) if not mask[i % width]])
                bn.weight[drop] = 0
                bn.bias[drop] = 0
        zeroed = net.model(x)
    assert torch.allclose(masked, zeroed, atol=1e-5)
