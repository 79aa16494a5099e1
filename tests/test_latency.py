"""Latency tables: the prediction is exactly the table's sum, tables of another space are refused,
building resumes, and a search under a latency target respects the table's prediction.

No timing is asserted: the tables here are filled by a deterministic fake timer (a function of the
block's widths), so every expected number is computed independently from the exported network.
"""
import json
import random
import statistics

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

from widthsearch.cli.main import main
from widthsearch.errors import UserError
from widthsearch.latency import LatencyTable, build_table, check_table, load_table, read_table
from widthsearch.space.spec import SpaceSpec, build_supernet
from widthsearch.training.slimmable import load_supernet


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def block_cost(cin: int, cout: int) -> float:
    """Bilinear in (cin, cout): interpolation between grid points reproduces it exactly."""
    return 0.001 * cin * cout + 0.01 * cin + 0.02 * cout + 0.1


def widths(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Conv2d):
        return module.in_channels, module.out_channels
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    return module.num_features, module.num_features  # batch norm


def fake_measure(module: nn.Module, x: torch.Tensor) -> float:
    """A block (a Sequential of fresh layers): block_cost of its first layer; a whole network:
    a number that grows with its parameters (the offset/scale references)."""
    if isinstance(module, nn.Sequential) and isinstance(module[0], (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
        return block_cost(*widths(module[0]))
    return 1.0 + 3e-5 * sum(p.numel() for p in module.parameters())


def _table(tmp_path, spec, grid=None, name="lut.json", **kw):
    net, spec = build_supernet(spec)
    doc = build_table(net, spec, tmp_path / name, grid=grid, references=6, measure=fake_measure, **kw)
    return net, spec, doc


SPECS = [SpaceSpec("tiny_cnn", groups=6), SpaceSpec("resnet20", input_shape=(3, 16, 16), groups=4, residual="pad")]


@pytest.mark.parametrize("spec", SPECS, ids=["tiny_cnn", "resnet20-pad"])
@pytest.mark.parametrize("grid", [None, 3])
def test_prediction_is_the_sum_of_the_entries_at_the_exported_widths(tmp_path, spec, grid):
    net, spec, doc = _table(tmp_path, spec, grid)
    table = load_table(tmp_path / "lut.json")
    assert doc["complete"] and table.scale != 1.0  # the references were fitted with a line
    rng = random.Random(0)
    for _ in range(8):
        config = net.space.random_config(rng)
        static = net.export(config)
        expected = [block_cost(*widths(static.get_submodule(b["layers"][0]))) for b in doc["blocks"]]
        assert table.block_ms(config) == pytest.approx(expected, rel=1e-12, abs=1e-12)
        assert table.predict(config) == pytest.approx(doc["offset_ms"] + doc["scale"] * sum(expected), rel=1e-12)


def test_calibration_is_a_rising_line_through_the_references():
    from widthsearch.latency import calibrate

    assert calibrate([1.0, 2.0, 3.0], [12.0, 14.0, 16.0]) == pytest.approx((10.0, 2.0))
    # two references: offset only, the residuals 11 and 12 weighted by 1/12^2 and 1/14^2
    assert calibrate([1.0, 2.0], [12.0, 14.0]) == pytest.approx(((11 / 144 + 12 / 196) / (1 / 144 + 1 / 196), 1.0))
    # falling: offset only, the residuals 15, 12, 9 weighted by 1/16^2, 1/14^2, 1/12^2
    weights = [1 / 256, 1 / 196, 1 / 144]
    expected = sum(w * r for w, r in zip(weights, [15, 12, 9])) / sum(weights)
    assert calibrate([1.0, 2.0, 3.0], [16.0, 14.0, 12.0]) == pytest.approx((expected, 1.0))


def test_calibration_minimises_the_relative_error_not_the_milliseconds():
    """Small nets count as much as large ones: the fitted line has the least sum of squared
    relative errors, and misses a 10 ms reference less than a millisecond fit would."""
    from widthsearch.latency import calibrate

    sums, measured = [5.0, 8.0, 20.0, 60.0, 100.0], [10.0, 13.0, 30.0, 75.0, 140.0]

    def relative(offset, scale):
        return sum(((offset + scale * x - y) / y) ** 2 for x, y in zip(sums, measured))

    offset, scale = calibrate(sums, measured)
    for d_offset, d_scale in [(0.01, 0), (-0.01, 0), (0, 0.001), (0, -0.001), (0.01, -0.001)]:
        assert relative(offset, scale) < relative(offset + d_offset, scale + d_scale)
    ms_scale, ms_offset = np.polyfit(sums, measured, 1)
    assert abs(offset + scale * 5 - 10) < abs(ms_offset + ms_scale * 5 - 10)


def test_blocks_fuse_conv_bn_and_activation_and_cover_every_layer(tmp_path):
    net, _, doc = _table(tmp_path, SpaceSpec("mobilenet_v2", input_shape=(3, 32, 32), groups=3))
    layers = [name for b in doc["blocks"] for name in b["layers"] if ":" not in name]
    assert sorted(layers) == sorted(set(layers))  # no layer measured twice
    analysed = set(net.space.analysis.layers)
    assert analysed == {name for name in layers if name in analysed}  # every conv/bn/linear is in a block
    kinds = {b["kind"] for b in doc["blocks"]}
    assert {"conv", "depthwise", "linear"} <= kinds
    depthwise = [b for b in doc["blocks"] if b["kind"] == "depthwise"]
    assert all(len(b["axes"]) == 1 and len(b["layers"]) == 3 for b in depthwise)  # conv, bn, relu6; one side


def test_a_table_of_another_space_runtime_or_threads_is_refused(tmp_path, capsys):
    _table(tmp_path, SpaceSpec("tiny_cnn", groups=6))
    table = load_table(tmp_path / "lut.json")
    check_table(table, SpaceSpec("tiny_cnn", groups=6))
    check_table(table, SpaceSpec("tiny_cnn", groups=6, num_classes=10, input_shape=(1, 8, 8)))  # the defaults
    for other in (SpaceSpec("tiny_cnn", groups=4), SpaceSpec("tiny_cnn", groups=6, residual="pad"),
                  SpaceSpec("tiny_cnn", groups=6, input_shape=(1, 16, 16)), SpaceSpec("resnet20", groups=6)):
        with pytest.raises(UserError, match="another space"):
            check_table(table, other)
    with pytest.raises(UserError, match="runtime torch, not onnxruntime"):
        check_table(table, SpaceSpec("tiny_cnn", groups=6), runtime="onnxruntime")
    with pytest.raises(UserError, match="threads 1, not 2"):
        check_table(table, SpaceSpec("tiny_cnn", groups=6), threads=2)
    code, _, err = run_cli(capsys, "profile", "--model", "tiny_cnn", "--groups", "5",
                           "--latency-table", str(tmp_path / "lut.json"))
    assert code == 2 and "another space: groups 6, here 5" in err
    with pytest.raises(Exception, match="unknown unit|missing"):
        table.predict({"nope": 3})


def test_building_resumes_after_an_interruption_to_the_same_table(tmp_path):
    net, spec = build_supernet(SpaceSpec("tiny_cnn", groups=4))
    calls = []

    def dies_after_50(module, x):
        if len(calls) == 50:
            raise KeyboardInterrupt
        calls.append(1)
        return fake_measure(module, x)

    out = tmp_path / "lut.json"
    with pytest.raises(KeyboardInterrupt):
        build_table(net, spec, out, references=4, measure=dies_after_50)
    partial = read_table(out)
    assert not partial["complete"] and sum(v is not None for b in partial["blocks"] for v in b["ms"]) == 50
    with pytest.raises(UserError, match="incomplete"):
        load_table(out)
    with pytest.raises(UserError, match="already exists"):
        build_table(net, spec, out, references=4, measure=fake_measure)
    with pytest.raises(UserError, match="runs"):
        build_table(net, spec, out, references=4, runs=3, resume=True, measure=fake_measure)
    counted = []
    resumed = build_table(net, spec, out, references=4, resume=True,
                          measure=lambda m, x: counted.append(1) or fake_measure(m, x))
    fresh = build_table(net, spec, tmp_path / "fresh.json", references=4, measure=fake_measure)
    total = sum(len(b["ms"]) for b in fresh["blocks"]) + 4
    assert len(counted) == total - 50  # only what was missing was measured
    assert [b["ms"] for b in resumed["blocks"]] == [b["ms"] for b in fresh["blocks"]]
    assert resumed["offset_ms"] == pytest.approx(fresh["offset_ms"]) and resumed["complete"]


def test_passes_keep_the_median_and_alternate_their_order(tmp_path):
    """With a speed that drifts, each entry is the median of its passes; odd passes run backwards;
    an interruption in the second pass resumes to the same table."""
    net, spec = build_supernet(SpaceSpec("tiny_cnn", groups=3))
    order = []

    def drifting(module, x):  # every call a little slower: a slow minute on a shared machine
        order.append(module)
        return fake_measure(module, x) * (1.0 + 0.01 * len(order))

    doc = build_table(net, spec, tmp_path / "lut.json", references=4, passes=3, measure=drifting)
    entries = sum(len(b["ms"]) for b in doc["blocks"]) + 4
    assert len(order) == 3 * entries and doc["complete"] and doc["passes"] == 3
    for block in doc["blocks"]:
        for ms, samples in zip(block["ms"], block["samples"]):
            assert len(samples) == 3 and ms == statistics.median(samples)
    for ref in doc["reference_configs"]:
        assert ref["measured_ms"] == statistics.median(ref["samples"])
    first, second = order[:entries], order[entries:2 * entries]
    assert [type(m) for m in second] != [type(m) for m in first]  # the second pass runs backwards
    assert isinstance(first[0], nn.Sequential) and not isinstance(second[0], nn.Sequential)  # references first
    assert [type(m) for m in second] == [type(m) for m in first][::-1]

    calls = []

    def dies_in_pass_two(module, x):
        if len(calls) == entries + 7:
            raise KeyboardInterrupt
        calls.append(1)
        return drifting(module, x)

    out = tmp_path / "partial.json"
    order.clear()
    with pytest.raises(KeyboardInterrupt):
        build_table(net, spec, out, references=4, passes=3, measure=dies_in_pass_two)
    with pytest.raises(UserError, match="passes"):
        build_table(net, spec, out, references=4, passes=2, resume=True, measure=drifting)
    resumed = build_table(net, spec, out, references=4, passes=3, resume=True, measure=drifting)
    assert [b["ms"] for b in resumed["blocks"]] == [b["ms"] for b in doc["blocks"]]
    assert resumed["offset_ms"] == pytest.approx(doc["offset_ms"])


def test_statistic_min_keeps_the_fastest_pass_and_is_a_resume_setting(tmp_path):
    net, spec = build_supernet(SpaceSpec("tiny_cnn", groups=3))
    calls = []

    def noisy(module, x):  # every second call slowed down by another process
        calls.append(1)
        return fake_measure(module, x) * (1.5 if len(calls) % 2 else 1.0)

    doc = build_table(net, spec, tmp_path / "lut.json", references=4, passes=2, statistic="min", measure=noisy)
    assert doc["statistic"] == "min"
    for block in doc["blocks"]:
        assert block["ms"] == [min(s) for s in block["samples"]]
    for ref in doc["reference_configs"]:
        assert ref["measured_ms"] == min(ref["samples"])
    clean = build_table(net, spec, tmp_path / "clean.json", references=4, measure=fake_measure)
    # each entry had one slowed and one clean pass (the second pass runs backwards): min is the clean one
    assert [v for b in doc["blocks"] for v in b["ms"]] == pytest.approx([v for b in clean["blocks"] for v in b["ms"]])
    with pytest.raises(UserError, match="statistic"):
        build_table(net, spec, tmp_path / "lut.json", references=4, passes=2, resume=True, measure=noisy)
    with pytest.raises(UserError, match="unknown statistic"):
        build_table(net, spec, tmp_path / "other.json", statistic="mean", measure=noisy)


def test_a_table_written_before_passes_existed_still_loads_and_resumes(tmp_path):
    net, spec = build_supernet(SpaceSpec("tiny_cnn", groups=3))
    doc = build_table(net, spec, tmp_path / "lut.json", references=4, measure=fake_measure)
    old = json.loads((tmp_path / "lut.json").read_text())
    del old["passes"], old["statistic"]
    for block in old["blocks"]:
        del block["samples"]
        block["ms"][-1] = None  # one entry left unmeasured
    for ref in old["reference_configs"]:
        del ref["samples"]
    old["complete"] = False
    (tmp_path / "old.json").write_text(json.dumps(old))
    calls = []
    resumed = build_table(net, spec, tmp_path / "old.json", references=4, resume=True,
                          measure=lambda m, x: calls.append(1) or fake_measure(m, x))
    assert len(calls) == len(old["blocks"]) and resumed["complete"]
    assert [b["ms"] for b in resumed["blocks"]] == [b["ms"] for b in doc["blocks"]]


def test_references_spread_over_the_flops_range():
    """Beyond the 5 uniform ones, the references' FLOPs cover the range instead of crowding in the
    middle as independent random widths do."""
    from widthsearch.latency import reference_configs

    net, _ = build_supernet(SpaceSpec("resnet20", input_shape=(3, 16, 16), groups=8))
    space = net.space
    low, high = space.cost(space.min_config()).flops, space.cost(space.max_config()).flops

    def fractions(configs):
        return sorted((space.cost(c).flops - low) / (high - low) for c in configs)

    spread = fractions(reference_configs(space, 45)[5:])
    rng = random.Random(0)
    independent = fractions([space.random_config(rng) for _ in range(40)])
    assert spread[3] < 0.1 and spread[-4] > 0.7
    assert independent[3] > spread[3] and independent[-4] < spread[-4]


def test_cli_latency_table_then_profile_reports_predicted_beside_measured(tmp_path, capsys):
    out = tmp_path / "lut.json"
    args = ["latency-table", "--model", "tiny_cnn", "--groups", "4", "--grid", "2", "--runs", "1", "--warmup", "0",
            "--references", "3", "--out", str(out), "--json"]
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["complete"] and result["measurements"] == sum(len(b["ms"]) for b in read_table(out)["blocks"])
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "already exists" in err
    code, stdout, err = run_cli(capsys, "profile", "--model", "tiny_cnn", "--groups", "4", "--latency", "--runs", "2",
                                "--latency-table", str(out), "--json")
    assert code == 0, err
    profiled = json.loads(stdout)
    assert profiled["latency_ms"] > 0 and profiled["predicted_latency_ms"] > 0
    assert profiled["latency"]["threads"] == 1  # the table's thread count, not torch's default
    code, _, err = run_cli(capsys, "profile", "--model", "tiny_cnn", "--groups", "4", "--latency-table", str(out),
                           "--threads", "2")
    assert code == 2 and "threads 1, not 2" in err


@pytest.mark.parametrize("algo", ["random", "greedy"])
def test_search_with_a_latency_table_respects_the_predicted_budget(supernet_dir, tmp_path, capsys, algo):
    net, meta = load_supernet(supernet_dir)
    from widthsearch.space.spec import SpaceSpec as Spec

    spec = Spec.from_dict(meta["space"])
    doc = build_table(net, spec, tmp_path / "lut.json", references=4, measure=fake_measure)
    table = LatencyTable(doc)
    low, high = table.predict(net.space.min_config()), table.predict(net.space.max_config())
    budget = round(low + 0.4 * (high - low), 4)
    extra = ["--max-evals", "12"] if algo == "random" else []
    code, out, err = run_cli(capsys, "search", "--checkpoint", str(supernet_dir), "--algo", algo, *extra,
                             "--target", f"latency_ms={budget}", "--latency-table", str(tmp_path / "lut.json"),
                             "--search-images", "100", "--out", str(tmp_path / "s"), "--json")
    assert code == 0, err
    found = json.loads(out)["found"][0]
    config = yaml.safe_load(open(found["config"]))["channels"]
    assert table.predict(config) <= budget
    assert found["latency_ms"] == pytest.approx(table.predict(config))
    code, _, err = run_cli(capsys, "search", "--checkpoint", str(supernet_dir), "--target", "flops=0.5",
                           "--latency-table", str(tmp_path / "lut.json"), "--out", str(tmp_path / "s2"))
    assert code == 2 and "latency_ms" in err
    other = build_table(*build_supernet(SpaceSpec("tiny_cnn", groups=3)), tmp_path / "other.json", references=2,
                        measure=fake_measure)
    assert other["complete"]
    code, _, err = run_cli(capsys, "search", "--checkpoint", str(supernet_dir), "--target", f"latency_ms={budget}",
                           "--latency-table", str(tmp_path / "other.json"), "--out", str(tmp_path / "s3"))
    assert code == 2 and "another space" in err and not (tmp_path / "s3").exists()
