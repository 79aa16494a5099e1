"""`run --method spnet`: SP-Net against S-Net on equal training compute, with the no-zpm ablation.

Tiny runs on digits (one epoch per training). The compute accounting is checked against a hand
computation and against what the run recorded; a run interrupted at stages and killed inside
trainings resumes to the report of an uninterrupted run.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from widthsearch.errors import UserError
from widthsearch.methods import spnet_experiment as experiment
from helpers.kills import Killed

STATE = experiment.STATE_FILE

SETTINGS = {"model": "tiny_cnn", "data": "digits", "epochs": 1, "retrain_epochs": 1, "batch_size": 256,
            "calib_images": 256, "threads": 1, "seeds": (0, 1), "ablation": "nopad"}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("experiment") / "run"
    return experiment.run_spnet_experiment(SETTINGS, out, progress=False, echo=None), out


def _outcome(out: Path) -> tuple[str, dict]:
    """report.md and report.json with the run folder's path taken out."""
    doc = json.loads((out / "report.json").read_text().replace(str(out), "OUT"))
    doc["settings"].pop("threads")
    return (out / "report.md").read_text(), doc


# ---- compute accounting ---------------------------------------------------------------------------
def test_compute_accounting_matches_a_hand_computation():
    # bases of 100 and 200 MACs, 3 epochs each; sub-networks of 50, 120 and 200 MACs, 2 epochs; 1000 images
    compute = experiment.spnet_compute(3, [100, 200], 2, [50, 120, 200], 1000)
    assert compute == {"images_per_epoch": 1000, "bases": [300_000, 600_000], "finetune": 740_000,
                       "total": 1_640_000}
    # S-Net nets of 60, 110 and 200 MACs: 1,640,000 / (1000 * 370) = 4.43 epochs, 4 whole ones
    epochs, exact = experiment.matching_epochs(compute["total"], [60, 110, 200], 1000)
    assert epochs == 4 and exact == pytest.approx(1640 / 370)
    assert experiment.matching_epochs(1_000, [10_000], 1000) == (1, 0.0001)  # never zero epochs
    assert experiment.epoch_images(1617, 256) == 1536  # the last incomplete batch is dropped
    assert experiment.goals(3) == [0.005, 0.0, -0.003] and experiment.goals(2) == [0.005, -0.003]


def test_the_run_records_the_compute_of_what_it_trained(uninterrupted):
    from widthsearch.data import load_data
    from widthsearch.export import load_static
    from widthsearch.training.checkpoint import load_checkpoint

    result, out = uninterrupted
    train = len(load_data("digits", 0.1, 0, augment="none").train)
    images = train // 256 * 256
    for row in result["compute"]:
        seed = row["seed"]
        sp = out / "spnet" / f"seed-{seed}"
        base_macs = [json.loads((sp / "bases" / w / "result.json").read_text())["flops"] for w in ("0.75", "1")]
        subnet_macs = [load_static(sp / "static" / f"subnet-{k}.pt")[1]["flops"] for k in (1, 2, 3)]
        total = images * (1 * sum(base_macs) + 1 * sum(subnet_macs))  # one base epoch, one fine-tune epoch
        assert row["images_per_epoch"] == images and row["spnet"]["total"] == total
        snet_macs = [c["flops"] for c in result["snet_configs"]]
        epochs = load_checkpoint(out / "snet" / f"seed-{seed}" / "joint.pt")["epoch"]
        assert epochs == row["snet"]["epochs"] == round(total / (images * sum(snet_macs)))
        assert row["snet"]["total"] == epochs * images * sum(snet_macs)
        assert row["snet_over_spnet"] == pytest.approx(row["snet"]["total"] / total)
        # the ablation is charged its bases too, though it trains from copies of the SP-Net arm's
        nopad = out / "nopad" / f"seed-{seed}"
        tied = [load_static(nopad / "static" / f"subnet-{k}.pt")[1]["flops"] for k in (1, 2, 3)]
        assert row["nopad"]["total"] == images * (sum(base_macs) + sum(tied))


