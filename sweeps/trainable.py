"""The Ray Tune trainable of a sweep: one step = one whole trial, run by the trial function in a worker.

Why a class trainable with ``reuse_actors=True`` (DESIGN §12): Tune's default starts a fresh
worker process per trial (3-6 s each, and trials run 1.4-2x slower in a cold process); a
class with :meth:`reset_config` lets one warm worker run trial after trial. The embedding
tables and the trial specs reach the workers once through the object store
(``tune.with_parameters``); Tune's own config carries only the ``trial_key``.

The trial function is ``qmoe.trial:run_trial`` unless another is named (:mod:`qmoe.sweeps.trial_fn`):
tests inject fast or failing fakes this way, and Ray runs them exactly like the real one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ray import tune

from qmoe.energy import EnergyMeter
from qmoe.errors import ConfigError, QmoeError, one_line
from qmoe.record import TrialRecord, now_iso
from qmoe.spec import TrialSpec

from qmoe.sweeps.trial_fn import TrialFn, resolve_trial_fn
from qmoe.sweeps.worker import TrialCrashed, node_label, start_worker

# Keys of the result dict a trial reports; the driver's recorder pops the bulky ones.
ROW = "qmoe_row"
SAMPLES = "qmoe_samples"


@dataclass(frozen=True)
class Payload:
    """What every worker needs, shipped once through the object store."""

    tables: Mapping[str, Any]  # table name -> EmbeddingTable
    trials: Mapping[str, dict[str, Any]]  # trial_key -> TrialSpec.to_dict()
    trial_fn: str | TrialFn  # "module:function" or a picklable callable
    threads: int  # torch threads per trial (= CPUs per trial)
    models_dir: str | None = None  # keep each trial's model in models_dir/<trial_key>/ (--save-models)


class SweepTrainable(tune.Trainable):
    """Runs the trial named by ``config["trial_key"]`` in one :meth:`step`."""

    def setup(self, config: dict[str, Any], payload: Payload | None = None) -> None:
        if payload is None:
            raise ConfigError("SweepTrainable needs its payload: wrap it with tune.with_parameters")
        self._payload = payload
        if any(t.get("measure_energy", True) for t in payload.trials.values()):
            # CodeCarbon's one-time probe (~2.5 s, mostly waiting on a child process) runs
            # while the trial function loads, not inside this worker's first trial.
            EnergyMeter.warm_up()
        self._fn = resolve_trial_fn(payload.trial_fn)
        start_worker()

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        return True  # nothing is kept between trials but the payload: the actor can be reused

    def step(self) -> dict[str, Any]:
        key = self.config["trial_key"]
        spec = TrialSpec.from_dict(self._payload.trials[key])
        node, started = node_label(), now_iso()
        try:
            keep = {} if self._payload.models_dir is None else {"save_dir": f"{self._payload.models_dir}/{key}"}
            result = self._fn(spec, self._payload.tables[spec.dataset], threads=self._payload.threads, **keep)
            record, samples = result.record, result.samples
        except QmoeError as err:  # a deterministic, user-fixable problem: no retry
            record, samples = TrialRecord.failed(spec, one_line(err)), None
        except Exception as err:
            raise TrialCrashed(f"{type(err).__name__}: {one_line(err)}", node, started) from err
        record = dataclasses.replace(record, node=node, started_at=started, finished_at=now_iso())
        return {"done": True, "trial_key": key, "status": record.status, ROW: record.to_row(),
                SAMPLES: samples}
