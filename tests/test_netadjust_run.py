"""`run --method netadjust`: the report (seeds, FLOPs match, goal, FUR stability, channels per stage),
kill/resume to the same report, and an `adjust --out` folder moved into a run folder and continued."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from widthsearch.cli.main import main
from widthsearch.errors import UserError
from widthsearch.methods import netadjust as na
from widthsearch.runfolder import RunLock
from widthsearch.space import SpaceSpec, build_supernet
from helpers.kills import Killed, die_when_called, kill_in_retraining, quiet as _quiet

# digits with tiny_cnn; batches of 256 keep each epoch short
SETTINGS = {"rounds": 1, "epochs": 1, "retrain_epochs": 1, "batch_size": 256, "seeds": (0, 1), "threads": 1}
FLAGS = ["--rounds", "1", "--epochs", "1", "--batch-size", "256", "--threads", "1"]


def _outcome(out: Path) -> tuple[str, dict]:
    return (out / "report.md").read_text(), json.loads((out / "report.json").read_text().replace(str(out), "OUT"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("na_run") / "run"
    result = na.run_netadjust(SETTINGS, out, progress=False, echo=_quiet)
    return result, out


def test_stages_group_resnet20_units_by_output_resolution():
    net, spec = build_supernet(SpaceSpec("resnet20", widen=2.0, divisor=1, residual="pad"))
    resolutions = na.unit_resolutions(net, spec.example_input(1))
    groups = {}
    for name, resolution in resolutions.items():
        groups.setdefault(resolution, []).append(name)
    assert list(groups) == ["32x32", "16x16", "8x8"]  # network order
    # the stem's output is at the input's 32x32, so it joins the first stage's six units
    assert groups["32x32"] == ["stem.0"] + [f"layer1.{b}.conv{c}" for b in range(3) for c in (1, 2)]
    assert "layer2.0.shortcut.0" in groups["16x16"] and "layer3.0.shortcut.0" in groups["8x8"]
    assert [len(g) for g in groups.values()] == [7, 7, 7]
    original = net.space.default_config()
    final = {**original, "stem.0": 8, "layer3.2.conv1": 96}
    stages = na.stage_summary(resolutions, original, final)
    assert [s["original"] for s in stages] == [16 * 7, 32 * 7, 64 * 7]
    assert stages[0]["final"] == 16 * 7 - 8 and stages[2]["final"] == 64 * 7 + 32 and stages[1]["change_percent"] == 0
    assert stages[0]["change_percent"] == pytest.approx(-100 * 8 / 112)
    assert net.subnet.widths == net.space.max_config()  # the probe leaves the supernet's widths as they were


def test_run_report_states_flops_seeds_goal_fur_and_stages(finished):
    result, out = finished
    doc = json.loads((out / "report.json").read_text())
    row = doc["targets"][0]
    c = row["comparison"]
    assert c["seeds"] == [0, 1] and len(c["deltas"]) == 2 and row["baseline"] == "original"
    for seed in (0, 1):
        assert (out / "retrain" / "adjusted" / f"seed-{seed}" / "model.pt").is_file()
        assert (out / "retrain" / "original" / f"seed-{seed}" / "model.pt").is_file()
    flops = doc["flops_match"]
    assert flops["relative_difference"] == pytest.approx((row["flops"] - row["uniform_flops"]) / row["uniform_flops"])
    assert flops["within_tolerance"] == (abs(flops["relative_difference"]) <= 0.01)
    assert flops["within_tolerance"]  # the rounds rescale to the original FLOPs within 1 %
    goal = doc["goal"]
    assert goal["mean_gain_points"] == pytest.approx(100 * c["delta"])
    assert goal["met"] == (100 * c["delta"] >= na.GOAL_GAIN_POINTS and all(d > 0 for d in c["deltas"]))
    assert goal["seeds_positive"] == sum(d > 0 for d in c["deltas"])
    assert row["goal_met"] == goal["met"] and row["goal"] == pytest.approx(na.GOAL_GAIN_POINTS / 100)
    assert [f["round"] for f in doc["fur_stability"]] == [1]
    assert doc["fur_stability"][0]["spearman"] == doc["rounds"][0]["fur_stability"]
    # channels per stage add up to the two configs' widths
    final = yaml.safe_load((out / "adjust" / "final.yaml").read_text())["channels"]
    original = yaml.safe_load((out / "adjust" / "original.yaml").read_text())["channels"]
    assert [s["resolution"] for s in doc["stages"]] == ["8x8", "4x4"]  # tiny_cnn: conv1 at 8x8, the rest at 4x4
    assert sum(s["final"] for s in doc["stages"]) == sum(final.values())
    assert sum(s["original"] for s in doc["stages"]) == sum(original.values())
    report = (out / "report.md").read_text()
    for text in ("| 0 |", "| 1 |", "| mean |", c["verdict"], "Goal (mean gain", "## Direction of change per stage",
                 "| 8x8 |", "adjust/stages.png"):
        assert text in report
    assert (out / "adjust" / "stages.png").is_file()
    assert result["goal"] == goal and result["report_json"] == str(out / "report.json")


def _kill_round(monkeypatch):
    real = na._train_network

    def stopped(config_path, folder, **options):
        real(config_path, folder, **options)
        raise Killed  # the round's network is trained, the state does not know it yet

    monkeypatch.setattr(na, "_train_network", stopped)


def _kill_retrain(at: int):
    """Kill before the ``at``-th retraining (1-based: adjusted seed 0, original seed 0, adjusted seed 1, ...);
    the rounds' training goes through the same function and does not count."""
    return kill_in_retraining(at, counted=lambda out_dir: "retrain" in Path(out_dir).parts)


