"""Small module-level tasks for tests/test_workers.py: a spawned worker imports them by name."""
from __future__ import annotations

import os
import time
from pathlib import Path

from widthsearch.errors import UserError


def square_after(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return x * x


def refuse(message: str, after_file: str | None = None) -> None:
    """A user's mistake, found once ``after_file`` exists (so that another task is surely running)."""
    while after_file is not None and not Path(after_file).exists():
        time.sleep(0.01)
    raise UserError(message)


def crash() -> None:
    raise ValueError("a bug in the task")


def die() -> None:
    os._exit(9)  # as if the kernel killed it: no message to the parent


def record_pid_then_touch(pid_file: str, done_file: str, seconds: float) -> None:
    """Write this worker's pid, wait, then leave ``done_file``: a stopped worker never leaves it."""
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)
    Path(done_file).write_text("done")


def pid() -> int:
    return os.getpid()
