"""benchmarks/keep_results.sh: a run folder copied without its weights and unfinished trainings
resumes, in another folder, to the report of the whole run."""
from __future__ import annotations

import subprocess
import sys

from helpers.kills import REPO

KEEP = REPO / "benchmarks" / "keep_results.sh"
ARGS = ["run", "--epochs", "1", "--retrain-epochs", "1", "--targets", "0.5", "--groups", "4", "--threads", "1",
        "--seeds", "3,4"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "widthsearch", *args], cwd=REPO, capture_output=True, text=True)


def test_kept_results_resume_elsewhere_to_the_same_report(tmp_path):
    run, kept = tmp_path / "run", tmp_path / "kept"
    assert _cli(*ARGS, "--out", str(run)).returncode == 0
    report = (run / "report.md").read_text().replace(str(run), "RUN")
    unfinished = next((run / "retrain").glob("uniform-*")) / "seed-4"
    (unfinished / "result.json").unlink()  # as if killed inside its training: a checkpoint, no result
    (run / ".widthsearch.lock").write_text("1 otherhost\n")

    done = subprocess.run(["bash", str(KEEP), str(run), str(kept)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"not finished, left out: retrain/{unfinished.parent.name}/seed-4" in done.stdout
    files = {p.relative_to(kept).as_posix() for p in kept.rglob("*") if p.is_file()}
    assert not [f for f in files if f.endswith(".pt") or f.endswith(".lock") or f.endswith("progress.json")]
    assert {"supernet/result.json", "search/search.json", "report.md"} <= files
    assert not (kept / "retrain" / unfinished.parent.name / "seed-4").exists()

    (kept / "report.md").unlink()
    resumed = _cli(*ARGS, "--out", str(kept), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (kept / "report.md").read_text().replace(str(kept), "RUN") == report


def test_keep_results_refuses_a_destination_inside_the_run(tmp_path):
    (tmp_path / "run").mkdir()
    done = subprocess.run(["bash", str(KEEP), str(tmp_path / "run"), str(tmp_path / "run" / "kept")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "outside RUN_DIR" in done.stdout
