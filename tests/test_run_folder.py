"""Run folders: the lock of a live process refuses a second one, a dead one's lock is taken over,
the lock goes away on every exit, and a resumed run sweeps the temporary files a kill left."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from widthsearch.cli.main import main
from widthsearch.errors import UserError
from widthsearch.runfolder import LOCK_NAME, RunLock, check_folder, rehome_paths, remove_stale_temps
from helpers.kills import kill_9

REPO = Path(__file__).resolve().parents[1]

HOLDER = """
import sys, time
from widthsearch.runfolder import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path):
    """A second process holding the lock of ``tmp_path/run``; yields (process, folder)."""
    folder = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc, folder
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_a_live_process_lock_refuses_a_second_run_naming_it(holder, capsys):
    proc, folder = holder
    code = main(["search", "--checkpoint", "sn.pt", "--target", "flops=0.5", "--out", str(folder)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"is in use by process {proc.pid}" in err


def test_the_lock_of_a_killed_process_is_taken_over_with_a_warning(holder, capsys):
    proc, folder = holder
    kill_9(proc)  # no chance to clean up: the lock file stays behind
    assert (folder / LOCK_NAME).read_text().split()[0] == str(proc.pid)
    with RunLock(folder):
        assert (folder / LOCK_NAME).read_text().split()[0] == str(os.getpid())
        err = capsys.readouterr().err
        assert f"taking over the stale lock {folder / LOCK_NAME} of process {proc.pid}" in err
    assert not (folder / LOCK_NAME).exists()


def test_one_process_cannot_take_a_lock_twice(tmp_path):
    with RunLock(tmp_path / "run"):
        with pytest.raises(UserError, match=f"in use by process {os.getpid()}"):
            RunLock(tmp_path / "run").acquire()


def test_the_lock_goes_away_on_ctrl_c_and_a_folder_made_for_it_too(tmp_path, monkeypatch, capsys):
    import widthsearch.cli.search as search_cli

    def interrupted(args):
        assert (Path(args.out) / LOCK_NAME).exists()
        raise KeyboardInterrupt

    monkeypatch.setattr(search_cli, "run", interrupted)
    out = tmp_path / "new" / "run"
    assert main(["search", "--checkpoint", "x.pt", "--target", "flops=0.5", "--out", str(out)]) == 130
    assert not (tmp_path / "new").exists()  # created for the lock, removed with it
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "mine.txt").write_text("the user's")
    assert main(["search", "--checkpoint", "x.pt", "--target", "flops=0.5", "--out", str(kept)]) == 130
    assert sorted(p.name for p in kept.iterdir()) == ["mine.txt"]


def test_resume_removes_the_temporary_files_of_a_killed_run(supernet_dir, tmp_path, capsys):
    run = tmp_path / "sn"
    shutil.copytree(supernet_dir, run)
    stale = [run / ".supernet.pt.k3x_9a2q.tmp", run / ".log.jsonl.ab12cd34.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    mine = run / ".notes.tmp"  # not a name the atomic writer makes
    mine.write_text("the user's")
    assert main(["supernet", "--resume", "--out", str(run), "--json"]) == 0
    assert not any(p.exists() for p in stale) and mine.exists()
    assert f"removed 2 temporary file(s) a killed run left in {run}" in capsys.readouterr().err


def test_stale_temps_are_only_the_atomic_writers_names(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".model.pt.abcdefgh.tmp").write_text("x")
    (tmp_path / "model.tmp").write_text("x")
    (tmp_path / ".model.pt.short.tmp").write_text("x")
    assert [p.name for p in remove_stale_temps(tmp_path)] == [".model.pt.abcdefgh.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.pt.short.tmp", "model.tmp", "sub"]


def test_check_folder_names_the_file_in_the_way(tmp_path):
    (tmp_path / "f").write_text("x")
    assert check_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    with pytest.raises(UserError, match="is a file, not a folder"):
        check_folder(tmp_path / "f")
    with pytest.raises(UserError, match=f"lies below the file {tmp_path / 'f'}"):
        check_folder(tmp_path / "f" / "a" / "b")


def test_recorded_paths_follow_a_moved_run_folder_and_nothing_else(tmp_path):
    old, new, data = tmp_path / "old" / "run", tmp_path / "new" / "run", tmp_path / "data.npz"
    for folder in (old, new):  # the old place still holds an older copy: the folder's own files win
        (folder / "bases" / "1").mkdir(parents=True)
        (folder / "bases" / "1" / "model.pt").write_text("x")
        (folder / "model.pt").write_text("x")
    (tmp_path / "lease" / "run" / "static").mkdir(parents=True)  # a second earlier place of the run
    (new / "static").mkdir()
    (new / "static" / "subnet-1.pt").write_text("x")
    data.write_text("x")
    state = {"bases": [{"checkpoint": str(old / "bases" / "1" / "model.pt"), "accuracy": 0.5}],
             "static": [str(tmp_path / "lease" / "run" / "static" / "subnet-1.pt")],
             "kept": [str(new / "model.pt"), str(data), str(old / "gone.pt"), "relative/model.pt", "10.3M", None]}
    assert rehome_paths(state, new) == {
        "bases": [{"checkpoint": str(new / "bases" / "1" / "model.pt"), "accuracy": 0.5}],  # not new/model.pt
        "static": [str(new / "static" / "subnet-1.pt")],
        "kept": [str(new / "model.pt"), str(data), str(old / "gone.pt"), "relative/model.pt", "10.3M", None]}
