"""Published networks as presets (``--channels preset:NAME``): exact costs, the CLI paths, errors."""
import dataclasses
import json

import pytest
import torch

from widthsearch.cli.main import main
from widthsearch.costs import count_flops
from widthsearch.errors import ConfigError, UserError
from widthsearch.export import load_static
from widthsearch.models import build_model
from widthsearch.space.config import load_config, preset_document
from widthsearch.space.presets import PRESETS, get_preset
from widthsearch.space.spec import build_supernet

# MACs (conv + linear) and params of each preset at 1x3x224x224 with 1000 classes, computed once
# with the cost model and checked against torch's flop counter on the exported nets.
PINNED = {
    "autoslim-mbv2-207m": (206_767_048, 4_125_104),
    "autoslim-mbv2-305m": (305_072_416, 5_767_288),
    "autoslim-mbv2-505m": (504_934_400, 6_495_992),
    "autoslim-r50-570m": (570_004_736, 7_417_104),
    "autoslim-r50-1g": (999_850_432, 13_344_136),
    "autoslim-r50-2g": (2_006_045_440, 20_608_336),
    "autoslim-r50-3g": (3_004_547_840, 23_185_064),
}
MBV2 = "autoslim-mbv2-207m"


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def mbv2_space():
    return build_supernet(get_preset(MBV2).spec())[0].space


def test_every_preset_is_pinned():
    assert set(PINNED) == set(PRESETS)


@pytest.mark.parametrize("name", list(PINNED))
def test_preset_costs_are_pinned_and_near_the_published_ones(name):
    doc = preset_document(name)
    assert (doc["flops"], doc["params"]) == PINNED[name]
    # the published FLOPs are rounded to 1M and the source also counts global average pooling
    assert abs(doc["flops"] / get_preset(name).published_flops - 1) < 0.005


def test_preset_sets_every_unit_from_the_published_list(mbv2_space):
    config = get_preset(MBV2).config(mbv2_space)
    assert set(config) == {u.name for u in mbv2_space.units}
    # blocks 1 and 2 share an output (residual add): the list gives both 16; the stem is the list's first entry
    assert config["blocks.1.project.0"] == 16 and config["stem.0"] == 8 and config["head.0"] == 1920


def test_a_list_that_breaks_a_residual_tie_is_refused(mbv2_space):
    widths = list(get_preset(MBV2).widths)
    widths[5] += 8  # block 2's output, tied to block 1's by the residual add
    broken = dataclasses.replace(get_preset(MBV2), widths=tuple(widths))
    with pytest.raises(ConfigError, match="tied layers get different widths"):
        broken.config(mbv2_space)


def test_unknown_preset_is_a_one_line_error_listing_the_known_ones(capsys):
    code, _, err = run_cli(capsys, "profile", "--channels", "preset:autoslim-mbv2-999m")
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "unknown preset 'autoslim-mbv2-999m'" in err and "autoslim-r50-570m" in err
    with pytest.raises(UserError, match="choose one of"):
        get_preset("nope")


def test_space_presets_json_lists_name_model_costs_and_published_numbers(capsys):
    code, out, _ = run_cli(capsys, "space", "--presets", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)["presets"]}
    assert set(rows) == set(PRESETS)
    r50 = rows["autoslim-r50-1g"]
    assert (r50["model"], r50["flops"], r50["params"]) == ("resnet50", *PINNED["autoslim-r50-1g"])
    assert (r50["published_flops"], r50["published_top1"]) == (1_000_000_000, 74.0)
    assert r50["channels"] == "preset:autoslim-r50-1g"


def test_profile_a_preset_counts_the_exported_net(capsys):
    code, out, _ = run_cli(capsys, "profile", "--channels", f"preset:{MBV2}", "--json")
    assert code == 0
    result = json.loads(out)
    assert (result["model"], result["width_mult"]) == ("mobilenet_v2", 1.5)
    assert (result["flops"], result["params"]) == PINNED[MBV2]


def test_profile_refuses_a_preset_of_another_model(capsys):
    code, _, err = run_cli(capsys, "profile", "--model", "resnet50", "--channels", f"preset:{MBV2}")
    assert code == 2 and "network of mobilenet_v2, not resnet50" in err


def test_export_a_preset_from_full_width_weights(capsys, tmp_path):
    full = build_model("mobilenet_v2", width_mult=1.5)
    torch.save(full.state_dict(), tmp_path / "full.pt")
    code, out, _ = run_cli(capsys, "export", "--checkpoint", str(tmp_path / "full.pt"), "--channels", f"preset:{MBV2}",
                           "--out", str(tmp_path), "--json")
    assert code == 0
    (row,) = json.loads(out)["exported"]
    assert row["out"] == str(tmp_path / f"{MBV2}.pt")  # named after the preset
    static, header = load_static(row["out"])
    assert (header["flops"], header["params"]) == PINNED[MBV2]
    assert count_flops(static, torch.randn(1, 3, 224, 224)) == PINNED[MBV2][0]
    # the static net holds the first channels of the full weights
    assert torch.equal(static.stem[0].weight, full.stem[0].weight[:8])


def test_a_preset_loads_into_any_space_of_its_model(mbv2_space):
    config, meta = load_config(f"preset:{MBV2}", mbv2_space, model="mobilenet_v2")
    assert meta["preset"] == MBV2 and meta["source"].startswith("JiahuiYu/slimmable_networks@5dc14d0")
    assert mbv2_space.cost(config).flops == PINNED[MBV2][0]
    with pytest.raises(ConfigError, match="written for model 'mobilenet_v2', not 'resnet50'"):
        load_config(f"preset:{MBV2}", mbv2_space, model="resnet50")
