"""``progress.json``: where a training's current epoch stands, for other processes to read.

A training writes its log row and checkpoint only when an epoch ends, and on a CPU an epoch lasts
minutes to an hour (a joint step of three nets, a supernet's four sub-networks). Worker processes
print no progress bar, and a training in its first epoch has no file at all yet. So while
:class:`~widthsearch.training.loop.EpochLoop` runs, rank 0 keeps ``progress.json`` beside the
checkpoint (``pid``/``host`` of the writer, the epoch, steps done of the epoch's steps, its phase
``train``/``evaluate``, the seconds and images per second so far) and ``widthsearch status``
reads it. It is written atomically at the start of every epoch and phase and at most every
``interval`` seconds between, which costs nothing next to a training step.

When the training returns, or fails, the file is removed, and so is the folder if the training
created it and left nothing else in it: a run that fails in its first epoch leaves its ``--out``
as it found it. A killed process leaves the file behind; its pid then tells the reader it is
stale (:func:`widthsearch.runfolder.process_alive`), and the next run on the folder replaces it.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from widthsearch.io import write_json_atomic
from widthsearch.runfolder import missing_folders, remove_empty_folders

__all__ = ["PROGRESS_NAME", "PROGRESS_INTERVAL", "ProgressFile"]

PROGRESS_NAME = "progress.json"
#: seconds between two writes within a phase
PROGRESS_INTERVAL = 10.0


class ProgressFile:
    """``progress.json`` in ``folder`` for a training of ``epochs`` epochs of ``steps`` steps each,
    rewritten at most every ``interval`` seconds (default :data:`PROGRESS_INTERVAL`);
    ``enabled=False`` (ranks other than 0) makes every method a no-op."""

    def __init__(self, folder: Path, *, epochs: int, steps: int, checkpoint: str,
                 interval: float | None = None, enabled: bool = True) -> None:
        self.path = Path(folder) / PROGRESS_NAME
        self.epochs, self.steps, self.checkpoint = int(epochs), int(steps), checkpoint
        self.interval = float(PROGRESS_INTERVAL if interval is None else interval)
        self.enabled = enabled
        self._created = missing_folders(self.path.parent)  # removed again if they stay empty
        self._epoch = 0
        self._started = self._written = 0.0

    def start_epoch(self, epoch: int) -> None:
        """Epoch ``epoch`` (0-based) begins its training steps."""
        self._epoch = epoch
        self._started = time.monotonic()
        self._write(step=0, seen=0, phase="train")

    def step(self, step: int, seen: int) -> None:
        """``step`` steps (``seen`` images) of the epoch are done; written if ``interval`` has passed."""
        if time.monotonic() - self._written >= self.interval:
            self._write(step=step, seen=seen, phase="train")

    def evaluating(self, seen: int) -> None:
        """The epoch's steps are done and its evaluation begins."""
        self._write(step=self.steps, seen=seen, phase="evaluate")

    def close(self) -> None:
        """Remove the file, and the folders it alone made and left empty."""
        if not self.enabled:
            return
        self.path.unlink(missing_ok=True)
        remove_empty_folders(self._created)  # a checkpoint written meanwhile keeps its folder

    def _write(self, *, step: int, seen: int, phase: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        seconds = now - self._started
        write_json_atomic(self.path, {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "checkpoint": self.checkpoint,
            "epoch": self._epoch + 1,
            "epochs": self.epochs,
            "step": step,
            "steps": self.steps,
            "phase": phase,
            "seconds": seconds,
            "img_per_s": seen / seconds if seen and seconds > 0 else None,
            "time": time.time(),
        })
        self._written = now
