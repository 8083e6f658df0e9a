"""The run core of sweeps and tuning runs: how a run of either kind is driven on Ray Tune.

A sweep (:mod:`qmoe.sweeps.runner`) and a tuning run (:mod:`qmoe.sweeps.tune.tune_runner`)
differ in their trainable, their driver-side recorder and how Tune picks trials (a grid, or
Optuna with ASHA); everything else is here, once: the options every run command shares, Ray
started or joined, a fresh Tune experiment folder per command (``ray/run-N``), reused actors,
Ray's retries, Tune's own output silenced for the progress line, and the wall time.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from qmoe.errors import ConfigError
from qmoe.record import now_iso

from qmoe.sweeps.cluster import ClusterInfo, check_reachable, ray_session, validate_address, worker_env
from qmoe.sweeps.folder import RunFolder
from qmoe.sweeps.progress import NullProgress
from qmoe.sweeps.trial_fn import TrialFn, check_trial_fn, trial_fn_ref

DEFAULT_STORAGE = Path("qmoe-runs")
# Tune's defaults print status tables, write JSON/CSV/TensorBoard logs per trial and log each
# trial error with a traceback; the progress line and our tables replace all three.
_TUNE_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
             "TUNE_PRINT_ALL_TRIAL_ERRORS": "0"}


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How to run (the flags shared by ``qmoe sweep ...``, ``qmoe resume`` and ``qmoe tune``)."""

    storage: Path = DEFAULT_STORAGE  # folder holding every run (shared by all nodes on a cluster)
    address: str | None = None  # None: embedded Ray; "auto", "HOST:PORT" or "ray://HOST:PORT"
    cpus_per_trial: int = 1  # CPUs reserved per trial = torch threads of the trial
    max_concurrent: int | None = None  # cap on trials at once (None: as many as CPUs allow)
    max_failures: int = 2  # Ray retries of a failing trial before it is recorded as an error
    quiet: bool = False  # no progress line
    verbose: bool = False  # let Ray's logs and the workers' output through
    trial_fn: str | TrialFn | None = None  # sweeps: None = $QMOE_TRIAL_FN or qmoe.trial:run_trial
    progress_stream: TextIO | None = None  # where the progress line goes (stderr)

    def __post_init__(self) -> None:
        if self.cpus_per_trial < 1:
            raise ConfigError(f"--cpus-per-trial {self.cpus_per_trial} is invalid: use 1 or more")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ConfigError(f"--max-concurrent {self.max_concurrent} is invalid: use 1 or more")
        if self.max_failures < 0:
            raise ConfigError(f"--max-failures {self.max_failures} is invalid: use 0 (no retry) or more")
        validate_address(self.address)

    def resolved_trial_fn(self) -> str | TrialFn:
        """The trial function to run; a reference that does not load fails here, once
        (:func:`~qmoe.sweeps.trial_fn.check_trial_fn`)."""
        ref = trial_fn_ref(self.trial_fn)
        check_trial_fn(ref)
        return ref

    def check_address(self) -> None:
        """Fail at once on an address that cannot be reached (before a lock or a file is touched)."""
        address = validate_address(self.address)
        if address not in (None, "auto"):
            check_reachable(address)

    def ray(self) -> contextlib.AbstractContextManager[ClusterInfo]:
        """Ray for the duration of a block (see :func:`~qmoe.sweeps.cluster.ray_session`)."""
        return ray_session(self.address, env=worker_env(self.cpus_per_trial), verbose=self.verbose)

    def progress(self, label: str, kind: type[NullProgress] | None = None) -> NullProgress:
        """The progress display: nothing with ``quiet``, else ``kind`` (the line) labelled ``label``."""
        from qmoe.sweeps.progress import LineProgress

        return NullProgress() if self.quiet else (kind or LineProgress)(label, self.progress_stream)

    def slots(self, cluster: ClusterInfo) -> int:
        """Trials that can run at once on ``cluster``."""
        slots = max(1, math.floor(cluster.cpus / self.cpus_per_trial))
        return min(slots, self.max_concurrent) if self.max_concurrent else slots


