"""Run independent pieces of work in up to N worker processes (``run --jobs N``).

Each task runs in a fresh process of the ``spawn`` start method (CUDA cannot be used in a forked
child, and a fresh interpreter inherits no half-initialised state from the parent), one process per
task, at most ``processes`` at a time. Results come back in task order, whatever order the tasks
finish in. Three rules keep a run folder safe:

* the first task that fails stops the others (their processes are terminated; whatever they
  checkpointed stays, so ``--resume`` continues them) and its error is raised in the parent: a
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
    """Run every task in its own spawned process, at most ``processes`` at once; return their
    results in task order. ``on_done(index, result)`` runs in the parent as each task finishes.

    The first failure terminates the running workers, starts no further task and is raised here.
    """
    if processes < 1:
        raise UserError(f"--jobs must be a positive integer, got {processes}")
    ctx = multiprocessing.get_context("spawn")
    waiting = list(enumerate(tasks))[::-1]  # popped from the end: task order
    running: dict[Connection, tuple[int, Any]] = {}
    results: list[Any] = [None] * len(tasks)
    try:
        while waiting or running:
            while waiting and len(running) < processes:
                index, task = waiting.pop()
                receive, send = ctx.Pipe(duplex=False)
                process = ctx.Process(target=_worker_main, args=(send, task.fn, task.args),
                                      name=f"widthsearch-{task.label}")
                process.start()
                send.close()  # the worker holds the only writing end: its death reads as end of file
                running[receive] = (index, process)
            for conn in wait(list(running)):
                index, process = running.pop(conn)
                results[index] = _collect(conn, process, tasks[index].label)
                if on_done is not None:
                    on_done(index, results[index])
    finally:
        _stop(running)
    return results


def _collect(conn: Connection, process: Any, label: str) -> Any:
    """The result a worker sent, or its error raised here."""
    try:
        status, value = conn.recv()
    except EOFError:
        process.join()
        raise UserError(f"{label}: its worker process died (exit code {process.exitcode}; killed for memory?); "
                        "run again with --resume to continue from its last checkpoint") from None
    finally:
        conn.close()
    process.join()
    if status == "ok":
        return value
    if status == "user":
        raise UserError(f"{label}: {value}")
    raise RuntimeError(f"{label} failed in its worker process:\n{value}")


def _stop(running: dict[Connection, tuple[int, Any]]) -> None:
    """Terminate the workers still running (an error elsewhere, Ctrl-C) and wait for them."""
    for conn, (_index, process) in running.items():
        if process.is_alive():
            process.terminate()
    for conn, (_index, process) in running.items():
        process.join()
        conn.close()
    running.clear()


def _worker_main(conn: Connection, fn: Callable[..., Any], args: tuple) -> None:
    """A worker: run ``fn(*args)`` and send ``("ok", result)``, ``("user", message)`` for a
    :class:`UserError` or ``("error", traceback)`` for anything else."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _exit_with_parent()
    try:
        message: tuple[str, Any] = ("ok", fn(*args))
    except UserError as exc:
        message = ("user", str(exc))
    except Exception:  # a bug: the parent shows where it happened
        message = ("error", traceback.format_exc())
    conn.send(message)
    conn.close()


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
