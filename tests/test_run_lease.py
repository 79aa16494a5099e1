"""benchmarks/run_lease.sh: a run started on one machine, killed, packed, and finished by a lease in
another folder ends with the report of an uninterrupted run."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from helpers.kills import REPO, kill_9, start_cli, wait_for_file

LEASE = REPO / "benchmarks" / "run_lease.sh"
# a whole Network Adjustment run on digits in seconds: two rounds, one seed
ARGS = ["--method", "netadjust", "--model", "tiny_cnn", "--rounds", "2", "--epochs", "2", "--retrain-epochs", "2",
        "--seeds", "0", "--threads", "1"]


def _env(**extra: str) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable, **extra}


def _report(folder: Path) -> str:
    return (folder / "report.md").read_text().replace(str(folder), "RUN")


def test_a_killed_run_packed_and_finished_by_a_lease_elsewhere_gives_the_same_report(tmp_path):
    whole = tmp_path / "whole"
    subprocess.run([sys.executable, "-m", "widthsearch", "run", *ARGS, "--out", str(whole)], cwd=REPO, env=_env(),
                   check=True, capture_output=True)

    started = tmp_path / "started"  # the machine that started the run: killed inside round 1's training
    proc = start_cli(["run", *ARGS, "--out", started])
    wait_for_file(started, "adjust/rounds/1/train/model.pt", proc)
    kill_9(proc)
    assert not (started / "report.md").exists()

    parts = tmp_path / "parts"
    subprocess.run(["bash", str(LEASE), "--pack", str(started), str(parts)], check=True, capture_output=True)
    with tarfile.open(next(parts.glob("run.tgz.*")), mode="r:gz") as tar:  # one part: a whole gzip
        names = tar.getnames()
    assert any(n.endswith("adjust/rounds/1/train/model.pt") for n in names)
    assert not any(n.endswith(".widthsearch.lock") for n in names)  # another host's lock would be refused
    shutil.rmtree(started)  # the lease runs on another machine: the paths the run recorded are not there

    out, elsewhere = tmp_path / "out", tmp_path / "lease" / "run"
    done = subprocess.run(["bash", str(LEASE), str(parts), "--", *ARGS], cwd=REPO, capture_output=True, text=True,
                          env=_env(OUT=str(out), RUN=str(elsewhere), DEADLINE="600"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "the run is complete" in done.stdout
    assert (out / "report.md").read_text() == (elsewhere / "report.md").read_text()
    assert _report(elsewhere) == _report(whole)
    assert list(out.glob("run.tgz.*")) and (out / "machine.txt").exists() and (elsewhere / "leases.log").exists()


def test_the_lease_script_refuses_out_and_resume_in_the_run_arguments(tmp_path):
    for bad in (["--out", "x"], ["--resume"]):
        result = subprocess.run(["bash", str(LEASE), "none", "--", *ARGS, *bad], cwd=REPO, capture_output=True,
                                text=True, env=_env(OUT=str(tmp_path / "out"), RUN=str(tmp_path / "run")))
        assert result.returncode == 2 and "without --out and --resume" in result.stdout
        assert not (tmp_path / "run").exists()


def _queue(runs: Path, kept: Path) -> list[str]:
    """The `widthsearch` command lines benchmarks/cpu_experiments.sh would run in ``runs`` (echoed)."""
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "cpu_experiments.sh")], check=True, capture_output=True,
                          text=True, env=_env(WIDTHSEARCH="echo", RUNS=str(runs), DATA="/data/c.tar.gz",
                                              KEPT=str(kept)))
    return [line for line in done.stdout.splitlines() if line.startswith("run ")]


def test_the_cpu_queue_resumes_started_runs_restores_kept_results_and_spreads_autoslim_by_stage(tmp_path):
    kept = tmp_path / "kept"
    kept.mkdir()
    (fresh,) = _queue(tmp_path / "runs", kept)
    assert fresh.split()[2] == "autoslim" and "--resume" not in fresh and "--data cifar10:/data/c.tar.gz" in fresh
    assert "--jobs 1 --threads 2" in fresh  # the supernet and the search: one process, both cores
    (kept / "autoslim_r20" / "search").mkdir(parents=True)  # results kept in the repository, no run folder
    (kept / "autoslim_r20" / "search" / "search.json").write_text("{}")
    (later,) = _queue(tmp_path / "new", kept)
    assert (tmp_path / "new" / "autoslim_r20" / "search" / "search.json").exists()  # restored, then resumed
    assert later.endswith("--resume") and "--jobs 2 --threads 1 --compile" in later  # retrainings, two at a time
    (tmp_path / "new" / "autoslim_r20" / "report.md").write_text("done")
    assert _queue(tmp_path / "new", kept) == []  # a finished run is skipped
