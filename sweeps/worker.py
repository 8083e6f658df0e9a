"""What every Ray worker of ours shares, sweep or tuning run, and how its failures reach the driver.

A worker process is set up once (:func:`start_worker`), labels what it runs with its node
(:func:`node_label`), and ends a trial that raised something other than a qmoe error with
:class:`TrialCrashed`, which Ray pickles back to the driver; :func:`describe_failure` reads it
there (or whatever else killed the trial) as one line for the error row.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import ray
import ray.cloudpickle as cloudpickle
from ray.exceptions import RayActorError

from qmoe.errors import one_line
from qmoe.malloc import keep_freed_memory


class TrialCrashed(Exception):
    """A trial raised something that is not a qmoe error; Ray retries it, then records it.

    Carries the one-line error, the node and the start time, so that the driver can write an
    error row with them (the exception is pickled back to the driver inside Ray's error).
    """

    def __init__(self, error: str, node: str, started_at: str) -> None:
        super().__init__(error, node, started_at)
        self.error, self.node, self.started_at = error, node, started_at

    def __str__(self) -> str:
        return self.error


def start_worker() -> None:
    """Set up this worker process: keep freed memory in its heap (:mod:`qmoe.malloc`) unless
    its environment did."""
    keep_freed_memory()


def node_label() -> str:
    """``hostname/node-id-prefix``: the node id tells apart nodes that share a host name."""
    node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    return f"{socket.gethostname()}/{node_id[:8]}" if node_id else socket.gethostname()


def describe_failure(trial: Any) -> tuple[str, str, str]:
    """``(error, node, started_at)`` of a Tune trial that errored ('' when unknown)."""
    exc: BaseException | None = None
    if trial.pickled_error_file:
        with contextlib.suppress(Exception), open(trial.pickled_error_file, "rb") as fh:
            exc = cloudpickle.load(fh)
    cause = getattr(exc, "cause", None)
    if isinstance(cause, TrialCrashed):
        return cause.error, cause.node, cause.started_at
    if isinstance(exc, RayActorError) or isinstance(cause, RayActorError):
        return f"worker process died: {one_line(exc)}", "", ""
    text = str(exc) if exc is not None else str(trial.get_error() or "unknown error")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1][:500] if lines else "unknown error"), "", ""
