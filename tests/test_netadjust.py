"""Network Adjustment: FLOPs weights, drop rates, the FUR probe, adjusting and rescaling widths."""
import json
import random

import pytest
import torch

from widthsearch.errors import UserError
from widthsearch.methods import netadjust as na
from widthsearch.space import SpaceSpec, build_supernet


@pytest.fixture(scope="module")
def widened():
    net, spec = build_supernet(SpaceSpec("resnet20", widen=2.0, divisor=1, residual="pad"))
    return net


def test_utilisation_weights_are_width_times_the_flops_slope(widened):
    space = widened.space
    config = space.default_config()
    weights = na.utilisation_weights(space, config)
    base = space.cost(config).flops
    for u in space.units:
        one_more = space.cost({**config, u.name: config[u.name] + 1}).flops - base
        assert weights[u.name] == pytest.approx(config[u.name] * one_more)


def test_drop_rates_equalise_dropped_flops_and_are_clamped():
    rates = na.drop_rates({"a": 100.0, "b": 300.0, "c": 1.0}, p0=0.05, max_rate=0.9)
    mean = (100 + 300 + 1) / 3
    assert rates["a"] == pytest.approx(0.05 * mean / 100) and rates["b"] == pytest.approx(0.05 * mean / 300)
    assert rates["a"] * 100 == pytest.approx(rates["b"] * 300)  # the same expected FLOPs dropped
    assert rates["c"] == 0.9  # unclamped it would be 6.7: the official code divides by 1 - p < 0 then
    with pytest.raises(UserError):
        na.drop_rates({"a": 1.0}, p0=1.5)


def test_channel_dropout_keeps_whole_channels_and_rescales():
    draw = na.channel_dropout(0.25, torch.Generator().manual_seed(0))
    mask = draw(4000, 8, torch.device("cpu"))
    assert mask.shape == (4000, 8)
    assert torch.equal(mask.unique(), torch.tensor([0.0, 1 / 0.75]))
    assert float(mask.mean()) == pytest.approx(1.0, abs=0.03)  # unbiased in expectation


def test_rescale_hits_the_flops_within_one_percent(widened):
    space = widened.space
    original = space.default_config()
    target = space.cost(original).flops
    rng = random.Random(1)
    for _ in range(5):
        shaken = {name: max(4, int(w * rng.uniform(0.5, 1.6))) for name, w in original.items()}
        scaled = na.rescale_to_flops(space, shaken, target)
        assert abs(space.cost(scaled).flops - target) <= 0.01 * target


def test_adjust_moves_channels_from_the_bottom_to_the_top():
    config = {"a": 16, "b": 16, "c": 32, "d": 8}
    fur = {"a": 0.5, "b": 0.1, "c": 0.3, "d": -0.2}
    new = na.adjust_widths(config, fur, original=config, maximum={n: 64 for n in config}, k=2, a_lr=0.25, a_decay=0.05)
    assert new["a"] == 16 + round(0.25 * 16) and new["c"] == 32 + round(0.20 * 32)
    assert new["d"] == 8 - round(0.25 * 8) and new["b"] == 16 - round(0.20 * 16)
    floored = na.adjust_widths({"a": 5, "b": 5}, {"a": 1.0, "b": 0.0}, {"a": 40, "b": 40}, {"a": 64, "b": 64},
                               k=1, a_lr=0.5, a_decay=0.0, floor=4)
    assert floored == {"a": 25, "b": 4}
    assert [na.moves_this_round(r, 6, 0.5) for r in range(5)] == [6, 6, 5, 5, 4]


def test_fur_probe_is_reproducible_and_hurts_when_channels_drop():
    torch.manual_seed(0)
    net, _ = build_supernet(SpaceSpec("tiny_cnn", groups=4, input_shape=(1, 8, 8), num_classes=10))
    x = torch.randn(64, 1, 8, 8)
    y = torch.randint(0, 10, (64,))
    rates = {u.name: 0.5 for u in net.space.units}
    first = na.fur_probe(net, x, y, rates, passes=3, seed=0)
    again = na.fur_probe(net, x, y, rates, passes=3, seed=0)
    assert first == again and set(first) == set(rates)
    assert all(len(v) == 3 for v in first.values())
    other = na.fur_probe(net, x, y, rates, passes=3, seed=1)
    assert other != first


# two epochs per round so that the default channel-dropout ramp (zero in the first epoch) acts in the
# second; batches of 256 keep the time of the one-epoch rounds these tests had before
SETTINGS = {"model": "tiny_cnn", "data": "digits", "rounds": 2, "epochs": 2, "batch_size": 256, "threads": 1,
            "passes": 2, "k0": 2}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("na_full")
    return na.run_rounds(SETTINGS, out), out


def test_status_reads_the_rounds_and_their_trainings(uninterrupted):
    from widthsearch.runstatus import run_status

    _, out = uninterrupted
    status = run_status(out)
    assert [s["text"] for s in status["stages"]] == ["Network Adjustment: 2/2 rounds done"]
    assert [(t["path"], t["epochs_done"], t["epochs"], t["finished"]) for t in status["trainings"]] == [
        ("rounds/1/train", 2, 2, True), ("rounds/2/train", 2, 2, True)]


