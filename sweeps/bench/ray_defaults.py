"""The same trials through Ray Tune with its defaults: the baseline of the sweep benchmark.

What a user writing the sweep from Ray Tune's documentation would get: a function trainable
that calls the trial function, the table passed with ``tune.with_parameters``, one
``grid_search`` axis, and every other setting left as Ray Tune ships it -- ``TuneConfig()``
(``reuse_actors=False``: a new worker process per trial), ``RunConfig`` with only a temporary
``storage_path``, one CPU per trial, no thread or malloc settings (the trial function is
called as ``fn(spec, table)``: its own default of one torch thread), Ray's status output and
result loggers on. Ray is started with ``ray.init()`` before the clock starts, as our sweep
starts it before its own; the wall time is from the start of ``Tuner.fit`` to its end.

Run as ``python -m qmoe.sweeps.bench.ray_defaults JOB.json OUT.json`` (a fresh process: its own
Ray); see :mod:`qmoe.sweeps.bench.jobs` for the job file.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qmoe.sweeps.bench.jobs import RunTimes, TrialTime, read_job, run_module
from qmoe.sweeps.trial_fn import trial_fn_ref


def trial_trainable(config: dict[str, Any], tables: Mapping[str, Any], trials: Mapping[str, Any],
                    fn_ref: str) -> None:
    """Run the trial named by ``config["trial"]`` and report its seconds (a function trainable)."""
    from ray import tune

    from qmoe.sweeps.trial_fn import resolve_trial_fn

    spec = trials[config["trial"]]
    fn = resolve_trial_fn(fn_ref)
    t0 = time.perf_counter()
    fn(spec, tables[spec.dataset])
    tune.report({"seconds": time.perf_counter() - t0})


def run_with_defaults(trials: Sequence[Any], tables: Mapping[str, Any], storage: Path) -> RunTimes:
    """Run the trials on Ray Tune's defaults (Ray must be initialised); wall and trial seconds."""
    from ray import tune

    by_key = {t.trial_key: t for t in trials}
    trainable = tune.with_parameters(trial_trainable, tables=dict(tables), trials=by_key,
                                     fn_ref=trial_fn_ref())
    tuner = tune.Tuner(trainable, param_space={"trial": tune.grid_search(list(by_key))},
                       run_config=tune.RunConfig(storage_path=str(storage)))
    t0 = time.time()
    grid = tuner.fit()
    wall = time.time() - t0
    times = []
    for result in grid:
        if result.error is not None:
            raise RuntimeError(f"trial {result.config['trial']} failed under Ray Tune's defaults: {result.error}")
        key = result.config["trial"]
        times.append(TrialTime(trial_key=key, model=by_key[key].model, seconds=float(result.metrics["seconds"])))
    return RunTimes(label="Ray Tune defaults", trials=tuple(times), wall_seconds=wall)


def defaults_times(job: Path, out: Path, address: str | None = None) -> RunTimes:
    """:func:`run_with_defaults` on a job file, in a fresh process with its own Ray (or joining
    the one at ``address``: ``ray.init()`` reads ``RAY_ADDRESS``)."""
    return RunTimes.from_dict(run_module(__name__, job, out,
                                         env={"RAY_ADDRESS": address} if address else None))


def main(argv: Sequence[str]) -> None:
    import ray

    job, out = Path(argv[0]), Path(argv[1])
    trials, tables = read_job(job)
    ray.init()
    try:
        with tempfile.TemporaryDirectory(prefix="qmoe-bench-tune-") as storage:
            times = run_with_defaults(trials, tables, Path(storage))
    finally:
        ray.shutdown()
    out.write_text(json.dumps(times.to_dict()), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
