"""One compact progress line on stderr: done / running / failed / ETA, instead of Ray's tables.

On a terminal the line is redrawn in place twice a second (rich ``Live``); when stderr is a
file or a pipe a plain line is printed every ``interval`` seconds, and once at the end. Both
draw from a timer, not on each event: a trial finishing and the next one starting are two
events a few milliseconds apart, and a line drawn between them would show one trial too few
running. ``--quiet`` uses :class:`NullProgress`, which prints nothing.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.text import Text


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class NullProgress:
    """Progress that shows nothing (``--quiet``); also the interface the recorder calls."""

    def start(self, total: int, done: int = 0, failed: int = 0) -> None:
        """Begin: ``total`` trials in the sweep, ``done`` of them already finished ok."""

    def started(self, key: str) -> None:
        """A trial began running (again, after a retry)."""

    def retried(self, key: str) -> None:
        """A trial failed and Ray will run it again."""

    def finished(self, key: str, ok: bool) -> None:
        """A trial ended: ok, or recorded as an error."""

    def stop(self) -> None:
        """End: draw the final line."""


class LineProgress(NullProgress):
    """The live progress line.

    Args:
        label: shown first (the sweep's name).
        stream: where to draw (stderr by default).
        interval: seconds between plain lines when the stream is not a terminal.
    """

    def __init__(self, label: str, stream: TextIO | None = None, interval: float = 10.0) -> None:
        self.label = label
        self.console = Console(file=stream or sys.stderr, highlight=False)
        self.interval = interval
        self.total = self.done = self.failed = self.retries = self.finished_now = 0
        self.running: set[str] = set()
        self.t_start = self.t_first = 0.0
        self._live: Live | None = None
        self._ticker: threading.Thread | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    def line(self) -> str:
        """The current state as one line of text."""
        with self._lock:
            now = time.monotonic()
            remaining = self.total - self.done - self.failed
            eta = "–"
            if self.finished_now and self.t_first:
                rate = self.finished_now / max(now - self.t_first, 1e-9)  # trials per second
                eta = _clock(remaining / rate) if remaining else "0:00"
            parts = [f"{self.label}  {self.done}/{self.total} done", f"{len(self.running)} running",
                     f"{self.failed} failed"]
            if self.retries:
                parts.append(f"{self.retries} retried")
            parts += [_clock(now - self.t_start), f"ETA {eta}"]
        return " · ".join(parts)

    def _render(self) -> Text:
        return Text(self.line())

    def _print_every_interval(self) -> None:
        while not self._stopped.wait(self.interval):
            self.console.print(self.line(), soft_wrap=True)

    def start(self, total: int, done: int = 0, failed: int = 0) -> None:
        self.total, self.done, self.failed = total, done, failed
        self.t_start = time.monotonic()
        self._stopped.clear()
        if self.console.is_terminal:
            self._live = Live(get_renderable=self._render, console=self.console,
                              refresh_per_second=2, transient=False)
            self._live.start()
        else:
            self.console.print(self.line(), soft_wrap=True)
            self._ticker = threading.Thread(target=self._print_every_interval, daemon=True)
            self._ticker.start()

    def started(self, key: str) -> None:
        with self._lock:
            self.t_first = self.t_first or time.monotonic()
            self.running.add(key)

    def retried(self, key: str) -> None:
        with self._lock:
            self.retries += 1
            self.running.discard(key)

    def finished(self, key: str, ok: bool) -> None:
        with self._lock:
            self.running.discard(key)
            self.finished_now += 1
            if ok:
                self.done += 1
            else:
                self.failed += 1

    def stop(self) -> None:
        self._stopped.set()
        if self._live is not None:
            self._live.stop()
            self._live = None
        elif self._ticker is not None:
            self._ticker.join()
            self._ticker = None
            self.console.print(self.line(), soft_wrap=True)
