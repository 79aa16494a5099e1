"""Progress of long work: a tqdm bar on a terminal, plain lines in a log.

Off a terminal (``nohup``, CI, a pipe) a bar writes carriage returns into the log and says
nothing readable until the end; there we print one line every ``interval`` seconds instead, with
the elapsed and the estimated remaining time. ``$WIDTHSEARCH_PROGRESS_SECONDS`` overrides the
interval of every such log (a driver that watches short runs wants lines every few seconds).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any

from widthsearch.errors import UserError

INTERVAL_ENV = "WIDTHSEARCH_PROGRESS_SECONDS"


def log_interval(default: float) -> float:
    """Seconds between progress lines off a terminal: ``$WIDTHSEARCH_PROGRESS_SECONDS`` or ``default``."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        raise UserError(f"{INTERVAL_ENV} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise UserError(f"{INTERVAL_ENV} must be > 0 seconds, got {raw!r}")
    return value


class Progress:
    """``update``/``set`` a count out of ``total``; keyword arguments are shown as ``key=value``."""

    def __init__(self, total: int, desc: str, unit: str = "step", initial: int = 0, interval: float = 60.0) -> None:
        self.total, self.desc, self.unit, self.interval = int(total), desc, unit, log_interval(interval)
        self.done = self.start_count = int(initial)
        self.start = self.last_line = time.perf_counter()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=self.done, desc=desc, unit=unit, leave=False,
                            dynamic_ncols=True)

    def update(self, n: int = 1, **info: Any) -> None:
        self.set(self.done + n, **info)

    def set(self, done: int, **info: Any) -> None:
        self.done = int(done)
        if self.bar is not None:
            self.bar.n = self.done
            if info:
                self.bar.set_postfix(info, refresh=False)
            self.bar.refresh()
            return
        now = time.perf_counter()
        if now - self.last_line >= self.interval:
            self.last_line = now
            print(self._line(now, info), file=sys.stderr, flush=True)

    def _line(self, now: float, info: dict) -> str:
        elapsed = now - self.start
        parts = [f"{self.desc}: {self.done}/{self.total} {self.unit}s", f"{elapsed / 60:.1f} min elapsed"]
        made = self.done - self.start_count
        if 0 < made and self.done < self.total:
            parts.append(f"~{elapsed / made * (self.total - self.done) / 60:.1f} min left")
        parts += [f"{k} {v}" for k, v in info.items()]
        return ", ".join(parts)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
