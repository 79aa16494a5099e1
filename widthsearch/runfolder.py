"""The output folder of a run (``--out DIR``): checked before any work, locked while a process
writes into it, cleaned of the temporary files a killed process left behind.

* :func:`check_folder` refuses an ``--out`` that is a file, or lies below one, before anything is
  computed (otherwise the first checkpoint write fails after a whole epoch).
* :class:`RunLock` holds ``DIR/.widthsearch.lock`` (``pid host``) for the life of a command, so a
  second process on the same folder is refused instead of interleaving checkpoints. The lock is
  an ``flock`` on that file: the kernel drops it when its process dies however it dies, so a lock
  file whose lock nobody holds is stale by construction and is taken over with a warning. Where
  ``fcntl`` is missing (Windows), whether the recorded pid still runs decides instead.
* :func:`rehome_paths` re-points the absolute paths that a run's state files recorded into the
  folder's present place, so a run folder may be moved (a GPU lease, a copy) and resumed there.
* :func:`remove_stale_temps` deletes the ``.NAME.XXXXXXXX.tmp`` files of :mod:`widthsearch.io`'s
  atomic writes that a kill left behind; only safe while the lock is held.
"""
from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from widthsearch.errors import UserError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "check_folder", "folder_has_content", "lock_status", "missing_folders", "process_alive",
           "rehome_paths", "remove_empty_folders", "remove_stale_temps", "RunLock"]

