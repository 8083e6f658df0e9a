"""Trial functions that inject faults from inside a Ray worker, for the fault-injection suite.

Like ``tests.sweeps.fakes`` they run under real Ray in place of ``qmoe.trial.run_trial``,
loaded by reference (``tests.faults.fault_fns:fault_trial``) or as a ``functools.partial``.
Settings come from keyword arguments or, for sweeps started in a subprocess, from
``QMOE_FAULT_*`` variables (the runner forwards ``QMOE_*`` to the workers):

- ``QMOE_FAULT_LOG``: a file that gets one line ``<trial_key> <event> <node_id> <pid>`` per
  start / ok / kill (the attempt number of a trial is the count of its ``start`` lines);
- ``QMOE_FAULT_SECONDS``: how long a trial takes (busy CPU, like training);
- ``QMOE_FAULT_KILL_FOLD`` / ``QMOE_FAULT_KILL_ATTEMPTS``: trials of this fold SIGKILL their own
  worker process half-way through their first ``KILL_ATTEMPTS`` attempts;
- ``QMOE_FAULT_PID_DIR``: each attempt writes ``<trial_key>.<attempt>.pid`` there when it
  starts, so that a test can kill the worker from outside.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from qmoe.spec import TrialSpec
from tests.sweeps.fakes import FakeResult, _busy, fast_trial


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "-"


def _log(log: str | None, key: str, event: str) -> None:
    if log:
        with open(log, "a") as fh:  # O_APPEND: one short line per write, safe across workers
            fh.write(f"{key} {event} {_node_id()} {os.getpid()}\n")


def attempts(log: str | Path, key: str) -> int:
    """How many times trial ``key`` has started so far, according to the log."""
    path = Path(log)
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.split()[:2] == [key, "start"])


def read_log(log: str | Path) -> list[tuple[str, str, str, int]]:
    """``(trial_key, event, node_id, pid)`` per line of a fault log."""
    path = Path(log)
    if not path.exists():
        return []
    return [(k, e, n, int(p)) for k, e, n, p in (line.split() for line in path.read_text().splitlines())]


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"QMOE_FAULT_{name}", default)


def fault_trial(spec: TrialSpec, table, *, threads: int = 1, seconds: float | None = None,
                log: str | None = None, kill_fold: int | None = None, kill_attempts: int | None = None,
                pid_dir: str | None = None, slow_key: str | None = None,
                slow_seconds: float = 2.0) -> FakeResult:
    """A fast fake trial that can kill its own worker, or expose its pid to be killed.

    ``slow_key``: this one trial takes ``slow_seconds`` (a target to shoot at from outside).
    """
    log = log or _env("LOG")
    seconds = float(_env("SECONDS", "0.2")) if seconds is None else seconds
    kill_fold = int(_env("KILL_FOLD", "0")) if kill_fold is None else kill_fold
    kill_attempts = int(_env("KILL_ATTEMPTS", "0")) if kill_attempts is None else kill_attempts
    pid_dir = pid_dir or _env("PID_DIR")
    if spec.trial_key == slow_key:
        seconds = slow_seconds
    attempt = attempts(log, spec.trial_key) + 1 if log else 1
    _log(log, spec.trial_key, "start")
    if pid_dir:
        Path(pid_dir, f"{spec.trial_key}.{attempt}.pid").write_text(str(os.getpid()))
    if spec.fold == kill_fold and attempt <= kill_attempts:
        _busy(seconds / 2)  # mid-training
        _log(log, spec.trial_key, "kill")
        os.kill(os.getpid(), signal.SIGKILL)
    result = fast_trial(spec, table, threads=threads, seconds=seconds)
    _log(log, spec.trial_key, "ok")
    return result
