"""`run --resume` after a kill at every stage of the AutoSlim pipeline ends with the uninterrupted report.

Kills inside a stage are simulated in-process (the stage's own function is wrapped so that it stops
after writing a checkpoint and raises), and one case is a real ``kill -9`` of a ``widthsearch run``
subprocess, another a ``kill -9`` while the retrainings run in worker processes (``--jobs 2``). Each
resumed run must write the same ``report.md`` and ``report.json`` (accuracies of every seed,
intervals, configs) as a run that was never interrupted (in one process).
"""
from __future__ import annotations

import importlib
import json
import time
from pathlib import Path

import pytest
import yaml

import widthsearch.methods.autoslim as autoslim
evaluate_module = importlib.import_module("widthsearch.training.evaluate")
import widthsearch.training.slimmable as slimmable_module
from widthsearch.cli.main import main
from widthsearch.methods.autoslim import run_autoslim
from helpers.kills import Killed, die_when_called, kill_9, kill_in_retraining, quiet as _quiet, start_cli, wait_for_file as _wait_for

SETTINGS = {"epochs": 2, "retrain_epochs": 2, "targets": (0.5,), "groups": 4, "threads": 1, "seeds": (0, 1),
            "search_images": 300}
CLI_ARGS = ["run", "--epochs", "2", "--retrain-epochs", "2", "--targets", "0.5", "--groups", "4", "--threads", "1",
            "--seeds", "0,1", "--search-images", "300"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    run_autoslim(SETTINGS, out, progress=False, echo=_quiet)
    return _outcome(out)


def _outcome(out: Path) -> tuple[str, dict]:
    """The run's report.md and report.json, with the run folder's own path taken out, and its configs' widths."""
    doc = json.loads((out / "report.json").read_text().replace(str(out), "OUT"))
    for row in doc["targets"]:
        row["channels"] = yaml.safe_load((out / row["config"].replace("OUT/", "")).read_text())["channels"]
    return (out / "report.md").read_text(), doc


def _kill_supernet(monkeypatch):
    real = slimmable_module.train_supernet

    def stopped(args, out_dir, **options):
        real(args, out_dir, **{**options, "stop_after": 1})  # epoch 1's checkpoint is written, then the kill
        raise Killed

    monkeypatch.setattr(slimmable_module, "train_supernet", stopped)


def _kill_search(monkeypatch):
    real = evaluate_module.supernet_evaluator

    def dying_evaluator(*args, **kwargs):
        evaluator, data = real(*args, **kwargs)
        calls = {"n": 0}

        def dying(config):
            calls["n"] += 1
            if calls["n"] > 7:  # a few greedy steps are saved, the rest of the search is not
                raise Killed
            return evaluator(config)

        return dying, data

    monkeypatch.setattr(evaluate_module, "supernet_evaluator", dying_evaluator)


def _kill_retrain(at: int):
    """Kill inside the ``at``-th retraining (1-based: found seed 0, uniform seed 0, found seed 1, ...)."""
    return kill_in_retraining(at, after_one_epoch=True)


def _kill_report(monkeypatch):
    die_when_called(monkeypatch, autoslim, "write_report")


def test_run_killed_at_every_stage_in_turn_resumes_to_the_uninterrupted_report(tmp_path, monkeypatch, uninterrupted):
    out = tmp_path / "run"
    # inside the supernet's training, the greedy search, the uniform net's first seed, the found net's second
    # seed, then with every training complete but no report written
    kills = [(_kill_supernet, "supernet/supernet.pt"), (_kill_search, "search/search_state.json"),
             (_kill_retrain(2), "retrain/uniform-*/seed-0/model.pt"), (_kill_retrain(3), "retrain/flops-*/seed-1/model.pt"),
             (_kill_report, "retrain/uniform-*/seed-1/result.json")]
    for i, (kill, saved) in enumerate(kills):
        with monkeypatch.context() as patched:
            kill(patched)
            with pytest.raises(Killed):
                run_autoslim(SETTINGS, out, resume=i > 0, progress=False, echo=_quiet)
        assert any(out.glob(saved)) and not (out / "report.md").exists()  # killed with that stage's state saved
    run_autoslim(SETTINGS, out, resume=True, progress=False, echo=_quiet)
    assert _outcome(out) == uninterrupted


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()  # the name in parentheses may hold spaces
        except OSError:  # exited meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _exited(pid: int) -> bool:
    """The process has exited (a zombie waiting for its new parent to reap it counts)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def _sigkill_run(out: Path, *extra: str) -> list[int]:
    """Start ``widthsearch run`` into ``out`` and kill -9 it once a first retraining has a checkpoint
    (three more, and the report, are left to do); returns the pids of its children at the kill."""
    proc = start_cli([*CLI_ARGS, *extra, "--out", out, "--json"])
    children: list[int] = []
    try:
        _wait_for(out / "retrain", "*/seed-0/model.pt", proc)
        children = _children(proc.pid) if Path("/proc").is_dir() else []
    finally:
        kill_9(proc)
    return children


def test_run_sigkilled_in_a_subprocess_resumes_to_the_uninterrupted_report(tmp_path, uninterrupted, capsys):
    out = tmp_path / "run"
    _sigkill_run(out)
    assert main([*CLI_ARGS, "--out", str(out), "--json"]) == 2  # without --resume it is refused
    assert main([*CLI_ARGS, "--out", str(out), "--resume", "--json"]) == 0
    capsys.readouterr()
    assert _outcome(out) == uninterrupted


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker processes in /proc")
def test_run_sigkilled_while_retraining_in_workers_resumes_to_the_uninterrupted_report(tmp_path, uninterrupted,
                                                                                       capsys):
    out = tmp_path / "run"
    workers = _sigkill_run(out, "--jobs", "2")
    assert workers  # the retraining ran in worker processes ...
    deadline = time.monotonic() + 60
    while not all(_exited(pid) for pid in workers):  # ... which end with their parent: none writes on
        assert time.monotonic() < deadline, "a worker outlived the killed run"
        time.sleep(0.01)
    assert main([*CLI_ARGS, "--jobs", "2", "--out", str(out), "--resume", "--json"]) == 0
    capsys.readouterr()
    assert _outcome(out) == uninterrupted  # the numbers of the uninterrupted run in one process
