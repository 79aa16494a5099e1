"""Run independent pieces of work in up to N worker processes (``run --jobs N``).

The workers are fresh processes of the ``spawn`` start method (CUDA cannot be used in a forked
child, and a fresh interpreter inherits no half-initialised state from the parent), at most
``processes`` of them, each running one task after another. Results come back in task order,
whatever order the tasks finish in. Three rules keep a run folder safe:

* the first task that fails stops the others (their processes are terminated and unwind, so the
  locks they hold are released; whatever they checkpointed stays, so ``--resume`` continues
  them) and its error is raised in the parent: a
  :class:`~widthsearch.errors.UserError` as one line naming the task, anything else with the
  worker's traceback;
* a worker exits as soon as its parent is gone, however the parent died (``kill -9`` included),
  so no orphan keeps writing checkpoints while a resumed run trains the same folders;
* Ctrl-C reaches only the parent (workers ignore SIGINT), which then terminates the workers.

Nothing here imports torch: a task is any importable module-level function and picklable
arguments.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Sequence

from widthsearch.errors import UserError

__all__ = ["Task", "run_in_processes"]


@dataclass(frozen=True)
class Task:
    """``fn(*args)`` to run in a worker process; ``label`` names it in messages."""

    label: str
    fn: Callable[..., Any]
    args: tuple = ()


def run_in_processes(
    tasks: Sequence[Task],
    processes: int,
    *,
    on_done: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """Run the tasks in up to ``processes`` spawned worker processes (each takes the next task when
    it finishes one, so a worker imports torch once, not once per task); return their results in
    task order. ``on_done(index, result)`` runs in the parent as each task finishes.

    The first failure terminates the running workers, starts no further task and is raised here.
    """
    if processes < 1:
        raise UserError(f"--jobs must be a positive integer, got {processes}")
    ctx = multiprocessing.get_context("spawn")
    waiting = list(enumerate(tasks))[::-1]  # popped from the end: task order
    workers: dict[Connection, _Worker] = {}
    results: list[Any] = [None] * len(tasks)
    try:
        for _ in range(min(processes, len(tasks))):
            conn, child = ctx.Pipe()
            process = ctx.Process(target=_worker_main, args=(child,), name="widthsearch-worker")
            process.start()
            child.close()  # the worker holds the only other end: its death reads as end of file
            workers[conn] = _Worker(process)
            _hand_out(conn, workers[conn], waiting, tasks)
        while busy := [conn for conn, w in workers.items() if w.index is not None]:
            for conn in wait(busy):
                worker = workers[conn]
                index, worker.index = worker.index, None
                results[index] = _collect(conn, worker.process, tasks[index].label)
                if on_done is not None:
                    on_done(index, results[index])
                _hand_out(conn, worker, waiting, tasks)
        for worker in workers.values():
            worker.process.join()  # each was told to stop
    finally:
        _stop(workers)
    return results


@dataclass
class _Worker:
    process: Any
    index: int | None = None  # the task it runs


def _hand_out(conn: Connection, worker: _Worker, waiting: list[tuple[int, Task]], tasks: Sequence[Task]) -> None:
    """Send the worker the next task, or tell it to stop when none is left."""
    if not waiting:
        try:
            conn.send(None)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it has stopped already
        return
    worker.index, task = waiting.pop()
    try:
        conn.send((task.fn, task.args))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the worker is dead: waiting on it reads end of file, which names the task


def _collect(conn: Connection, process: Any, label: str) -> Any:
    """The result of the task a worker ran, or its error raised here."""
    try:
        status, value = conn.recv()
    except (EOFError, ConnectionResetError):
        process.join()
        raise UserError(f"{label}: its worker process died (exit code {process.exitcode}; killed for memory?); "
                        "run again with --resume to continue from its last checkpoint") from None
    if status == "ok":
        return value
    if status == "user":
        raise UserError(f"{label}: {value}")
    raise RuntimeError(f"{label} failed in its worker process:\n{value}")


#: seconds a terminated worker gets to unwind (release its folder's lock) before it is killed
STOP_GRACE_SECONDS = 10.0


def _stop(workers: dict[Connection, _Worker]) -> None:
    """Terminate the workers still running (an error elsewhere, Ctrl-C) and wait for them."""
    for worker in workers.values():
        if worker.process.is_alive():
            worker.process.terminate()
    for conn, worker in workers.items():
        worker.process.join(STOP_GRACE_SECONDS)
        if worker.process.is_alive():  # stuck in native code: nothing left to unwind for
            worker.process.kill()
            worker.process.join()
        conn.close()
    workers.clear()


def _worker_main(conn: Connection) -> None:
    """A worker: run each task it is sent, answering ``("ok", result)``, ``("user", message)`` for a
    :class:`UserError` or ``("error", traceback)`` for anything else, until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, _exit_on_terminate)  # stopped by the parent: unwind, releasing locks
    _exit_with_parent()
    while (task := conn.recv()) is not None:
        fn, args = task
        try:
            message: tuple[str, Any] = ("ok", fn(*args))
        except UserError as exc:
            message = ("user", str(exc))
        except Exception:  # a bug: the parent shows where it happened
            message = ("error", traceback.format_exc())
        conn.send(message)
    conn.close()


def _exit_on_terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # not an Exception: no message goes to the parent, which stopped us


def _exit_with_parent() -> None:
    """End this worker the moment its parent process is gone: nobody would read its result, and a
    resumed run must not find it still writing checkpoints into the folders it retrains."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()  # returns when the pipe the parent holds open is closed, i.e. when it exits
        os._exit(1)

    threading.Thread(target=watch, name="widthsearch-parent-watch", daemon=True).start()