def _kill_report(monkeypatch):
    die_when_called(monkeypatch, na, "_write_report")


def test_run_killed_at_every_stage_resumes_to_the_same_report(tmp_path, monkeypatch, finished):
    out = tmp_path / "run"
    # inside round 1, before the original net's second seed, with everything trained but no report
    kills = [(_kill_round, "adjust/rounds/1/train/model.pt"), (_kill_retrain(4), "retrain/adjusted/seed-1/model.pt"),
             (_kill_report, "retrain/original/seed-1/result.json")]
    for i, (kill, saved) in enumerate(kills):
        with monkeypatch.context() as patched:
            kill(patched)
            with pytest.raises(Killed):
                na.run_netadjust(SETTINGS, out, resume=i > 0, progress=False, echo=_quiet)
        assert any(out.glob(saved)) and not (out / "report.md").exists()
    na.run_netadjust(SETTINGS, out, resume=True, progress=False, echo=_quiet)
    assert _outcome(out) == _outcome(finished[1])


def _files(folder: Path) -> list:
    return sorted((p.relative_to(folder), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file())


def _no_training(*args, **kwargs):
    raise AssertionError("a round was trained again")


def test_adjust_folder_moved_into_a_run_folder_is_continued_not_redone(tmp_path, monkeypatch, capsys):
    searched = tmp_path / "search"
    assert main(["adjust", *FLAGS, "--out", str(searched), "--json"]) == 0
    run = tmp_path / "run"
    run.mkdir()
    shutil.move(str(searched), str(run / "adjust"))
    before = _files(run)
    capsys.readouterr()
    # other settings are refused, with nothing written
    assert main(["run", "--method", "netadjust", *FLAGS[:2], "--epochs", "2", *FLAGS[4:], "--seeds", "0",
                 "--retrain-epochs", "1", "--out", str(run), "--resume"]) == 2
    assert "--epochs 2 differs from the saved run's 1" in capsys.readouterr().err
    assert _files(run) == before
    monkeypatch.setattr(na, "_train_network", _no_training)
    assert main(["run", "--method", "netadjust", *FLAGS, "--seeds", "0", "--retrain-epochs", "1", "--out", str(run),
                 "--resume", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["adjust"] == str(run / "adjust") and (run / "report.md").is_file()
    assert (run / "retrain" / "adjusted" / "seed-0" / "model.pt").is_file()


def test_adjust_folder_still_written_by_its_process_is_refused(tmp_path, capsys):
    searched, run = tmp_path / "search", tmp_path / "run"
    with RunLock(searched):  # as an `adjust` still running holds it: the flock moves with the file
        searched.joinpath("adjust_state.json").write_text("{}")
        run.mkdir()
        os.rename(searched, run / "adjust")
        assert main(["run", "--method", "netadjust", *FLAGS, "--out", str(run), "--resume"]) == 2
    assert "is in use by process" in capsys.readouterr().err


def test_round_one_without_saved_state_is_checked_and_continued(tmp_path, monkeypatch):
    """A folder killed in round 1 by a version that saved its state only after training."""
    settings = {"model": "tiny_cnn", "rounds": 1, "epochs": 1, "batch_size": 256, "threads": 1, "passes": 2}
    out = tmp_path / "na"
    na.run_rounds(settings, out, stop_after=lambda r, stage: stage == "train")
    (out / na.STATE_FILE).unlink()
    with pytest.raises(UserError, match="holds a started adjustment"):
        na.run_rounds(settings, out)
    with pytest.raises(UserError, match="--lr 0.05 differs from round 1's 0.1"):
        na.run_rounds({**settings, "lr": 0.05}, out, resume=True)
    with pytest.raises(UserError, match="widen 2.0, not 3.0"):
        na.run_rounds({**settings, "widen": 3.0}, out, resume=True)
    calls = []
    real = na._train_network

    def recorded(config_path, folder, **options):
        calls.append(options["resume"])
        return real(config_path, folder, **options)

    monkeypatch.setattr(na, "_train_network", recorded)
    summary = na.run_rounds(settings, out, resume=True)
    assert calls == [True] and len(summary["rounds"]) == 1  # round 1 continued from its checkpoint


def test_unit_resolutions_leave_the_network_as_it_was():
    net, spec = build_supernet(SpaceSpec("tiny_cnn", widen=2.0, divisor=1, residual="pad", input_shape=(1, 8, 8),
                                         num_classes=10))
    net.model.train()
    before = {k: v.clone() for k, v in net.model.state_dict().items()}
    na.unit_resolutions(net, torch.zeros(1, 1, 8, 8))
    assert net.model.training
    after = net.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # eval mode: BN statistics untouched
