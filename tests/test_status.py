"""`widthsearch status DIR`: epochs, speed and time left of a run folder's trainings, read without writing.

Its bad inputs (a missing folder, a file, a folder without a run) are rows of test_bad_inputs.py."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from widthsearch.cli.main import main
from widthsearch.runfolder import LOCK_NAME
from widthsearch.runstatus import format_status, run_status


def _fingerprint(folder: Path) -> dict[str, tuple[float, str]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime, hashlib.md5(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _training(folder: Path, done: int, planned: int, seconds: list[float], *, result: bool = False) -> None:
    """A training folder as the training loop leaves it after ``done`` of ``planned`` epochs."""
    folder.mkdir(parents=True)
    torch.save({"format": "widthsearch.model/1", "epoch": done, "args": {"epochs": planned}}, folder / "model.pt")
    rows = [{"epoch": k + 1, "loss": 1.0, "heldout_acc": 0.5 + k / 100, "img_per_s": 100.0 + k, "seconds": s}
            for k, s in enumerate(seconds)]
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if result:
        (folder / "result.json").write_text(json.dumps({"epochs": planned, "complete": done >= planned}))


def test_a_real_training_stopped_then_resumed(tmp_path, capsys):
    out = tmp_path / "net"
    flags = ["train", "--model", "tiny_cnn", "--data", "digits", "--epochs", "3", "--batch-size", "256",
             "--threads", "1", "--out", str(out), "--json"]
    assert main([*flags, "--stop-after", "1"]) == 0
    capsys.readouterr()
    before = _fingerprint(out)
    assert main(["status", str(out), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert _fingerprint(out) == before  # read only: no lock, no temp file, nothing touched
    (t,) = status["trainings"]
    assert status["state"] == "stopped" and status["lock"] is None and status["report"] is None
    assert (t["path"], t["kind"], t["epochs_done"], t["epochs"], t["finished"], t["running"]) == (
        ".", "network", 1, 3, False, False)
    row = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert t["accuracy"] == {"heldout": row["heldout_acc"]} and t["img_per_s"] == row["img_per_s"]
    assert t["seconds_left"] == pytest.approx(2 * row["seconds"])  # 2 epochs left at the one epoch's pace
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "stopped: continue it with the same command and --resume" in text and "1/3" in text
    assert main([*flags, "--resume"]) == 0
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 0
    (t,) = json.loads(capsys.readouterr().out)["trainings"]
    assert (t["epochs_done"], t["finished"], t["seconds_left"]) == (3, True, None)


def test_time_left_uses_the_median_of_the_recent_epochs_and_skips_a_cut_line(tmp_path):
    run = tmp_path / "run"
    _training(run / "retrain" / "a" / "seed-0", 4, 10, [100.0, 10.0, 20.0, 60.0])
    with open(run / "retrain" / "a" / "seed-0" / "log.jsonl", "a") as f:
        f.write('{"epoch": 5, "loss": 0.')  # a kill inside the write of the next row
    (t,) = run_status(run)["trainings"]
    assert t["epochs_done"] == 4 and t["seconds_per_epoch"] == 20.0 and t["seconds_left"] == 6 * 20.0
    assert t["accuracy"] == {"heldout": 0.53}


def test_the_checkpoint_not_the_log_says_how_many_epochs_are_done(tmp_path):
    # a process killed after logging epoch 3 but before its checkpoint landed resumes from epoch 2
    _training(tmp_path / "t", 2, 5, [10.0, 10.0, 10.0])
    (t,) = run_status(tmp_path / "t")["trainings"]
    assert t["epochs_done"] == 2 and t["seconds_left"] == 30.0


def test_trainings_in_natural_order_the_longest_sets_the_time_left(tmp_path):
    for seed, done in ((10, 1), (2, 3), (1, 2)):
        _training(tmp_path / "run" / f"seed-{seed}", done, 4, [60.0] * done)
    status = run_status(tmp_path / "run")
    assert [t["path"] for t in status["trainings"]] == ["seed-1", "seed-2", "seed-10"]
    assert status["seconds_left_started"] == 3 * 60.0  # they run side by side: the longest, not the sum
    header, *rows = format_status(status).splitlines()[1:4]  # paths shorter than the column's title
    assert all(row.index("network") == header.index("kind") for row in rows) and rows[0].endswith("  2 min")


def test_lock_of_a_live_a_dead_and_a_foreign_process(tmp_path):
    run = tmp_path / "run"
    _training(run, 1, 2, [5.0])
    (run / LOCK_NAME).write_text(f"{os.getpid()} {os.uname().nodename}\n")
    status = run_status(run)
    assert status["state"] == "running" and status["trainings"][0]["running"]
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run / LOCK_NAME).write_text(f"{gone.stdout.strip()} {os.uname().nodename}\n")
    status = run_status(run)
    assert status["state"] == "stopped" and status["lock"]["alive"] is False
    (run / LOCK_NAME).write_text("123 some-other-host\n")
    assert run_status(run)["lock"] == {"pid": 123, "host": "some-other-host", "alive": None}
    # a training that locks its own folder inside a run folder nobody holds (a worker of a killed parent)
    (run / LOCK_NAME).unlink()
    _training(run / "inner", 1, 2, [5.0])
    (run / "inner" / LOCK_NAME).write_text(f"{os.getpid()} {os.uname().nodename}\n")
    status = run_status(run)
    assert status["state"] == "running" and [(t["path"], t["running"]) for t in status["trainings"]] == [
        (".", False), ("inner", True)]  # the run folder's own training first


def test_a_finished_run_and_its_search(tmp_path, capsys):
    run = tmp_path / "run"
    _training(run / "supernet", 2, 2, [5.0, 5.0], result=True)
    (run / "search").mkdir()
    (run / "search" / "search_state.json").write_text(json.dumps({"format": "widthsearch.search-state/2", "algorithm": "greedy"}))
    (run / "search" / "search.json").write_text("{}")
    (run / "report.md").write_text("# done\n")
    assert main(["status", str(run)]) == 0
    text = capsys.readouterr().out
    assert "finished (report.md)" in text and "search: greedy search, done" in text and "2/2" in text


def test_the_methods_stages_from_their_state_files(tmp_path):
    run = tmp_path / "run"
    (run / "adjust").mkdir(parents=True)
    (run / "adjust" / "adjust_state.json").write_text(json.dumps({"settings": {"rounds": 5}, "rounds": [{}, {}]}))
    (run / "spnet" / "seed-0").mkdir(parents=True)
    (run / "spnet" / "seed-0" / "spnet_state.json").write_text(
        json.dumps({"settings": {"bases": [0.75, 1.0]}, "stage": "bases", "bases": [{}]}))
    # seed 0's arms are recorded only when its worker returns: its folders say how far it has come
    (run / "experiment_state.json").write_text(json.dumps({"settings": {"seeds": [0, 1, 2], "ablation": "nopad"},
                                                           "arms": {"spnet:2": {}, "snet:2": {}, "nopad:2": {}}}))
    stages = {s["path"]: s["text"] for s in run_status(run)["stages"]}  # no training yet: still a run
    assert stages == {"adjust": "Network Adjustment: 2/5 rounds done",
                      "spnet/seed-0": "SP-Net: 1/2 bases trained, stage bases",
                      ".": "SP-Net vs S-Net: seed 0: spnet started, snet to come, nopad to come; seed 1: spnet to "
                           "come, snet to come, nopad to come; seed 2: spnet done, snet done, nopad done"}
    (run / "spnet" / "seed-0" / "spnet_state.json").write_text(json.dumps({"stage": "done", "bases": [{}, {}]}))
    (run / "snet" / "seed-0").mkdir(parents=True)
    (run / "snet" / "seed-0" / "result.json").write_text(json.dumps({"complete": True}))
    (run / "nopad" / "seed-0").mkdir(parents=True)
    (run / "snet" / "seed-1").mkdir(parents=True)
    text = {s["path"]: s["text"] for s in run_status(run)["stages"]}["."]
    assert text.startswith("SP-Net vs S-Net: seed 0: spnet done, snet done, nopad started; "
                           "seed 1: spnet to come, snet started, nopad to come;")


# ---- the epoch in progress: progress.json ------------------------------------------------------------
def _progress(folder: Path, pid: int, host: str, *, epoch: int, step: int, steps: int, seconds: float,
              phase: str = "train") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "progress.json").write_text(json.dumps({
        "pid": pid, "host": host, "checkpoint": "joint.pt", "epoch": epoch, "epochs": 5, "step": step,
        "steps": steps, "phase": phase, "seconds": seconds, "img_per_s": 10.0, "time": 0.0}))


def test_a_training_shows_its_epoch_in_progress_even_before_its_first_checkpoint(tmp_path, monkeypatch):
    from widthsearch.training import progress_file
    from widthsearch.training.retrain import train_network

    monkeypatch.setattr(progress_file, "PROGRESS_INTERVAL", 0.0)  # write at every step
    views, listings = [], []
    write = progress_file.ProgressFile._write

    def write_then_look(self, **what):
        write(self, **what)
        if what["phase"] == "train" and what["step"] == 2:
            views.append(run_status(tmp_path / "run"))  # as `widthsearch status` in another process sees it
            listings.append(sorted(p.name for p in out.iterdir()))

    monkeypatch.setattr(progress_file.ProgressFile, "_write", write_then_look)
    out = tmp_path / "run" / "net"  # folders the training itself makes
    train_network({"model": "tiny_cnn", "data": "digits", "epochs": 2, "batch_size": 256, "threads": 1}, out)

    first, second = (view["trainings"] for view in views)
    (t,) = first
    assert listings[0] == ["progress.json"]  # in epoch 1 the folder holds nothing else yet
    current = t["current"]
    assert (t["path"], t["kind"], t["epochs_done"], t["epochs"], t["running"]) == ("net", "network", 0, 2, True)
    assert (current["epoch"], current["step"], current["phase"]) == (1, 2, "train") and current["steps"] > 2
    part = 2 / current["steps"]
    assert current["part_done"] == pytest.approx(part)
    # no epoch finished yet: the first one's pace so far, extrapolated
    assert t["seconds_left"] == pytest.approx((2 - part) * current["seconds"] / part)
    assert views[0]["state"] == "running"
    assert f"(running: epoch 1 at {100 * part:.0f}%)" in format_status(views[0])

    (t,) = second
    epoch_seconds = json.loads((out / "log.jsonl").read_text().splitlines()[0])["seconds"]
    assert (t["epochs_done"], t["current"]["epoch"], t["seconds_per_epoch"]) == (1, 2, epoch_seconds)
    assert t["seconds_left"] == pytest.approx((1 - part) * epoch_seconds)

    assert not (out / "progress.json").exists()  # removed when the training returns
    (t,) = run_status(tmp_path / "run")["trainings"]
    assert (t["current"], t["running"], t["finished"]) == (None, False, True)


def test_a_progress_file_whose_writer_is_gone_or_elsewhere_is_no_running_epoch(tmp_path):
    run = tmp_path / "run"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _training(run / "a", 1, 4, [10.0])
    _progress(run / "a", int(gone.stdout), os.uname().nodename, epoch=2, step=3, steps=6, seconds=5.0)
    _progress(run / "b", int(gone.stdout), os.uname().nodename, epoch=1, step=3, steps=6, seconds=5.0)  # killed in epoch 1
    _progress(run / "c", os.getpid(), "some-other-host", epoch=1, step=3, steps=6, seconds=5.0)
    status = run_status(run)
    a, b, c = status["trainings"]
    assert status["state"] == "stopped" and not any(t["running"] or t["current"] for t in (a, b, c))
    assert a["seconds_left"] == 3 * 10.0  # the stale part-epoch does not count
    assert format_status(status).splitlines()[2].endswith("  30 s")
    assert (b["path"], b["epochs_done"], b["epochs"], b["kind"], b["seconds_left"]) == ("b", 0, None, None, None)

    # live, in its evaluation, after epochs of history: the evaluated epoch counts as done
    _progress(run / "a", os.getpid(), os.uname().nodename, epoch=2, step=6, steps=6, seconds=9.0, phase="evaluate")
    (a, *_) = run_status(run)["trainings"]
    assert a["running"] and a["current"]["phase"] == "evaluate" and a["seconds_left"] == 2 * 10.0
    assert "(running: epoch 2 evaluating)" in format_status(run_status(run))
    # a file this version did not write is passed over
    (run / "a" / "progress.json").write_text('{"pid": "x"}')
    assert run_status(run)["trainings"][0]["current"] is None