@contextlib.contextmanager
def quiet_tune(verbose: bool) -> Iterator[None]:
    """Tune's status tables, per-trial loggers and error tracebacks off for the block (unless
    ``verbose``); the environment and loggers are restored after it."""
    saved = {k: os.environ.get(k) for k in _TUNE_ENV}
    os.environ.update(_TUNE_ENV)
    loggers = [logging.getLogger(n) for n in ("ray.tune", "ray.train", "ray.air")]
    levels = [lg.level for lg in loggers]
    if not verbose:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _run_numbers(ray_dir: Path) -> list[int]:
    if not ray_dir.is_dir():
        return []
    return [int(p.name[4:]) for p in ray_dir.iterdir() if p.name[:4] == "run-" and p.name[4:].isdigit()]


def next_run_name(folder: RunFolder) -> str:
    """``run-N`` after the highest existing one (``ray/`` is made if needed): a fresh Tune
    experiment folder every time, never one holding the (possibly damaged) state of an earlier run."""
    folder.ray_dir.mkdir(exist_ok=True)
    return f"run-{max(_run_numbers(folder.ray_dir), default=0) + 1}"


def last_run_name(folder: RunFolder) -> str:
    """The name of the last Tune run started in the folder (the one a kill interrupted)."""
    return f"run-{max(_run_numbers(folder.ray_dir), default=1)}"


@dataclass(frozen=True, kw_only=True)
class TuneJob:
    """What a run gives Ray Tune besides what every run shares (see :func:`fit`)."""

    trainable: type  # a class trainable taking ``payload`` in ``setup`` (reused actors)
    payload: Any  # shipped once through the object store (``tune.with_parameters``)
    recorder: Any  # the tune.Callback that writes our rows as trials finish
    progress: NullProgress  # drawn from fit's start to its end
    total: int  # trials of the whole run (for the progress line)
    done: int  # of them finished before this command
    trial_name: Callable[[Any], str]  # a Tune trial's name and folder name
    param_space: Mapping[str, Any] | None = None  # a grid (sweeps)
    search_alg: Any = None  # a searcher (tuning)
    scheduler: Any = None  # an early-stopping scheduler (tuning)
    num_samples: int = 1
    max_concurrent_trials: int | None = None


@dataclass(frozen=True)
class Fitted:
    """One Tune run: its name (``run-N``), when it started (ISO) and its wall time."""

    run: str
    started_at: str
    wall_seconds: float


def fit(folder: RunFolder, job: TuneJob, options: RunOptions, *, run: str | None = None) -> Fitted:
    """Run ``job`` on Ray Tune (Ray must be up) as experiment ``ray/<run>`` of ``folder``.

    One CPU per trial unless asked, actors reused between trials (DESIGN §12: a fresh worker
    per trial costs seconds), ``options.max_failures`` retries, no checkpoints (a trial is one
    atomic step, or an objective that a resume does not continue).
    """
    from ray import tune

    run = run or next_run_name(folder)
    trainable = tune.with_resources(tune.with_parameters(job.trainable, payload=job.payload),
                                    {"cpu": options.cpus_per_trial})
    with quiet_tune(options.verbose):
        tuner = tune.Tuner(
            trainable, param_space=dict(job.param_space) if job.param_space is not None else None,
            tune_config=tune.TuneConfig(search_alg=job.search_alg, scheduler=job.scheduler,
                                        num_samples=job.num_samples, reuse_actors=True,
                                        max_concurrent_trials=job.max_concurrent_trials,
                                        trial_name_creator=job.trial_name, trial_dirname_creator=job.trial_name),
            run_config=tune.RunConfig(
                name=run, storage_path=str(folder.ray_dir), verbose=0, callbacks=[job.recorder],
                failure_config=tune.FailureConfig(max_failures=options.max_failures),
                checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False)))
        job.progress.start(total=job.total, done=job.done)
        started, t0 = now_iso(), time.time()
        try:
            tuner.fit()
        finally:
            job.progress.stop()
    return Fitted(run=run, started_at=started, wall_seconds=time.time() - t0)
