"""Helpers of the fault-injection suite: real ``qmoe`` processes and what they leave on disk."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd


def qmoe(*args: str, env: dict[str, str]) -> subprocess.Popen:
    """``qmoe ARGS`` as a real process (its own driver), output captured as text."""
    return subprocess.Popen([sys.executable, "-m", "qmoe.cli.main", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rows(path: Path) -> pd.DataFrame:
    """The results table at ``path``, or an empty one before its first write."""
    try:
        return pd.read_parquet(path)
    except (FileNotFoundError, OSError):
        return pd.DataFrame(columns=["trial_key", "status", "started_at"])


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str,
             alive: subprocess.Popen | None = None, poll: float = 0.1) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` s or when ``alive`` exits."""
    deadline = time.time() + timeout
    while not condition():
        if alive is not None and alive.poll() is not None:
            out, err = alive.communicate()
            raise AssertionError(f"process exited ({alive.returncode}) before {what}: {err[-3000:]}")
        if time.time() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f} s")
        time.sleep(poll)


def stop(proc: subprocess.Popen) -> None:
    """Kill ``proc`` if it still runs (the test failed half-way) and reap it."""
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def one_error_line(stderr: str) -> str:
    """The one non-blank line of ``stderr``; fails if there are more or a traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert lines[0].startswith("qmoe: error: "), lines[0]
    return lines[0]
