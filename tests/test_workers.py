"""run_in_processes: results in task order, the first failure stops the others, workers end with their parent."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import worker_tasks as tasks
from widthsearch.errors import UserError
from widthsearch.workers import Task, run_in_processes

REPO = Path(__file__).resolve().parents[1]


def _gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its new parent to reap it counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return any(line.startswith("State:") and "Z" in line.split()[1] for line in status.splitlines())


def _wait_until(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _wait_for_file(path: Path) -> int:
    assert _wait_until(lambda: path.exists() and path.read_text().strip() != ""), f"no {path}"
    return int(path.read_text())


def test_results_come_back_in_task_order_whatever_order_they_finish_in():
    done = []
    work = [Task(f"t{i}", tasks.square_after, (i, 0.6 - 0.2 * i)) for i in range(3)]  # the last finishes first
    assert run_in_processes(work, 3, on_done=lambda i, r: done.append(i)) == [0, 1, 4]
    assert sorted(done) == [0, 1, 2]


def test_each_worker_runs_one_task_after_another():
    pids = run_in_processes([Task(f"t{i}", tasks.pid) for i in range(5)], 2)
    assert len(set(pids)) <= 2 and os.getpid() not in pids


def test_a_user_error_is_one_line_naming_the_task_and_stops_the_other_workers(tmp_path):
    pid_file, done_file = tmp_path / "pid", tmp_path / "done"
    work = [Task("slow", tasks.record_pid_then_touch, (str(pid_file), str(done_file), 30.0)),
            Task("worse", tasks.refuse, ("no such file x.yaml", str(pid_file))),  # fails while "slow" runs
            Task("never", tasks.record_pid_then_touch, (str(tmp_path / "p2"), str(tmp_path / "d2"), 0.0))]
    with pytest.raises(UserError, match=r"^worse: no such file x\.yaml$"):
        run_in_processes(work, 2)
    slow = _wait_for_file(pid_file)
    assert _gone(slow) and not done_file.exists()  # terminated, not left to finish
    assert not (tmp_path / "p2").exists()  # a task not yet started is never started


def test_a_crash_comes_back_with_its_traceback():
    with pytest.raises(RuntimeError, match=r"(?s)boom failed in its worker process:.*ValueError: a bug in the task"):
        run_in_processes([Task("boom", tasks.crash)], 2)


def test_a_worker_that_dies_without_a_word_is_a_one_line_error():
    with pytest.raises(UserError, match=r"^gone: its worker process died \(exit code 9"):
        run_in_processes([Task("gone", tasks.die)], 1)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads process states from /proc")
def test_workers_exit_when_their_parent_is_killed(tmp_path):
    pid_file, done_file = tmp_path / "pid", tmp_path / "done"
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import worker_tasks as t; "
              "from widthsearch.workers import Task, run_in_processes; "
              "run_in_processes([Task('w', t.record_pid_then_touch, (sys.argv[2], sys.argv[3], 60.0))], 1)")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    parent = subprocess.Popen([sys.executable, "-c", script, str(REPO / "tests"), str(pid_file), str(done_file)],
                              env=env)
    try:
        worker = _wait_for_file(pid_file)
        parent.send_signal(signal.SIGKILL)
    finally:
        parent.wait(timeout=60)
    assert _wait_until(lambda: _gone(worker), timeout=30.0), "the worker outlived its killed parent"
    assert not done_file.exists()


def test_jobs_below_one_are_refused():
    with pytest.raises(UserError, match="--jobs must be a positive integer"):
        run_in_processes([Task("t", tasks.square_after, (2, 0.0))], 0)