# ---- the arms and the report ----------------------------------------------------------------------
def test_the_arms_are_what_the_protocol_says(uninterrupted):
    result, out = uninterrupted
    snet = result["snet_configs"]
    for config, row in zip(snet, result["targets"]):
        doc = yaml.safe_load(Path(config["config"]).read_text())
        widths = list(doc["channels"].values())
        assert "select" not in doc and doc["space"]["residual"] == "tie"  # uniform prefixes, one space
        assert 0.95 * config["target_flops"] <= config["flops"] <= config["target_flops"]
        assert row["uniform_flops_per_seed"] == [config["flops"]] * 2 and all(w >= 1 for w in widths)
        assert all(f <= row["target_flops"] for f in row["flops_per_seed"])
    assert snet[-1]["flops"] == snet[-1]["target_flops"]  # the largest S-Net net is the whole largest base
    joint = torch.load(out / "snet" / "seed-0" / "joint.pt", weights_only=False)["args"]
    assert joint["bn_l1"] == 0 and joint["init_from"] is None and joint["kd_weight"] == 0.9  # from scratch
    # zpm: the pad arm keeps rankings for joined units; the ablation ties every stream
    for k in (1, 2, 3):
        assert "select" in yaml.safe_load((out / "spnet/seed-0/configs" / f"subnet-{k}.yaml").read_text())
        assert "select" not in yaml.safe_load((out / "nopad/seed-0/configs" / f"subnet-{k}.yaml").read_text())
    # the ablation's bases are the SP-Net arm's
    for w in ("0.75", "1"):
        a = torch.load(out / "spnet/seed-1/bases" / w / "model.pt", weights_only=False)["model"]
        b = torch.load(out / "nopad/seed-1/bases" / w / "model.pt", weights_only=False)["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_the_report_compares_the_arms_per_target_with_goals(uninterrupted):
    result, out = uninterrupted
    assert [r["goal"] for r in result["targets"]] == [0.005, 0.0, -0.003]
    for row in result["targets"] + result["ablation"]:
        c = row["comparison"]
        assert c["seeds"] == [0, 1] and c["test_images"] == 359 and len(c["deltas"]) == 2
        assert row["goal_met"] == (c["delta"] >= row["goal"])
        assert c["verdict"] in ("no significant difference", "SP-Net better", "S-Net better",
                                "SP-Net without zpm better")
        assert row["accuracy"] == c["found"]["mean"] and row["uniform_accuracy"] == c["base"]["mean"]
    # the accuracies are the arms' own, measured on their saved static nets
    sp0 = json.loads((out / "spnet/seed-0/spnet.json").read_text())["subnets"]
    assert [r["comparison"]["found"]["values"][0] for r in result["targets"]] == [r["accuracy"] for r in sp0]
    assert all("goal" not in r for r in result["zpm_effect"]) and len(result["zpm_effect"]) == 3
    report = (out / "report.md").read_text()
    assert "## Ablation: SP-Net without zero-padding match" in report and "## Training compute" in report
    assert report.count("≥ +0.50: ") == 2 and "359 test images" in report
    assert "](accuracy.png)" in report and result["plot"] == str(out / "accuracy.png")
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_status_reads_every_arm_of_the_finished_experiment(uninterrupted):
    from widthsearch.runstatus import run_status

    _, out = uninterrupted
    status = run_status(out)
    stages = {s["path"]: s["text"] for s in status["stages"]}
    assert stages["."] == ("SP-Net vs S-Net: seed 0: spnet done, snet done, nopad done; "
                           "seed 1: spnet done, snet done, nopad done")
    assert stages["spnet/seed-1"] == "SP-Net: 2/2 bases trained, stage done"
    assert status["state"] == "finished" and all(t["finished"] for t in status["trainings"])
    kinds = {t["path"]: t["kind"] for t in status["trainings"]}
    assert kinds["snet/seed-0"] == kinds["spnet/seed-0/finetune"] == "joint"
    assert kinds["spnet/seed-0/bases/0.75"] == "network"


# ---- resuming -------------------------------------------------------------------------------------
def _killer(at: int):
    """An echo that raises after the ``at``-th epoch line (the epoch's checkpoint is written)."""
    seen = []

    def echo(line: str) -> None:
        seen.append(line)
        if sum(s.startswith("epoch") for s in seen) == at:
            raise Killed

    return echo


def test_a_run_interrupted_anywhere_resumes_to_the_same_report(tmp_path, uninterrupted):
    out = tmp_path / "run"

    def stop(at):
        return experiment.run_spnet_experiment(SETTINGS, out, resume=out.exists(), progress=False, echo=None,
                                               stop_after=lambda stage: stage == at)

    assert stop("spnet:0:prune") == {"stopped_after": "spnet:0"}  # inside SP-Net, after pruning
    with pytest.raises(Killed):  # in the S-Net training, after its first epoch (of two)
        experiment.run_spnet_experiment(SETTINGS, out, resume=True, progress=False, echo=_killer(2))
    assert stop("snet:0") == {"stopped_after": "snet:0"}
    partial = out / "nopad/seed-0/bases/.1.copying"  # a copy of a base that a kill interrupted
    partial.mkdir(parents=True)
    (partial / "model.pt").write_text("half")
    assert stop("nopad:0") == {"stopped_after": "nopad:0"}
    assert not partial.exists()
    with pytest.raises(Killed):  # inside seed 1's base x1
        experiment.run_spnet_experiment(SETTINGS, out, resume=True, progress=False, echo=_killer(2))
    experiment.run_spnet_experiment(SETTINGS, out, resume=True, progress=False, echo=None)
    assert _outcome(out) == _outcome(uninterrupted[1])


def test_a_run_moved_between_folders_resumes_where_it_is_to_the_same_report(tmp_path, uninterrupted):
    """A GPU lease unpacks a run under another path, trains on, and its folder comes back: the paths
    the run recorded (bases, configs, checkpoints, static nets) must follow the folder."""
    first, lease, back = tmp_path / "first", tmp_path / "lease" / "run", tmp_path / "back"

    def stop(out, at, resume):
        return experiment.run_spnet_experiment(SETTINGS, out, resume=resume, progress=False, echo=None,
                                               stop_after=lambda stage: stage == at)

    assert stop(first, "spnet:0:finetune", False) == {"stopped_after": "spnet:0"}  # inside SP-Net
    shutil.move(first, lease)
    assert stop(lease, "snet:1", True) == {"stopped_after": "snet:1"}  # seed 0 done, seed 1 under way
    shutil.move(lease, back)
    experiment.run_spnet_experiment(SETTINGS, back, resume=True, progress=False, echo=None)
    assert _outcome(back) == _outcome(uninterrupted[1])
    written = (back / "report.json").read_text() + (back / STATE).read_text()
    assert str(first) not in written and str(lease) not in written


def test_a_resume_with_more_seeds_trains_theirs_and_reports_over_all(tmp_path, uninterrupted):
    out = tmp_path / "run"
    one = experiment.run_spnet_experiment({**SETTINGS, "seeds": (0,)}, out, progress=False, echo=None)
    assert [row["comparison"]["seeds"] for row in one["targets"]] == [[0]] * 3
    experiment.run_spnet_experiment(SETTINGS, out, resume=True, progress=False, echo=None)
    assert _outcome(out) == _outcome(uninterrupted[1])


def test_jobs_2_runs_the_seeds_side_by_side_to_the_same_report(tmp_path, uninterrupted):
    out = tmp_path / "run"
    lines = []

    def killed_when_a_seed_is_done(line: str) -> None:  # the other seed's worker may still be training
        if line.endswith("every arm done"):
            raise Killed

    with pytest.raises(Killed):
        experiment.run_spnet_experiment({**SETTINGS, "jobs": 2}, out, progress=False, echo=killed_when_a_seed_is_done)
    state = json.loads((out / experiment.STATE_FILE).read_text())
    assert sorted(state["arms"]) in (["nopad:0", "snet:0", "spnet:0"], ["nopad:1", "snet:1", "spnet:1"])
    experiment.run_spnet_experiment({**SETTINGS, "jobs": 2}, out, resume=True, progress=False, echo=lines.append)
    assert _outcome(out) == _outcome(uninterrupted[1])
    left = 1 if "spnet:0" in state["arms"] else 0  # only the seed that was not done runs again
    assert lines == [f"== seed {left}: every arm, up to 2 seeds at a time", f"== seed {left}: every arm done",
                     "== report"]
    with pytest.raises(ValueError, match="jobs 1"):
        experiment.run_spnet_experiment({**SETTINGS, "jobs": 2}, tmp_path / "other", echo=None, stop_after=bool)


def test_a_finished_run_is_not_overwritten_and_a_resume_keeps_its_settings(uninterrupted):
    _, out = uninterrupted
    before = (out / "report.md").read_text()
    with pytest.raises(UserError, match="already holds a finished run"):
        experiment.run_spnet_experiment(SETTINGS, out, echo=None)
    with pytest.raises(UserError, match="--finetune-epochs 2 differs"):
        experiment.run_spnet_experiment({**SETTINGS, "retrain_epochs": 2}, out, resume=True, echo=None)
    assert (out / "report.md").read_text() == before
    # the ablation may change on a resume: left out, the report leaves it out; given again, it is back
    lines = []
    result = experiment.run_spnet_experiment({**SETTINGS, "ablation": None}, out, resume=True, progress=False,
                                             echo=lines.append)
    assert result["ablation"] == [] and "## Ablation" not in (out / "report.md").read_text()
    experiment.run_spnet_experiment(SETTINGS, out, resume=True, progress=False, echo=lines.append)
    assert (out / "report.md").read_text() == before
    assert lines == ["== report", "== report"]  # nothing trained again


@pytest.mark.parametrize("settings, message", [
    ({"seeds": (0, 0)}, "distinct"),
    ({"ablation": "nozpm"}, "choose from nopad"),
    ({"residual": "tie"}, "must use residual pad"),
])
def test_bad_settings_are_one_line_errors_before_anything_is_written(tmp_path, settings, message):
    with pytest.raises(UserError, match=message):
        experiment.run_spnet_experiment({**SETTINGS, **settings}, tmp_path / "new", echo=None)
    assert not (tmp_path / "new").exists()