LOCK_NAME = ".widthsearch.lock"
#: the temporary names of widthsearch.io.write_atomic: ".<target>.<8 mkstemp characters>.tmp"
_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def check_folder(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as a folder to write into: refused when it, or a folder above it, is a file."""
    path = Path(path)
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                where = "is a file, not a folder" if part == path else f"lies below the file {part}"
                raise UserError(f"{flag} {path} {where}")
            break
    return path


def folder_has_content(path: str | Path) -> bool:
    """True when ``path`` holds anything besides the run lock (a folder only locked is empty)."""
    path = Path(path)
    return path.is_dir() and any(p.name != LOCK_NAME for p in path.iterdir())


def missing_folders(path: str | Path) -> list[Path]:
    """``path`` and the folders above it that do not exist yet, innermost first: what writing into
    ``path`` will create, in the order :func:`remove_empty_folders` takes them away again."""
    path = Path(path)
    return [p for p in (path, *path.parents) if not p.exists()]


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove ``folders`` (innermost first) while they are empty: whatever was written into them stays."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def rehome_paths(value: Any, root: str | Path) -> Any:
    """``value`` (parsed JSON) with every absolute path outside ``root`` that names a file of the run
    re-pointed into ``root``.

    A run's state files record absolute paths (checkpoints, configs, static nets), and a run folder
    travels: packed for a GPU lease, unpacked elsewhere, brought back. A recorded path outside
    ``root`` becomes ``root / tail`` for its longest tail (last parts) that exists under ``root``,
    even where the old place still exists: that is an older copy of the run. A path inside ``root``,
    and one with no tail under ``root`` (the data file, an ``--init-from`` checkpoint), stay.
    """
    root = Path(root).absolute()
    if isinstance(value, dict):
        return {key: rehome_paths(item, root) for key, item in value.items()}
    if isinstance(value, list):
        return [rehome_paths(item, root) for item in value]
    if not isinstance(value, str) or not os.path.isabs(value):
        return value
    recorded = Path(value)
    if recorded == root or root in recorded.parents:
        return value
    for start in range(1, len(recorded.parts)):  # parts[0] is the anchor; longest tail first
        candidate = root.joinpath(*recorded.parts[start:])
        if candidate.exists():
            return str(candidate)
    return value


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete the atomic writes' temporary files under ``path`` (a killed process leaves them);
    returns what was removed. Call it only while holding the folder's :class:`RunLock`."""
    path = Path(path)
    if not path.is_dir():
        return []
    stale = [p for p in path.rglob(".*.tmp") if p.is_file() and _TEMP.match(p.name)]
    for p in stale:
        p.unlink()
    return stale


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's process
        return True
    return True


def _read_owner(text: str) -> tuple[int | None, str]:
    parts = text.split()
    pid = int(parts[0]) if parts and parts[0].isdigit() else None
    return pid, parts[1] if len(parts) > 1 else ""


def lock_status(folder: str | Path) -> dict[str, int | str | bool | None] | None:
    """Who holds ``folder``'s lock file, read without locking: ``{"pid", "host", "alive"}``, or None
    without one. ``alive`` says whether that process still runs: True/False on this host, None on
    another (it cannot be checked from here). A dead owner's file is what a killed process left;
    the next run on the folder takes it over. The pid is checked rather than the ``flock`` itself:
    probing the lock would, for an instant, make a run starting on the folder refuse it. So a pid
    that the system has since given to another process reads as alive."""
    try:
        text = (Path(folder) / LOCK_NAME).read_text(errors="replace")
    except OSError:
        return None
    pid, host = _read_owner(text)
    if pid is None:
        return None  # a lock file being written this instant
    return {"pid": pid, "host": host, "alive": process_alive(pid, host)}


def process_alive(pid: int, host: str) -> bool | None:
    """Whether process ``pid`` of ``host`` still runs: True/False on this host (or an empty host),
    None on another, where it cannot be checked from here."""
    return _pid_alive(pid) if host in ("", socket.gethostname()) else None


class RunLock:
    """``with RunLock(out):`` the command owns ``out``; refused with one line while another
    process does. The folder is created if needed and, if the command leaves it empty (it failed
    before writing anything), removed again on release, so a refused command changes nothing."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = check_folder(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._created: list[Path] = []

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def acquire(self) -> None:
        missing = missing_folders(self.folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create {self.folder}: {exc.strerror}") from None
        self._created = missing  # innermost first: the order to remove them in
        try:
            # a releasing process unlinks the file: retry until the locked file is the one at the path
            for _ in range(10):
                try:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                except OSError as exc:
                    raise UserError(f"cannot write into {self.folder}: {exc.strerror}") from None
                try:
                    if self._try_lock(fd) and self._is_current(fd):
                        self._take(fd)
                        return
                except BaseException:
                    os.close(fd)
                    raise
                os.close(fd)
            raise UserError(f"cannot lock {self.path}: it keeps changing; is another process starting in {self.folder}?")
        except BaseException:
            self._remove_created()
            raise

    def _try_lock(self, fd: int) -> bool:
        """Lock ``fd``; False if it changed under us, ``UserError`` if a live process holds it."""
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                pid, host = _read_owner(os.pread(fd, 256, 0).decode("utf-8", "replace"))
                raise UserError(self._busy(pid, host)) from None
        pid, host = _read_owner(os.pread(fd, 256, 0).decode("utf-8", "replace"))
        if pid is not None and pid != os.getpid() and (host != socket.gethostname() or _pid_alive(pid)):
            raise UserError(self._busy(pid, host))
        return True

    def _busy(self, pid: int | None, host: str) -> str:
        who = f"process {pid}" + (f" on {host}" if host else "") if pid is not None else "another process"
        return (f"{self.folder} is in use by {who} (lock {self.path}); wait for it to finish or use another --out "
                "(delete the lock file only if that process is gone)")

    def _is_current(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def _take(self, fd: int) -> None:
        """Write our pid and host into the locked file, warning when a dead process left its own."""
        old_pid, old_host = _read_owner(os.pread(fd, 256, 0).decode("utf-8", "replace"))
        if old_pid is not None:
            where = f" on {old_host}" if old_host else ""
            print(f"warning: taking over the stale lock {self.path} of process {old_pid}{where}, which is gone",
                  file=sys.stderr)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file (before unlocking, so a waiter never sees our file unlocked)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
            self._remove_created()

    def _remove_created(self) -> None:
        remove_empty_folders(self._created)
        self._created = []
