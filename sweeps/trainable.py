"""The Ray Tune trainable: one step = one whole trial, run by the trial function in a worker.

Why a class trainable with ``reuse_actors=True`` (DESIGN §12): Tune's default starts a fresh
worker process per trial (3-6 s each, and trials run 1.4-2x slower in a cold process); a
class with :meth:`reset_config` lets one warm worker run trial after trial. The embedding
tables and the trial specs reach the workers once through the object store
(``tune.with_parameters``); Tune's own config carries only the ``trial_key``.

The trial function is ``qmoe.trial:run_trial`` unless another ``module:function`` (or a
picklable callable) is given: tests inject fast or failing fakes this way, and Ray runs
them exactly like the real one.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import ray
from ray import tune

from qmoe.errors import ConfigError, QmoeError
from qmoe.malloc import keep_freed_memory
from qmoe.record import TrialRecord

from sweeps.plan import trial_from_dict
from sweeps.store import now_iso

DEFAULT_TRIAL_FN = "qmoe.trial:run_trial"
TRIAL_FN_ENV = "QMOE_TRIAL_FN"  # testing hook: "module:function" replacing run_trial

# Keys of the result dict a trial reports; the driver's recorder pops the bulky ones.
ROW = "qmoe_row"
SAMPLES = "qmoe_samples"

@dataclass(frozen=True)
class Payload:
    """What every worker needs, shipped once through the object store."""

    tables: Mapping[str, Any]  # table name -> EmbeddingTable
    trials: Mapping[str, dict[str, Any]]  # trial_key -> trial spec as a dict
    trial_fn: str | Callable[..., Any]  # "module:function" or a picklable callable
    threads: int  # torch threads per trial (= CPUs per trial)


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


def resolve_trial_fn(ref: str | Callable[..., Any]) -> Callable[..., Any]:
    """A callable from ``"package.module:function"`` (or the callable itself).

    Raises:
        ConfigError: a malformed reference, a missing module or attribute.
    """
    if callable(ref):
        return ref
    module_name, _, attr = str(ref).partition(":")
    if not module_name or not attr:
        raise ConfigError(f"trial function {ref!r} must look like 'package.module:function'")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"trial function {ref!r} cannot be loaded: {err}") from None
    if not callable(fn):
        raise ConfigError(f"trial function {ref!r} is not callable")
    return fn


def one_line(err: BaseException) -> str:
    """The error's message on one line (at most 500 characters)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:500]


def node_label() -> str:
    """``hostname/node-id-prefix``: the node id tells apart nodes that share a host name."""
    node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    return f"{socket.gethostname()}/{node_id[:8]}" if node_id else socket.gethostname()


def tune_worker_process() -> None:
    """Keep freed memory in this worker's heap (:mod:`qmoe.malloc`) unless its env did."""
    keep_freed_memory()


class SweepTrainable(tune.Trainable):
    """Runs the trial named by ``config["trial_key"]`` in one :meth:`step`."""

    def setup(self, config: dict[str, Any], payload: Payload | None = None) -> None:
        if payload is None:
            raise ConfigError("SweepTrainable needs its payload: wrap it with tune.with_parameters")
        self._payload = payload
        self._fn = resolve_trial_fn(payload.trial_fn)
        tune_worker_process()

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        return True  # nothing is kept between trials but the payload: the actor can be reused

    def step(self) -> dict[str, Any]:
        key = self.config["trial_key"]
        spec = trial_from_dict(self._payload.trials[key])
        node, started = node_label(), now_iso()
        try:
            result = self._fn(spec, self._payload.tables[spec.dataset], threads=self._payload.threads)
            record, samples = result.record, result.samples
        except QmoeError as err:  # a deterministic, user-fixable problem: no retry
            record, samples = TrialRecord.failed(spec, one_line(err)), None
        except Exception as err:
            raise TrialCrashed(f"{type(err).__name__}: {one_line(err)}", node, started) from err
        record = dataclasses.replace(record, node=node, started_at=started, finished_at=now_iso())
        return {"done": True, "trial_key": key, "status": record.status, ROW: record.to_row(),
                SAMPLES: samples}