def test_adjust_keeps_flops_and_writes_its_outputs(uninterrupted):
    summary, out = uninterrupted
    assert abs(summary["flops"] - summary["original_flops"]) <= 0.01 * summary["original_flops"]
    assert len(summary["rounds"]) == 2 and summary["residual"] == "pad"
    for name in ("final.yaml", "rounds.csv", "widths.png", "adjust.json", "adjust_state.json"):
        assert (out / name).is_file()
    first = summary["rounds"][0]
    assert set(first["fur"]) <= set(first["widths"]) and first["moves"] == 2
    assert first["next_widths"] != first["widths"]  # channels moved
    log = [json.loads(line) for line in (out / "rounds" / "1" / "train" / "log.jsonl").read_text().splitlines()]
    assert [row["train_drop"] for row in log] == [0.0, pytest.approx(na.ADJUST_DEFAULTS["train_drop"] / 2)]


def test_adjust_state_from_before_train_drop_resumes_as_without_it(tmp_path, uninterrupted):
    import shutil

    _, out = uninterrupted
    old = tmp_path / "old"
    shutil.copytree(out, old)
    state = json.loads((old / na.STATE_FILE).read_text())
    del state["settings"]["train_drop"]
    (old / na.STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(UserError, match="--train-drop 0.05 differs from the saved run's 0.0"):
        na.run_rounds(SETTINGS, old, resume=True)
    assert na.run_rounds({**SETTINGS, "train_drop": 0}, old, resume=True)["rounds"] == uninterrupted[0]["rounds"]


@pytest.mark.parametrize("stops", [[(0, "train")], [(0, "probe"), (1, "train")], [(0, "adjust"), (1, "probe")]])
def test_adjust_interrupted_at_any_stage_resumes_to_the_same_result(tmp_path, uninterrupted, stops):
    expected, _ = uninterrupted
    out = tmp_path / "na"
    for i, stop in enumerate(stops):
        state = na.run_rounds(SETTINGS, out, resume=i > 0, stop_after=lambda r, stage, stop=stop: (r, stage) == stop)
        assert state["round"] == stop[0] + (stop[1] == "adjust")
    summary = na.run_rounds(SETTINGS, out, resume=True)
    assert summary["rounds"] == expected["rounds"]
    assert (out / "final.yaml").read_text() == (uninterrupted[1] / "final.yaml").read_text()


def test_a_probe_killed_between_units_resumes_with_the_units_it_had(tmp_path, uninterrupted, monkeypatch):
    from helpers.kills import Killed

    expected, _ = uninterrupted
    out = tmp_path / "na"
    na.run_rounds(SETTINGS, out, stop_after=lambda r, stage: (r, stage) == (0, "train"))
    calls = []
    mean_loss = na._mean_loss

    def counted(*args, **kwargs):  # the clean loss, then `passes` losses per unit
        calls.append(1)
        if len(calls) == 1 + 2 * SETTINGS["passes"] + 1:  # inside the third unit
            raise Killed
        return mean_loss(*args, **kwargs)

    monkeypatch.setattr(na, "_mean_loss", counted)
    with pytest.raises(Killed):
        na.run_rounds(SETTINGS, out, resume=True)
    saved = json.loads((out / na.STATE_FILE).read_text())["pending"]["probed"]
    first_two = dict(list(expected["rounds"][0]["fur"].items())[:2])
    assert {name: sum(v) / len(v) for name, v in saved.items()} == first_two
    calls.clear()
    na.run_rounds(SETTINGS, out, resume=True, stop_after=lambda r, stage: (r, stage) == (0, "probe"))
    units = len(expected["rounds"][0]["fur"])
    assert len(calls) == 1 + SETTINGS["passes"] * (units - 2)  # the two saved units are not measured again
    monkeypatch.setattr(na, "_mean_loss", mean_loss)
    assert na.run_rounds(SETTINGS, out, resume=True)["rounds"] == expected["rounds"]
    assert "probed" not in json.dumps(json.loads((out / na.STATE_FILE).read_text()))


def test_adjust_refuses_to_overwrite_or_change_settings(tmp_path, uninterrupted):
    _, out = uninterrupted
    with pytest.raises(UserError, match="already holds"):
        na.run_rounds(SETTINGS, out)
    with pytest.raises(UserError, match="differs"):
        na.run_rounds({**SETTINGS, "p0": 0.1}, out, resume=True)


def test_run_method_netadjust_end_to_end(tmp_path, capsys):
    from widthsearch.cli.main import main

    out = tmp_path / "run"
    code = main(["run", "--method", "netadjust", "--rounds", "1", "--epochs", "1", "--retrain-epochs", "1",
                 "--seeds", "0", "--threads", "1", "--out", str(out), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    row = result["targets"][0]
    assert row["baseline"] == "original" and abs(row["flops"] - row["uniform_flops"]) <= 0.01 * row["uniform_flops"]
    report = (out / "report.md").read_text()
    assert "adjusted minus original" in report and "359 test images" in report
    assert row["comparison"]["verdict"] == "one seed: not tested"
    assert main(["run", "--method", "netadjust", "--out", str(out)]) == 2  # never overwrites
