"""The sweep benchmarks' shared parts: a job file, and the trials run one by one (the reference).

Sweep efficiency (issue 8) = (sum of the trials' seconds run one by one / slots) / sweep wall.
The one-by-one seconds come from :func:`run_serially`: the same trials, in one fresh process,
one after another, one thread each, timed around the trial function. That process gets the
environment of a sweep worker (``qmoe.sweeps.cluster.worker_env``: glibc malloc thresholds, one
OpenMP thread), so a sweep gains nothing from a setting the reference lacks; what the sweep
loses against it is start-up, scheduling, slow-down of concurrent trials and the tail.

A job file (JSON) says which trials and tables: every runner of the benchmark (this one, the
Ray Tune defaults runner in :mod:`qmoe.sweeps.bench.ray_defaults`) reads the same file in its own
process, so each pays its own imports and none inherits the bench process's state.

Run as ``python -m qmoe.sweeps.bench.jobs JOB.json OUT.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qmoe.errors import QmoeError
from qmoe.spec import TrialSpec

from qmoe.sweeps.plan import SweepPlan, TableRef, reload_tables
from qmoe.sweeps.trial_fn import resolve_trial_fn, trial_fn_ref


@dataclass(frozen=True, kw_only=True)
class TrialTime:
    """One trial's seconds in one of the benchmark's runs."""

    trial_key: str
    model: str  # the trial's experts, comma-separated
    seconds: float  # around the trial function (the same span a results row's times cover)


@dataclass(frozen=True, kw_only=True)
class RunTimes:
    """What one runner measured: each trial's seconds and, for a sweep, its wall time."""

    label: str
    trials: tuple[TrialTime, ...]
    wall_seconds: float | None = None  # from the start of Tuner.fit to its end; None: one by one

    @property
    def trial_seconds(self) -> float:
        return sum(t.seconds for t in self.trials)

    @property
    def mean_seconds(self) -> float:
        return self.trial_seconds / max(len(self.trials), 1)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "wall_seconds": self.wall_seconds,
                "trials": [vars(t) for t in self.trials]}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RunTimes:
        return cls(label=raw["label"], wall_seconds=raw.get("wall_seconds"),
                   trials=tuple(TrialTime(**t) for t in raw["trials"]))


def efficiency(serial: RunTimes, wall_seconds: float, slots: int) -> float:
    """(sum of the one-by-one seconds / slots) / wall: 1.0 = no time lost to running in parallel."""
    return serial.trial_seconds / max(slots, 1) / wall_seconds if wall_seconds > 0 else float("nan")


# -- job files -----------------------------------------------------------------------------

def write_job(plan: SweepPlan, path: Path) -> Path:
    """Write the plan's trials and how to load its tables (no table data) to ``path``."""
    job = {"tables": [r.to_dict() for r in plan.refs], "trials": [t.to_dict() for t in plan.trials]}
    path.write_text(json.dumps(job), encoding="utf-8")
    return path


def read_job(path: Path) -> tuple[list[Any], dict[str, Any]]:
    """The trials of a job file and its tables (loaded again, checked against their hashes)."""
    job = json.loads(Path(path).read_text(encoding="utf-8"))
    tables = reload_tables([TableRef(**r) for r in job["tables"]])
    return [TrialSpec.from_dict(t) for t in job["trials"]], tables


def run_module(module: str, job: Path, out: Path, *, env: Mapping[str, str] | None = None,
               timeout: float | None = None) -> dict[str, Any]:
    """Run ``python -m MODULE JOB OUT`` in a fresh process; its JSON output.

    Raises:
        QmoeError: the process failed or wrote nothing (its last stderr line is in the message).
    """
    cmd = [sys.executable, "-m", module, str(job), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=timeout)
    if proc.returncode != 0 or not out.is_file():
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise QmoeError(f"benchmark runner {module} failed (exit {proc.returncode}): {last}")
    return json.loads(out.read_text(encoding="utf-8"))


# -- the reference: one by one -------------------------------------------------------------

def run_serially(trials: Sequence[Any], tables: Mapping[str, Any]) -> RunTimes:
    """Run the trials one after another in this process, one thread each (the trial function
    every runner calls: ``$QMOE_TRIAL_FN``, tests' fakes, or run_trial)."""
    from qmoe.sweeps.worker import start_worker

    start_worker()  # as a sweep worker does
    fn = resolve_trial_fn(trial_fn_ref())
    times = []
    for spec in trials:
        t0 = time.perf_counter()
        fn(spec, tables[spec.dataset], threads=1)
        times.append(TrialTime(trial_key=spec.trial_key, model=spec.model, seconds=time.perf_counter() - t0))
    return RunTimes(label="one by one", trials=tuple(times))


def serial_times(job: Path, out: Path) -> RunTimes:
    """:func:`run_serially` on a job file, in a fresh process with a sweep worker's environment."""
    from qmoe.sweeps.cluster import worker_env

    return RunTimes.from_dict(run_module(__name__, job, out, env=worker_env(1)))


def main(argv: Sequence[str]) -> None:
    job, out = Path(argv[0]), Path(argv[1])
    trials, tables = read_job(job)
    out.write_text(json.dumps(run_serially(trials, tables).to_dict()), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
