"""Killing runs in tests: simulated kills inside a process, and a real ``kill -9`` of a subprocess.

A simulated kill is the exception :class:`Killed` raised from a patched stage function, after
(or instead of) its work; a real one is ``SIGKILL`` sent to a ``widthsearch`` subprocess once it
has written what the test waits for, so no handler, ``finally`` or ``atexit`` of it runs.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import pytest

REPO = Path(__file__).resolve().parents[2]


class Killed(Exception):
    """A run stopped where a test killed it."""


def quiet(_line: str) -> None:
    """An ``echo`` that prints nothing."""


def die_when_called(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> None:
    """Replace ``owner.name`` with a function that raises :class:`Killed` (a kill just before that step)."""

    def dying(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(owner, name, dying)


def start_cli(argv: Sequence[str], **popen) -> subprocess.Popen:
    """``python -m widthsearch.cli.main ARGV`` in a subprocess that imports this checkout, on one
    thread; output discarded unless ``popen`` says otherwise."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    options = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, **popen}
    return subprocess.Popen([sys.executable, "-m", "widthsearch.cli.main", *map(str, argv)], cwd=REPO, env=env,
                            **options)


def wait_until(done: Callable[[], bool], proc: subprocess.Popen, what: str, timeout: float = 300.0) -> None:
    """Poll ``done()`` until it holds; fail if ``proc`` ends first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not done():
        assert proc.poll() is None, f"the process ended before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout:.0f} s"
        time.sleep(0.01)


def wait_for_file(folder: Path, pattern: str, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    """Wait until a file matching ``pattern`` exists under ``folder`` (see :func:`wait_until`)."""
    wait_until(lambda: folder.is_dir() and any(folder.glob(pattern)), proc, f"{folder}/{pattern}", timeout)


def kill_9(proc: subprocess.Popen) -> None:
    """``kill -9`` ``proc``, reap it and check that the kill is what ended it (not an earlier exit)."""
    try:
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    if proc.returncode != -signal.SIGKILL:
        said = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
        pytest.fail(f"the process exited with {proc.returncode} before the kill: {said}")


def kill_in_retraining(at: int, *, counted: Callable[[str], bool] = lambda out_dir: True,
                       after_one_epoch: bool = False) -> Callable[[pytest.MonkeyPatch], None]:
    """A patch that kills the ``at``-th counted call (1-based) of ``train_network`` in
    ``widthsearch.training.retrain``: before it trains anything, or, with ``after_one_epoch``, once
    its first epoch is saved. ``counted(out_dir)`` says which calls count (a method's own rounds
    may train through the same function)."""
    import widthsearch.training.retrain as retrain_module

    def patch(monkeypatch: pytest.MonkeyPatch) -> None:
        real = retrain_module.train_network
        calls = {"n": 0}

        def stopped(args, out_dir, **options):
            if counted(str(out_dir)):
                calls["n"] += 1
                if calls["n"] == at:
                    if after_one_epoch:
                        real(args, out_dir, **{**options, "stop_after": 1})
                    raise Killed
            return real(args, out_dir, **options)

        monkeypatch.setattr(retrain_module, "train_network", stopped)

    return patch
